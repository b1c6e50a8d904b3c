"""The optional LLM reply engine: an OpenAI-compatible ``/chat/completions`` endpoint, streamed. Not pure (HTTP).

It gets the session's ``system_prompt``, its tools and the conversation, and hands the completion on sentence by
sentence so speech starts before the completion ends; streamed tool calls become :class:`~.brain.CallTool` steps at the
end. The stream's formats are decoded by :mod:`.llm_stream`. The endpoint's key comes in with its
:class:`~.settings.LlmSettings` (read from the environment at start-up, never here).
docs/architecture/local-agent.md#reply-engines.

Errors: the endpoint unreachable, slow, answering an error or an unusable stream is *upstream unavailable*: logged
once per reply (``local_agent.llm_failed``) and, if nothing was said yet, the caller hears an apology.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

import aiohttp
import structlog

from .brain import BrainContext, CallTool, Say, Step, Trigger
from .llm_stream import (
    ChatStreamAccumulator,
    LlmStreamError,
    SentenceStream,
    SseDecoder,
    build_llm_messages,
    build_llm_tools,
    parse_stream_chunk,
)
from .settings import LlmSettings

__all__ = ["LlmEngine"]

log = structlog.get_logger("local_agent")


class LlmEngine:
    """Replies from an OpenAI-compatible chat-completions endpoint, streamed sentence by sentence."""

    name = "llm"
    deterministic = False  # a request costs money and the reply depends on history: never speculate

    def __init__(
        self,
        settings: LlmSettings,
        http: aiohttp.ClientSession,
        *,
        split: Callable[[str], list[str]],
        fallback_reply: str = "Sorry, I'm having trouble answering right now.",
    ) -> None:
        self._settings = settings
        self._http = http
        self._split = split
        self._fallback = fallback_reply

    async def reply(self, trigger: Trigger, ctx: BrainContext) -> AsyncGenerator[Step, None]:
        s = self._settings
        body: dict[str, Any] = {"model": s.model, "messages": build_llm_messages(ctx, trigger), "stream": True}
        if ctx.tools:
            body["tools"] = build_llm_tools(ctx.tools)
            body["tool_choice"] = "auto"
        if s.temperature is not None:
            body["temperature"] = s.temperature
        if s.max_tokens is not None:
            body["max_tokens"] = s.max_tokens
        headers = {"Accept": "text/event-stream"}
        if s.api_key:
            headers["Authorization"] = f"Bearer {s.api_key}"
        url = s.base_url.rstrip("/") + "/chat/completions"
        acc = ChatStreamAccumulator()
        sentences = SentenceStream(self._split)
        said = False
        # Connect and per-read timeouts rather than one overall deadline: this generator is suspended while the
        # session speaks the sentences already yielded, which must not count against the endpoint.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=s.timeout_s, sock_read=s.timeout_s)
        try:
            async with self._http.post(url, json=body, headers=headers, timeout=timeout) as resp:
                if resp.status != 200:
                    raise LlmStreamError(f"HTTP {resp.status}")
                decoder = SseDecoder()
                done = False
                async for chunk in resp.content.iter_any():
                    for payload in decoder.feed(chunk):
                        if payload.strip() == "[DONE]":
                            done = True
                            break
                        for sentence in sentences.push(acc.feed(parse_stream_chunk(payload))):
                            said = True
                            yield Say(sentence)
                    if done:
                        break
        except (aiohttp.ClientError, TimeoutError, LlmStreamError) as e:
            # Upstream unavailable: logged once per reply; the caller hears an apology instead of silence (the
            # live service sent silent completed replies here, which strands a phone caller:
            # docs/architecture/local-agent.md#reply-engines).
            log.warning("local_agent.llm_failed", error=str(e) or type(e).__name__, url=url)
            if not said:
                yield Say(self._fallback)
            return
        for sentence in sentences.flush():
            yield Say(sentence)
        for name, args in acc.tool_calls():
            yield CallTool(name, args)

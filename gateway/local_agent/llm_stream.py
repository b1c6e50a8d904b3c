"""The LLM engine's wire formats, without the HTTP: server-sent events, chat-completion chunks, whole sentences
out of streamed text, and the request's messages and tools. Pure.

:class:`SseDecoder` turns ``text/event-stream`` bytes into ``data`` payloads; :func:`parse_stream_chunk` one
payload into a chunk; :class:`ChatStreamAccumulator` the chunks into text deltas and, at the end, tool calls;
:class:`SentenceStream` the text into sentences as soon as each is complete, so speech starts before the completion
ends. :mod:`.llm` does the request (docs/architecture/local-agent.md#reply-engines).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import RemoteProtocolError
from .brain import BrainContext, CreateRequest, Trigger
from .protocol import ToolDef

__all__ = [
    "ChatStreamAccumulator",
    "LlmStreamError",
    "SentenceStream",
    "SseDecoder",
    "build_llm_messages",
    "build_llm_tools",
    "parse_stream_chunk",
]


class SseDecoder:
    """Server-sent events (text/event-stream) bytes → the ``data`` payload of each complete event. Pure."""

    __slots__ = ("_buf", "_data")

    def __init__(self) -> None:
        self._buf = b""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        out: list[str] = []
        while True:
            nl = self._buf.find(b"\n")
            if nl < 0:
                break
            line = self._buf[:nl].rstrip(b"\r").decode("utf-8", errors="replace")
            self._buf = self._buf[nl + 1 :]
            if not line:
                if self._data:
                    out.append("\n".join(self._data))
                    self._data = []
                continue
            if line.startswith(":"):
                continue  # comment / keep-alive
            name, _, value = line.partition(":")
            if name == "data":
                self._data.append(value[1:] if value.startswith(" ") else value)
        return out

    def flush(self) -> list[str]:
        out = self.feed(b"\n\n") if (self._buf or self._data) else []
        return out


@dataclass(slots=True)
class _PartialCall:
    id: str | None = None
    name: str = ""
    arguments: str = ""


class ChatStreamAccumulator:
    """Chat-completion stream chunks → text deltas, plus the tool calls assembled at the end. Pure."""

    __slots__ = ("_calls", "finish_reason")

    def __init__(self) -> None:
        self._calls: dict[int, _PartialCall] = {}
        self.finish_reason: str | None = None

    def feed(self, chunk: Mapping[str, Any]) -> str:
        """Apply one parsed chunk; return its new text (may be empty)."""
        text = ""
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            if isinstance(delta.get("content"), str):
                text += delta["content"]
            for tc in delta.get("tool_calls") or ():
                idx = tc.get("index", 0)
                call = self._calls.setdefault(idx, _PartialCall())
                if tc.get("id"):
                    call.id = tc["id"]
                fn = tc.get("function") or {}
                if fn.get("name"):
                    call.name += fn["name"]
                if isinstance(fn.get("arguments"), str):
                    call.arguments += fn["arguments"]
            if choice.get("finish_reason"):
                self.finish_reason = choice["finish_reason"]
        return text

    def tool_calls(self) -> list[tuple[str, dict[str, Any]]]:
        """``(name, arguments)`` per call, in index order; unparsable arguments become ``{}``."""
        out: list[tuple[str, dict[str, Any]]] = []
        for idx in sorted(self._calls):
            call = self._calls[idx]
            if not call.name:
                continue
            try:
                args = json.loads(call.arguments) if call.arguments.strip() else {}
            except ValueError:
                args = {}
            out.append((call.name, args if isinstance(args, dict) else {"value": args}))
        return out


class SentenceStream:
    """Streamed text → whole sentences as soon as they are complete. Pure.

    A sentence is complete once sentence-final punctuation is followed by whitespace (the speech stack's
    :func:`split_sentences` rule), so "3.5" or "e.g." mid-stream do not cut early.
    """

    __slots__ = ("_buf", "_split")

    def __init__(self, split: Callable[[str], list[str]]) -> None:
        self._buf = ""
        self._split = split

    def push(self, text: str) -> list[str]:
        self._buf += text
        pieces = self._split(self._buf)
        if len(pieces) <= 1:
            return []
        done, last = pieces[:-1], pieces[-1]
        # Keep the unfinished tail (and whatever whitespace follows it) for the next push.
        self._buf = self._buf[self._buf.rfind(last) :]
        return done

    def flush(self) -> list[str]:
        pieces = self._split(self._buf)
        self._buf = ""
        return pieces


def build_llm_messages(ctx: BrainContext, trigger: Trigger) -> list[dict[str, Any]]:
    """The request's messages: system prompt, history, and a one-reply instruction for ``reply.create``."""
    messages: list[dict[str, Any]] = []
    if ctx.system_prompt:
        messages.append({"role": "system", "content": ctx.system_prompt})
    messages.extend(ctx.conversation.messages)
    if isinstance(trigger, CreateRequest):
        # reply.create's instructions apply to this reply only.
        messages.append(
            {"role": "system", "content": trigger.instructions or "Continue the conversation with a short reply."}
        )
    return messages


def build_llm_tools(tools: Sequence[ToolDef]) -> list[dict[str, Any]]:
    """Session tools (the flat format) → the OpenAI nested ``function`` shape."""
    return [
        {
            "type": "function",
            "function": {
                "name": t.name,
                "description": t.description,
                "parameters": dict(t.parameters) or {"type": "object", "properties": {}},
            },
        }
        for t in tools
    ]


class LlmStreamError(RemoteProtocolError):
    """The endpoint's stream is unusable (an error chunk, malformed JSON): the reply fails like an unreachable
    endpoint does. Raised by :func:`parse_stream_chunk`; :mod:`.llm` catches it, it never leaves the engine."""


def parse_stream_chunk(payload: str) -> dict[str, Any]:
    """One SSE ``data`` payload → the chat-completion chunk it carries."""
    try:
        obj = json.loads(payload)
    except ValueError:
        raise LlmStreamError("malformed stream chunk") from None
    if not isinstance(obj, dict):
        raise LlmStreamError("malformed stream chunk")
    if "error" in obj:
        raise LlmStreamError(f"stream error: {obj['error']}")
    return obj

"""A tiny fake OpenAI-compatible chat-completions server for the LLM reply engine's tests.

It follows the documented streaming shape: ``POST /v1/chat/completions`` with ``"stream": true`` answers
``text/event-stream`` with ``data: <chat.completion.chunk JSON>`` events (the first delta carries the role, then
content pieces or ``tool_calls`` pieces with ``index``/``id``/``function.name``/``function.arguments`` fragments,
a final chunk with ``finish_reason``) and ends with ``data: [DONE]``. Each request pops the next scripted reply;
every request body is recorded for assertions."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Scripted:
    text: str = ""
    tool_calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    status: int = 200
    piece: int = 7  # characters per content delta
    delay_s: float = 0.0  # between chunks


@dataclass
class FakeChatCompletions:
    replies: list[Scripted] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        return app

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.requests.append(body)
        self.headers.append(dict(request.headers))
        reply = self.replies.pop(0) if self.replies else Scripted("I have nothing more to say.")
        if reply.status != 200:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=reply.status)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": body["model"],
        }

        async def send(delta: dict[str, Any], finish: str | None = None) -> None:
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
            await resp.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if reply.delay_s:
                await asyncio.sleep(reply.delay_s)

        await send({"role": "assistant", "content": ""})
        for i in range(0, len(reply.text), reply.piece):
            await send({"content": reply.text[i : i + reply.piece]})
        for n, (name, args) in enumerate(reply.tool_calls):
            raw = json.dumps(args)
            await send({"tool_calls": [{"index": n, "id": f"call_{n}", "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})  # fmt: skip
            for i in range(0, len(raw), 5):
                await send({"tool_calls": [{"index": n, "function": {"arguments": raw[i : i + 5]}}]})
        await send({}, "tool_calls" if reply.tool_calls else "stop")
        await resp.write(b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp

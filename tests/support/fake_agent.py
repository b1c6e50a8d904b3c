"""A stand-in for the AssemblyAI cloud (which tests cannot reach), following voice-agent-api.md exactly as far as
the gateway's tests need: auth on upgrade (Bearer or raw key; bad key → session.error unauthorized + close 1008),
nothing before the first session.update, then session.updated + session.ready, input.audio recorded, and scripted
server events sent by the test. Lives in tests/ only."""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web


@dataclass
class FakeSession:
    ws: web.WebSocketResponse
    config: dict[str, Any] = field(default_factory=dict)
    session_id: str = field(default_factory=lambda: "sess_" + secrets.token_hex(16))
    received: list[dict[str, Any]] = field(default_factory=list)
    audio: bytearray = field(default_factory=bytearray)
    audio_messages: int = 0
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    inbox: asyncio.Queue[dict[str, Any]] = field(default_factory=asyncio.Queue)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    ended_by_client: bool = False

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"type": type_, **fields, "timestamp": time.time()}))

    async def next_message(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg.get("type") == type_:
                    return msg

    async def reply(self, pcm: bytes, *, reply_id: str | None = None, chunk_bytes: int = 480,
                    realtime: bool = True, done: bool = True, text: str = "") -> str:
        """Speak a reply: reply.started, reply.audio chunks (10 ms / 480 B of 24 kHz PCM by default), done."""
        reply_id = reply_id or "resp_" + secrets.token_hex(16)
        await self.send("reply.started", reply_id=reply_id, item_id="msg_" + secrets.token_hex(16))
        t0 = time.monotonic()
        for i in range(0, len(pcm), chunk_bytes):
            chunk = pcm[i : i + chunk_bytes]
            await self.send("reply.audio", reply_id=reply_id, data=base64.b64encode(chunk).decode())
            if realtime:
                due = t0 + (i + len(chunk)) / 48000.0
                await asyncio.sleep(max(0.0, due - time.monotonic()))
        if done:
            await self.send("transcript.agent", reply_id=reply_id, item_id="msg_x", text=text, interrupted=False)
            await self.send("reply.done", reply_id=reply_id, status="completed")
        return reply_id


class FakeAgent:
    def __init__(self, api_key: str = "test-key", ready_delay: float = 0.0) -> None:
        self.api_key = api_key
        self.ready_delay = ready_delay
        self.sessions: list[FakeSession] = []
        self.new_session: asyncio.Queue[FakeSession] = asyncio.Queue()
        self.app = web.Application()
        self.app.router.add_get("/v1/ws", self._ws)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") != self.api_key:
            await ws.send_str(json.dumps({"type": "session.error", "code": "unauthorized",
                                          "message": "Authentication failed", "session_id": None,
                                          "param": None, "timestamp": time.time()}))
            await ws.close(code=1008)
            return ws
        sess = FakeSession(ws)
        self.sessions.append(sess)
        self.new_session.put_nowait(sess)
        try:
            async for msg in ws:
                if msg.type is not WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                sess.received.append(data)
                kind = data.get("type")
                if kind == "input.audio":
                    sess.audio += base64.b64decode(data["audio"])
                    sess.audio_messages += 1
                    continue
                sess.inbox.put_nowait(data)
                if kind == "session.update" and not sess.ready.is_set():
                    sess.config = data["session"]
                    if self.ready_delay:
                        await asyncio.sleep(self.ready_delay)
                    await sess.send("session.updated", config=sess.config)
                    await sess.send("session.ready", session_id=sess.session_id, config=sess.config,
                                    expires_at=time.time() + 3600, resume_token="rt_" + secrets.token_hex(8))
                    sess.ready.set()
                elif kind == "session.end":
                    sess.ended_by_client = True
                    await sess.send("session.ended", session_duration_seconds=1.0, audio_duration_seconds=None)
                    await ws.close(code=1000)
        finally:
            sess.closed.set()
        return ws

    async def session(self, timeout: float = 5.0) -> FakeSession:
        async with asyncio.timeout(timeout):
            s = await self.new_session.get()
        async with asyncio.timeout(timeout):
            await s.ready.wait()
        return s

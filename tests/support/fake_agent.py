"""A stand-in for the AssemblyAI cloud (which tests cannot reach), following docs/architecture/agent-api.md
exactly as far as the gateway's tests need: auth on upgrade (Bearer or raw key; bad key → session.error unauthorized +
close 1008), nothing before the first session.update, then session.updated + session.ready, input.audio recorded, and
scripted server events sent by the test. Lives in tests/ only.

Session resume (docs/architecture/agent-api.md#resume): a session whose socket closes without ``session.end`` is
kept for ``resume_window_s``; a new socket whose first message is ``session.resume{session_id}`` re-attaches it (the old
socket, if the server has not noticed the drop yet, is taken over) and gets ``session.ready`` again with the same
``session_id`` and no greeting (``resume_reply="continue"``: no answer at all, like a server that just carries on).
Unknown, ended or expired ids get ``session_not_found`` + close 1008; ``resume_errors`` scripts error codes for the next
resume attempts. The session's recorded audio spans all its sockets.

Drops without a close frame (an unclean drop, same page) come from the agent's own socket: :meth:`FakeSession.drop`
half-closes it now, ``fin_after_ready`` right after the next ``session.ready`` (first or resumed), in the same step
as sending it, so both reach the gateway together. Either way the fake keeps reading, so whatever the gateway sends
before it notices is still received and recorded (nothing it rightly counts as sent is lost)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
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
    closed: asyncio.Event = field(default_factory=asyncio.Event)  # its current socket closed
    ended_by_client: bool = False
    ended: bool = False  # session.end received (or expired): cannot be resumed
    connections: int = 1
    resumes: int = 0
    detached_at: float | None = None  # monotonic time its last socket closed without session.end
    attached: asyncio.Event = field(default_factory=asyncio.Event)  # a socket carries it now
    peer: Any = None  # (host, port) of the client socket currently carrying it
    transport: Any = None  # the asyncio transport of the socket currently carrying it
    reading: asyncio.Event = field(
        default_factory=asyncio.Event
    )  # cleared: stop reading (aiohttp then stops the socket)

    def __post_init__(self) -> None:
        self.reading.set()

    def drop(self) -> None:
        """An unclean drop now: FIN on the current socket, no close frame; the fake still reads what arrives."""
        sock = self.transport.get_extra_info("socket") if self.transport is not None else None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)  # not transport.write_eof(): later writes fail as on a dead link

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send_str(json.dumps({"type": type_, **fields, "timestamp": time.time()}))

    async def next_message(self, type_: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                msg = await self.inbox.get()
                if msg.get("type") == type_:
                    return msg

    async def reply(
        self,
        pcm: bytes,
        *,
        reply_id: str | None = None,
        chunk_bytes: int = 480,
        realtime: bool = True,
        done: bool = True,
        text: str = "",
    ) -> str:
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
    def __init__(
        self,
        api_key: str = "test-key",
        ready_delay: float = 0.0,
        resume_window_s: float = 30.0,
        resume_reply: str = "ready",
    ) -> None:
        self.api_key = api_key
        self.ready_delay = ready_delay
        self.resume_window_s = resume_window_s
        self.resume_reply = resume_reply  # "ready" (session.ready again) | "continue" (say nothing)
        self.resume_errors: list[str] = []  # codes to answer the next session.resume attempts with, in order
        self.connect_errors: list[str] = []  # codes to answer the next first session.update with, in order
        self.sessions: list[FakeSession] = []
        self.new_session: asyncio.Queue[FakeSession] = asyncio.Queue()
        self.connections = 0  # authenticated sockets ever opened
        self.open_sockets: set[web.WebSocketResponse] = set()
        self.resume_attempts = 0
        # The next N session.ready (first or resumed) are followed at once by FakeSession.drop(); ``before_drop``
        # (if set) runs between the two, in the same step (e.g. the caller's next frame, to arrive together).
        self.fin_after_ready = 0
        self.before_drop: Callable[[], Awaitable[None]] | None = None
        self.app = web.Application()
        self.app.router.add_get("/v1/ws", self._ws)

    @property
    def live_sessions(self) -> list[FakeSession]:
        """Sessions a socket still carries (after a call ends there must be none)."""
        return [s for s in self.sessions if not s.ended and not s.closed.is_set()]

    async def _error(self, ws: web.WebSocketResponse, code: str, message: str, session_id: str | None = None) -> None:
        await ws.send_str(
            json.dumps(
                {
                    "type": "session.error",
                    "code": code,
                    "message": message,
                    "session_id": session_id,
                    "param": None,
                    "timestamp": time.time(),
                }
            )
        )
        await ws.close(code=1008)

    async def _ws(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        auth = request.headers.get("Authorization", "")
        if auth.removeprefix("Bearer ") != self.api_key:
            await self._error(ws, "unauthorized", "Authentication failed")
            return ws
        self.connections += 1
        self.open_sockets.add(ws)
        try:
            return await self._serve(ws, request.transport)
        finally:
            self.open_sockets.discard(ws)

    async def _serve(self, ws: web.WebSocketResponse, transport: Any) -> web.WebSocketResponse:
        peer = transport.get_extra_info("peername") if transport is not None else None
        first = await ws.receive()
        if first.type is not WSMsgType.TEXT:
            return ws
        data = json.loads(first.data)
        if data.get("type") == "session.resume":
            sess = await self._resume(ws, data, transport)
            if sess is None:
                return ws
            sess.peer = peer
        elif data.get("type") == "session.update" and self.connect_errors:
            await self._error(ws, self.connect_errors.pop(0), "scripted session failure")
            return ws
        else:
            sess = FakeSession(ws, peer=peer, transport=transport)
            sess.attached.set()
            self.sessions.append(sess)
            self.new_session.put_nowait(sess)
        try:
            if data.get("type") != "session.resume":
                await self._on_message(sess, data)
            async for msg in ws:
                await sess.reading.wait()  # a stalled agent: its socket's buffers fill, then TCP's window closes
                if msg.type is not WSMsgType.TEXT:
                    continue
                if sess.ws is not ws:
                    break  # taken over by a resume on another socket
                await self._on_message(sess, json.loads(msg.data))
        finally:
            if sess.ws is ws:
                sess.closed.set()
                sess.attached.clear()
                if not sess.ended:
                    sess.detached_at = time.monotonic()
        return ws

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any], transport: Any) -> FakeSession | None:
        self.resume_attempts += 1
        sid = data.get("session_id")
        if self.resume_errors:
            await self._error(ws, self.resume_errors.pop(0), "scripted resume failure", sid)
            return None
        sess = next((s for s in self.sessions if s.session_id == sid), None)
        expired = (
            sess is not None
            and sess.detached_at is not None
            and time.monotonic() - sess.detached_at > self.resume_window_s
        )
        if sess is None or sess.ended or expired:
            if sess is not None:
                sess.ended = True
            await self._error(ws, "session_not_found", f"Session '{sid}' not found", sid)
            return None
        old = sess.ws
        sess.ws, sess.transport = ws, transport  # the new socket wins; the old one (if still open) is closed
        if not old.closed:
            try:
                await asyncio.wait_for(old.close(code=1001, message=b"session resumed elsewhere"), 1.0)
            except (TimeoutError, ConnectionError):
                pass
        sess.received.append(data)
        sess.inbox.put_nowait(data)
        sess.connections += 1
        sess.resumes += 1
        sess.detached_at = None
        sess.closed.clear()
        sess.attached.set()
        if self.resume_reply == "ready":
            await sess.send(
                "session.ready",
                session_id=sess.session_id,
                config=sess.config,
                expires_at=time.time() + 3600,
                resume_token="rt_" + secrets.token_hex(8),
            )
            await self._maybe_drop(sess)
        return sess

    async def _maybe_drop(self, sess: FakeSession) -> None:
        """Just after a session.ready, with no await that yields in between: the scripted drop, if any."""
        if self.fin_after_ready > 0:
            self.fin_after_ready -= 1
            if self.before_drop is not None:
                await self.before_drop()
            sess.drop()

    async def _on_message(self, sess: FakeSession, data: dict[str, Any]) -> None:
        ws = sess.ws
        sess.received.append(data)
        kind = data.get("type")
        if kind == "input.audio":
            sess.audio += base64.b64decode(data["audio"])
            sess.audio_messages += 1
            return
        sess.inbox.put_nowait(data)
        if kind == "session.update" and not sess.ready.is_set():
            sess.config = data["session"]
            if self.ready_delay:
                await asyncio.sleep(self.ready_delay)
            await sess.send("session.updated", config=sess.config)
            await sess.send(
                "session.ready",
                session_id=sess.session_id,
                config=sess.config,
                expires_at=time.time() + 3600,
                resume_token="rt_" + secrets.token_hex(8),
            )
            sess.ready.set()
            await self._maybe_drop(sess)
        elif kind == "session.end":
            sess.ended_by_client = True
            sess.ended = True
            await sess.send("session.ended", session_duration_seconds=1.0, audio_duration_seconds=None)
            await ws.close(code=1000)

    async def session(self, timeout: float = 5.0) -> FakeSession:
        async with asyncio.timeout(timeout):
            s = await self.new_session.get()
        async with asyncio.timeout(timeout):
            await s.ready.wait()
        return s

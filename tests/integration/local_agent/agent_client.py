"""A plain Voice Agent API client for driving the local agent in tests: a real WebSocket (``websockets``), a
background reader that timestamps every event, and a phone-line pump that sends 20 ms μ-law frames in real time
(speech when there is some, digital silence otherwise), like Twilio does."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

FRAME_BYTES = 160  # 20 ms of 8 kHz μ-law
FRAME_S = 0.020
ULAW_SILENCE = b"\xff"


@dataclass
class Received:
    at: float  # time.monotonic() on arrival
    event: dict[str, Any]

    @property
    def type(self) -> str:
        return str(self.event.get("type"))


class AgentClosed(AssertionError):
    pass


@dataclass
class AgentClient:
    ws: ClientConnection
    queue: asyncio.Queue[Received | None] = field(default_factory=asyncio.Queue)
    events: list[Received] = field(default_factory=list)  # everything read so far, audio included
    audio: dict[str, bytearray] = field(default_factory=dict)  # reply_id -> decoded reply audio
    close_code: int | None = None
    close_reason: str | None = None
    _reader: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, *, headers: dict[str, str] | None = None) -> AgentClient:
        ws = await connect(url, additional_headers=headers or {}, proxy=None, open_timeout=5, close_timeout=2)
        client = cls(ws)
        client._reader = asyncio.create_task(client._read())
        return client

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                ev = json.loads(raw)
                rec = Received(time.monotonic(), ev)
                self.events.append(rec)
                if ev.get("type") == "reply.audio":
                    self.audio.setdefault(ev["reply_id"], bytearray()).extend(base64.b64decode(ev["data"]))
                await self.queue.put(rec)
        except ConnectionClosed:
            pass
        finally:
            rcvd = self.ws.protocol.close_rcvd
            self.close_code = rcvd.code if rcvd else 1006
            self.close_reason = rcvd.reason if rcvd else None
            await self.queue.put(None)

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type_, **fields}))

    async def send_raw(self, text: str) -> None:
        await self.ws.send(text)

    async def next(self, timeout: float = 5.0, *, audio: bool = False) -> Received | None:
        """The next event (``None`` once the socket is closed); reply.audio skipped unless ``audio``."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no event within {timeout} s")
            rec = await asyncio.wait_for(self.queue.get(), remaining)
            if rec is None:
                await self.queue.put(None)  # stay closed for later callers
                return None
            if rec.type == "reply.audio" and not audio:
                continue
            return rec

    async def expect(self, type_: str, timeout: float = 10.0) -> dict[str, Any]:
        return (await self.expect_rec(type_, timeout)).event

    async def expect_rec(self, type_: str, timeout: float = 10.0) -> Received:
        """Read until an event of ``type_`` (skipping others); fail on close or timeout."""
        seen: list[str] = []
        deadline = time.monotonic() + timeout
        while True:
            try:
                rec = await self.next(max(0.01, deadline - time.monotonic()))
            except TimeoutError:
                raise TimeoutError(f"no {type_} within {timeout} s; saw {seen}") from None
            if rec is None:
                raise AgentClosed(f"closed ({self.close_code}) before {type_}; saw {seen}")
            if rec.type == type_:
                return rec
            seen.append(rec.type if rec.type != "session.error" else f"session.error:{rec.event.get('code')}")

    async def collect_until(self, stop: Callable[[Received], bool], timeout: float = 20.0) -> list[Received]:
        """All non-audio events up to and including the first one ``stop`` accepts."""
        out: list[Received] = []
        deadline = time.monotonic() + timeout
        while True:
            rec = await self.next(max(0.01, deadline - time.monotonic()))
            if rec is None:
                raise AgentClosed(f"closed ({self.close_code}); saw {[r.type for r in out]}")
            out.append(rec)
            if stop(rec):
                return out

    async def nothing_for(self, seconds: float) -> list[Received]:
        """Events (audio excluded) that arrive within ``seconds``; tests assert it is empty or what it holds."""
        got: list[Received] = []
        deadline = time.monotonic() + seconds
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                rec = await self.next(remaining)
            except TimeoutError:
                break
            if rec is None:
                break
            got.append(rec)
        return got

    async def wait_closed(self, timeout: float = 5.0) -> int | None:
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        return self.close_code

    async def open_session(self, **session: Any) -> dict[str, Any]:
        await self.send("session.update", session=session)
        await self.expect("session.updated")
        return await self.expect("session.ready")

    async def close(self) -> None:
        await self.ws.close()
        if self._reader is not None:
            try:
                await asyncio.wait_for(self._reader, 3)
            except (TimeoutError, asyncio.CancelledError):
                self._reader.cancel()

    def abort(self) -> None:
        """Drop the TCP connection without a close handshake (a network failure)."""
        transport = self.ws.transport
        transport.abort()


class LinePump:
    """Sends the caller's side of a phone line: 20 ms μ-law frames at real time, silence between phrases."""

    def __init__(self, client: AgentClient, *, realtime: bool = True) -> None:
        self.client = client
        self.realtime = realtime
        self._pending = bytearray()
        self._task: asyncio.Task[None] | None = None
        self._drained = asyncio.Event()
        self._drained.set()
        self.last_speech_sent_at: float | None = None  # monotonic time the last queued speech frame went out

    def start(self) -> LinePump:
        self._task = asyncio.create_task(self._run())
        return self

    def say(self, ulaw: bytes) -> None:
        self._pending.extend(ulaw)
        self._drained.clear()

    async def spoken(self, timeout: float = 30.0) -> float:
        """Wait until everything queued has been sent; return when the last of it went out."""
        await asyncio.wait_for(self._drained.wait(), timeout)
        assert self.last_speech_sent_at is not None
        return self.last_speech_sent_at

    async def _run(self) -> None:
        next_at = time.monotonic()
        try:
            while True:
                if self._pending:
                    frame = bytes(self._pending[:FRAME_BYTES]).ljust(FRAME_BYTES, ULAW_SILENCE)
                    del self._pending[:FRAME_BYTES]
                    speech = True
                else:
                    frame, speech = ULAW_SILENCE * FRAME_BYTES, False
                await self.client.send("input.audio", audio=base64.b64encode(frame).decode())
                if speech:
                    self.last_speech_sent_at = time.monotonic()
                    if not self._pending:
                        self._drained.set()
                if self.realtime or not speech:
                    next_at += FRAME_S
                    delay = next_at - time.monotonic()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    else:
                        next_at = time.monotonic()
                else:
                    next_at = time.monotonic()
                    await asyncio.sleep(0)
        except ConnectionClosed:
            pass

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass

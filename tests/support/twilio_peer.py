"""Plays Twilio's side of a Media Stream against the real gateway, as Twilio does it
(docs/architecture/twilio-media-streams.md): POSTs the webhook, reads the TwiML, opens the stream URL, sends
connected/start/media, and models Twilio's FIFO playout buffer: media we receive is "played" at real time, marks echo
only once the audio before them has played, and ``clear`` drops unplayed audio and echoes every pending mark at once."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import aiohttp

from gateway.security import twilio_signature


@dataclass
class Received:
    t: float
    msg: dict[str, Any]


@dataclass
class TwilioPeer:
    base_url: str
    http: aiohttp.ClientSession
    call_sid: str = field(default_factory=lambda: "CA" + secrets.token_hex(16))
    stream_sid: str = field(default_factory=lambda: "MZ" + secrets.token_hex(16))
    from_: str = "+15550001111"
    to: str = "+15550002222"
    received: list[Received] = field(default_factory=list)
    ws: aiohttp.ClientWebSocketResponse | None = None
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None
    played: bytearray = field(default_factory=bytearray)  # μ-law actually "played" to the caller
    _queue: list[tuple[str, Any]] = field(default_factory=list)  # ("audio", bytes) | ("mark", name)
    _seq: int = 0
    _chunk: int = 0
    _reader: asyncio.Task[None] | None = None
    _player: asyncio.Task[None] | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    stream_url: str = ""
    #: The gateway's TWILIO_AUTH_TOKEN, if it has one: then the peer signs its upgrade as Twilio does (required).
    auth_token: str = ""
    #: The stream URL as the TwiML gave it, which the signature covers, when the peer connects elsewhere (a public
    #: URL's stream reached on loopback); default: ``stream_url``.
    signed_stream_url: str = ""

    async def dial(self, *, headers: dict[str, str] | None = None) -> str:
        form = {"CallSid": self.call_sid, "From": self.from_, "To": self.to, "AccountSid": "AC" + "0" * 32}
        async with self.http.post(self.base_url + "/twilio/voice", data=form, headers=headers or {}) as r:
            body = await r.text()
            assert r.status == 200, body
        root = ElementTree.fromstring(body)
        stream = root.find("./Connect/Stream")
        assert stream is not None, body
        self.stream_url = stream.attrib["url"]
        self.parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
        return body

    async def connect(self, *, start: bool = True, parameters: dict[str, str] | None = None) -> None:
        signed = self.signed_stream_url or self.stream_url
        headers = {"X-Twilio-Signature": twilio_signature(self.auth_token, signed, {})} if self.auth_token else {}
        self.ws = await self.http.ws_connect(self.stream_url, max_msg_size=1 << 20, headers=headers)
        self.run(play=True)
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        if start:
            await self.send_start(parameters)

    def run(self, *, play: bool) -> None:
        """Start reading the gateway's messages on ``self.ws`` and, with ``play``, playing out what it sends (echoing
        marks on time). :meth:`connect` calls it; tests that open the socket themselves call it after."""
        self._reader = asyncio.create_task(self._read())
        if play:
            self._player = asyncio.create_task(self._play())

    async def send_start(self, parameters: dict[str, str] | None = None) -> None:
        await self.send(
            {
                "event": "start",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": parameters if parameters is not None else self.parameters,
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                },
            }
        )

    def _next_seq(self) -> str:
        self._seq += 1
        return str(self._seq)

    async def send(self, msg: dict[str, Any]) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps(msg))

    async def send_media(self, ulaw: bytes, *, realtime: bool = False) -> None:
        """Send caller audio as 20 ms frames (160 bytes), like Twilio."""
        t0 = time.monotonic()
        for i in range(0, len(ulaw), 160):
            self._chunk += 1
            await self.send(
                {
                    "event": "media",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(self._chunk),
                        "timestamp": str(self._chunk * 20),
                        "payload": base64.b64encode(ulaw[i : i + 160]).decode(),
                    },
                }
            )
            if realtime:
                await asyncio.sleep(max(0.0, t0 + (i + 160) / 8000 - time.monotonic()))

    async def stop(self) -> None:
        await self.send(
            {
                "event": "stop",
                "sequenceNumber": self._next_seq(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": "AC" + "0" * 32, "callSid": self.call_sid},
            }
        )

    async def _read(self) -> None:
        assert self.ws is not None
        async for m in self.ws:
            if m.type is not aiohttp.WSMsgType.TEXT:
                break
            msg = json.loads(m.data)
            self.received.append(Received(time.monotonic(), msg))
            ev = msg.get("event")
            if ev == "media":
                self._queue.append(("audio", base64.b64decode(msg["media"]["payload"])))
            elif ev == "mark":
                self._queue.append(("mark", msg["mark"]["name"]))
            elif ev == "clear":
                # Twilio drops unplayed audio and echoes every pending mark
                # (docs/architecture/twilio-media-streams.md#marks-and-clear).
                marks = [v for k, v in self._queue if k == "mark"]
                self._queue.clear()
                for name in marks:
                    await self._echo(name)
        self.close_code = self.ws.close_code
        self.closed.set()

    async def _echo(self, name: str) -> None:
        if self.ws is not None and not self.ws.closed:
            await self.send(
                {
                    "event": "mark",
                    "sequenceNumber": self._next_seq(),
                    "streamSid": self.stream_sid,
                    "mark": {"name": name},
                }
            )

    async def _play(self) -> None:
        """Twilio's playout: 160 bytes per 20 ms, marks echoed when reached."""
        next_t = time.monotonic()
        while True:
            if not self._queue:
                await asyncio.sleep(0.005)
                next_t = time.monotonic()
                continue
            kind, item = self._queue.pop(0)
            if kind == "mark":
                await self._echo(item)
                continue
            self.played += item
            next_t += len(item) / 8000
            await asyncio.sleep(max(0.0, next_t - time.monotonic()))

    def events(self, name: str) -> list[Received]:
        return [r for r in self.received if r.msg.get("event") == name]

    async def wait_for(self, pred: Any, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                await asyncio.sleep(0.01)

    async def close(self) -> None:
        for t in (self._reader, self._player):
            if t is not None:
                t.cancel()
        if self.ws is not None and not self.ws.closed:
            await self.ws.close()
        for t in (self._reader, self._player):
            if t is not None:
                try:
                    await t
                except (asyncio.CancelledError, Exception):
                    pass


def media_bytes(received: list[Received]) -> bytes:
    return b"".join(base64.b64decode(r.msg["media"]["payload"]) for r in received if r.msg.get("event") == "media")


SID_RE = re.compile(r"^[A-Z]{2}[0-9a-f]{32}$")

"""Twilio's side of a voice call, as the call simulator plays it. Pure: no sockets, no clock, no environment.

Implements, from the carrier's point of view, Twilio's side of docs/architecture/twilio-media-streams.md:
- #twiml, #signatures: the voice webhook form Twilio POSTs (:func:`webhook_form`) and the TwiML it expects back
  (:func:`parse_twiml`: exactly one ``<Connect><Stream url="wss://…">`` with ``<Parameter>`` children; no query
  string on the URL; ``<Start><Stream>`` is a one-way fork the caller would not hear);
- #messages-in: the messages Twilio sends (:class:`TwilioSide`: ``connected``, ``start``, ``media``, ``mark`` echoes,
  ``stop``; every number a string, ``sequenceNumber`` counting from 1, ``media.chunk`` from 1);
- #messages-out, #ordering: the messages it accepts (:meth:`TwilioSide.parse`: ``media``/``mark``/``clear`` with
  our streamSid and no other shape; anything else is what Twilio reports as 31950/31951) and its FIFO playout buffer
  (:class:`PlayoutBuffer`: media plays at real time, a mark is echoed once everything queued before it has played,
  ``clear`` drops unplayed audio and echoes every pending mark at once).

Time here is counted in 20 ms frames (sample counts), never read from a clock; the asyncio shell in
:mod:`gateway.simulator.caller` drives :meth:`PlayoutBuffer.tick` once per frame.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit, urlunsplit
from xml.etree import ElementTree

from .errors import CallRefused, GatewayProtocolError

__all__ = [
    "FRAME_BYTES",
    "FRAME_S",
    "PARAMETER_LIMIT",
    "SILENCE_FRAME",
    "Cleared",
    "GatewayClear",
    "GatewayMark",
    "GatewayMedia",
    "GatewayMessage",
    "PlayoutBuffer",
    "StreamInstruction",
    "TwilioSide",
    "new_sid",
    "parse_twiml",
    "resolve_stream_url",
    "webhook_form",
]

#: 20 ms of 8 kHz μ-law: the frame Twilio sends and the unit its playout advances by (observed;
#: docs/architecture/twilio-media-streams.md#messages-in).
FRAME_BYTES = 160
FRAME_S = 0.02
SILENCE_FRAME = b"\xff" * FRAME_BYTES
#: "About 500 characters" per <Parameter> name+value (docs/architecture/twilio-media-streams.md#limits); over that we
#: warn, we do not fail.
PARAMETER_LIMIT = 500


def new_sid(prefix: str, rand: Callable[[int], str] = secrets.token_hex) -> str:
    """A Twilio-shaped SID: two capital letters and 32 lower-case hex digits (``CA…``, ``AC…``, ``MZ…``)."""
    return prefix + rand(16)


def webhook_form(call_sid: str, account_sid: str, from_: str, to: str) -> dict[str, str]:
    """The form Twilio POSTs to the voice URL when an inbound call starts ringing (the fields a gateway reads)."""
    return {
        "AccountSid": account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": call_sid,
        "CallStatus": "ringing",
        "Called": to,
        "Caller": from_,
        "Direction": "inbound",
        "From": from_,
        "To": to,
    }


# ---- TwiML (docs/architecture/twilio-media-streams.md#twiml) ---------------------------------------------------------
@dataclass(frozen=True)
class StreamInstruction:
    """What ``<Connect><Stream>`` told Twilio to do."""

    url: str  # exactly as written in the TwiML (after resolving a relative URL): what the upgrade is signed over
    parameters: dict[str, str]
    warnings: tuple[str, ...] = ()


def parse_twiml(body: str, webhook_url: str = "") -> StreamInstruction:
    """Read the webhook's TwiML like Twilio would for a bidirectional stream.

    Raises :class:`CallRefused` when the TwiML answers without a stream (``<Say>``, ``<Hangup>``, ``<Reject>``: the
    gateway declined the call) and :class:`GatewayProtocolError` when it is not TwiML Twilio would accept for one.
    """
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise GatewayProtocolError(f"TwiML is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise GatewayProtocolError(f"TwiML root is <{root.tag}>, not <Response>")
    warnings: list[str] = []
    connects = root.findall("Connect")
    if not connects:
        if root.find("Start/Stream") is not None:
            raise GatewayProtocolError(
                "<Start><Stream> is a one-way fork: the caller would hear nothing "
                "(docs/architecture/twilio-media-streams.md#twiml)"
            )
        said = " ".join((e.text or "").strip() for e in root.iter("Say")).strip()
        verbs = ", ".join(f"<{e.tag}>" for e in root) or "nothing"
        raise CallRefused(f"the gateway answered without a stream ({verbs})" + (f": {said!r}" if said else ""))
    streams = [s for c in connects for s in c.findall("Stream")]
    if len(connects) > 1 or len(streams) != 1:
        raise GatewayProtocolError(
            f"expected exactly one <Connect><Stream>, got {len(streams)} "
            "(docs/architecture/twilio-media-streams.md#twiml)"
        )
    stream = streams[0]
    raw_url = stream.get("url", "").strip()
    if not raw_url:
        raise GatewayProtocolError("<Stream> has no url attribute")
    url = raw_url
    if not urlsplit(raw_url).scheme:
        # A relative url is resolved against the webhook's URL, on the WebSocket scheme.
        base = urlsplit(webhook_url)
        ws_scheme = "wss" if base.scheme in ("https", "wss") else "ws"
        url = urljoin(urlunsplit((ws_scheme, base.netloc, base.path, "", "")), raw_url)
    u = urlsplit(url)
    if u.scheme not in ("wss", "ws"):
        raise GatewayProtocolError(
            f"<Stream url> scheme is {u.scheme!r}; Twilio only opens wss:// "
            "(docs/architecture/twilio-media-streams.md#twiml)"
        )
    if u.scheme == "ws":
        warnings.append("<Stream url> is ws://; real Twilio only opens wss:// (fine for local development)")
    if u.query:
        raise GatewayProtocolError(
            "<Stream url> carries a query string, which Twilio strips; use <Parameter> "
            "(docs/architecture/twilio-media-streams.md#twiml)"
        )
    track = stream.get("track")
    if track is not None and track != "inbound_track":
        raise GatewayProtocolError(
            f"<Stream track={track!r}> under <Connect> is Twilio error 31941 "
            "(docs/architecture/twilio-media-streams.md#twiml)"
        )
    params: dict[str, str] = {}
    for p in stream.findall("Parameter"):
        name, value = p.get("name"), p.get("value")
        if not name or value is None:
            raise GatewayProtocolError("<Parameter> needs both name and value")
        if len(name) + len(value) > PARAMETER_LIMIT:
            warnings.append(
                f"<Parameter name={name!r}> is over ~{PARAMETER_LIMIT} characters "
                "(docs/architecture/twilio-media-streams.md#limits)"
            )
        params[name] = value
    after = list(root)[list(root).index(connects[0]) + 1 :]
    if after:
        warnings.append(
            "verbs after <Connect> (" + ", ".join(f"<{e.tag}>" for e in after) + ") keep the call up after the "
            "socket closes (docs/architecture/twilio-media-streams.md#ending-a-call)"
        )
    return StreamInstruction(url=url, parameters=params, warnings=tuple(warnings))


_LOOPBACK = ("localhost", "::1")


def _is_loopback(host: str | None) -> bool:
    return bool(host) and (host in _LOOPBACK or str(host).startswith("127."))


def resolve_stream_url(twiml_url: str, base_url: str) -> str:
    """Where to actually open the stream.

    The TwiML names the gateway's *public* URL (``wss://voice.example.com/twilio/stream``), which from a developer
    machine may be a tunnel or not exist at all. When the simulator was pointed at a loopback gateway (``--url
    http://127.0.0.1:8080``) and the TwiML names another host, connect to that loopback base with the TwiML's path
    instead (``ws://`` for ``http://``, ``wss://`` for ``https://``). The upgrade is still signed over the TwiML's
    URL, as Twilio does, so the gateway's check sees what it expects.
    """
    t, b = urlsplit(twiml_url), urlsplit(base_url)
    if _is_loopback(b.hostname) and t.netloc != b.netloc:
        return urlunsplit(("wss" if b.scheme == "https" else "ws", b.netloc, t.path, "", ""))
    return twiml_url


# ---- messages (docs/architecture/twilio-media-streams.md#messages-in, #messages-out) ---------------------------------
@dataclass(frozen=True)
class GatewayMedia:
    payload: bytes  # raw μ-law 8 kHz


@dataclass(frozen=True)
class GatewayMark:
    name: str


@dataclass(frozen=True)
class GatewayClear:
    pass


GatewayMessage = GatewayMedia | GatewayMark | GatewayClear

_TOP_KEYS = {"media": {"event", "streamSid", "media"}, "mark": {"event", "streamSid", "mark"},
             "clear": {"event", "streamSid"}}  # fmt: skip


class TwilioSide:
    """Protocol state of Twilio's end of one media stream: builds what Twilio sends, checks what it receives."""

    def __init__(self, *, call_sid: str, account_sid: str, stream_sid: str) -> None:
        self.call_sid = call_sid
        self.account_sid = account_sid
        self.stream_sid = stream_sid
        self.started = False
        self.stopped = False
        self._seq = 0
        self._chunk = 0

    def _next_seq(self) -> str:
        # sequenceNumber counts every message after `connected`, from 1
        # (docs/architecture/twilio-media-streams.md#messages-in).
        self._seq += 1
        return str(self._seq)

    @staticmethod
    def _dump(msg: Mapping[str, object]) -> str:
        return json.dumps(msg, separators=(",", ":"))

    # ---- what Twilio sends -------------------------------------------------------------------------------------
    def connected(self) -> str:
        return self._dump({"event": "connected", "protocol": "Call", "version": "1.0.0"})

    def start(self, custom_parameters: Mapping[str, str]) -> str:
        self.started = True
        return self._dump({
            "event": "start",
            "sequenceNumber": self._next_seq(),
            "start": {
                "accountSid": self.account_sid,
                "streamSid": self.stream_sid,
                "callSid": self.call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": dict(custom_parameters),
            },
            "streamSid": self.stream_sid,
        })  # fmt: skip

    def media(self, payload: bytes, timestamp_ms: int) -> str:
        """One inbound frame. ``timestamp_ms`` is the frame's start in ms since the stream started."""
        self._chunk += 1
        return self._dump({
            "event": "media",
            "sequenceNumber": self._next_seq(),
            "media": {
                "track": "inbound",
                "chunk": str(self._chunk),
                "timestamp": str(timestamp_ms),
                "payload": base64.b64encode(payload).decode("ascii"),
            },
            "streamSid": self.stream_sid,
        })  # fmt: skip

    def mark_echo(self, name: str) -> str:
        return self._dump(
            {"event": "mark", "sequenceNumber": self._next_seq(), "streamSid": self.stream_sid, "mark": {"name": name}}
        )

    def stop(self) -> str:
        self.stopped = True
        return self._dump({
            "event": "stop",
            "sequenceNumber": self._next_seq(),
            "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            "streamSid": self.stream_sid,
        })  # fmt: skip

    # ---- what Twilio accepts -----------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> GatewayMessage:
        """Check one message from the gateway. Raises :class:`GatewayProtocolError` for anything Twilio would flag."""
        if isinstance(data, bytes):
            raise GatewayProtocolError("binary frame from the gateway (Twilio error 31950: JSON text only)")
        if not self.started:
            raise GatewayProtocolError(
                "message from the gateway before 'start' (there is no streamSid yet, "
                "docs/architecture/twilio-media-streams.md#before-start)"
            )
        try:
            msg = json.loads(data)
        except ValueError as exc:
            raise GatewayProtocolError(f"message is not JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise GatewayProtocolError("message is not a JSON object (31951)")
        event = msg.get("event")
        if event not in _TOP_KEYS:
            raise GatewayProtocolError(f"unknown event {event!r} from the gateway (31951)")
        if msg.get("streamSid") != self.stream_sid:
            raise GatewayProtocolError(f"{event}: streamSid {msg.get('streamSid')!r} is not this stream's (31951)")
        extra = set(msg) - _TOP_KEYS[event]
        missing = _TOP_KEYS[event] - set(msg)
        if extra or missing:
            raise GatewayProtocolError(
                f"{event}: unexpected shape (extra {sorted(extra)}, missing {sorted(missing)}) (31951)"
            )
        if event == "media":
            media = msg["media"]
            if (
                not isinstance(media, dict)
                or not isinstance(media.get("payload"), str)
                or set(media) - {"payload", "track"}
            ):
                raise GatewayProtocolError("media: expected {'payload': base64} (31951)")
            try:
                payload = base64.b64decode(media["payload"], validate=True)
            except (binascii.Error, ValueError):
                raise GatewayProtocolError("media.payload is not valid base64") from None
            if not payload:
                raise GatewayProtocolError("media.payload is empty")
            return GatewayMedia(payload)
        if event == "mark":
            mark = msg["mark"]
            if not isinstance(mark, dict) or set(mark) != {"name"} or not isinstance(mark["name"], str):
                raise GatewayProtocolError("mark: expected {'name': string} (31951)")
            return GatewayMark(mark["name"])
        return GatewayClear()


# ---- playout (docs/architecture/twilio-media-streams.md#ordering) ----------------------------------------------------
@dataclass(frozen=True)
class Cleared:
    """What a ``clear`` did: how much unplayed audio it dropped and which pending marks it echoed."""

    dropped_bytes: int
    marks: tuple[str, ...]


@dataclass
class PlayoutBuffer:
    """Twilio's FIFO playout buffer for one stream, advanced one 20 ms frame per :meth:`tick`.

    Invariant: a mark is returned for echoing only when every byte of audio queued before it has been handed out
    by a tick whose 20 ms have elapsed, i.e. it "has played" (docs/architecture/twilio-media-streams.md#mark-echo).
    """

    _items: deque[bytes | str] = field(default_factory=deque)  # audio chunks (bytes) and mark names (str)
    _queued_bytes: int = 0
    #: True while the frame handed out by the last tick carried agent audio (it is still playing until the next tick).
    _playing: bool = False
    #: Marks passed inside the frame now playing: due when it has played.
    _due_next: list[str] = field(default_factory=list)

    @property
    def queued_bytes(self) -> int:
        return self._queued_bytes

    @property
    def pending_marks(self) -> int:
        return len(self._due_next) + sum(1 for i in self._items if isinstance(i, str))

    def push_audio(self, ulaw: bytes) -> None:
        if ulaw:
            self._items.append(ulaw)
            self._queued_bytes += len(ulaw)

    def push_mark(self, name: str) -> list[str]:
        """Queue a mark; returns ``[name]`` if it must be echoed right away (nothing queued or playing)."""
        if not self._items and not self._playing:
            return [name]
        self._items.append(name)
        return []

    def clear(self) -> Cleared:
        """Drop every unplayed byte; every pending mark is echoed at once
        (docs/architecture/twilio-media-streams.md#marks-and-clear)."""
        marks = tuple(self._due_next) + tuple(i for i in self._items if isinstance(i, str))
        dropped = self._queued_bytes
        self._items.clear()
        self._due_next = []
        self._queued_bytes = 0
        return Cleared(dropped, marks)

    def tick(self) -> tuple[bytes, bool, list[str]]:
        """Advance one frame. Returns (the 160 bytes that play now, whether any of it is agent audio, the marks
        whose preceding audio finished playing as the previous frame ended, to echo now)."""
        due = self._due_next + self._pop_marks()
        self._due_next = []
        frame = bytearray()
        while len(frame) < FRAME_BYTES and self._items:
            item = self._items.popleft()
            if isinstance(item, str):
                # A mark in the middle of this frame: the audio before it has played once this frame has.
                self._due_next.append(item)
                continue
            take = FRAME_BYTES - len(frame)
            frame += item[:take]
            if len(item) > take:
                self._items.appendleft(item[take:])
        self._queued_bytes -= len(frame)
        had_audio = bool(frame)
        self._playing = had_audio
        if len(frame) < FRAME_BYTES:
            frame += SILENCE_FRAME[: FRAME_BYTES - len(frame)]  # an underrun plays as silence
        if not had_audio:
            due += self._due_next  # nothing is playing: marks reached this tick are due now
            self._due_next = []
        return bytes(frame), had_audio, due

    def _pop_marks(self) -> list[str]:
        due: list[str] = []
        while self._items and isinstance(self._items[0], str):
            name = self._items.popleft()
            assert isinstance(name, str)
            due.append(name)
        return due

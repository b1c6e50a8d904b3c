"""Asterisk AudioSocket: the framing of its TCP stream, the UUIDs the gateway issues for it, and its settings. Pure.

What Asterisk does, and what this module does with it (docs/how-to/pbx/asterisk-audiosocket.md#protocol):

- Asterisk opens one **TCP** connection per call to the gateway (the ``AudioSocket()`` dialplan application, the
  ``AudioSocket/`` channel driver, or ARI ``externalMedia`` with ``encapsulation=audiosocket``). There is no TLS and
  no credential on it: the only identifier is a UUID the dialplan chose. So the gateway **issues** that UUID: the
  dialplan fetches it first with ``CURL()`` from ``GET /audiosocket/calls`` (:class:`IssuedCalls`: a time-to-live,
  single use, bound to the call's numbers and the per-call token), or the PBX's source network is in
  ``carriers.audiosocket.allowed_networks``.
- Every frame, both ways, is a 1-byte **kind**, a 2-byte big-endian payload **length**, then the payload.
  Asterisk sends: ``0x01`` the UUID (16 raw bytes, first and once), ``0x10`` audio (16-bit signed little-endian
  mono at 8 kHz; ``0x11``–``0x13`` at 12/16/24 kHz from Asterisk 20.17/21.12/22.7/23.1 with the channel driver's
  ``c(slin16)``…), ``0x03`` a DTMF digit (one ASCII byte, Asterisk 20.14/21.9/22.4/23.0 and later). It never sends
  ``0x00`` (hang-up) or ``0xff`` (error): its hang-up is the TCP connection closing.
- We send audio frames of the same kind and rate, one 20 ms frame per write, and ``0x00`` with no payload to hang up.
  Asterisk ends the call on any other kind from us, on an empty audio frame and on an odd length.
- **Asterisk has no playout buffer**: it writes each frame to the channel the moment it arrives. So the gateway
  paces (20 ms frames, at most :data:`MAX_LEAD_MS` ahead) and a barge-in is our own queue dropped: there is no
  ``clear`` to send (:meth:`AudioSocketStream.build_clear` is empty) and no mark to echo (the session resolves marks
  from its clock).

The dialect is a byte-stream parser in the sans-I/O style: :meth:`AudioSocketStream.parse` takes whatever bytes the
socket gave (part of a frame, several frames) and returns the events of the frames it completed; ``parse(b"")`` is
the end of the stream. Anything malformed (an unknown kind, a frame longer than allowed, a truncated frame at the
end, a UUID that is not 16 bytes, audio of another rate than configured) is a
:class:`~gateway.errors.CarrierProtocolError`: that call ends, no other.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import struct
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ..errors import CallEnded, CarrierProtocolError, LocalProtocolError, Outcome
from .base import FRAME_MS, require_dtmf
from .events import AudioReceived, CarrierEvent, DtmfReceived, StreamStarted, StreamStopped
from .spec import (
    Answer,
    AnswerContext,
    Call,
    CarrierDoor,
    CarrierSpec,
    Door,
    Malformed,
    Refusal,
    Secret,
    Upgrade,
    Webhook,
)

__all__ = [
    "AUDIO_KINDS",
    "HANGUP_FRAME",
    "KIND_AUDIO_8K",
    "KIND_DTMF",
    "KIND_ERROR",
    "KIND_HANGUP",
    "KIND_UUID",
    "MAX_AUDIO_MS",
    "MAX_LEAD_MS",
    "SPEC",
    "AudioSocketSettings",
    "AudioSocketStream",
    "IssuedCalls",
    "frame",
    "network_allowed",
    "presents_secret",
]

KIND_HANGUP = 0x00
KIND_UUID = 0x01
KIND_DTMF = 0x03
KIND_AUDIO_8K = 0x10
KIND_ERROR = 0xFF
#: Signed-linear audio kinds by sample rate (only the rates the gateway converts are accepted in config).
AUDIO_KINDS = {8000: 0x10, 12000: 0x11, 16000: 0x12, 24000: 0x13, 32000: 0x14, 44100: 0x15, 48000: 0x16}
_AUDIO_KIND_RATE = {kind: rate for rate, kind in AUDIO_KINDS.items()} | {0x17: 96000, 0x18: 192000}
SAMPLE_RATES = (8000, 16000, 24000)
#: The longest audio frame we take: Asterisk sends one core frame per write (20 ms unless the caller's ptime says
#: otherwise); anything far longer is not Asterisk.
MAX_AUDIO_MS = 200
#: The most of our audio ahead of real time: one frame in flight besides the one playing. Asterisk plays what it
#: receives at once, so this is all a barge-in can leak (docs/how-to/pbx/asterisk-audiosocket.md#barge-in).
MAX_LEAD_MS = 2 * FRAME_MS
#: The hang-up frame: kind 0x00, no payload.
HANGUP_FRAME = b"\x00\x00\x00"
_HEADER = struct.Struct(">BH")


def frame(kind: int, payload: bytes = b"") -> bytes:
    """One AudioSocket frame (header and payload, to be written in one send)."""
    return _HEADER.pack(kind, len(payload)) + payload


class AudioSocketStream:
    """Protocol state of one AudioSocket connection (a :class:`~gateway.carriers.base.Dialect` over a byte stream).

    ``credentials(uuid)``: what the listener knows about that UUID (the per-call ``token``, ``from``, ``to``), or
    None; it becomes the stream's custom parameters, so the session's usual token check admits or refuses the call.
    ``sample_rate``: the rate the dialplan asked for (``carriers.audiosocket.sample_rate``); audio of another kind is
    a protocol error, since the agent's transcoder was set up for this one."""

    carrier = "audiosocket"
    min_message_ms = FRAME_MS
    max_message_ms = FRAME_MS  # one 20 ms frame per write: Asterisk reads a frame's payload within 5 ms
    max_lead_ms: int | None = MAX_LEAD_MS
    silence = 0x00

    def __init__(
        self, sample_rate: int = 8000, credentials: Callable[[str], Mapping[str, str] | None] | None = None
    ) -> None:
        if sample_rate not in AUDIO_KINDS:
            raise LocalProtocolError(f"AudioSocket has no audio kind for {sample_rate} Hz")
        self.sample_rate = sample_rate
        self.encoding = "audio/pcm"
        self.frame_bytes = sample_rate * FRAME_MS // 1000 * 2
        self.audio_kind = AUDIO_KINDS[sample_rate]
        self.max_audio_bytes = sample_rate * MAX_AUDIO_MS // 1000 * 2
        self._credentials = credentials or (lambda _uuid: None)
        self._pending = b""  # the start of a frame whose rest has not arrived yet
        self.stream_id: str | None = None
        self.stopped = False

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        """The events of every frame ``data`` completes (``b""``: the connection's end)."""
        if isinstance(data, str):  # pragma: no cover - a TCP stream carries bytes only
            raise CarrierProtocolError("AudioSocket carries binary frames only")
        if not data:
            return self._end_of_stream()
        if self._pending:
            data = self._pending + data
            self._pending = b""
        events: list[CarrierEvent] = []
        pos, n = 0, len(data)
        while n - pos >= 3:
            kind, length = _HEADER.unpack_from(data, pos)
            self._check_header(kind, length)  # at once: an oversized frame is refused before its payload arrives
            end = pos + 3 + length
            if end > n:
                break
            event = self._frame(kind, data[pos + 3 : end])
            if event is not None:
                events.append(event)
            pos = end
        if pos < n:
            self._pending = data[pos:]
        return events

    def _check_header(self, kind: int, length: int) -> None:
        if self.stopped:
            raise CarrierProtocolError(f"frame of kind 0x{kind:02x} after the hang-up frame")
        if self.stream_id is None and kind != KIND_UUID:
            raise CarrierProtocolError(f"frame of kind 0x{kind:02x} before the UUID frame")
        if kind == self.audio_kind:
            if length > self.max_audio_bytes:
                raise CarrierProtocolError(
                    f"audio frame of {length} bytes (over {MAX_AUDIO_MS} ms at {self.sample_rate} Hz)"
                )
        elif kind == KIND_UUID:
            if length != 16:
                raise CarrierProtocolError(f"UUID frame of {length} bytes (a UUID is 16)")
        elif kind == KIND_DTMF:
            if length != 1:
                raise CarrierProtocolError(f"DTMF frame of {length} bytes (one digit is 1)")
        elif kind == KIND_HANGUP:
            if length:
                raise CarrierProtocolError(f"hang-up frame with a {length}-byte payload")
        elif kind in _AUDIO_KIND_RATE:
            raise CarrierProtocolError(
                f"audio at {_AUDIO_KIND_RATE[kind]} Hz (kind 0x{kind:02x}) on a stream set up for "
                f"{self.sample_rate} Hz (carriers.audiosocket.sample_rate must match the dialplan's format)"
            )
        elif kind != KIND_ERROR:
            raise CarrierProtocolError(f"unknown frame kind 0x{kind:02x}")

    def _frame(self, kind: int, payload: bytes) -> CarrierEvent | None:
        if kind == self.audio_kind:
            if not payload or len(payload) % 2:
                raise CarrierProtocolError(f"audio frame of {len(payload)} bytes (16-bit samples, not empty)")
            return AudioReceived(payload)
        if kind == KIND_DTMF:
            return DtmfReceived(require_dtmf(chr(payload[0]), "DTMF frame"))
        if kind == KIND_UUID:
            if self.stream_id is not None:
                raise CarrierProtocolError("second UUID frame on one connection")
            call_uuid = str(uuid.UUID(bytes=payload))
            self.stream_id = call_uuid
            params = dict(self._credentials(call_uuid) or {})
            return StreamStarted(
                stream_id=call_uuid,
                call_id=call_uuid,
                account_id="",
                encoding=self.encoding,
                sample_rate=self.sample_rate,
                custom_parameters=params,
            )
        if kind == KIND_HANGUP:
            self.stopped = True
            return StreamStopped(self.stream_id or "")
        # KIND_ERROR: Asterisk never sends one; whoever did, the call cannot go on.
        code = f" (code 0x{payload.hex()})" if payload else ""
        raise CarrierProtocolError(f"error frame from the PBX{code}")

    def _end_of_stream(self) -> list[CarrierEvent]:
        """The connection closed: Asterisk's hang-up, unless it cut a frame short."""
        if self._pending:
            got = len(self._pending)
            if got >= 3:
                _, length = _HEADER.unpack_from(self._pending)
                raise CarrierProtocolError(f"connection closed inside a frame: {got - 3} of its {length} bytes came")
            raise CarrierProtocolError(f"connection closed inside a frame header ({got} of 3 bytes)")
        if self.stream_id is None:
            # Connected and closed without a UUID: the AudioSocket application does that when the channel is not up.
            raise CallEnded(Outcome.CARRIER_CLOSED)
        if self.stopped:
            return []
        self.stopped = True
        return [StreamStopped(self.stream_id)]

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> bytes:
        if self.stream_id is None:
            raise LocalProtocolError("cannot send audio to AudioSocket before its UUID frame")
        return _HEADER.pack(self.audio_kind, len(payload)) + payload

    def build_mark(self, name: str) -> None:
        return None  # no checkpoint verb: the session's clock model resolves marks

    def build_clear(self) -> bytes:
        return b""  # no buffer at Asterisk to clear: dropping our own queue is the barge-in


# ---- issued UUIDs --------------------------------------------------------------------------------------------------
class IssuedCalls:
    """The UUIDs the gateway handed to the dialplan, each with the call's parameters (``token``, ``from``, ``to``),
    until it connects (single use) or its time-to-live passes. Bounded: beyond ``limit`` the oldest goes."""

    def __init__(self, ttl_s: float, limit: int = 10000) -> None:
        self.ttl_s = ttl_s
        self.limit = limit
        self._calls: OrderedDict[str, tuple[float, dict[str, str]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._calls)

    def issue(self, call_uuid: str, params: Mapping[str, str], now: float) -> None:
        self._expire(now)
        while len(self._calls) >= self.limit:
            self._calls.popitem(last=False)
        self._calls[call_uuid] = (now + self.ttl_s, dict(params))

    def claim(self, call_uuid: str, now: float) -> dict[str, str] | None:
        """The parameters issued with ``call_uuid``, once; None if it was never issued, was used or expired."""
        self._expire(now)
        entry = self._calls.pop(call_uuid, None)
        return entry[1] if entry is not None else None

    def _expire(self, now: float) -> None:
        calls = self._calls
        while calls:
            key, (expires, _) = next(iter(calls.items()))
            if expires > now:
                break
            del calls[key]


def network_allowed(remote: str | None, networks: Iterable[str]) -> bool:
    """True if ``remote`` is inside one of ``networks`` (addresses or CIDRs)."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in ipaddress.ip_network(net, strict=False) for net in networks)


# ---- the carrier ---------------------------------------------------------------------------------------------------
UUID_PATH = "/audiosocket/calls"


@dataclass(frozen=True)
class AudioSocketSettings(CarrierDoor):
    """``[carriers.audiosocket]``: ``listen``, the TCP address Asterisk connects to (``"0.0.0.0:9092"``; empty:
    no listener, the default); ``sample_rate`` of the audio the dialplan asks for (8000 for the ``AudioSocket()``
    application, 16000 or 24000 with the channel driver's ``c(slin16)``/``c(slin24)``); ``allowed_networks``, PBX
    source networks whose connections need no issued UUID (addresses or CIDRs); ``uuid_ttl_s``, how long an issued
    UUID waits for its connection."""

    listen: str = ""
    sample_rate: int = 8000
    allowed_networks: tuple[str, ...] = ()
    uuid_ttl_s: float = 30.0


def parse_listen(listen: str) -> tuple[str, int]:
    """``"host:port"`` (IPv6 in brackets) → (host, port); ValueError otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{listen!r} is not host:port")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host:
        raise ValueError(f"{listen!r} has no host")
    return host, int(port)


def _authenticated(door: Door[AudioSocketSettings]) -> bool:
    return bool(door.secret("secret") or door.options.allowed_networks)


def _verify(hook: Webhook, door: Door[AudioSocketSettings]) -> Refusal | None:
    """The UUID endpoint: ``AUDIOSOCKET_SECRET`` as the password of Basic auth (``CURLOPT(userpwd)``) or as a Bearer
    token, or a source address in ``allowed_networks``."""
    secret = door.secret("secret")
    if presents_secret(hook.headers.get("Authorization", ""), secret):
        return None
    if door.options.allowed_networks and network_allowed(hook.remote, door.options.allowed_networks):
        return None
    return Refusal("bad credentials")


def presents_secret(authorization: str, secret: str) -> bool:
    """``Authorization`` carries ``secret`` as a Bearer token or as the password of Basic auth (any user: what a
    PBX's HTTP client can send from its dialplan). False for an empty secret."""
    if not secret:
        return False
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() == "bearer":
        return hmac.compare_digest(value.strip().encode(), secret.encode())
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(decoded.partition(":")[2].encode(), secret.encode())
    return False


def _read_call(hook: Webhook) -> Call | Malformed:
    """The numbers the dialplan passes (``?from=${CALLERID(num)}&to=${EXTEN}``); the call's id (its UUID) is ours to
    choose, so it is left empty here."""
    fields = {**hook.query, **{k: v[0] for k, v in hook.form.items() if v}}
    return Call("", called=fields.get("to", ""), caller=fields.get("from", ""))


def _answer(call: Call, ctx: AnswerContext[AudioSocketSettings]) -> Answer:
    return Answer(call.call_id, "text/plain")  # CURL() puts the body in a dialplan variable: the UUID alone


def _busy(text: str) -> Answer:
    return Answer("", "text/plain", 503)  # an empty UUID: the dialplan plays congestion instead


def _dialect(
    upgrade: Upgrade,
) -> AudioSocketStream:  # pragma: no cover - no WebSocket door (gateway.audiosocket_server)
    return AudioSocketStream()


def _check(door: Door[AudioSocketSettings]) -> Iterator[tuple[str, str]]:
    o = door.options
    if o.listen:
        try:
            parse_listen(o.listen)
        except ValueError as exc:
            yield "carriers.audiosocket.listen", str(exc)
    if o.sample_rate not in SAMPLE_RATES:
        yield "carriers.audiosocket.sample_rate", "must be 8000, 16000 or 24000"
    for i, net in enumerate(o.allowed_networks):
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            yield f"carriers.audiosocket.allowed_networks[{i}]", f"{net!r} is not an address or CIDR"
    if not 1.0 <= o.uuid_ttl_s <= 3600.0:
        yield "carriers.audiosocket.uuid_ttl_s", "must be 1..3600"


SPEC: CarrierSpec[AudioSocketSettings] = CarrierSpec(
    name="audiosocket",
    options=AudioSocketSettings,
    secrets=(Secret("secret", "AUDIOSOCKET_SECRET"),),
    webhook_path=UUID_PATH,
    webhook_methods=("GET", "POST"),
    stream_path="",
    webhook_body="form",
    verify=_verify,
    read_call=_read_call,
    answer=_answer,
    busy=_busy,
    dialect=_dialect,
    authenticated=_authenticated,
    credential="AUDIOSOCKET_SECRET or carriers.audiosocket.allowed_networks",
    check=_check,
    served_by="gateway.audiosocket_server",
)

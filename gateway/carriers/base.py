"""What every carrier dialect is, the state the JSON dialects share (:class:`NegotiatedFormat`,
:class:`StreamDialect`) and the small pure helpers they use. Pure.

A **dialect** is the protocol state of one carrier media stream (one WebSocket, one call). It turns what the carrier
sends into the carrier-neutral events of :mod:`gateway.carriers.events` and builds what we send back. It never
touches a socket, a clock or the environment (docs/architecture/index.md; docs/architecture/code-layout.md);
:class:`gateway.session.CallSession` is the only caller.

The :class:`Dialect` protocol (one internal event model, one dialect per carrier;
docs/how-to/carriers/adding-a-carrier.md):

``carrier``
    The carrier's name as used in routes, config, logs and metrics (``"twilio"``, ``"signalwire"``, …).
``frame_bytes``
    Bytes of one 20 ms outbound frame in the stream's encoding (160 for 8 kHz G.711, 640 for 16 kHz PCM16…). For
    carriers that negotiate the format in their first message it is valid once ``start`` has been parsed.
``min_message_ms`` / ``max_message_ms``
    Bounds on the audio in one outbound media message, in ms (multiples of 20). Exotel needs ≥ 100 ms, Vonage
    takes exactly one 20 ms frame per binary message, Telnyx RTP mode 20 ms – 30 s. The session coalesces whole
    frames to at least ``min_message_ms`` (padding the tail of a reply with silence) and at most ``max_message_ms``.
``max_lead_ms``
    The most audio the carrier will buffer for us; the session's pacing never queues more (Vonage holds 3072
    messages ≈ 61 s; docs/how-to/carriers/vonage.md#protocol). ``None``: no documented limit.
``silence``
    One byte of silence in the outbound encoding (μ-law 0xFF, A-law 0xD5, PCM 0x00), used to pad messages.
``parse(data)``
    One WebSocket message (``str`` for text frames, ``bytes`` for binary) → the events it carries, in order. Usually
    one; none for a message that only buffers (an out-of-order Telnyx frame held for reordering); several when a late
    frame releases the frames held behind it. Raises :class:`~gateway.errors.CarrierProtocolError` for anything
    malformed or out of order (the carrier broke its protocol).
``audio_frame(data)`` (optional)
    The steady state's one message, fast: the payload of ``data`` when ``parse`` would return it as one
    :class:`~gateway.carriers.events.AudioReceived` of whole frames and nothing else, else ``None`` (then ``parse``
    takes the message). It builds no event: the call reads this 50 times a second and needs only the audio. A dialect
    without it has every message parsed (docs/architecture/performance.md#audio-frame).
``build_media(payload)``
    Whole frames of outbound audio (raw bytes in the stream's encoding) → the message to send: ``str`` for a text
    frame, ``bytes`` for a binary frame (Vonage). Building before ``start`` is our bug: ``LocalProtocolError``.
``media_template()`` (optional)
    For a text media message that is a fixed text around the payload's base64 (Twilio's), that text as UTF-8: the
    bytes before the base64 and after it, once ``start`` has been parsed (else ``None``). ``build_media`` of one
    frame must then be exactly those bytes around its base64: the compiled message lane builds the steady state's
    message itself from them (docs/architecture/performance.md#message-lane). A dialect without it has every message
    built by ``build_media``.
``build_mark(name)``
    A checkpoint the carrier echoes once everything sent before it has played, or ``None`` when the carrier has no
    checkpoint verb: the session then resolves the mark from its own clock model of the carrier's buffer.
``build_clear()``
    Drop everything queued at the carrier (barge-in). How the carrier acknowledges it: Plivo and Vonage send a
    message that parses to :class:`~gateway.carriers.events.PlaybackCleared`; Twilio-style carriers send nothing
    but flushed mark echoes (:class:`~gateway.carriers.events.PlaybackCheckpoint` of a cleared generation).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import msgspec
import numpy as np
from pybase64 import b64encode_as_string

from ..errors import CarrierProtocolError, LocalProtocolError
from .events import AudioReceived, CarrierEvent, MediaFault

__all__ = [
    "FRAME_MS",
    "e164_from_digits",
    "SAFE_ID",
    "SILENCE_BYTE",
    "Dialect",
    "NegotiatedFormat",
    "StreamDialect",
    "b64",
    "b64_payload",
    "check_in_stream",
    "dumps",
    "frame_bytes_for",
    "MEDIA_FAULTS",
    "screen_media",
    "json_object",
    "obj",
    "opt_int",
    "pcm16_swap",
    "require_dtmf",
    "require_str",
    "string_map",
]

#: The session's unit of outbound audio.
FRAME_MS = 20
#: Silence in each outbound encoding (the agent protocol's names).
SILENCE_BYTE = {"audio/pcmu": 0xFF, "audio/pcma": 0xD5, "audio/pcm": 0x00}
_BYTES_PER_SAMPLE = {"audio/pcmu": 1, "audio/pcma": 1, "audio/pcm": 2}
#: Identifiers we template into JSON or log: carriers use SIDs, UUIDs and ``v3:…`` call control ids.
SAFE_ID = re.compile(r"[A-Za-z0-9_\-:.]{1,128}")
_DTMF = frozenset("0123456789*#ABCDabcd")


@runtime_checkable
class Dialect(Protocol):
    """The protocol state of one carrier media stream (see the module docstring for every member)."""

    carrier: str
    frame_bytes: int
    min_message_ms: int
    max_message_ms: int
    max_lead_ms: int | None

    @property
    def silence(self) -> int: ...

    def parse(self, data: str | bytes) -> list[CarrierEvent]: ...

    def build_media(self, payload: bytes) -> str | bytes: ...

    def build_mark(self, name: str) -> str | bytes | None: ...

    def build_clear(self) -> str | bytes: ...


# ---- media payloads that are not what the carrier's docs say one is -----------------------------------------------
#: Each fault and whether its payload is refused (docs/how-to/carriers/index.md#media-faults). No carrier documents
#: an empty media payload (it carries no audio), and every L16 carrier documents whole 16-bit samples: half a sample
#: cannot be placed, and carrying its byte over would shift every later sample, so both are dropped. A payload that is
#: not a whole number of 20 ms frames is still audio (the pipeline is length-agnostic): passed on, counted, because
#: every carrier here documents (or, for Twilio, is seen to send) 20 ms framing, Exotel multiples of it.
MEDIA_FAULTS = {"empty": True, "odd_length": True, "mis_sized": False}


def screen_media(
    ev: AudioReceived, encoding: str, frame_bytes: int, counts: dict[str, int]
) -> list[CarrierEvent] | None:
    """None when ``ev``'s payload is a whole number of 20 ms frames (the common case: the caller passes it on);
    else the events to hand on instead: the payload unless refused, after a :class:`MediaFault` the first time its
    reason shows up on this stream. Every fault is counted in ``counts`` (the dialect's ``media_faults``)."""
    n = len(ev.payload)
    if n and n % frame_bytes == 0:
        return None
    reason = "empty" if not n else "odd_length" if encoding == "audio/pcm" and n % 2 else "mis_sized"
    first = reason not in counts
    counts[reason] = counts.get(reason, 0) + 1
    refused = MEDIA_FAULTS[reason]
    out: list[CarrierEvent] = [MediaFault(reason, n, refused)] if first else []
    if not refused:
        out.append(ev)
    return out


# ---- state the JSON dialects share ---------------------------------------------------------------------------------
class NegotiatedFormat:
    """The audio format a stream negotiates in its first message (``start``, ``websocket:connected``), and the
    per-call values that reached us outside it (``transport_params``: a URL path segment, the upgrade's query
    string), which override what the carrier's own message says."""

    def __init__(self, transport_params: Mapping[str, str] | None, encoding: str, sample_rate: int) -> None:
        self._transport_params = dict(transport_params or {})
        self._negotiate(encoding, sample_rate)
        #: Media payloads that were not whole 20 ms frames, by reason (:data:`MEDIA_FAULTS`).
        self.media_faults: dict[str, int] = {}

    @property
    def transport_params(self) -> Mapping[str, str]:
        """The per-call values that reached us outside the carrier's messages (they override its own)."""
        return self._transport_params

    @property
    def silence(self) -> int:
        return SILENCE_BYTE[self.encoding]

    def _negotiate(self, encoding: str, sample_rate: int) -> None:
        """The stream's audio from now on: both directions use it, and 20 ms of it is ``frame_bytes``."""
        self.encoding = encoding
        self.sample_rate = sample_rate
        self.frame_bytes = frame_bytes_for(encoding, sample_rate)

    def _custom_parameters(self, from_carrier: Mapping[str, str]) -> dict[str, str]:
        """What ``StreamStarted.custom_parameters`` carries: the carrier's values, then ours on top."""
        return {**from_carrier, **self._transport_params}


class StreamDialect(NegotiatedFormat):
    """A JSON media stream with ids: nothing before its start message, nothing after ``stop``, every message naming
    this stream, and nothing sent before the start gave us the stream's id (a :class:`Dialect` once the subclass
    adds ``parse`` and the builders). Subclasses set ``carrier``, ``label`` (the carrier as error messages name
    it) and, when it is not ``'start'``, ``started_by``."""

    carrier: str = ""
    label: str = ""
    started_by: str = "'start'"
    min_message_ms: int = FRAME_MS
    max_message_ms: int = 1000
    max_lead_ms: int | None = None

    def __init__(
        self, transport_params: Mapping[str, str] | None = None, encoding: str = "audio/pcmu", sample_rate: int = 8000
    ) -> None:
        super().__init__(transport_params, encoding, sample_rate)
        self.stream_id: str | None = None
        self.call_id: str | None = None
        self.stopped = False

    def _first_start(self) -> None:
        if self.stream_id is not None:
            raise CarrierProtocolError("second 'start' on one stream")

    def _started(self, stream_id: str, call_id: str, encoding: str, sample_rate: int) -> None:
        self.stream_id, self.call_id = stream_id, call_id
        self._negotiate(encoding, sample_rate)

    def _in_stream(self, event: Any, got: Any, field: str) -> None:
        check_in_stream(event, self.stream_id, self.stopped, got, field)

    def _sid(self) -> str:
        """This stream's id, for what we send; sending before the start message is our bug, not the carrier's."""
        if self.stream_id is None:
            raise LocalProtocolError(f"cannot send to {self.label} before {self.started_by}")
        return self.stream_id


# ---- helpers shared by the JSON dialects -----------------------------------------------------------------------
def frame_bytes_for(encoding: str, sample_rate: int) -> int:
    """Bytes of 20 ms of mono audio in ``encoding`` at ``sample_rate``."""
    return sample_rate * FRAME_MS // 1000 * _BYTES_PER_SAMPLE[encoding]


def json_object(data: str | bytes, carrier: str) -> dict[str, Any]:
    """A text frame holding one JSON object, or :class:`CarrierProtocolError`."""
    if isinstance(data, bytes):
        raise CarrierProtocolError(f"binary frame ({carrier} sends JSON text only)")
    try:
        msg = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise CarrierProtocolError(f"invalid JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise CarrierProtocolError("message is not a JSON object")
    return msg


def obj(msg: dict[str, Any], key: str) -> dict[str, Any]:
    value = msg.get(key)
    if not isinstance(value, dict):
        raise CarrierProtocolError(f"'{msg.get('event')}' message without a '{key}' object")
    return value


def require_str(o: dict[str, Any], key: str, where: str) -> str:
    value = o.get(key)
    if not isinstance(value, str) or not value:
        raise CarrierProtocolError(f"{where}.{key} missing or not a string")
    return value


#: The longest digit string read as a number (a sequence counter or timestamp: 10**18 ms is 31 million years);
#: longer is unknown, never handed to int(), which refuses more than 4,300 digits with a ValueError.
MAX_DIGITS = 18


def opt_int(value: Any) -> int | None:
    """Carriers send numbers as strings (``"5"``) or numbers; anything else is ``None``. ASCII digits only, at most
    :data:`MAX_DIGITS` of them."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= MAX_DIGITS:
        return int(value)
    return None


def b64_payload(o: dict[str, Any], where: str) -> bytes:
    payload = o.get("payload")
    if not isinstance(payload, str):
        raise CarrierProtocolError(f"{where}.payload missing")
    try:
        return base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise CarrierProtocolError(f"{where}.payload is not valid base64") from None


#: ``b64(payload) -> str``: standard base64 with padding, as every carrier's media payload is. pybase64's encoder
#: itself, not a wrapper: it runs for every outbound frame (SIMD, and the text directly;
#: docs/architecture/performance.md#base64).
b64 = b64encode_as_string


def check_in_stream(event: Any, stream_id: str | None, stopped: bool, got: Any, field: str) -> None:
    """The ordering rules every JSON stream dialect shares: nothing before ``start``, nothing after ``stop``, and
    every message names this stream (``field`` is the carrier's spelling: ``streamSid``, ``stream_sid``…)."""
    if stream_id is None:
        raise CarrierProtocolError(f"'{event}' before 'start'")
    if stopped:
        raise CarrierProtocolError(f"'{event}' after 'stop'")
    if got != stream_id:
        raise CarrierProtocolError(f"{field} {got!r} does not match this stream")


def string_map(value: Any, where: str) -> dict[str, str]:
    """A JSON object of strings to strings (custom parameters); absent or null is empty."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise CarrierProtocolError(f"{where} must map strings to strings")
    return dict(value)


def require_dtmf(digit: Any, where: str) -> str:
    if not isinstance(digit, str) or len(digit) != 1 or digit not in _DTMF:
        raise CarrierProtocolError(f"{where} {digit!r} is not a DTMF digit")
    return digit


_encode = msgspec.json.Encoder().encode


def dumps(msg: dict[str, Any]) -> str:
    """A message to a carrier as compact JSON (media, marks, clears: some dialects build one per frame). msgspec's
    encoder, a tenth of ``json.dumps``'s time; it writes non-ASCII text as UTF-8 rather than ``\\u`` escapes, the same
    JSON value. A lone surrogate (which only a carrier's own escaped text can bring, in an id it sent us) is not
    UTF-8: ``json.dumps`` escapes it, as before."""
    try:
        return _encode(msg).decode()
    except UnicodeEncodeError:
        return json.dumps(msg, separators=(",", ":"))


def pcm16_swap(data: bytes) -> bytes:
    """Big-endian ↔ little-endian 16-bit samples. L16 as an RTP payload is in network byte order (RFC 3551 §4.5.11),
    the transcoder's ``audio/pcm`` is little-endian."""
    if len(data) % 2:
        raise CarrierProtocolError(f"16-bit PCM payload of odd length {len(data)}")
    return np.frombuffer(data, dtype=">i2").astype("<i2").tobytes()


def e164_from_digits(number: str) -> str:
    """A number a carrier sends as digits only (Plivo's extraHeaders, Vonage's answer) with its ``+`` back, so it
    matches ``[numbers]`` keys and the profile a stream token is bound to; anything else unchanged."""
    return "+" + number if number.isdigit() else number

"""What every simulated carrier side shares: the types the caller drives them through (:class:`CarrierSide`,
:class:`CallIds`, :class:`WebhookRequest`, :class:`StreamTarget`), the audio conversion at the carrier's edge
(:class:`Codec`) and strict readers of what the gateway sends. Pure: no sockets, no clock, no environment.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from xml.etree import ElementTree

import numpy as np

from ...audio import g711
from ..errors import CallRefused, GatewayProtocolError
from ..twilio_side import GatewayMessage

__all__ = [
    "ASSUMED_L16_ORDER",
    "L16_BYTE_ORDERS",
    "TELNYX_L16",
    "CallIds",
    "CarrierSide",
    "Codec",
    "FrameResampler",
    "GatewayHangup",
    "SideOptions",
    "Message",
    "StreamTarget",
    "WebhookRequest",
    "b64",
    "check_shape",
    "dumps",
    "json_message",
    "refusal_of",
    "swap16",
    "unb64",
    "warn_once",
    "xml_root",
]

Message = str | bytes


@dataclass(frozen=True)
class GatewayHangup:
    """The gateway hangs up in-band before it closes (AudioSocket's ``00 00 00``)."""


@dataclass(frozen=True)
class CallIds:
    call_sid: str
    account_sid: str
    stream_sid: str
    from_: str
    to: str


@dataclass(frozen=True)
class WebhookRequest:
    method: str
    path: str  # appended to the gateway's base URL
    form: dict[str, str] | None = None
    query: dict[str, str] | None = None
    body: bytes | None = None  # raw JSON body
    headers: dict[str, str] = field(default_factory=dict)
    signed: bool = False


@dataclass(frozen=True)
class StreamTarget:
    """Where the answer told the carrier to stream, and what travels with it."""

    url: str  # exactly as in the answer (what an upgrade signature covers)
    parameters: dict[str, str]  # per-call values the carrier hands back in its first messages
    encoding: str  # agent-protocol name of the stream's audio: audio/pcmu | audio/pcma | audio/pcm
    sample_rate: int
    warnings: tuple[str, ...] = ()


class CarrierSide(Protocol):
    """One carrier's side of one call (gateway.simulator.carrier_side has the tour)."""

    carrier: str
    #: The environment variable whose secret signs this carrier's requests when none is given (simulator CLI).
    secret_env: str
    #: Twilio-style carriers echo pending marks on ``clear``; Plivo and Vonage acknowledge it instead.
    echo_marks_on_clear: bool
    #: What the gateway sent that the carrier's docs advise against but accept (the caller reports each once).
    warnings: list[str]

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None: ...

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest: ...
    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget: ...
    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]: ...
    def connected(self) -> list[Message]: ...
    def start(self, target: StreamTarget) -> list[Message]: ...
    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]: ...
    def mark_echo(self, name: str) -> list[Message]: ...
    def cleared(self) -> list[Message]: ...
    def stop(self) -> list[Message]: ...
    def parse(self, data: Message) -> GatewayMessage | GatewayHangup: ...


#: L16 byte order per carrier, as the simulator plays it by default ("assumed"). Written here from each carrier's
#: documentation, not imported from the gateway's dialects, so a dialect's byte-order mistake cannot hide behind the
#: simulator making the same one: Vonage and Exotel document little-endian PCM16; Plivo's ``audio/x-l16`` is taken as
#: little-endian too; SignalWire's and Telnyx's L16 are RTP payloads, network byte order (RFC 3551 §4.5.11). The
#: ``--l16-byte-order`` switch plays the other order (docs/how-to/carriers/index.md#assumptions).
ASSUMED_L16_ORDER = {"signalwire": "big", "telnyx": "big", "plivo": "little", "vonage": "little", "exotel": "little"}
L16_BYTE_ORDERS = ("assumed", "big", "little")
#: The simulator's Telnyx stream codecs beyond TeXML's (Call Control ``streaming_start``'s ``stream_codec`` L16).
TELNYX_L16 = {"L16@8000": 8000, "L16@16000": 16000, "L16@24000": 24000}


@dataclass(frozen=True)
class SideOptions:
    """How the simulated carrier plays the call beyond what the gateway's answer says.

    ``l16_byte_order``: ``assumed`` (:data:`ASSUMED_L16_ORDER`), ``big`` or ``little``, for carriers that send L16.
    ``telnyx_codec``: ``""`` (the TeXML answer's codec) or ``L16@8000|16000|24000``: play a stream that Telnyx Call
    Control's ``streaming_start`` opened with L16 (TeXML cannot ask for L16), on the answer's URL and parameters."""

    l16_byte_order: str = "assumed"
    telnyx_codec: str = ""

    def __post_init__(self) -> None:
        if self.l16_byte_order not in L16_BYTE_ORDERS:
            raise ValueError(f"l16_byte_order must be one of {', '.join(L16_BYTE_ORDERS)}")
        if self.telnyx_codec and self.telnyx_codec not in TELNYX_L16:
            raise ValueError(f"telnyx_codec must be one of {', '.join(TELNYX_L16)}")

    def big_endian(self, carrier: str) -> bool:
        order = self.l16_byte_order
        return (ASSUMED_L16_ORDER.get(carrier, "little") if order == "assumed" else order) == "big"


class FrameResampler:
    """Block-free streaming resampling by an integer factor (8 kHz → 16/24 kHz and back), for the simulator's edge.

    A chunk of ``n`` input samples gives exactly ``n * up / down`` output samples (up to the decimation phase, carried
    across chunks), so every 20 ms frame in gives one 20 ms frame out: what a carrier sends. (A soxr stream releases
    its output in blocks: empty frames, then 100 ms bursts.) A windowed-sinc FIR with its history kept between chunks,
    so frame boundaries do not click; its delay is a few milliseconds. Quality is the simulator's need: telephone band
    audio, μ-law on the far side."""

    TAPS_PER_PHASE = 16

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if out_rate % in_rate == 0:
            self.up, self.down = out_rate // in_rate, 1
        elif in_rate % out_rate == 0:
            self.up, self.down = 1, in_rate // out_rate
        else:
            raise ValueError(f"{in_rate} -> {out_rate} Hz is not an integer factor")
        factor = max(self.up, self.down)
        n = self.TAPS_PER_PHASE * factor + 1
        t = np.arange(n) - (n - 1) / 2
        h = np.sinc(t / factor) * np.kaiser(n, 8.0)
        self._h = h / h.sum() * self.up  # unit gain at DC; zero-stuffing loses a factor ``up``
        self._history = np.zeros(n - 1)
        self._phase = 0  # index of the next output sample to keep, when decimating

    def process(self, pcm: bytes) -> bytes:
        x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
        if self.up > 1:
            z = np.zeros(len(x) * self.up)
            z[:: self.up] = x
        else:
            z = x
        buf = np.concatenate([self._history, z])
        y = np.convolve(buf, self._h, mode="valid")  # len(z) samples
        self._history = buf[len(buf) - len(self._history) :]
        if self.down > 1:
            y = y[self._phase :: self.down]
            self._phase = (self._phase - len(z)) % self.down
        return np.clip(np.rint(y), -32768, 32767).astype("<i2").tobytes()


class Codec:
    """8 kHz μ-law frames ⇄ the carrier's encoding, rate and byte order. Each 20 ms frame in is one 20 ms frame out
    (:class:`FrameResampler`), in both directions."""

    def __init__(self, encoding: str, rate: int, big_endian: bool = False) -> None:
        self.encoding, self.rate, self.big_endian = encoding, rate, big_endian
        resample = encoding == "audio/pcm" and rate != 8000
        self._up = FrameResampler(8000, rate) if resample else None
        self._down = FrameResampler(rate, 8000) if resample else None
        #: Bytes of 20 ms in the carrier's encoding.
        self.frame_bytes = 160 if encoding in ("audio/pcmu", "audio/pcma") else rate // 50 * 2

    def to_carrier(self, ulaw: bytes) -> bytes:
        if self.encoding == "audio/pcmu":
            return ulaw
        pcm = g711.ulaw_to_pcm16(ulaw)
        if self.encoding == "audio/pcma":
            return g711.pcm16_to_alaw(pcm)
        if self._up is not None:
            pcm = self._up.process(pcm)
        return swap16(pcm) if self.big_endian else pcm

    def from_carrier(self, data: bytes) -> bytes:
        if self.encoding == "audio/pcmu":
            return data
        if self.encoding == "audio/pcma":
            return g711.pcm16_to_ulaw(g711.alaw_to_pcm16(data))
        if len(data) % 2:
            raise GatewayProtocolError(f"16-bit PCM payload of odd length {len(data)}")
        pcm = swap16(data) if self.big_endian else data
        if self._down is not None:
            pcm = self._down.process(pcm)
        return g711.pcm16_to_ulaw(pcm)


def warn_once(warnings: list[str], text: str) -> None:
    if text not in warnings:
        warnings.append(text)


def swap16(pcm: bytes) -> bytes:
    return np.frombuffer(pcm, dtype="<i2").astype(">i2").tobytes()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def unb64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise GatewayProtocolError(f"{where}: payload missing")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise GatewayProtocolError(f"{where}: payload is not valid base64") from None
    if not data:
        raise GatewayProtocolError(f"{where}: payload is empty")
    return data


def json_message(data: Message, carrier: str) -> dict[str, Any]:
    if isinstance(data, bytes):
        raise GatewayProtocolError(f"binary frame from the gateway ({carrier} takes JSON text only)")
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise GatewayProtocolError(f"message is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise GatewayProtocolError("message is not a JSON object")
    return msg


def dumps(msg: Mapping[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def check_shape(msg: dict[str, Any], keys: set[str], event: str) -> None:
    if set(msg) != keys:
        raise GatewayProtocolError(f"{event}: unexpected shape {sorted(msg)} (expected {sorted(keys)})")


def xml_root(body: str, what: str) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise GatewayProtocolError(f"{what} is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise GatewayProtocolError(f"{what} root is <{root.tag}>, not <Response>")
    return root


def refusal_of(root: ElementTree.Element) -> CallRefused:
    said = " ".join((e.text or "").strip() for e in root.iter() if e.tag in ("Say", "Speak")).strip()
    verbs = ", ".join(f"<{e.tag}>" for e in root) or "nothing"
    return CallRefused(f"the gateway answered without a stream ({verbs})" + (f": {said!r}" if said else ""))

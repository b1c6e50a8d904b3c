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
from ...audio.resample import StreamResampler
from ..errors import CallRefused, GatewayProtocolError
from ..twilio_side import GatewayMessage

__all__ = [
    "CallIds",
    "CarrierSide",
    "Codec",
    "GatewayHangup",
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

    def __init__(self, ids: CallIds) -> None: ...

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


class Codec:
    """8 kHz μ-law frames ⇄ the carrier's encoding, rate and byte order."""

    def __init__(self, encoding: str, rate: int, big_endian: bool = False) -> None:
        self.encoding, self.rate, self.big_endian = encoding, rate, big_endian
        self._up = StreamResampler(8000, rate, "HQ") if encoding == "audio/pcm" and rate != 8000 else None
        self._down = StreamResampler(rate, 8000, "HQ") if encoding == "audio/pcm" and rate != 8000 else None

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

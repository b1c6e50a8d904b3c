"""The carrier's side of a call for every carrier the gateway speaks, as the call simulator plays it. Pure: no
sockets, no clock, no environment (the asyncio shell is :mod:`gateway.simulator.caller`).

Each :class:`CarrierSide` does, from the carrier's point of view (telephony.md §A.1–§A.5 for Twilio, §A.10 for the
others):

- **dialling**: the webhook request the carrier makes when a call comes in (:meth:`~CarrierSide.webhook`, signed the
  carrier's way when a secret is given) and how it reads the answer (TwiML / cXML / TeXML / Plivo XML / NCCO JSON /
  Exotel's dynamic-URL JSON: :meth:`~CarrierSide.read_answer`), and the headers of the stream upgrade;
- **streaming**: the messages the carrier sends (``connected``/``start``/``media``/mark echoes/``stop`` in its own
  dialect and audio format, e.g. binary PCM for Vonage, 100 ms chunks for Exotel, a few swapped frames for Telnyx,
  whose frame order is not guaranteed) and strict checks of what the gateway sends (:meth:`~CarrierSide.parse`);
- **clear semantics**: Twilio-style carriers echo pending marks on ``clear``; Plivo and Vonage acknowledge it
  (``clearedAudio`` / ``websocket:cleared``) and only ever echo a checkpoint after its audio played.

The simulator's caller, playout buffer and recording work in 8 kHz μ-law 20 ms frames whatever the carrier; each side
converts at its edge (G.711 / PCM16 in the carrier's byte order, soxr resampling).
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlencode, urlsplit
from xml.etree import ElementTree

import jwt
import numpy as np

from ..audio import g711
from ..audio.resample import StreamResampler
from ..carriers import exotel as exotel_carrier
from ..carriers import plivo as plivo_carrier
from ..carriers import signalwire as signalwire_carrier
from ..carriers import telnyx as telnyx_carrier
from ..security import twilio_signature
from .errors import CallRefused, GatewayProtocolError
from .twilio_side import (
    GatewayClear,
    GatewayMark,
    GatewayMedia,
    GatewayMessage,
    TwilioSide,
    new_sid,
    parse_twiml,
    webhook_form,
)

__all__ = ["CARRIER_SIDES", "CallIds", "CarrierSide", "Message", "StreamTarget", "WebhookRequest", "new_carrier_side"]

Message = str | bytes


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
    carrier: str
    echo_marks_on_clear: bool

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest: ...
    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget: ...
    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]: ...
    def connected(self) -> list[Message]: ...
    def start(self, target: StreamTarget) -> list[Message]: ...
    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]: ...
    def mark_echo(self, name: str) -> list[Message]: ...
    def cleared(self) -> list[Message]: ...
    def stop(self) -> list[Message]: ...
    def parse(self, data: Message) -> GatewayMessage: ...


# ---- audio at the carrier's edge ---------------------------------------------------------------------------------
class _Codec:
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
        return _swap(pcm) if self.big_endian else pcm

    def from_carrier(self, data: bytes) -> bytes:
        if self.encoding == "audio/pcmu":
            return data
        if self.encoding == "audio/pcma":
            return g711.pcm16_to_ulaw(g711.alaw_to_pcm16(data))
        if len(data) % 2:
            raise GatewayProtocolError(f"16-bit PCM payload of odd length {len(data)}")
        pcm = _swap(data) if self.big_endian else data
        if self._down is not None:
            pcm = self._down.process(pcm)
        return g711.pcm16_to_ulaw(pcm)


def _swap(pcm: bytes) -> bytes:
    return np.frombuffer(pcm, dtype="<i2").astype(">i2").tobytes()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(value: Any, where: str) -> bytes:
    if not isinstance(value, str):
        raise GatewayProtocolError(f"{where}: payload missing")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise GatewayProtocolError(f"{where}: payload is not valid base64") from None
    if not data:
        raise GatewayProtocolError(f"{where}: payload is empty")
    return data


def _json(data: Message, carrier: str) -> dict[str, Any]:
    if isinstance(data, bytes):
        raise GatewayProtocolError(f"binary frame from the gateway ({carrier} takes JSON text only)")
    try:
        msg = json.loads(data)
    except ValueError as exc:
        raise GatewayProtocolError(f"message is not JSON: {exc}") from None
    if not isinstance(msg, dict):
        raise GatewayProtocolError("message is not a JSON object")
    return msg


def _dumps(msg: Mapping[str, Any]) -> str:
    return json.dumps(msg, separators=(",", ":"))


def _shape(msg: dict[str, Any], keys: set[str], event: str) -> None:
    if set(msg) != keys:
        raise GatewayProtocolError(f"{event}: unexpected shape {sorted(msg)} (expected {sorted(keys)})")


def _xml(body: str, what: str) -> ElementTree.Element:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError as exc:
        raise GatewayProtocolError(f"{what} is not well-formed XML: {exc}") from None
    if root.tag != "Response":
        raise GatewayProtocolError(f"{what} root is <{root.tag}>, not <Response>")
    return root


def _refusal(root: ElementTree.Element) -> CallRefused:
    said = " ".join((e.text or "").strip() for e in root.iter() if e.tag in ("Say", "Speak")).strip()
    verbs = ", ".join(f"<{e.tag}>" for e in root) or "nothing"
    return CallRefused(f"the gateway answered without a stream ({verbs})" + (f": {said!r}" if said else ""))


# ---- Twilio (§A.1–§A.5) and SignalWire (§A.10: Twilio-compatible, codec attribute) -------------------------------
class TwilioCarrier:
    carrier = "twilio"
    echo_marks_on_clear = True
    path = "/twilio"
    signature_header = "X-Twilio-Signature"

    def __init__(self, ids: CallIds) -> None:
        self.ids = ids
        self.side = TwilioSide(call_sid=ids.call_sid, account_sid=ids.account_sid, stream_sid=ids.stream_sid)
        self.codec = _Codec("audio/pcmu", 8000)

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        form = webhook_form(ids.call_sid, ids.account_sid, ids.from_, ids.to)
        headers = {"User-Agent": "TwilioProxy/1.1 (voice-gateway call simulator)"}
        if secret:
            headers[self.signature_header] = twilio_signature(secret, public_base + self.path + "/voice", form)
        return WebhookRequest("POST", self.path + "/voice", form=form, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        instruction = parse_twiml(body, webhook_url)
        return StreamTarget(instruction.url, instruction.parameters, "audio/pcmu", 8000, instruction.warnings)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        # The upgrade is signed over the wss:// URL exactly as written in the answer, with no params (§A.2).
        return {self.signature_header: twilio_signature(secret, target.url, {})} if secret else {}

    def connected(self) -> list[Message]:
        return [self.side.connected()]

    def start(self, target: StreamTarget) -> list[Message]:
        return [self.side.start(target.parameters)]

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        return [self.side.media(self.codec.to_carrier(ulaw), timestamp_ms)]

    def mark_echo(self, name: str) -> list[Message]:
        return [self.side.mark_echo(name)]

    def cleared(self) -> list[Message]:
        return []  # Twilio's only answer to a clear is the flushed mark echoes

    def stop(self) -> list[Message]:
        return [self.side.stop()]

    def parse(self, data: Message) -> GatewayMessage:
        msg = self.side.parse(data)
        if isinstance(msg, GatewayMedia) and self.codec.encoding != "audio/pcmu":
            return GatewayMedia(self.codec.from_carrier(msg.payload))
        return msg


class SignalWireCarrier(TwilioCarrier):
    carrier = "signalwire"
    path = "/signalwire"
    signature_header = "X-SignalWire-Signature"

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        instruction = parse_twiml(body, webhook_url)
        stream = _xml(body, "cXML").find("./Connect/Stream")
        codec = (stream.get("codec") if stream is not None else None) or "PCMU"
        if codec not in signalwire_carrier.CODECS:
            raise GatewayProtocolError(f"<Stream codec={codec!r}> is not a SignalWire codec (§A.10)")
        encoding, rate = signalwire_carrier.CODECS[codec]
        self.codec = _Codec(encoding, rate, big_endian=True)
        return StreamTarget(instruction.url, instruction.parameters, encoding, rate, instruction.warnings)

    def start(self, target: StreamTarget) -> list[Message]:
        msg = json.loads(self.side.start(target.parameters))
        names = {"audio/pcmu": "audio/x-mulaw", "audio/pcma": "audio/x-alaw", "audio/pcm": "audio/x-l16"}
        msg["start"]["mediaFormat"] = {"encoding": names[target.encoding], "sampleRate": target.sample_rate, "channels": 1}
        return [_dumps(msg)]


# ---- Telnyx (§A.10) ------------------------------------------------------------------------------------------------
class TelnyxCarrier:
    carrier = "telnyx"
    echo_marks_on_clear = True
    #: Every this many frames, two neighbours are sent swapped: Telnyx does not guarantee frame order.
    SWAP_EVERY = 25

    def __init__(self, ids: CallIds) -> None:
        self.ids = ids
        self.stream_id = ids.stream_sid
        self.call_control_id = "v3:" + ids.call_sid
        self._seq = 0
        self._chunk = 0
        self._held: str | None = None
        self.codec = _Codec("audio/pcmu", 8000)
        self.started = False

    def _next(self) -> str:
        self._seq += 1
        return str(self._seq)

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        # TeXML webhooks are Twilio-like forms; CallSid is the call_control_id.
        form = {"AccountSid": ids.account_sid, "CallSid": self.call_control_id, "From": ids.from_, "To": ids.to,
                "CallStatus": "ringing", "Direction": "inbound"}  # fmt: skip
        headers: dict[str, str] = {}
        if secret:
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(secret))
            body = urlencode(form).encode()
            ts = str(int(time.time()))
            headers = {
                telnyx_carrier.TIMESTAMP_HEADER: ts,
                telnyx_carrier.SIGNATURE_HEADER: _b64(key.sign(ts.encode() + b"|" + body)),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            return WebhookRequest("POST", "/telnyx/voice", body=body, headers=headers, signed=True)
        return WebhookRequest("POST", "/telnyx/voice", form=form, headers=headers)

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        root = _xml(body, "TeXML")
        stream = root.find("./Connect/Stream")
        if stream is None:
            raise _refusal(root)
        if stream.get("bidirectionalMode") != "rtp":
            raise GatewayProtocolError("TeXML <Stream> without bidirectionalMode=\"rtp\": Telnyx would drop our audio")
        codec = stream.get("bidirectionalCodec", "PCMU")
        if codec != stream.get("codec", codec):
            raise GatewayProtocolError("TeXML <Stream> codec and bidirectionalCodec differ")
        rate = int(stream.get("bidirectionalSamplingRate", "8000"))
        enc = {"PCMU": "audio/pcmu", "PCMA": "audio/pcma"}.get(codec)
        if enc is None or rate != 8000:
            raise GatewayProtocolError(f"unexpected TeXML stream codec {codec}@{rate}")
        self.codec = _Codec(enc, rate)
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return StreamTarget(stream.get("url", ""), params, enc, rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return [_dumps({"event": "connected", "version": "1.0.0"})]

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        names = {"audio/pcmu": "PCMU", "audio/pcma": "PCMA", "audio/pcm": "L16"}
        return [_dumps({
            "event": "start", "sequence_number": self._next(), "stream_id": self.stream_id,
            "start": {"user_id": self.ids.account_sid, "call_control_id": self.call_control_id,
                      "call_session_id": new_sid(""), "from": self.ids.from_, "to": self.ids.to,
                      "custom_parameters": dict(target.parameters),
                      "media_format": {"encoding": names[target.encoding], "sample_rate": target.sample_rate,
                                       "channels": 1}},
        })]  # fmt: skip

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        self._chunk += 1
        msg = _dumps({"event": "media", "sequence_number": self._next(), "stream_id": self.stream_id,
                      "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(timestamp_ms),
                                "payload": _b64(self.codec.to_carrier(ulaw))}})  # fmt: skip
        if self._held is not None:
            held, self._held = self._held, None
            return [msg, held]  # the later frame first
        if self._chunk % self.SWAP_EVERY == 0:
            self._held = msg
            return []
        return [msg]

    def mark_echo(self, name: str) -> list[Message]:
        return [_dumps({"event": "mark", "sequence_number": self._next(), "stream_id": self.stream_id,
                        "mark": {"name": name}})]  # fmt: skip

    def cleared(self) -> list[Message]:
        return []

    def stop(self) -> list[Message]:
        out: list[Message] = [self._held] if self._held is not None else []
        self._held = None
        return [*out, _dumps({"event": "stop", "sequence_number": self._next(), "stream_id": self.stream_id,
                              "stop": {"user_id": self.ids.account_sid, "call_control_id": self.call_control_id}})]

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before 'start'")
        msg = _json(data, "Telnyx")
        event = msg.get("event")
        if event == "media":
            _shape(msg, {"event", "media"}, "media")
            media = msg["media"]
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise GatewayProtocolError("media: expected {'payload': base64}")
            return GatewayMedia(self.codec.from_carrier(_unb64(media["payload"], "media")))
        if event == "mark":
            _shape(msg, {"event", "mark"}, "mark")
            if not isinstance(msg["mark"], dict) or not isinstance(msg["mark"].get("name"), str):
                raise GatewayProtocolError("mark: expected {'name': string}")
            return GatewayMark(msg["mark"]["name"])
        if event == "clear":
            _shape(msg, {"event"}, "clear")
            return GatewayClear()
        raise GatewayProtocolError(f"unknown event {event!r} from the gateway")


# ---- Plivo (§A.10) -------------------------------------------------------------------------------------------------
class PlivoCarrier:
    carrier = "plivo"
    echo_marks_on_clear = False  # playedStream only after playback; a clear is answered with clearedAudio

    def __init__(self, ids: CallIds) -> None:
        self.ids = ids
        self.call_uuid = ids.call_sid
        self.stream_id = ids.stream_sid
        self._seq = 0
        self._chunk = 0
        self.codec = _Codec("audio/pcmu", 8000)
        self._extra_headers = ""
        self.started = False

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        form = {"CallUUID": self.call_uuid, "From": ids.from_.lstrip("+"), "To": ids.to.lstrip("+"),
                "Direction": "inbound", "CallStatus": "ringing", "Event": "StartApp"}  # fmt: skip
        headers: dict[str, str] = {}
        if secret:
            nonce = str(secrets.randbelow(10**20))
            headers[plivo_carrier.NONCE_HEADER] = nonce
            headers[plivo_carrier.SIGNATURE_HEADER] = plivo_carrier.plivo_v3_signature(
                secret, "POST", public_base + "/plivo/answer", form, nonce)
        return WebhookRequest("POST", "/plivo/answer", form=form, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        root = _xml(body, "Plivo XML")
        stream = root.find("Stream")
        if stream is None:
            raise _refusal(root)
        if stream.get("bidirectional") != "true":
            raise GatewayProtocolError("<Stream> is not bidirectional: the caller would hear nothing")
        if stream.get("keepCallAlive") != "true":
            raise GatewayProtocolError("<Stream> without keepCallAlive=\"true\": the call would move on at once")
        content = stream.get("contentType", "audio/x-l16;rate=8000")
        if content not in plivo_carrier.CONTENT_TYPES:
            raise GatewayProtocolError(f"unknown contentType {content!r}")
        enc, rate, _ = plivo_carrier.CONTENT_TYPES[content]
        self.codec = _Codec(enc, rate)
        self._extra_headers = stream.get("extraHeaders", "")
        url = (stream.text or "").strip()
        if not url.startswith(("ws://", "wss://")):
            raise GatewayProtocolError(f"<Stream> URL {url!r} is not a WebSocket URL")
        return StreamTarget(url, {}, enc, rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return []  # Plivo's first message is start

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        names = {"audio/pcmu": "audio/x-mulaw", "audio/pcm": "audio/x-l16"}
        headers = dict(p.split("=", 1) for p in self._extra_headers.split(",") if "=" in p)
        return [_dumps({
            "event": "start", "sequenceNumber": self._next(),
            "start": {"callId": self.call_uuid, "streamId": self.stream_id, "accountId": self.ids.account_sid,
                      "tracks": ["inbound"],
                      "mediaFormat": {"encoding": names[target.encoding], "sampleRate": target.sample_rate}},
            "extra_headers": json.dumps(headers),
        })]  # fmt: skip

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        self._chunk += 1
        return [_dumps({"event": "media", "sequenceNumber": self._next(), "streamId": self.stream_id,
                        "media": {"track": "inbound", "timestamp": str(timestamp_ms), "chunk": self._chunk,
                                  "payload": _b64(self.codec.to_carrier(ulaw))}})]  # fmt: skip

    def mark_echo(self, name: str) -> list[Message]:
        return [_dumps({"event": "playedStream", "sequenceNumber": self._next(), "streamId": self.stream_id,
                        "name": name})]  # fmt: skip

    def cleared(self) -> list[Message]:
        return [_dumps({"event": "clearedAudio", "sequenceNumber": self._next(), "streamId": self.stream_id})]

    def stop(self) -> list[Message]:
        return []  # Plivo hangs up by closing the socket

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before 'start'")
        msg = _json(data, "Plivo")
        event = msg.get("event")
        if event == "playAudio":
            _shape(msg, {"event", "media"}, "playAudio")
            media = msg["media"]
            want = {"audio/pcmu": "audio/x-mulaw", "audio/pcm": "audio/x-l16"}[self.codec.encoding]
            if not isinstance(media, dict) or media.get("contentType") != want or media.get("sampleRate") != self.codec.rate:
                raise GatewayProtocolError(f"playAudio: media must be {want} at {self.codec.rate} Hz, got {media!r:.120}")
            return GatewayMedia(self.codec.from_carrier(_unb64(media.get("payload"), "playAudio")))
        if msg.get("streamId") != self.stream_id:
            raise GatewayProtocolError(f"{event}: streamId {msg.get('streamId')!r} is not this stream's")
        if event == "checkpoint":
            _shape(msg, {"event", "streamId", "name"}, "checkpoint")
            if not isinstance(msg["name"], str) or not msg["name"]:
                raise GatewayProtocolError("checkpoint: name must be a string")
            return GatewayMark(msg["name"])
        if event == "clearAudio":
            _shape(msg, {"event", "streamId"}, "clearAudio")
            return GatewayClear()
        raise GatewayProtocolError(f"unknown event {event!r} from the gateway")


# ---- Vonage (§A.10) ------------------------------------------------------------------------------------------------
class VonageCarrier:
    carrier = "vonage"
    echo_marks_on_clear = False  # websocket:cleared answers a clear; notify only after playback

    def __init__(self, ids: CallIds) -> None:
        self.ids = ids
        self.uuid = ids.call_sid
        self.codec = _Codec("audio/pcm", 16000)
        self._headers: dict[str, str] = {}
        self._content_type = ""
        self.started = False

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        query = {"uuid": self.uuid, "conversation_uuid": "CON-" + ids.stream_sid, "from": ids.from_.lstrip("+"),
                 "to": ids.to.lstrip("+")}  # fmt: skip
        headers: dict[str, str] = {}
        if secret:
            claims = {"iat": int(time.time()), "jti": secrets.token_hex(8), "iss": "Vonage"}
            headers["Authorization"] = "Bearer " + jwt.encode(claims, secret, algorithm="HS256")
        return WebhookRequest("GET", "/vonage/answer", query=query, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        try:
            ncco = json.loads(body)
        except ValueError as exc:
            raise GatewayProtocolError(f"NCCO is not JSON: {exc}") from None
        if not isinstance(ncco, list) or not ncco:
            raise GatewayProtocolError("NCCO must be a non-empty JSON array")
        connects = [a for a in ncco if isinstance(a, dict) and a.get("action") == "connect"]
        if not connects:
            said = " ".join(str(a.get("text", "")) for a in ncco if isinstance(a, dict) and a.get("action") == "talk")
            raise CallRefused("the gateway answered without a connect" + (f": {said!r}" if said else ""))
        endpoints = connects[0].get("endpoint")
        if not isinstance(endpoints, list) or len(endpoints) != 1 or endpoints[0].get("type") != "websocket":
            raise GatewayProtocolError("NCCO connect needs exactly one websocket endpoint")
        ep = endpoints[0]
        self._content_type = str(ep.get("content-type", ""))
        rate = {"audio/l16;rate=8000": 8000, "audio/l16;rate=16000": 16000}.get(self._content_type)
        if rate is None:
            raise GatewayProtocolError(f"unsupported websocket content-type {self._content_type!r}")
        headers = ep.get("headers") or {}
        if not isinstance(headers, dict) or len(json.dumps(headers)) > 512:
            raise GatewayProtocolError("websocket headers must be an object of at most 512 bytes")
        self._headers = {str(k): str(v) for k, v in headers.items()}
        self.codec = _Codec("audio/pcm", rate)
        return StreamTarget(str(ep.get("uri", "")), dict(self._headers), "audio/pcm", rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return []

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [_dumps({"event": "websocket:connected", "content-type": self._content_type, **self._headers})]

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        return [self.codec.to_carrier(ulaw)]

    def mark_echo(self, name: str) -> list[Message]:
        return [_dumps({"event": "websocket:notify", "payload": {"name": name}})]

    def cleared(self) -> list[Message]:
        return [_dumps({"event": "websocket:cleared"})]

    def stop(self) -> list[Message]:
        return []  # the socket closing is the hang-up

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before websocket:connected")
        if isinstance(data, bytes):
            expected = self.codec.rate // 50 * 2
            if len(data) != expected:
                raise GatewayProtocolError(f"binary frame of {len(data)} bytes (Vonage wants 20 ms = {expected})")
            return GatewayMedia(self.codec.from_carrier(data))
        msg = _json(data, "Vonage")
        action = msg.get("action")
        if action == "clear":
            _shape(msg, {"action"}, "clear")
            return GatewayClear()
        if action == "notify":
            _shape(msg, {"action", "payload"}, "notify")
            name = msg["payload"].get("name") if isinstance(msg["payload"], dict) else None
            if not isinstance(name, str):
                raise GatewayProtocolError("notify: payload.name must be a string")
            return GatewayMark(name)
        raise GatewayProtocolError(f"unknown action {action!r} from the gateway")


# ---- Exotel (§A.10) ------------------------------------------------------------------------------------------------
class ExotelCarrier:
    carrier = "exotel"
    echo_marks_on_clear = True
    #: Exotel sends caller audio in ~100 ms messages.
    INBOUND_FRAMES = 5

    def __init__(self, ids: CallIds) -> None:
        self.ids = ids
        self.stream_sid = ids.stream_sid
        self._seq = 0
        self._chunk = 0
        self._pending: list[bytes] = []
        self._pending_ts = 0
        self.codec = _Codec("audio/pcm", 8000)
        self.started = False

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        query = {"CallSid": ids.call_sid, "CallFrom": ids.from_, "CallTo": ids.to, "Direction": "incoming"}
        headers = {"Authorization": "Basic " + _b64(secret.encode())} if secret else {}
        return WebhookRequest("GET", "/exotel/answer", query=query, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise GatewayProtocolError(f"dynamic URL answer is not JSON: {exc}") from None
        url = doc.get("url") if isinstance(doc, dict) else None
        if not isinstance(url, str) or not url.startswith(("ws://", "wss://")):
            raise GatewayProtocolError(f"dynamic URL answer has no ws(s):// url: {body[:200]!r}")
        u = urlsplit(url)
        query = dict(parse_qsl(u.query, keep_blank_values=True))
        rate = int(query.pop("sample-rate", "8000"))
        if rate not in exotel_carrier.SAMPLE_RATES:
            raise GatewayProtocolError(f"sample-rate={rate} is not one Exotel offers")
        if len(query) > 3 or len(urlencode(query)) > 256:
            raise GatewayProtocolError("more than 3 custom parameters or 256 characters (§A.10)")
        self.codec = _Codec("audio/pcm", rate)
        return StreamTarget(url, query, "audio/pcm", rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {"Authorization": "Basic " + _b64(secret.encode())} if secret else {}

    def connected(self) -> list[Message]:
        return [_dumps({"event": "connected"})]

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [_dumps({
            "event": "start", "sequence_number": self._next(), "stream_sid": self.stream_sid,
            "start": {"stream_sid": self.stream_sid, "call_sid": self.ids.call_sid, "account_sid": self.ids.account_sid,
                      "from": self.ids.from_, "to": self.ids.to, "custom_parameters": dict(target.parameters),
                      "media_format": {"encoding": "audio/x-raw", "sample_rate": str(target.sample_rate),
                                       "bit_rate": "16"}},
        })]  # fmt: skip

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        if not self._pending:
            self._pending_ts = timestamp_ms
        self._pending.append(self.codec.to_carrier(ulaw))
        if len(self._pending) < self.INBOUND_FRAMES:
            return []
        payload, self._pending = b"".join(self._pending), []
        self._chunk += 1
        return [_dumps({"event": "media", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                        "media": {"chunk": self._chunk, "timestamp": str(self._pending_ts),
                                  "payload": _b64(payload)}})]  # fmt: skip

    def mark_echo(self, name: str) -> list[Message]:
        return [_dumps({"event": "mark", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                        "mark": {"name": name}})]  # fmt: skip

    def cleared(self) -> list[Message]:
        return []

    def stop(self) -> list[Message]:
        return [_dumps({"event": "stop", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                        "stop": {"call_sid": self.ids.call_sid, "account_sid": self.ids.account_sid,
                                 "reason": "callended"}})]  # fmt: skip

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before 'start'")
        msg = _json(data, "Exotel")
        event = msg.get("event")
        if msg.get("stream_sid") != self.stream_sid:
            raise GatewayProtocolError(f"{event}: stream_sid {msg.get('stream_sid')!r} is not this stream's")
        if event == "media":
            _shape(msg, {"event", "stream_sid", "media"}, "media")
            media = msg["media"]
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise GatewayProtocolError("media: expected {'payload': base64}")
            pcm = _unb64(media["payload"], "media")
            # §A.10/§D.2: ≥ 3.2 KB (100 ms), ≤ 100 KB, a multiple of 320 bytes, or Exotel leaves gaps/times out.
            ms = len(pcm) * 1000 // (2 * self.codec.rate)
            if len(pcm) % 320 or len(pcm) < 3200 or ms < 100 or len(pcm) > 100 * 1024:
                raise GatewayProtocolError(f"media chunk of {len(pcm)} bytes breaks Exotel's chunk rules")
            return GatewayMedia(self.codec.from_carrier(pcm))
        if event == "mark":
            _shape(msg, {"event", "stream_sid", "mark"}, "mark")
            if not isinstance(msg["mark"], dict) or not isinstance(msg["mark"].get("name"), str):
                raise GatewayProtocolError("mark: expected {'name': string}")
            return GatewayMark(msg["mark"]["name"])
        if event == "clear":
            _shape(msg, {"event", "stream_sid"}, "clear")
            return GatewayClear()
        raise GatewayProtocolError(f"unknown event {event!r} from the gateway")


CARRIER_SIDES: dict[str, type] = {
    "twilio": TwilioCarrier,
    "signalwire": SignalWireCarrier,
    "telnyx": TelnyxCarrier,
    "plivo": PlivoCarrier,
    "vonage": VonageCarrier,
    "exotel": ExotelCarrier,
}


def new_carrier_side(carrier: str, ids: CallIds) -> CarrierSide:
    try:
        cls = CARRIER_SIDES[carrier]
    except KeyError:
        raise ValueError(f"unknown carrier {carrier!r} (known: {', '.join(CARRIER_SIDES)})") from None
    side: CarrierSide = cls(ids)
    return side


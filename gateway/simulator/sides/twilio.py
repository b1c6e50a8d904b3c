"""Twilio's side of a call (docs/how-to/carriers/twilio.md; the protocol itself is
:mod:`gateway.simulator.twilio_side`), and SignalWire's, which is Twilio-compatible but for its ``codec`` attribute and
signature header. Pure.
"""

from __future__ import annotations

import json
from typing import Any

from ...carriers import signalwire as signalwire_carrier
from ...carriers import twilio as twilio_carrier
from ...carriers.spec import CarrierSpec
from ...security import twilio_signature
from ..errors import GatewayProtocolError
from ..twilio_side import GatewayMedia, GatewayMessage, TwilioSide, parse_twiml, webhook_form
from .common import CallIds, Codec, Message, SideOptions, StreamTarget, WebhookRequest, dumps, xml_root

__all__ = ["SignalWireCarrier", "TwilioCarrier"]


class TwilioCarrier:
    spec: CarrierSpec[Any] = twilio_carrier.SPEC
    carrier = spec.name
    secret_env = spec.secret_envs[0]
    echo_marks_on_clear = True
    signature_header = twilio_carrier.SIGNATURE_HEADER

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:
        self.ids = ids
        self.options = options or SideOptions()
        self.side = TwilioSide(call_sid=ids.call_sid, account_sid=ids.account_sid, stream_sid=ids.stream_sid)
        self.codec = Codec("audio/pcmu", 8000)
        self.warnings: list[str] = []

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        form = webhook_form(ids.call_sid, ids.account_sid, ids.from_, ids.to)
        headers = {"User-Agent": "TwilioProxy/1.1 (voice-gateway call simulator)"}
        if secret:
            headers[self.signature_header] = twilio_signature(secret, public_base + self.spec.webhook_path, form)
        return WebhookRequest("POST", self.spec.webhook_path, form=form, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        instruction = parse_twiml(body, webhook_url)
        return StreamTarget(instruction.url, instruction.parameters, "audio/pcmu", 8000, instruction.warnings)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        # The upgrade is signed over the wss:// URL exactly as written in the answer, with no params.
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
    spec = signalwire_carrier.SPEC
    carrier = spec.name
    secret_env = spec.secret_envs[0]
    signature_header = signalwire_carrier.SIGNATURE_HEADERS[0]

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        instruction = parse_twiml(body, webhook_url)
        stream = xml_root(body, "cXML").find("./Connect/Stream")
        codec = (stream.get("codec") if stream is not None else None) or "PCMU"
        if codec not in signalwire_carrier.CODECS:
            raise GatewayProtocolError(f"<Stream codec={codec!r}> is not a SignalWire codec")
        encoding, rate = signalwire_carrier.CODECS[codec]
        self.codec = Codec(encoding, rate, big_endian=self.options.big_endian(self.carrier))
        return StreamTarget(instruction.url, instruction.parameters, encoding, rate, instruction.warnings)

    def start(self, target: StreamTarget) -> list[Message]:
        msg = json.loads(self.side.start(target.parameters))
        names = {"audio/pcmu": "audio/x-mulaw", "audio/pcma": "audio/x-alaw", "audio/pcm": "audio/x-l16"}
        msg["start"]["mediaFormat"] = {
            "encoding": names[target.encoding],
            "sampleRate": target.sample_rate,
            "channels": 1,
        }
        return [dumps(msg)]

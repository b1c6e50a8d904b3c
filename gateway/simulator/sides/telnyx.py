"""Telnyx's side of a call (docs/how-to/carriers/telnyx.md): a TeXML webhook signed with Ed25519, snake_case stream
events with sequence numbers, and now and then two media frames swapped (Telnyx does not guarantee frame order). Pure
but for the wall-clock timestamp a signature carries.
"""

from __future__ import annotations

import base64
import time
from urllib.parse import urlencode

from ...carriers import telnyx as telnyx_carrier
from ..errors import GatewayProtocolError
from ..twilio_side import GatewayClear, GatewayMark, GatewayMedia, GatewayMessage, new_sid
from .common import (
    TELNYX_L16,
    CallIds,
    Codec,
    Message,
    SideOptions,
    StreamTarget,
    WebhookRequest,
    b64,
    check_shape,
    dumps,
    json_message,
    refusal_of,
    unb64,
    xml_root,
)

__all__ = ["TelnyxCarrier"]


class TelnyxCarrier:
    spec = telnyx_carrier.SPEC
    carrier = spec.name
    #: Telnyx signs with the account's private key, which only a simulator has (the gateway holds the public key):
    #: base64 of the 32-byte Ed25519 seed.
    secret_env = "TELNYX_SIMULATOR_PRIVATE_KEY"
    echo_marks_on_clear = True
    #: Every this many frames, two neighbours are sent swapped: Telnyx does not guarantee frame order.
    SWAP_EVERY = 25

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:
        self.ids = ids
        self.options = options or SideOptions()
        self.warnings: list[str] = []
        self.stream_id = ids.stream_sid
        self.call_control_id = "v3:" + ids.call_sid
        self._seq = 0
        self._chunk = 0
        self._held: str | None = None
        self.codec = Codec("audio/pcmu", 8000)
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
                telnyx_carrier.SIGNATURE_HEADER: b64(key.sign(ts.encode() + b"|" + body)),
                "Content-Type": "application/x-www-form-urlencoded",
            }
            return WebhookRequest("POST", self.spec.webhook_path, body=body, headers=headers, signed=True)
        return WebhookRequest("POST", self.spec.webhook_path, form=form, headers=headers)

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        root = xml_root(body, "TeXML")
        stream = root.find("./Connect/Stream")
        if stream is None:
            raise refusal_of(root)
        if stream.get("bidirectionalMode") != "rtp":
            raise GatewayProtocolError('TeXML <Stream> without bidirectionalMode="rtp": Telnyx would drop our audio')
        codec = stream.get("bidirectionalCodec", "PCMU")
        if codec != stream.get("codec", codec):
            raise GatewayProtocolError("TeXML <Stream> codec and bidirectionalCodec differ")
        rate = int(stream.get("bidirectionalSamplingRate", "8000"))
        enc = {"PCMU": "audio/pcmu", "PCMA": "audio/pcma"}.get(codec)
        if enc is None or rate != 8000:
            raise GatewayProtocolError(f"unexpected TeXML stream codec {codec}@{rate}")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        if self.options.telnyx_codec:
            # A stream Call Control's streaming_start opened (stream_codec / stream_bidirectional_codec L16 at this
            # rate) on the same URL and parameters: TeXML cannot ask for L16.
            enc, rate = "audio/pcm", TELNYX_L16[self.options.telnyx_codec]
        self.codec = Codec(enc, rate, big_endian=self.options.big_endian(self.carrier))
        return StreamTarget(stream.get("url", ""), params, enc, rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return [dumps({"event": "connected", "version": "1.0.0"})]

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        names = {"audio/pcmu": "PCMU", "audio/pcma": "PCMA", "audio/pcm": "L16"}
        return [dumps({
            "event": "start", "sequence_number": self._next(), "stream_id": self.stream_id,
            "start": {"user_id": self.ids.account_sid, "call_control_id": self.call_control_id,
                      "call_session_id": new_sid(""), "from": self.ids.from_, "to": self.ids.to,
                      "custom_parameters": dict(target.parameters),
                      "media_format": {"encoding": names[target.encoding], "sample_rate": target.sample_rate,
                                       "channels": 1}},
        })]  # fmt: skip

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        self._chunk += 1
        msg = dumps({"event": "media", "sequence_number": self._next(), "stream_id": self.stream_id,
                      "media": {"track": "inbound", "chunk": str(self._chunk), "timestamp": str(timestamp_ms),
                                "payload": b64(self.codec.to_carrier(ulaw))}})  # fmt: skip
        if self._held is not None:
            held, self._held = self._held, None
            return [msg, held]  # the later frame first
        if self._chunk % self.SWAP_EVERY == 0:
            self._held = msg
            return []
        return [msg]

    def mark_echo(self, name: str) -> list[Message]:
        return [dumps({"event": "mark", "sequence_number": self._next(), "stream_id": self.stream_id,
                        "mark": {"name": name}})]  # fmt: skip

    def cleared(self) -> list[Message]:
        return []

    def stop(self) -> list[Message]:
        out: list[Message] = [self._held] if self._held is not None else []
        self._held = None
        return [
            *out,
            dumps(
                {
                    "event": "stop",
                    "sequence_number": self._next(),
                    "stream_id": self.stream_id,
                    "stop": {"user_id": self.ids.account_sid, "call_control_id": self.call_control_id},
                }
            ),
        ]

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before 'start'")
        msg = json_message(data, "Telnyx")
        event = msg.get("event")
        if event == "media":
            check_shape(msg, {"event", "media"}, "media")
            media = msg["media"]
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise GatewayProtocolError("media: expected {'payload': base64}")
            payload = unb64(media["payload"], "media")
            # RTP mode takes 20 ms to 30 s of audio per message (Telnyx's media streaming docs).
            if not self.codec.frame_bytes <= len(payload) <= self.codec.frame_bytes * 1500:
                raise GatewayProtocolError(
                    f"media of {len(payload)} bytes: Telnyx RTP mode takes 20 ms to 30 s "
                    f"({self.codec.frame_bytes} to {self.codec.frame_bytes * 1500} bytes here)"
                )
            return GatewayMedia(self.codec.from_carrier(payload))
        if event == "mark":
            check_shape(msg, {"event", "mark"}, "mark")
            if not isinstance(msg["mark"], dict) or not isinstance(msg["mark"].get("name"), str):
                raise GatewayProtocolError("mark: expected {'name': string}")
            return GatewayMark(msg["mark"]["name"])
        if event == "clear":
            check_shape(msg, {"event"}, "clear")
            return GatewayClear()
        raise GatewayProtocolError(f"unknown event {event!r} from the gateway")

"""Exotel's side of a call (docs/how-to/carriers/exotel.md): the Voicebot applet's dynamic-URL request (Basic auth), raw
PCM16 in ~100 ms chunks, and strict checks of Exotel's outbound chunk rules. Pure.
"""

from __future__ import annotations

import json
from urllib.parse import parse_qsl, urlencode, urlsplit

from ...carriers import exotel as exotel_carrier
from ..errors import GatewayProtocolError
from ..twilio_side import GatewayClear, GatewayMark, GatewayMedia, GatewayMessage
from .common import (
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
    unb64,
    warn_once,
)

__all__ = ["ExotelCarrier"]


class ExotelCarrier:
    spec = exotel_carrier.SPEC
    carrier = spec.name
    secret_env = spec.secret_envs[0]
    echo_marks_on_clear = True
    #: Exotel sends caller audio in ~100 ms messages.
    INBOUND_FRAMES = 5

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:
        self.ids = ids
        self.options = options or SideOptions()
        self.warnings: list[str] = []
        self.stream_sid = ids.stream_sid
        self._seq = 0
        self._chunk = 0
        self._pending: list[bytes] = []
        self._pending_ts = 0
        self.codec = Codec("audio/pcm", 8000)
        self.started = False

    def _next(self) -> int:
        self._seq += 1
        return self._seq

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        query = {"CallSid": ids.call_sid, "CallFrom": ids.from_, "CallTo": ids.to, "Direction": "incoming"}
        headers = {"Authorization": "Basic " + b64(secret.encode())} if secret else {}
        return WebhookRequest("GET", self.spec.webhook_path, query=query, headers=headers, signed=bool(secret))

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
            raise GatewayProtocolError("more than 3 custom parameters or 256 characters (Exotel's limit)")
        self.codec = Codec("audio/pcm", rate, big_endian=self.options.big_endian(self.carrier))
        return StreamTarget(url, query, "audio/pcm", rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {"Authorization": "Basic " + b64(secret.encode())} if secret else {}

    def connected(self) -> list[Message]:
        return [dumps({"event": "connected"})]

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [dumps({
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
        return [dumps({"event": "media", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                        "media": {"chunk": self._chunk, "timestamp": str(self._pending_ts),
                                  "payload": b64(payload)}})]  # fmt: skip

    def mark_echo(self, name: str) -> list[Message]:
        return [dumps({"event": "mark", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                        "mark": {"name": name}})]  # fmt: skip

    def cleared(self) -> list[Message]:
        return []

    def stop(self) -> list[Message]:
        return [dumps({"event": "stop", "sequence_number": self._next(), "stream_sid": self.stream_sid,
                        "stop": {"call_sid": self.ids.call_sid, "account_sid": self.ids.account_sid,
                                 "reason": "callended"}})]  # fmt: skip

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before 'start'")
        msg = json_message(data, "Exotel")
        event = msg.get("event")
        if msg.get("stream_sid") != self.stream_sid:
            raise GatewayProtocolError(f"{event}: stream_sid {msg.get('stream_sid')!r} is not this stream's")
        if event == "media":
            check_shape(msg, {"event", "stream_sid", "media"}, "media")
            media = msg["media"]
            if not isinstance(media, dict) or set(media) != {"payload"}:
                raise GatewayProtocolError("media: expected {'payload': base64}")
            pcm = unb64(media["payload"], "media")
            # Exotel's chunk sizes (docs/how-to/carriers/exotel.md) are advice, not rejections: below 3.2 KB audio
            # may suffer from network jitter, above 100 KB it may time out, and a size not a multiple of 320 bytes
            # leaves a short last packet and a 20 ms wait. Each is a warning; only odd bytes (no PCM16) are errors.
            if len(pcm) < 3200:
                warn_once(self.warnings, "Exotel media chunks under 3,200 bytes (Exotel advises ≥ 3.2 KB: jitter)")
            if len(pcm) > 100 * 1024:
                warn_once(self.warnings, "Exotel media chunks over 100 KB (Exotel: may time out)")
            if len(pcm) % 320:
                warn_once(self.warnings, "Exotel media chunks not a multiple of 320 bytes (Exotel: gaps)")
            return GatewayMedia(self.codec.from_carrier(pcm))
        if event == "mark":
            check_shape(msg, {"event", "stream_sid", "mark"}, "mark")
            if not isinstance(msg["mark"], dict) or not isinstance(msg["mark"].get("name"), str):
                raise GatewayProtocolError("mark: expected {'name': string}")
            return GatewayMark(msg["mark"]["name"])
        if event == "clear":
            check_shape(msg, {"event", "stream_sid"}, "clear")
            return GatewayClear()
        raise GatewayProtocolError(f"unknown event {event!r} from the gateway")

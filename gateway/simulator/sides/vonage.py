"""Vonage's side of a call (docs/how-to/carriers/vonage.md): a JWT-signed answer URL, an NCCO ``connect`` to a
websocket, binary L16 frames, ``websocket:notify`` once audio played and ``websocket:cleared`` after a clear. Pure but
for the JWT's issue time.
"""

from __future__ import annotations

import json
import secrets
import time

import jwt

from ...carriers import vonage as vonage_carrier
from ..errors import CallRefused, GatewayProtocolError
from ..twilio_side import GatewayClear, GatewayMark, GatewayMedia, GatewayMessage
from .common import (
    CallIds,
    Codec,
    Message,
    SideOptions,
    StreamTarget,
    WebhookRequest,
    check_shape,
    dumps,
    json_message,
)

__all__ = ["VonageCarrier"]


class VonageCarrier:
    spec = vonage_carrier.SPEC
    carrier = spec.name
    secret_env = spec.secret_envs[0]
    echo_marks_on_clear = False  # websocket:cleared answers a clear; notify only after playback

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:
        self.ids = ids
        self.options = options or SideOptions()
        self.warnings: list[str] = []
        self.uuid = ids.call_sid
        self.codec = Codec("audio/pcm", 16000)
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
        return WebhookRequest("GET", self.spec.webhook_path, query=query, headers=headers, signed=bool(secret))

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
        self.codec = Codec("audio/pcm", rate, big_endian=self.options.big_endian(self.carrier))
        return StreamTarget(str(ep.get("uri", "")), dict(self._headers), "audio/pcm", rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return []

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [dumps({"event": "websocket:connected", "content-type": self._content_type, **self._headers})]

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        return [self.codec.to_carrier(ulaw)]

    def mark_echo(self, name: str) -> list[Message]:
        return [dumps({"event": "websocket:notify", "payload": {"name": name}})]

    def cleared(self) -> list[Message]:
        return [dumps({"event": "websocket:cleared"})]

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
        msg = json_message(data, "Vonage")
        action = msg.get("action")
        if action == "clear":
            check_shape(msg, {"action"}, "clear")
            return GatewayClear()
        if action == "notify":
            check_shape(msg, {"action", "payload"}, "notify")
            name = msg["payload"].get("name") if isinstance(msg["payload"], dict) else None
            if not isinstance(name, str):
                raise GatewayProtocolError("notify: payload.name must be a string")
            return GatewayMark(name)
        raise GatewayProtocolError(f"unknown action {action!r} from the gateway")

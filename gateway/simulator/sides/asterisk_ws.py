"""Asterisk's side of a ``chan_websocket`` call (docs/how-to/pbx/asterisk-websocket.md), written from Asterisk's
WebSocket channel driver documentation, not from the gateway's dialect: the dialplan's ``CURL()`` fetches the
``v()`` parameters, ``Dial(WebSocket/gateway/c(slin16)f(json)v(…))`` connects to the ``websocket_client.conf`` URI
with them appended, Basic auth from its ``username``/``password`` and the subprotocol ``media``; then
``MEDIA_START`` (JSON), binary slin16 frames with no header and ``DTMF_END`` events. From the app it takes binary
media (whole frames of ``optimal_frame_size``: a shorter tail is dropped), ``FLUSH_MEDIA`` (drops the queue and any
pending mark, acknowledging nothing) and ``MARK_MEDIA`` (answered ``MEDIA_MARK_PROCESSED`` once played); text over
128 bytes is ignored by Asterisk, so it is refused here. Hang-up is the socket closing. Pure.
"""

from __future__ import annotations

import base64
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import GatewayProtocolError
from ..twilio_side import GatewayClear, GatewayMark, GatewayMedia, GatewayMessage
from .common import (
    CallIds,
    Codec,
    GatewayHangup,
    Message,
    SideOptions,
    StreamTarget,
    WebhookRequest,
    dumps,
    json_message,
)

__all__ = ["AsteriskWsCarrier"]

_FRAME = 640  # slin16, 20 ms


class AsteriskWsCarrier:
    carrier = "asterisk-ws"
    secret_env = "ASTERISK_WS_SECRET"
    echo_marks_on_clear = False  # FLUSH_MEDIA drops pending marks: their events never come
    subprotocols = ("media",)
    answer_types = ("text/plain",)

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:  # options: not used by PBXes
        self.ids = ids
        self.warnings: list[str] = []  # what the protocol's docs advise against (none checked yet)
        self.unique_id = "1733.%d" % (int(ids.call_sid[2:10], 16) % 100000)
        self.connection_id = "c0ffee00-" + ids.stream_sid[2:6].lower() + "-4000-8000-" + ids.stream_sid[6:18].lower()
        self.codec = Codec("audio/pcm", 16000)
        self._query = ""
        self._secret = ""
        self.started = False

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        """``Set(CURLOPT(userpwd)=asterisk:<secret>)`` then ``${CURL(http://gw/asterisk-ws/calls?call=${UNIQUEID}&…)}``."""
        self._secret = secret
        query = {"call": self.unique_id, "from": ids.from_, "to": ids.to}
        return WebhookRequest("GET", "/asterisk-ws/calls", query=query, headers=self._basic(), signed=bool(secret))

    def _basic(self) -> dict[str, str]:
        if not self._secret:
            return {}
        return {"Authorization": "Basic " + base64.b64encode(f"asterisk:{self._secret}".encode()).decode()}

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        text = body.strip()
        # v(param1=value1,param2=value2): commas become &, values must already be URI-encoded.
        pairs = [p.partition("=") for p in text.split(",")] if text else []
        if not pairs or any(not k or not sep or " " in v for k, sep, v in pairs):
            raise GatewayProtocolError(f"the /calls answer {text[:80]!r} is not v() parameters (name=value,…)")
        self._query = "&".join(f"{k}={v}" for k, _, v in pairs)
        params = dict(parse_qsl(self._query))
        if params.get("call") != self.unique_id or not params.get("token"):
            raise GatewayProtocolError(f"v() parameters without this call's id and a token: {text[:120]!r}")
        u = urlsplit(webhook_url)
        # websocket_client.conf: uri=ws://gateway:8080/asterisk-ws/stream; Asterisk appends v() as the query.
        url = urlunsplit(("wss" if u.scheme == "https" else "ws", u.netloc, "/asterisk-ws/stream", self._query, ""))
        return StreamTarget(url, params, "audio/pcm", 16000)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return self._basic()  # the connection's username/password

    def connected(self) -> list[Message]:
        return []

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [
            dumps(
                {
                    "event": "MEDIA_START",
                    "connection_id": self.connection_id,
                    "channel": f"WebSocket/gateway-{self.unique_id}",
                    "channel_id": self.unique_id + "1",
                    "format": "slin16",
                    "optimal_frame_size": _FRAME,
                    "ptime": 20,
                    "channel_variables": {},
                }
            )
        ]

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        pcm = self.codec.to_carrier(ulaw)
        return [pcm] if pcm else []

    def dtmf(self, digit: str) -> list[Message]:
        return [dumps({"event": "DTMF_END", "channel_id": self.unique_id + "1", "digit": digit})]

    def mark_echo(self, name: str) -> list[Message]:
        return [dumps({"event": "MEDIA_MARK_PROCESSED", "channel_id": self.unique_id + "1", "correlation_id": name})]

    def cleared(self) -> list[Message]:
        return []  # FLUSH_MEDIA is not acknowledged

    def stop(self) -> list[Message]:
        return []  # the channel hangs up: the socket closes

    def parse(self, data: Message) -> GatewayMessage | GatewayHangup:
        if not self.started:
            raise GatewayProtocolError("a message from the app before MEDIA_START")
        if isinstance(data, bytes):
            if not data or len(data) % _FRAME:
                # Asterisk drops the tail shorter than a frame: audio the caller would never hear.
                raise GatewayProtocolError(f"binary message of {len(data)} bytes (whole {_FRAME}-byte frames)")
            if len(data) > 65500:
                raise GatewayProtocolError(f"binary message of {len(data)} bytes (Asterisk hangs up over 65500)")
            return GatewayMedia(self.codec.from_carrier(data))
        if len(data.encode()) > 128:
            raise GatewayProtocolError(f"control message of {len(data.encode())} bytes (Asterisk ignores over 128)")
        msg = json_message(data, "chan_websocket")
        command = msg.get("command")
        if command == "FLUSH_MEDIA" and set(msg) == {"command"}:
            return GatewayClear()
        if command == "MARK_MEDIA" and set(msg) == {"command", "correlation_id"}:
            return GatewayMark(str(msg["correlation_id"]))
        if command == "HANGUP" and set(msg) == {"command"}:
            return GatewayHangup()
        raise GatewayProtocolError(f"command {data[:60]!r} from the app (this side expects JSON control messages)")

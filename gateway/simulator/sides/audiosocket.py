"""Asterisk's side of an AudioSocket call (docs/how-to/pbx/asterisk-audiosocket.md), written from Asterisk's
documentation of the protocol, not from the gateway's dialect: the dialplan fetches a UUID with ``CURL()``, then
``AudioSocket(<uuid>,<host:port>)`` opens a TCP connection and sends frames of a 1-byte kind, a 16-bit big-endian
length and the payload: the UUID (``0x01``, 16 bytes) first, then signed-linear 8 kHz audio (``0x10``, 20 ms
frames) and DTMF digits (``0x03``, one ASCII byte). Asterisk's hang-up is the connection closing; it never sends
``0x00``. From the gateway it takes only audio (``0x10``) and the hang-up frame (``0x00``, empty). There are no
marks and no clear: Asterisk plays each frame the moment it arrives. Pure.
"""

from __future__ import annotations

import base64
import struct
import uuid

from ..errors import GatewayProtocolError
from ..twilio_side import GatewayMedia, GatewayMessage
from .common import CallIds, Codec, GatewayHangup, Message, SideOptions, StreamTarget, WebhookRequest

__all__ = ["AudioSocketCarrier", "audiosocket_frame"]

_KIND_HANGUP, _KIND_UUID, _KIND_DTMF, _KIND_SLIN = 0x00, 0x01, 0x03, 0x10
_FRAME_BYTES = 320  # 20 ms of 8 kHz 16-bit audio


def audiosocket_frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


class AudioSocketCarrier:
    carrier = "audiosocket"
    secret_env = "AUDIOSOCKET_SECRET"
    echo_marks_on_clear = False  # no marks, no clear
    #: Not a WebSocket: the caller opens a TCP connection to the gateway's AudioSocket listener.
    transport = "tcp"
    answer_types = ("text/plain",)

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:  # options: not used by PBXes
        self.ids = ids
        self.warnings: list[str] = []  # what the protocol's docs advise against (none checked yet)
        self.codec = Codec("audio/pcm", 8000)
        self.call_uuid = ""
        self.started = False
        self.hung_up = False

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        """``${CURL(http://gw/audiosocket/calls?from=…&to=…)}`` with ``CURLOPT(userpwd)=asterisk:<secret>``."""
        headers = {}
        if secret:
            headers["Authorization"] = "Basic " + base64.b64encode(f"asterisk:{secret}".encode()).decode()
        query = {"from": ids.from_, "to": ids.to}
        return WebhookRequest("GET", "/audiosocket/calls", query=query, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        text = body.strip()
        try:
            parsed = uuid.UUID(text)
        except ValueError:
            raise GatewayProtocolError(f"the UUID endpoint answered {text[:60]!r}, not a UUID") from None
        if str(parsed) != text:
            raise GatewayProtocolError(f"{text!r} is not a canonical UUID (AudioSocket() wants one)")
        self.call_uuid = text
        return StreamTarget(f"audiosocket:{text}", {}, "audio/pcm", 8000)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return []

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [audiosocket_frame(_KIND_UUID, uuid.UUID(self.call_uuid).bytes)]

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        return [audiosocket_frame(_KIND_SLIN, self.codec.to_carrier(ulaw))]

    def dtmf(self, digit: str) -> list[Message]:
        return [audiosocket_frame(_KIND_DTMF, digit.encode("ascii"))]

    def mark_echo(self, name: str) -> list[Message]:
        raise GatewayProtocolError("AudioSocket has no marks to echo")  # the gateway never sends one

    def cleared(self) -> list[Message]:
        return []

    def stop(self) -> list[Message]:
        return []  # Asterisk's hang-up is the connection closing

    def parse(self, data: Message) -> GatewayMessage | GatewayHangup:
        """One whole frame from the gateway (header and payload)."""
        if isinstance(data, str) or len(data) < 3:
            raise GatewayProtocolError("AudioSocket frames are binary, at least 3 bytes")
        if not self.started:
            raise GatewayProtocolError("a frame from the gateway before our UUID frame")
        if self.hung_up:
            raise GatewayProtocolError("a frame from the gateway after its hang-up frame")
        kind, length = struct.unpack_from(">BH", data)
        payload = data[3:]
        if len(payload) != length:
            raise GatewayProtocolError(f"frame length {length} but {len(payload)} bytes follow")
        if kind == _KIND_HANGUP:
            if length:
                raise GatewayProtocolError("a hang-up frame with a payload")
            self.hung_up = True
            return GatewayHangup()
        if kind != _KIND_SLIN:
            # Asterisk ends the call on any other kind (an error, a UUID, DTMF, or audio of another rate).
            raise GatewayProtocolError(f"frame kind 0x{kind:02x} from the gateway (Asterisk takes 0x10 and 0x00)")
        if length != _FRAME_BYTES:
            raise GatewayProtocolError(f"audio frame of {length} bytes (expected 20 ms = {_FRAME_BYTES})")
        return GatewayMedia(self.codec.from_carrier(payload))

"""FreeSWITCH's side of a ``mod_audio_fork`` call (docs/how-to/pbx/freeswitch.md), written from the module's own
documentation and behaviour, not from the gateway's dialect: the dialplan's ``curl`` fetches the call's metadata,
``uuid_audio_fork <uuid> start <url> mono 16k <bug> <metadata> true true 16000`` opens the WebSocket (subprotocol
``audio.drachtio.org``, which the server must select) and sends the metadata as the first text frame, then binary
16-bit little-endian PCM. From the server it plays binary PCM of the same rate (bidirectional stream mode), drops
what it buffered on ``{"type":"killAudio"}`` and answers ``{"type":"mark","data":{"name":…}}`` with
``"event":"playout"`` once played or ``"event":"cleared"`` when a killAudio dropped it. Keypresses travel as
``{"type":"dtmf","digit":…}`` text frames (``bind_digit_action`` → ``send_text``). Hang-up is the socket closing.
Pure.
"""

from __future__ import annotations

import base64
import json
from urllib.parse import urlsplit, urlunsplit

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
    check_shape,
    dumps,
    json_message,
)

__all__ = ["FreeswitchCarrier"]

_RATES = (8000, 16000)


class FreeswitchCarrier:
    carrier = "freeswitch"
    secret_env = "FREESWITCH_SECRET"
    echo_marks_on_clear = True  # killAudio answers every pending mark with "event": "cleared"
    subprotocols = ("audio.drachtio.org",)
    answer_types = ("application/json",)

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:  # options: not used by PBXes
        self.ids = ids
        self.warnings: list[str] = []  # what the protocol's docs advise against (none checked yet)
        self.call_uuid = "fs-" + ids.call_sid[2:].lower()
        self.codec = Codec("audio/pcm", 16000)
        self._metadata = ""
        self._clearing = False
        self.started = False

    def webhook(self, ids: CallIds, public_base: str, secret: str) -> WebhookRequest:
        """``<action application="curl" data="http://freeswitch:SECRET@gw/freeswitch/calls?uuid=${uuid}&…"/>``."""
        headers = {}
        if secret:
            headers["Authorization"] = "Basic " + base64.b64encode(f"freeswitch:{secret}".encode()).decode()
        query = {"uuid": self.call_uuid, "from": ids.from_, "to": ids.to}
        return WebhookRequest("GET", "/freeswitch/calls", query=query, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        text = body.strip()
        if " " in text or not text.startswith("{"):
            # uuid_audio_fork splits its arguments on spaces, and takes an argument starting with { as metadata.
            raise GatewayProtocolError(f"metadata {text[:80]!r} is not one space-free JSON object")
        try:
            meta = json.loads(text)
        except ValueError as exc:
            raise GatewayProtocolError(f"metadata is not JSON: {exc}") from None
        if not isinstance(meta, dict) or meta.get("uuid") != self.call_uuid or not meta.get("token"):
            raise GatewayProtocolError(f"metadata without this call's uuid and a token: {text[:120]!r}")
        rate = meta.get("rate", 16000)
        if rate not in _RATES:
            raise GatewayProtocolError(f"metadata rate {rate!r}: mod_audio_fork streams 8k or 16k here")
        self._metadata = text
        self.codec = Codec("audio/pcm", rate)
        u = urlsplit(webhook_url)
        stream = urlunsplit(("wss" if u.scheme == "https" else "ws", u.netloc, "/freeswitch/stream", "", ""))
        return StreamTarget(stream, {"token": str(meta["token"])}, "audio/pcm", rate)

    def upgrade_headers(self, target: StreamTarget, secret: str) -> dict[str, str]:
        return {}

    def connected(self) -> list[Message]:
        return []

    def start(self, target: StreamTarget) -> list[Message]:
        self.started = True
        return [self._metadata]  # the metadata argument, verbatim, as the first text frame

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        pcm = self.codec.to_carrier(ulaw)
        return [pcm] if pcm else []  # the module sends what has accumulated: nothing when the resampler holds it

    def dtmf(self, digit: str) -> list[Message]:
        return [dumps({"type": "dtmf", "digit": digit})]

    def mark_echo(self, name: str) -> list[Message]:
        event = "cleared" if self._clearing else "playout"
        return [dumps({"type": "mark", "data": {"name": name, "event": event}})]

    def cleared(self) -> list[Message]:
        self._clearing = False  # killAudio sends nothing of its own: only the cleared marks
        return []

    def stop(self) -> list[Message]:
        return []  # the channel ends: the socket closes

    def parse(self, data: Message) -> GatewayMessage | GatewayHangup:
        if not self.started:
            raise GatewayProtocolError("a message from the gateway before the metadata frame")
        if isinstance(data, bytes):
            if not data or len(data) % 2:
                raise GatewayProtocolError(f"binary frame of {len(data)} bytes (16-bit PCM)")
            return GatewayMedia(self.codec.from_carrier(data))
        msg = json_message(data, "mod_audio_fork")
        kind = msg.get("type")
        if kind == "killAudio":
            check_shape(msg, {"type"}, "killAudio")
            self._clearing = True
            return GatewayClear()
        if kind == "mark":
            check_shape(msg, {"type", "data"}, "mark")
            name = msg["data"].get("name") if isinstance(msg["data"], dict) else None
            if not isinstance(name, str) or not name:
                raise GatewayProtocolError("mark: data.name must be a non-empty string")
            return GatewayMark(name)
        # playAudio writes a file for a controller to play: not the stream mode the gateway is set up for.
        raise GatewayProtocolError(
            f"message type {kind!r} from the gateway (stream mode takes binary, killAudio, mark)"
        )

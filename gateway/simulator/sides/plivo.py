"""Plivo's side of a call (docs/how-to/carriers/plivo.md): a V3-signed answer webhook, Plivo XML ``<Stream>``,
``playedStream`` only once the audio played, ``clearedAudio`` to answer a ``clearAudio``. Pure but for the signature's
random nonce.
"""

from __future__ import annotations

import json
import secrets

from ...carriers import plivo as plivo_carrier
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
    refusal_of,
    unb64,
    warn_once,
    xml_root,
)

__all__ = ["PlivoCarrier"]


class PlivoCarrier:
    spec = plivo_carrier.SPEC
    carrier = spec.name
    secret_env = spec.secret_envs[0]
    echo_marks_on_clear = False  # playedStream only after playback; a clear is answered with clearedAudio

    def __init__(self, ids: CallIds, options: SideOptions | None = None) -> None:
        self.ids = ids
        self.options = options or SideOptions()
        self.warnings: list[str] = []
        self.call_uuid = ids.call_sid
        self.stream_id = ids.stream_sid
        self._seq = 0
        self._chunk = 0
        self.codec = Codec("audio/pcmu", 8000)
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
                secret, "POST", public_base + self.spec.webhook_path, form, nonce
            )
        return WebhookRequest("POST", self.spec.webhook_path, form=form, headers=headers, signed=bool(secret))

    def read_answer(self, body: str, content_type: str, webhook_url: str) -> StreamTarget:
        root = xml_root(body, "Plivo XML")
        stream = root.find("Stream")
        if stream is None:
            raise refusal_of(root)
        if stream.get("bidirectional") != "true":
            raise GatewayProtocolError("<Stream> is not bidirectional: the caller would hear nothing")
        if stream.get("keepCallAlive") != "true":
            raise GatewayProtocolError('<Stream> without keepCallAlive="true": the call would move on at once')
        content = stream.get("contentType", "audio/x-l16;rate=8000")
        if content not in plivo_carrier.CONTENT_TYPES:
            raise GatewayProtocolError(f"unknown contentType {content!r}")
        enc, rate, _ = plivo_carrier.CONTENT_TYPES[content]
        self.codec = Codec(enc, rate, big_endian=self.options.big_endian(self.carrier))
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
        return [dumps({
            "event": "start", "sequenceNumber": self._next(),
            "start": {"callId": self.call_uuid, "streamId": self.stream_id, "accountId": self.ids.account_sid,
                      "tracks": ["inbound"],
                      "mediaFormat": {"encoding": names[target.encoding], "sampleRate": target.sample_rate}},
            "extra_headers": json.dumps(headers),
        })]  # fmt: skip

    def media(self, ulaw: bytes, timestamp_ms: int) -> list[Message]:
        self._chunk += 1
        return [dumps({"event": "media", "sequenceNumber": self._next(), "streamId": self.stream_id,
                        "media": {"track": "inbound", "timestamp": str(timestamp_ms), "chunk": self._chunk,
                                  "payload": b64(self.codec.to_carrier(ulaw))}})]  # fmt: skip

    def mark_echo(self, name: str) -> list[Message]:
        return [dumps({"event": "playedStream", "sequenceNumber": self._next(), "streamId": self.stream_id,
                        "name": name})]  # fmt: skip

    def cleared(self) -> list[Message]:
        return [dumps({"event": "clearedAudio", "sequenceNumber": self._next(), "streamId": self.stream_id})]

    def stop(self) -> list[Message]:
        return []  # Plivo hangs up by closing the socket

    def parse(self, data: Message) -> GatewayMessage:
        if not self.started:
            raise GatewayProtocolError("message from the gateway before 'start'")
        msg = json_message(data, "Plivo")
        event = msg.get("event")
        if event == "playAudio":
            media = msg.get("media")
            want = {"audio/pcmu": "audio/x-mulaw", "audio/pcm": "audio/x-l16"}[self.codec.encoding]
            # What the payload is must be said (contentType, sampleRate): Plivo plays it as that. Keys beyond the
            # documented ones are not refused by Plivo's docs, so they are a warning here, not an error.
            if (
                not isinstance(media, dict)
                or media.get("contentType") != want
                or media.get("sampleRate") != self.codec.rate
            ):
                raise GatewayProtocolError(
                    f"playAudio: media must be {want} at {self.codec.rate} Hz, got {media!r:.120}"
                )
            extra = (set(msg) - {"event", "media"}) | (set(media) - {"contentType", "sampleRate", "payload"})
            if extra:
                warn_once(self.warnings, f"playAudio with keys Plivo does not document: {sorted(extra)}")
            return GatewayMedia(self.codec.from_carrier(unb64(media.get("payload"), "playAudio")))
        if msg.get("streamId") != self.stream_id:
            raise GatewayProtocolError(f"{event}: streamId {msg.get('streamId')!r} is not this stream's")
        if event == "checkpoint":
            check_shape(msg, {"event", "streamId", "name"}, "checkpoint")
            if not isinstance(msg["name"], str) or not msg["name"]:
                raise GatewayProtocolError("checkpoint: name must be a string")
            return GatewayMark(msg["name"])
        if event == "clearAudio":
            check_shape(msg, {"event", "streamId"}, "clearAudio")
            return GatewayClear()
        raise GatewayProtocolError(f"unknown event {event!r} from the gateway")

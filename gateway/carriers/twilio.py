"""Twilio: the Media Streams dialect (bidirectional ``<Connect><Stream>``) and the carrier's description
(:data:`SPEC`: ``POST /twilio/voice`` → TwiML, ``GET /twilio/stream``, ``X-Twilio-Signature`` with
``TWILIO_AUTH_TOKEN``; docs/how-to/carriers/twilio.md). Pure: text in, events out; bytes in, text out.

The stream (docs/architecture/twilio-media-streams.md):
- inbound: ``connected``, ``start``, ``media``, ``dtmf``, ``mark``, ``stop`` (all JSON text; numbers arrive as strings);
- outbound: ``media`` (base64 raw μ-law 8 kHz), ``mark``, ``clear``; nothing may be sent before ``start`` gives the
  ``streamSid``, and every message after ``connected`` must carry that same ``streamSid`` (else Twilio error 31951).

Hot path (50 ``media`` messages per second per call each way; docs/architecture/performance.md): an inbound message is
first decoded by msgspec into a typed struct that only a well-formed ``media`` message of this stream fits; anything
else (other events, wrong types, bad base64, invalid JSON…) falls through to :meth:`TwilioStream.parse_plain`, the
reference parser, which also produces every error. The fast path may only accept what the reference accepts, with
the same result: tests/unit/test_fastpath_equivalence.py holds it to that. Outbound ``media`` is a byte template.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from typing import Any

import msgspec

from ..errors import CarrierProtocolError, LocalProtocolError
from ..security import validate_twilio_signature
from . import twiml
from .base import b64, check_in_stream, dumps, obj, opt_int, require_dtmf, require_str, screen_media
from .events import (
    AudioReceived,
    CarrierEvent,
    DtmfReceived,
    PlaybackCheckpoint,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from .spec import (
    Answer,
    AnswerContext,
    Call,
    CarrierDoor,
    CarrierSpec,
    Door,
    Malformed,
    Refusal,
    Secret,
    Upgrade,
    Webhook,
)

__all__ = [
    "MULAW_FRAME_BYTES",
    "SIGNATURE_HEADER",
    "SPEC",
    "STREAM_PATH",
    "TwilioDialect",
    "TwilioStream",
    "read_form_call",
    "say_and_hang_up",
]

#: 20 ms of 8 kHz μ-law: Twilio's observed inbound frame, and the unit we send in.
MULAW_FRAME_BYTES = 160
SIGNATURE_HEADER = "X-Twilio-Signature"
STREAM_PATH = "/twilio/stream"
# Real SIDs are two letters + 32 hex; accept any short token of safe characters so test tools and other
# Twilio-compatible carriers fit, but never anything that could break the JSON we template it into.
_SID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_MEDIA_TAIL = '"}}'  # what follows a media message's payload


# ---- fast path: the one message that arrives 50 times a second --------------------------------------------------
class _Media(msgspec.Struct):
    payload: bytes  # msgspec decodes padded standard base64 and refuses anything else (as b64decode(validate=True))
    track: str = "inbound"
    timestamp: str | int | None = None
    chunk: str | int | None = None


class _MediaMessage(msgspec.Struct):
    event: str
    streamSid: str | None = None  # Twilio's spelling
    media: _Media | None = None


_decode_media = msgspec.json.Decoder(_MediaMessage).decode


class TwilioStream:
    """Protocol state of one Twilio media stream: parses what Twilio sends, builds what we send."""

    __slots__ = ("stream_sid", "call_sid", "stopped", "_media_head")

    carrier = "twilio"
    frame_bytes = MULAW_FRAME_BYTES

    def __init__(self) -> None:
        self.stream_sid: str | None = None
        self.call_sid: str | None = None
        self.stopped = False
        self._media_head: tuple[str, str] | None = None  # (streamSid, the media template's head for it)

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, text: str | bytes) -> CarrierEvent:
        """Parse one WebSocket message. Raises :class:`CarrierProtocolError` on anything malformed or out of order."""
        m = self._media(text)
        if m is not None:
            return AudioReceived(m.payload, opt_int(m.timestamp), opt_int(m.chunk))
        return self.parse_plain(text)

    def audio_frame(self, text: str | bytes) -> bytes | None:
        """:meth:`parse`'s fast road without the event: the payload when ``text`` is a media message of this stream
        whose payload is whole 20 ms frames (what :class:`TwilioDialect` passes on unscreened), else None (the
        message is then parsed)."""
        m = self._media(text)
        if m is None:
            return None
        n = len(m.payload)
        return m.payload if n and n % MULAW_FRAME_BYTES == 0 else None

    def _media(self, text: str | bytes) -> _Media | None:
        """The fast road: a well-formed inbound ``media`` message of this stream, decoded by msgspec; None for
        anything else, which :meth:`parse_plain` then takes (and refuses, if it must)."""
        if self.stream_sid is None or self.stopped or type(text) is not str:
            return None
        try:
            msg = _decode_media(text)
        except (msgspec.DecodeError, UnicodeEncodeError, RecursionError):  # surrogates; nesting too deep
            return None
        m = msg.media
        if m is not None and msg.event == "media" and msg.streamSid == self.stream_sid and m.track == "inbound":
            return m
        return None

    def parse_plain(self, text: str | bytes) -> CarrierEvent:
        """The reference parser (stdlib ``json``): every message type and every error. :meth:`parse` gives the
        same result for every input; it only takes a faster road for well-formed ``media``."""
        if isinstance(text, bytes):
            raise CarrierProtocolError("binary frame (Twilio sends JSON text only)")
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CarrierProtocolError(f"invalid JSON: {exc}") from None
        if not isinstance(msg, dict):
            raise CarrierProtocolError("message is not a JSON object")
        event = msg.get("event")
        if event == "connected":
            if self.stream_sid is not None:
                raise CarrierProtocolError("'connected' after 'start' (it is the first message of a stream)")
            return StreamConnected(protocol=str(msg.get("protocol", "")), version=str(msg.get("version", "")))
        if event == "start":
            return self._parse_start(msg)
        check_in_stream(event, self.stream_sid, self.stopped, msg.get("streamSid"), "streamSid")
        if event == "media":
            media = obj(msg, "media")
            track = media.get("track", "inbound")
            if track != "inbound":
                raise CarrierProtocolError(f"media on track {track!r} (a bidirectional stream carries inbound only)")
            payload = media.get("payload")
            if not isinstance(payload, str):
                raise CarrierProtocolError("media.payload missing")
            try:
                audio = base64.b64decode(payload, validate=True)
            except (binascii.Error, ValueError):
                raise CarrierProtocolError("media.payload is not valid base64") from None
            return AudioReceived(audio, opt_int(media.get("timestamp")), opt_int(media.get("chunk")))
        if event == "mark":
            return PlaybackCheckpoint(require_str(obj(msg, "mark"), "name", "mark"))
        if event == "dtmf":
            digit = require_dtmf(require_str(obj(msg, "dtmf"), "digit", "dtmf"), "dtmf.digit")
            return DtmfReceived(digit)
        if event == "stop":
            self.stopped = True
            raw_stop = msg.get("stop")
            stop = raw_stop if isinstance(raw_stop, dict) else {}
            return StreamStopped(call_id=str(stop.get("callSid", self.call_sid or "")))
        raise CarrierProtocolError(f"unknown event {event!r}")

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        if self.stream_sid is not None:
            raise CarrierProtocolError("second 'start' on one stream")
        start = obj(msg, "start")
        stream_sid = require_str(start, "streamSid", "start")
        if not _SID.fullmatch(stream_sid):
            raise CarrierProtocolError("start.streamSid has characters a SID never has")
        top_sid = msg.get("streamSid", stream_sid)
        if top_sid != stream_sid:
            raise CarrierProtocolError("start.streamSid and streamSid disagree")
        call_sid = require_str(start, "callSid", "start")
        account_sid = str(start.get("accountSid", ""))
        fmt = obj(start, "mediaFormat")
        encoding = fmt.get("encoding")
        rate = opt_int(fmt.get("sampleRate"))
        channels = opt_int(fmt.get("channels"))
        # Twilio documents exactly one format for Media Streams; anything else would be decoded as noise.
        if encoding != "audio/x-mulaw" or rate != 8000 or channels != 1:
            raise CarrierProtocolError(
                f"unsupported mediaFormat {encoding!r}/{fmt.get('sampleRate')!r}/{fmt.get('channels')!r}"
                " (expected audio/x-mulaw, 8000, 1)"
            )
        params = start.get("customParameters", {})
        if params is None:
            params = {}
        if not isinstance(params, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in params.items()
        ):
            raise CarrierProtocolError("start.customParameters must map strings to strings")
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list):
            raise CarrierProtocolError("start.tracks must be a list")
        self.stream_sid = stream_sid
        self.call_sid = call_sid
        return StreamStarted(
            stream_id=stream_sid,
            call_id=call_sid,
            account_id=account_sid,
            encoding="audio/pcmu",
            sample_rate=8000,
            channels=1,
            tracks=tuple(str(t) for t in tracks),
            custom_parameters=dict(params),
        )

    # ---- outbound ----------------------------------------------------------------------------------------------
    def _sid(self) -> str:
        if self.stream_sid is None:
            raise LocalProtocolError("cannot send to Twilio before 'start' gave the streamSid")  # our bug, not Twilio's
        return self.stream_sid

    def build_media(self, payload: bytes) -> str:
        # Template, not json.dumps: the SID was checked against _SID at start and base64 needs no escaping.
        head = self._media_head
        if head is None or head[0] != self.stream_sid:
            sid = self._sid()
            head = self._media_head = (sid, f'{{"event":"media","streamSid":"{sid}","media":{{"payload":"')
        return head[1] + b64(payload) + _MEDIA_TAIL

    def media_template(self) -> tuple[bytes, bytes] | None:
        """:meth:`build_media`'s message around the base64 payload, as UTF-8: the text before it and after it (the
        compiled message lane fills in the rest, gateway/audio/fir_message.py). None before ``start``."""
        if self.stream_sid is None:
            return None
        text = self.build_media(b"")
        return text[: -len(_MEDIA_TAIL)].encode(), _MEDIA_TAIL.encode()

    def build_mark(self, name: str) -> str:
        return dumps({"event": "mark", "streamSid": self._sid(), "mark": {"name": name}})

    def build_clear(self) -> str:
        return dumps({"event": "clear", "streamSid": self._sid()})


class TwilioDialect:
    """Twilio Media Streams as a :class:`~gateway.carriers.base.Dialect`: presents :class:`TwilioStream` (whose
    ``parse`` returns one event per message, the API its tests and the fast path are pinned to) through the
    protocol, whose ``parse`` returns a list."""

    carrier = "twilio"
    frame_bytes = MULAW_FRAME_BYTES
    min_message_ms = 20
    max_message_ms = 1000  # no documented maximum; 20–100 ms is the practical choice
    max_lead_ms: int | None = None
    silence = 0xFF

    def __init__(self, stream: TwilioStream | None = None) -> None:
        self.stream = stream or TwilioStream()
        self.build_media = self.stream.build_media  # type: ignore[method-assign]  # 50 a second: no wrapper call
        self.audio_frame = self.stream.audio_frame  # (base.Dialect's optional fast road; the same: no wrapper call)
        #: Media payloads that were not whole 20 ms frames, by reason (gateway.carriers.base.MEDIA_FAULTS).
        self.media_faults: dict[str, int] = {}

    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        ev = self.stream.parse(data)
        if type(ev) is AudioReceived and len(ev.payload) != MULAW_FRAME_BYTES:
            screened = screen_media(ev, "audio/pcmu", MULAW_FRAME_BYTES, self.media_faults)
            if screened is not None:
                return screened
        return [ev]

    def build_media(self, payload: bytes) -> str:
        return self.stream.build_media(payload)

    def media_template(self) -> tuple[bytes, bytes] | None:
        return self.stream.media_template()

    def build_mark(self, name: str) -> str:
        return self.stream.build_mark(name)

    def build_clear(self) -> str:
        return self.stream.build_clear()


# ---- the carrier ---------------------------------------------------------------------------------------------------
def read_form_call(hook: Webhook) -> Call | Malformed:
    """A Twilio-style voice webhook (Twilio, SignalWire, Telnyx's TeXML): ``CallSid``, ``From``, ``To``."""
    call_sid = hook.field("CallSid")
    if not call_sid:
        return Malformed("CallSid missing")
    return Call(call_sid, called=hook.field("To"), caller=hook.field("From"))


def say_and_hang_up(text: str) -> Answer:
    return Answer(twiml.say_and_hang_up(text))


def _verify(hook: Webhook, door: Door[CarrierDoor]) -> Refusal | None:
    # HMAC-SHA1 over the public URL and every form parameter (docs/security.md, "Signatures").
    if validate_twilio_signature(door.secret("auth_token"), hook.url, hook.form, hook.headers.get(SIGNATURE_HEADER)):
        return None
    return Refusal("bad signature", "invalid signature")


def _answer(call: Call, ctx: AnswerContext[CarrierDoor]) -> Answer:
    # stream-started/stopped/error reach POST /twilio/status when status callbacks are on
    # (docs/how-to/call-control.md#status-callbacks)
    parameters = {"token": ctx.token, "from": call.caller, "to": call.called}
    return Answer(twiml.connect_stream(ctx.stream_base + STREAM_PATH, parameters, ctx.status_callback))


def _check_upgrade(upgrade: Upgrade, door: Door[CarrierDoor]) -> Refusal | None:
    # Twilio signs the upgrade over the wss:// URL exactly as in the TwiML, with no params (docs/security.md). With
    # the auth token set the signature is required: an unsigned upgrade is nobody we answered.
    signature = upgrade.headers.get(SIGNATURE_HEADER)
    if validate_twilio_signature(door.secret("auth_token"), upgrade.url, {}, signature):
        return None
    return Refusal("missing_signature" if signature is None else "bad_signature", "invalid signature")


def _dialect(upgrade: Upgrade) -> TwilioDialect:
    return TwilioDialect()


SPEC: CarrierSpec[CarrierDoor] = CarrierSpec(
    name="twilio",
    options=CarrierDoor,
    secrets=(Secret("auth_token", "TWILIO_AUTH_TOKEN"),),
    webhook_path="/twilio/voice",
    webhook_methods=("POST",),
    stream_path=STREAM_PATH,
    webhook_body="form",
    verify=_verify,
    read_call=read_form_call,
    answer=_answer,
    busy=say_and_hang_up,
    dialect=_dialect,
    check_upgrade=_check_upgrade,
    status_callbacks=True,
    call_control="twilio_rest",
)

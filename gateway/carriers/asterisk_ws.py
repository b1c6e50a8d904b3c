"""Asterisk's WebSocket channel driver (``chan_websocket``: ``Dial(WebSocket/…)`` or ARI ``externalMedia`` with
``transport=websocket``), Asterisk connecting out to the gateway. Pure.

What Asterisk does, and what this module does with it (docs/how-to/pbx/asterisk-websocket.md#protocol):

- The dialplan first fetches the call's URI parameters from ``GET /asterisk-ws/calls?call=${UNIQUEID}&from=…&to=…``
  (``ASTERISK_WS_SECRET`` as Basic password or Bearer token) and dials ``WebSocket/<connection>/c(slin16)f(json)
  v(<them>)``: Asterisk appends them to the ``websocket_client.conf`` URI, so the upgrade carries the per-call
  token, the call's id and numbers in its query. The upgrade itself carries the connection's ``username`` /
  ``password`` as Basic auth, checked with the same secret, and offers the subprotocol ``media`` (we select it).
- The first text message is ``MEDIA_START`` (JSON with ``f(json)``, else ``MEDIA_START key:value …``): its
  ``format`` (``ulaw``, ``alaw``, ``slin``, ``slin16``) and ``optimal_frame_size`` fix the audio both ways. Audio can
  arrive before it (asterisk issue 1712): up to :data:`EARLY_AUDIO_LIMIT` bytes of it are dropped, more is a
  protocol error.
- Audio both ways is **binary** frames with no header. Asterisk re-frames and times what we send from its own queue
  (about 1000 frames; it says ``MEDIA_XOFF`` at 900), so we send whole frames, at most 1 s per message, and keep
  our lead well under the queue (:data:`MAX_LEAD_MS`).
- Barge-in is ``FLUSH_MEDIA``: it drops the queue and every pending mark, with no acknowledgement (the session takes
  it as done when sent). Marks are ``MARK_MEDIA`` with a ``correlation_id``, answered ``MEDIA_MARK_PROCESSED`` once
  played; JSON only, so with plain-text control messages the session resolves marks from its clock (Asterisk
  plays at real time from its queue, so the model holds).
- ``DTMF_END`` carries a keypress. Other notifications (``MEDIA_XOFF``/``XON``, ``STATUS``, ``QUEUE_DRAINED``,
  ``MEDIA_BUFFERING_COMPLETED``, ``ERROR``) need nothing from the call. Hang-up either way is the socket closing.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from ..errors import CarrierProtocolError
from .audiosocket import presents_secret
from .base import SAFE_ID, StreamDialect, dumps, require_dtmf
from .events import AudioReceived, CarrierEvent, DtmfReceived, PlaybackCheckpoint, StreamError, StreamStarted
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

__all__ = ["EARLY_AUDIO_LIMIT", "FORMATS", "MAX_LEAD_MS", "SPEC", "AsteriskWsSettings", "AsteriskWsStream"]

#: ``c(<format>)`` names the gateway takes → (agent-protocol encoding, sample rate).
FORMATS = {
    "ulaw": ("audio/pcmu", 8000),
    "alaw": ("audio/pcma", 8000),
    "slin": ("audio/pcm", 8000),
    "slin16": ("audio/pcm", 16000),
}
#: Audio that may precede MEDIA_START (asterisk issue 1712), dropped: 200 ms of slin16.
EARLY_AUDIO_LIMIT = 6400
#: Asterisk's queue holds about 1000 frames (20 s) and says MEDIA_XOFF at 900: stay far below.
MAX_LEAD_MS = 5000
SUBPROTOCOL = "media"


class AsteriskWsStream(StreamDialect):
    """Protocol state of one chan_websocket connection (a :class:`~gateway.carriers.base.Dialect`).
    ``transport_params``: the upgrade's query (``token``, ``call``, ``from``, ``to``: the dialplan's ``v()``)."""

    carrier = "asterisk-ws"
    label = "Asterisk"
    started_by = "MEDIA_START"
    max_lead_ms: int | None = MAX_LEAD_MS

    def __init__(self, transport_params: dict[str, str] | None = None) -> None:
        super().__init__(transport_params, "audio/pcm", 16000)
        self.json_control = False
        self._early = 0

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        if isinstance(data, bytes):
            if self.stream_id is None:
                self._early += len(data)
                if self._early > EARLY_AUDIO_LIMIT:
                    raise CarrierProtocolError(f"{self._early} bytes of audio before MEDIA_START")
                return []  # asterisk issue 1712: audio can come first; it is dropped
            if self.encoding == "audio/pcm" and len(data) % 2:
                raise CarrierProtocolError(f"binary frame of odd length {len(data)} (16-bit PCM)")
            return [AudioReceived(data)] if data else []
        event, fields = _control(data)
        if event == "MEDIA_START" and self.stream_id is None:
            self.json_control = data.lstrip().startswith("{")
            return [self._media_start(fields)]
        if self.stream_id is None:
            raise CarrierProtocolError(f"{event!r} before MEDIA_START")
        if event == "MEDIA_START":
            raise CarrierProtocolError("second MEDIA_START on one connection")
        if event == "DTMF_END":
            return [DtmfReceived(require_dtmf(fields.get("digit"), "DTMF_END digit"))]
        if event == "MEDIA_MARK_PROCESSED":
            name = fields.get("correlation_id")
            if not isinstance(name, str) or not name:
                raise CarrierProtocolError("MEDIA_MARK_PROCESSED without a correlation_id")
            return [PlaybackCheckpoint(name)]
        if event == "ERROR":
            return [StreamError("asterisk", str(fields.get("error_text", "")))]
        return []  # flow control, status and drain notices: nothing the call needs (unknown ones too)

    def _media_start(self, fields: dict[str, Any]) -> StreamStarted:
        fmt = fields.get("format")
        if not isinstance(fmt, str) or fmt not in FORMATS:  # a list or an object is no format (and unhashable)
            raise CarrierProtocolError(f"MEDIA_START format {fmt!r} (dial with c(ulaw), c(alaw), c(slin) or c(slin16))")
        encoding, rate = FORMATS[fmt]
        params = dict(self.transport_params)
        call_id = params.get("call", "")
        if not SAFE_ID.fullmatch(call_id):
            raise CarrierProtocolError("no usable 'call' in the upgrade's query (the dialplan's v() from /calls)")
        stream_id = str(fields.get("connection_id") or call_id)
        if not SAFE_ID.fullmatch(stream_id):
            raise CarrierProtocolError("MEDIA_START connection_id is not an id")
        self._started(stream_id, call_id, encoding, rate)
        optimal = fields.get("optimal_frame_size")
        if optimal is not None and str(optimal) != str(self.frame_bytes):
            raise CarrierProtocolError(f"optimal_frame_size {optimal} with format {fmt} (ptime other than 20 ms?)")
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id="",
            encoding=encoding,
            sample_rate=rate,
            custom_parameters={k: v for k, v in params.items() if k != "call"},
        )

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> bytes:
        self._sid()
        return payload

    def build_mark(self, name: str) -> str | None:
        self._sid()
        return self._command("MARK_MEDIA", name) if self.json_control else None

    def build_clear(self) -> str:
        self._sid()
        return self._command("FLUSH_MEDIA")

    def _command(self, command: str, correlation_id: str | None = None) -> str:
        if self.json_control:
            msg: dict[str, str] = {"command": command}
            if correlation_id is not None:
                msg["correlation_id"] = correlation_id
            return dumps(msg)
        return command if correlation_id is None else f"{command} {correlation_id}"


def _control(data: str) -> tuple[str, dict[str, Any]]:
    """A control message in either format → (event, fields). JSON: ``{"event": …, …}``; plain text:
    ``EVENT key:value key:value`` (values without spaces)."""
    text = data.strip()
    if text.startswith("{"):
        try:
            msg = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise CarrierProtocolError(f"invalid JSON: {exc}") from None
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            raise CarrierProtocolError("control message without an 'event'")
        return msg["event"], msg
    words = text.split()
    if not words or not words[0].isupper():
        raise CarrierProtocolError(f"control message {text[:40]!r} is neither JSON nor EVENT key:value")
    fields: dict[str, Any] = {}
    for word in words[1:]:
        key, sep, value = word.partition(":")
        if sep:
            fields[key] = value
        elif words[0] in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
            fields["correlation_id"] = word  # plain text: the id follows the event bare
    return words[0], fields


# ---- the carrier ---------------------------------------------------------------------------------------------------
STREAM_PATH = "/asterisk-ws/stream"


@dataclass(frozen=True)
class AsteriskWsSettings(CarrierDoor):
    """``[carriers.asterisk-ws]``: only ``enabled`` (the format is the dialplan's ``c()``, reported in MEDIA_START)."""


def _verify(hook: Webhook, door: Door[AsteriskWsSettings]) -> Refusal | None:
    if presents_secret(hook.headers.get("Authorization", ""), door.secret("secret")):
        return None
    return Refusal("bad credentials")


def _check_upgrade(upgrade: Upgrade, door: Door[AsteriskWsSettings]) -> Refusal | None:
    """The connection's ``username``/``password`` from websocket_client.conf (Basic auth)."""
    return _verify(Webhook("GET", upgrade.url, upgrade.headers, upgrade.query), door)


def _read_call(hook: Webhook) -> Call | Malformed:
    fields = {**hook.query, **{k: v[0] for k, v in hook.form.items() if v}}
    call_id = fields.get("call", "")
    if not SAFE_ID.fullmatch(call_id):
        return Malformed("call missing or not an id (pass ${UNIQUEID})")
    return Call(call_id, called=fields.get("to", ""), caller=fields.get("from", ""))


def _answer(call: Call, ctx: AnswerContext[AsteriskWsSettings]) -> Answer:
    # The body of v(): name=value pairs joined by commas, each value URI-encoded (Asterisk adds them as they are).
    pairs = {"token": ctx.token, "call": call.call_id, "from": call.caller, "to": call.called}
    return Answer(",".join(f"{k}={quote(v, safe='')}" for k, v in pairs.items() if v), "text/plain")


def _busy(text: str) -> Answer:
    return Answer("", "text/plain", 503)  # nothing to dial with: the dialplan plays congestion


def _dialect(upgrade: Upgrade) -> AsteriskWsStream:
    return AsteriskWsStream({k: v for k, v in upgrade.query.items() if k in ("token", "call", "from", "to")})


def _check(door: Door[AsteriskWsSettings]) -> Iterator[tuple[str, str]]:
    return iter(())


SPEC: CarrierSpec[AsteriskWsSettings] = CarrierSpec(
    name="asterisk-ws",
    options=AsteriskWsSettings,
    secrets=(Secret("secret", "ASTERISK_WS_SECRET"),),
    webhook_path="/asterisk-ws/calls",
    webhook_methods=("GET", "POST"),
    stream_path=STREAM_PATH,
    webhook_body="form",
    verify=_verify,
    read_call=_read_call,
    answer=_answer,
    busy=_busy,
    dialect=_dialect,
    check_upgrade=_check_upgrade,
    check=_check,
    subprotocols=(SUBPROTOCOL,),
)

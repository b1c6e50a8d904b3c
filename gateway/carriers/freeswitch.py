"""FreeSWITCH ``mod_audio_fork`` (the maintained jambonz build, with bidirectional streaming). Pure.

What the module does, and what this module does with it (docs/how-to/pbx/freeswitch.md#protocol):

- The dialplan first asks the gateway for the call's metadata: ``curl`` to ``GET /freeswitch/calls?uuid=…&from=…&to=…``
  (``FREESWITCH_SECRET`` as Basic password or Bearer token). The answer is one space-free JSON object
  (``{"token":…,"uuid":…,"from":…,"to":…,"rate":16000}``: ``uuid_audio_fork`` splits its arguments on spaces) that
  the dialplan hands to ``uuid_audio_fork <uuid> start ws://…/freeswitch/stream mono 16k <bug> <metadata> true true
  16000``.
- FreeSWITCH opens the WebSocket (offering the subprotocol ``audio.drachtio.org``, which we select) and sends that
  metadata as its first **text** frame: it parses to :class:`~gateway.carriers.events.StreamStarted` with the
  token. Then caller audio arrives as **binary** frames of 16-bit little-endian mono PCM at the rate the dialplan
  asked for, of whatever size has accumulated (not a fixed 20 ms).
- We send the agent's voice as **binary** frames of the same format (the bidirectional *stream* mode: FreeSWITCH
  buffers them, 80 ms before it starts, and plays them into the call), ``{"type":"killAudio"}`` to drop what it
  holds (barge-in), and ``{"type":"mark","data":{"name":…}}`` checkpoints, which come back as
  ``{"type":"mark","data":{"name":…,"event":"playout"}}`` once played or ``"event":"cleared"`` when a
  ``killAudio`` dropped them (the Twilio-style flush: no separate acknowledgement).
- The module does not forward DTMF. The dialplan does, with ``bind_digit_action`` running ``uuid_audio_fork <uuid>
  send_text {"type":"dtmf","digit":"N"}``: that text frame parses to a keypress. Other text frames the controller may
  send are ignored.
- Hang-up: FreeSWITCH closes the socket when the channel ends. When we close it, the module fires
  ``mod_audio_fork::disconnect``; the dialplan's script hangs up on it (the docs page has the snippet).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ..errors import CarrierProtocolError
from .audiosocket import presents_secret
from .base import SAFE_ID, StreamDialect, dumps, json_object, require_dtmf, require_str
from .events import AudioReceived, CarrierEvent, DtmfReceived, PlaybackCheckpoint, StreamStarted
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

__all__ = ["SPEC", "SUBPROTOCOL", "FreeswitchSettings", "FreeswitchStream", "metadata"]

#: The subprotocol mod_audio_fork offers (``MOD_AUDIO_FORK_SUBPROTOCOL_NAME``); libwebsockets wants it echoed.
SUBPROTOCOL = "audio.drachtio.org"
SAMPLE_RATES = (8000, 16000)
_METADATA_KEYS = ("token", "uuid", "from", "to", "rate")


class FreeswitchStream(StreamDialect):
    """Protocol state of one mod_audio_fork WebSocket (a :class:`~gateway.carriers.base.Dialect`): the channel's
    ``uuid`` is its stream and call id."""

    carrier = "freeswitch"
    label = "FreeSWITCH"
    started_by = "the metadata frame"

    def __init__(self) -> None:
        super().__init__(None, "audio/pcm", 16000)

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        if isinstance(data, bytes):
            if self.stream_id is None:
                raise CarrierProtocolError("binary audio before the metadata frame")
            if len(data) % 2:
                raise CarrierProtocolError(f"binary frame of {len(data)} bytes (16-bit PCM)")
            return [AudioReceived(data)] if data else []
        msg = json_object(data, self.label)
        if self.stream_id is None:
            return [self._parse_metadata(msg)]
        kind = msg.get("type")
        if kind == "mark":
            mark = msg.get("data")
            if not isinstance(mark, dict) or mark.get("event") not in ("playout", "cleared"):
                raise CarrierProtocolError("mark without data.event playout or cleared")
            return [PlaybackCheckpoint(require_str(mark, "name", "mark.data"))]
        if kind == "dtmf":
            return [DtmfReceived(require_dtmf(msg.get("digit"), "dtmf digit"))]
        if "token" in msg and "uuid" in msg:
            raise CarrierProtocolError("second metadata frame on one stream")
        return []  # whatever else the controller sends with send_text: nothing the call needs

    def _parse_metadata(self, msg: dict[str, Any]) -> StreamStarted:
        call_uuid = msg.get("uuid")
        if not isinstance(call_uuid, str) or not SAFE_ID.fullmatch(call_uuid):
            raise CarrierProtocolError("metadata frame without a usable 'uuid' (from GET /freeswitch/calls)")
        rate = msg.get("rate", 16000)
        if type(rate) is not int or rate not in SAMPLE_RATES:  # 8000.0 equals 8000, but frames are counted in ints
            raise CarrierProtocolError(f"metadata rate {rate!r} (8000 or 16000)")
        params = {k: v for k, v in msg.items() if k in ("token", "from", "to") and isinstance(v, str)}
        self._started(call_uuid, call_uuid, "audio/pcm", rate)
        return StreamStarted(
            stream_id=call_uuid,
            call_id=call_uuid,
            account_id="",
            encoding="audio/pcm",
            sample_rate=rate,
            custom_parameters=self._custom_parameters(params),
        )

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> bytes:
        self._sid()
        return payload

    def build_mark(self, name: str) -> str:
        self._sid()
        return dumps({"type": "mark", "data": {"name": name}})

    def build_clear(self) -> str:
        self._sid()
        return dumps({"type": "killAudio"})


def metadata(token: str, call_uuid: str, caller: str, called: str, rate: int) -> str:
    """The ``uuid_audio_fork`` metadata argument: one JSON object with no space in it (the API splits on spaces)."""
    doc = {"token": token, "uuid": call_uuid, "from": caller, "to": called, "rate": rate}
    text = json.dumps(doc, separators=(",", ":"))
    if " " in text:
        raise ValueError("metadata must not contain spaces (uuid_audio_fork splits its arguments on them)")
    return text


# ---- the carrier ---------------------------------------------------------------------------------------------------
STREAM_PATH = "/freeswitch/stream"


@dataclass(frozen=True)
class FreeswitchSettings(CarrierDoor):
    """``[carriers.freeswitch]``: ``sample_rate`` of the L16 audio both ways (8000 or 16000; the dialplan's
    ``uuid_audio_fork … 8k|16k`` and its stream rate must say the same)."""

    sample_rate: int = 16000


def _verify(hook: Webhook, door: Door[FreeswitchSettings]) -> Refusal | None:
    if presents_secret(hook.headers.get("Authorization", ""), door.secret("secret")):
        return None
    return Refusal("bad credentials")


def _read_call(hook: Webhook) -> Call | Malformed:
    fields = {**hook.query, **{k: v[0] for k, v in hook.form.items() if v}}
    call_uuid = fields.get("uuid", "")
    if not SAFE_ID.fullmatch(call_uuid):
        return Malformed("uuid missing or not an id")
    if any(" " in fields.get(k, "") for k in ("from", "to")):
        return Malformed("numbers must not contain spaces")
    return Call(call_uuid, called=fields.get("to", ""), caller=fields.get("from", ""))


def _answer(call: Call, ctx: AnswerContext[FreeswitchSettings]) -> Answer:
    text = metadata(ctx.token, call.call_id, call.caller, call.called, ctx.options.sample_rate)
    return Answer(text, "application/json")


def _busy(text: str) -> Answer:
    return Answer("", "text/plain", 503)  # no metadata: the dialplan plays its own busy tone


def _dialect(upgrade: Upgrade) -> FreeswitchStream:
    return FreeswitchStream()  # the token comes in the metadata frame


def _check(door: Door[FreeswitchSettings]) -> Iterator[tuple[str, str]]:
    if door.options.sample_rate not in SAMPLE_RATES:
        yield "carriers.freeswitch.sample_rate", "must be 8000 or 16000"


SPEC: CarrierSpec[FreeswitchSettings] = CarrierSpec(
    name="freeswitch",
    options=FreeswitchSettings,
    secrets=(Secret("secret", "FREESWITCH_SECRET"),),
    webhook_path="/freeswitch/calls",
    webhook_methods=("GET", "POST"),
    stream_path=STREAM_PATH,
    webhook_body="form",
    verify=_verify,
    read_call=_read_call,
    answer=_answer,
    busy=_busy,
    dialect=_dialect,
    check=_check,
    subprotocols=(SUBPROTOCOL,),
)

"""Telnyx media streaming (TeXML ``<Stream>`` or Call Control ``streaming_start``). Pure.

What Telnyx documents, and what this module does with it (docs/how-to/carriers/telnyx.md#protocol):

- inbound (all JSON text, **snake_case**): ``connected`` {``event``, ``version``} (no ``protocol``); ``start`` with
  top-level ``stream_id`` and ``sequence_number`` and ``start.{user_id, call_control_id, call_session_id, from, to,
  tags, client_state, custom_parameters, media_format{encoding, sample_rate, channels}}``; then ``media``
  {``media.track/chunk/timestamp/payload``}, ``dtmf``, ``mark`` (echo), ``error``, ``stop``; every message after
  ``start`` carries the ``stream_id`` and a ``sequence_number``.
- outbound (bidirectional only, and only with ``bidirectionalMode="rtp"`` / ``stream_bidirectional_mode: rtp``:
  without it Telnyx silently drops what we send, deepgram/deepclaw #6): ``media`` {``media.payload``}, ``mark``
  {``mark.name``}, ``clear``. An RTP-mode media message must hold **20 ms to 30 s** of audio.
- **frame order is not guaranteed** ("Media frame order is not guaranteed. Use media.chunk, media.timestamp, and
  sequence_number to order frames"): media is reordered by ``sequence_number`` in a bounded window
  (:data:`REORDER_WINDOW` frames). A frame later than the window is dropped and counted (``late_frames``); a gap that
  never fills is skipped once the window is full, so caller audio is delayed by at most the window.
- codecs: PCMU/PCMA (8 kHz) through TeXML; L16 at 8/16/24 kHz through Call Control (``stream_codec``/
  ``stream_bidirectional_codec`` list L16; the TeXML verb's do not). L16 payloads are RTP payloads, so network byte
  order (RFC 3551 §4.5.11) [idea: see docs/how-to/carriers/index.md#assumptions].
- webhooks are signed with **Ed25519** over ``"<telnyx-timestamp>|<raw body>"``, base64 signature in
  ``telnyx-signature-ed25519`` (:func:`verify_telnyx_signature`, with a replay window).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ..errors import CarrierProtocolError
from .base import (
    MAX_DIGITS,
    SAFE_ID,
    StreamDialect,
    b64,
    b64_payload,
    dumps,
    json_object,
    obj,
    opt_int,
    pcm16_swap,
    require_dtmf,
    require_str,
    screen_media,
    string_map,
)
from .events import (
    AudioReceived,
    CarrierEvent,
    DtmfReceived,
    MediaFault,
    PlaybackCheckpoint,
    StreamConnected,
    StreamError,
    StreamStarted,
    StreamStopped,
)
from .spec import Answer, AnswerContext, Call, CarrierDoor, CarrierSpec, Door, Refusal, Secret, Upgrade, Webhook
from .twilio import read_form_call, say_and_hang_up
from .twiml import connect_stream

__all__ = [
    "REORDER_WINDOW",
    "SIGNATURE_HEADER",
    "SPEC",
    "TEXML_CODECS",
    "TIMESTAMP_HEADER",
    "TelnyxSettings",
    "TelnyxStream",
    "streaming_start_params",
    "texml_stream",
    "verify_telnyx_signature",
]

#: Media frames held back waiting for a missing ``sequence_number`` (100 ms of 20 ms frames).
REORDER_WINDOW = 5
SIGNATURE_HEADER = "telnyx-signature-ed25519"
TIMESTAMP_HEADER = "telnyx-timestamp"
#: Codecs our transcoder speaks, by where they can be asked for (docs/how-to/carriers/telnyx.md#protocol).
TEXML_CODECS = {"PCMU": ("audio/pcmu", (8000,)), "PCMA": ("audio/pcma", (8000,))}
CALL_CONTROL_CODECS = {**TEXML_CODECS, "L16": ("audio/pcm", (8000, 16000, 24000))}
_ENCODINGS = {name: enc for name, (enc, _) in CALL_CONTROL_CODECS.items()}


#: Stands in for a refused media payload in the reordering (never handed on).
_REFUSED = MediaFault("refused", 0, True)


class TelnyxStream(StreamDialect):
    """Protocol state of one Telnyx media stream (a :class:`~gateway.carriers.base.Dialect`). RTP mode takes 20 ms
    to 30 s per message (the base's 20 ms – 1 s bounds); ``call_id`` is the ``call_control_id``."""

    carrier = "telnyx"
    label = "Telnyx"

    def __init__(self, transport_params: Mapping[str, str] | None = None, reorder_window: int = REORDER_WINDOW) -> None:
        super().__init__(transport_params)
        self._window = max(0, reorder_window)
        self._swap = False
        # reordering (sequence numbers count every message of the stream)
        self._next_seq: int | None = None
        self._held: dict[int, AudioReceived] = {}
        self._seen_ahead: set[int] = set()
        self.late_frames = 0  # media that arrived after its place was given up (dropped)
        self.reordered_frames = 0  # media that arrived early and was held

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        msg = json_object(data, "Telnyx")
        event = msg.get("event")
        if event == "connected":
            return [StreamConnected(version=str(msg.get("version", "")))]
        if event == "start":
            return [self._parse_start(msg)]
        # 'error' is documented without a stream_id requirement; the stream goes on.
        self._in_stream(event, self.stream_id if event == "error" else msg.get("stream_id"), "stream_id")
        if event == "error":
            raw = msg.get("payload")
            payload = raw if isinstance(raw, dict) else {}
            code = str(payload.get("code", payload.get("title", "unknown")))
            return [StreamError(code=code, detail=str(payload.get("detail", payload.get("title", ""))))]
        seq = opt_int(msg.get("sequence_number"))
        if event == "media":
            media = obj(msg, "media")
            track = media.get("track", "inbound")
            if track != "inbound":
                raise CarrierProtocolError(f"media on track {track!r} (we ask for the inbound track only)")
            audio = b64_payload(media, "media")
            if self._swap and not len(audio) % 2:  # (an odd length is refused below)
                audio = pcm16_swap(audio)
            ev = AudioReceived(audio, opt_int(media.get("timestamp")), opt_int(media.get("chunk")))
            screened = screen_media(ev, self.encoding, self.frame_bytes, self.media_faults)
            if screened is None:
                return self._sequence(seq, ev)
            faults = [e for e in screened if type(e) is not AudioReceived]
            if len(faults) == len(screened):  # refused: its number is still seen, so reordering does not wait for it
                return faults + [e for e in self._sequence(seq, _REFUSED) if e is not _REFUSED]
            return faults + self._sequence(seq, screened[-1])
        if event == "mark":
            return self._sequence(seq, PlaybackCheckpoint(require_str(obj(msg, "mark"), "name", "mark")))
        if event == "dtmf":
            return self._sequence(seq, DtmfReceived(require_dtmf(obj(msg, "dtmf").get("digit"), "dtmf.digit")))
        if event == "stop":
            self.stopped = True
            raw_stop = msg.get("stop")
            stop = raw_stop if isinstance(raw_stop, dict) else {}
            # Whatever is still held was delayed, not lost: deliver it before the stop, in order.
            held = [self._held[k] for k in sorted(self._held)]
            self._held.clear()
            return [*held, StreamStopped(call_id=str(stop.get("call_control_id", self.call_id or "")))]
        raise CarrierProtocolError(f"unknown event {event!r}")

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        self._first_start()
        start = obj(msg, "start")
        stream_id = require_str(msg, "stream_id", "start")
        call_id = require_str(start, "call_control_id", "start")
        for name, value in (("stream_id", stream_id), ("call_control_id", call_id)):
            if not SAFE_ID.fullmatch(value):
                raise CarrierProtocolError(f"start {name} has characters an id never has")
        fmt = obj(start, "media_format")
        codec, rate, channels = fmt.get("encoding"), opt_int(fmt.get("sample_rate")), opt_int(fmt.get("channels", 1))
        encoding = _ENCODINGS.get(codec) if isinstance(codec, str) else None
        rates = CALL_CONTROL_CODECS[codec][1] if encoding is not None and isinstance(codec, str) else ()
        if encoding is None or rate not in rates or channels != 1:
            raise CarrierProtocolError(
                f"unsupported media_format {codec!r}/{fmt.get('sample_rate')!r}/{fmt.get('channels')!r}"
                " (expected PCMU/PCMA at 8000 or L16 at 8000/16000/24000, mono)"
            )
        assert rate is not None
        params = string_map(start.get("custom_parameters") or {}, "start.custom_parameters")
        for key in ("from", "to"):  # the gateway reads the called number to pick a profile
            if isinstance(start.get(key), str):
                params.setdefault(key, start[key])
        self._started(stream_id, call_id, encoding, rate)
        self._swap = encoding == "audio/pcm"
        seq = opt_int(msg.get("sequence_number"))
        self._next_seq = None if seq is None else seq + 1
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=str(start.get("user_id", "")),
            encoding=encoding,
            sample_rate=rate,
            channels=1,
            tracks=("inbound",),
            custom_parameters=self._custom_parameters(params),
        )

    def _sequence(self, seq: int | None, ev: CarrierEvent) -> list[CarrierEvent]:
        """Put media back in ``sequence_number`` order within the window; pass everything else straight through
        (a mark or a digit is not audio: holding it would only delay it) while noting its number as seen."""
        if seq is None or self._next_seq is None:
            return [ev]
        if seq < self._next_seq:
            if isinstance(ev, AudioReceived):
                self.late_frames += 1  # its place was given up (the window filled): playing it now would garble
                return []
            return [ev]
        out: list[CarrierEvent] = []
        if isinstance(ev, AudioReceived):
            if seq in self._held:
                raise CarrierProtocolError(f"sequence_number {seq} repeated")
            self._held[seq] = ev
            if seq != self._next_seq:
                self.reordered_frames += 1
        else:
            out.append(ev)
            self._seen_ahead.add(seq)
        self._release(out)
        while len(self._held) > self._window:
            # The gap did not fill in time: give up on the missing numbers up to the oldest held frame.
            self._next_seq = min(self._held)
            self._seen_ahead = {s for s in self._seen_ahead if s >= self._next_seq}
            self._release(out)
        return out

    def _release(self, out: list[CarrierEvent]) -> None:
        assert self._next_seq is not None
        while True:
            nxt = self._next_seq
            if nxt in self._held:
                out.append(self._held.pop(nxt))
            elif nxt in self._seen_ahead:
                self._seen_ahead.discard(nxt)
            else:
                return
            self._next_seq = nxt + 1

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> str:
        self._sid()
        return dumps({"event": "media", "media": {"payload": b64(pcm16_swap(payload) if self._swap else payload)}})

    def build_mark(self, name: str) -> str:
        self._sid()
        return dumps({"event": "mark", "mark": {"name": name}})

    def build_clear(self) -> str:
        self._sid()
        return dumps({"event": "clear"})


# ---- answer documents ------------------------------------------------------------------------------------------
def texml_stream(
    stream_url: str,
    parameters: Mapping[str, str],
    codec: str = "PCMU",
    sampling_rate: int = 8000,
    status_callback: str | None = None,
) -> str:
    """TeXML ``<Connect><Stream bidirectionalMode="rtp" …>``: caller audio in ``codec``, our audio back in the same
    codec and rate (so one transcoder serves both directions), per-call data in ``<Parameter>``s (they arrive in
    ``start.custom_parameters``). No trailing verb: closing the socket ends ``<Connect>`` (as for Twilio)."""
    if codec not in TEXML_CODECS or sampling_rate not in TEXML_CODECS[codec][1]:
        raise ValueError(
            f"TeXML streams support {', '.join(TEXML_CODECS)} at 8000 Hz here; got {codec}@{sampling_rate}"
        )
    attributes = {
        "track": "inbound_track",
        "codec": codec,
        "bidirectionalMode": "rtp",
        "bidirectionalCodec": codec,
        "bidirectionalSamplingRate": str(sampling_rate),
    }
    return connect_stream(stream_url, parameters, status_callback, attributes=attributes)


def streaming_start_params(
    stream_url: str,
    parameters: Mapping[str, str],
    codec: str = "L16",
    sampling_rate: int = 16000,
    stream_auth_token: str | None = None,
) -> dict[str, Any]:
    """The JSON body of Call Control ``POST /v2/calls/{call_control_id}/actions/streaming_start`` (or the same keys on
    ``answer``/``dial``) for an equivalent bidirectional stream (docs/how-to/carriers/telnyx.md#call-control).
    Documented for operators who drive calls with Call Control: the gateway's own webhook answers with TeXML."""
    if codec not in CALL_CONTROL_CODECS or sampling_rate not in CALL_CONTROL_CODECS[codec][1]:
        raise ValueError(f"unsupported Call Control stream codec {codec}@{sampling_rate}")
    body: dict[str, Any] = {
        "stream_url": stream_url,
        "stream_track": "inbound_track",
        "stream_codec": codec,
        "stream_bidirectional_mode": "rtp",  # without it, audio we send is silently dropped
        "stream_bidirectional_codec": codec,
        "stream_bidirectional_sampling_rate": sampling_rate,
        "stream_bidirectional_target_legs": "self",
        "custom_parameters": [{"name": k, "value": v} for k, v in parameters.items() if v],
    }
    if stream_auth_token:
        body["stream_auth_token"] = stream_auth_token
    return body


# ---- webhook signatures ----------------------------------------------------------------------------------------
def verify_telnyx_signature(
    public_key_b64: str,
    body: bytes,
    timestamp: str | None,
    signature_b64: str | None,
    now: float,
    tolerance_s: float = 300.0,
) -> bool:
    """True if ``signature_b64`` (``telnyx-signature-ed25519``) is an Ed25519 signature by the account's public key
    (base64 of the raw 32 bytes, from the Telnyx portal) over ``"<telnyx-timestamp>|<raw body>"``, and the timestamp is
    within ``tolerance_s`` of ``now`` (a replayed webhook is refused). Never raises for bad input."""
    if not public_key_b64 or not timestamp or not signature_b64:
        return False
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= MAX_DIGITS):
        return False  # int() refuses over 4,300 digits with a ValueError
    if abs(now - int(timestamp)) > tolerance_s:
        return False
    try:
        key = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_key_b64, validate=True))
        signature = base64.b64decode(signature_b64, validate=True)
        key.verify(signature, timestamp.encode("ascii") + b"|" + body)
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


# ---- the carrier ---------------------------------------------------------------------------------------------------
STREAM_PATH = "/telnyx/stream"


@dataclass(frozen=True)
class TelnyxSettings(CarrierDoor):
    """``[carriers.telnyx]``: ``codec`` of the TeXML ``<Stream>`` (PCMU or PCMA; L16 needs Call Control's
    ``streaming_start``, :func:`streaming_start_params`)."""

    codec: str = "PCMU"
    #: Call Control API host (hang-up, transfer; gateway.control.telnyx); tests point it at a local fake.
    api_base_url: str = "https://api.telnyx.com"


def _verify(hook: Webhook, door: Door[TelnyxSettings]) -> Refusal | None:
    headers = hook.headers
    if verify_telnyx_signature(
        door.secret("public_key"), hook.body, headers.get(TIMESTAMP_HEADER), headers.get(SIGNATURE_HEADER), now=hook.now
    ):
        return None
    return Refusal("bad signature")


def _answer(call: Call, ctx: AnswerContext[TelnyxSettings]) -> Answer:
    # TeXML webhooks are form-encoded, Twilio-style: CallSid is the call_control_id.
    parameters = {"token": ctx.token, "from": call.caller, "to": call.called}
    return Answer(texml_stream(ctx.stream_base + STREAM_PATH, parameters, codec=ctx.options.codec))


def _dialect(upgrade: Upgrade) -> TelnyxStream:
    return TelnyxStream()  # the token comes in start.custom_parameters (the TeXML's <Parameter>)


def _check(door: Door[TelnyxSettings]) -> Iterator[tuple[str, str]]:
    if door.options.codec not in TEXML_CODECS:
        yield "carriers.telnyx.codec", "must be PCMU or PCMA (TeXML)"
    if not door.options.api_base_url.startswith(("https://", "http://")):
        yield "carriers.telnyx.api_base_url", "must be an http(s):// URL"


SPEC: CarrierSpec[TelnyxSettings] = CarrierSpec(
    name="telnyx",
    options=TelnyxSettings,
    secrets=(
        Secret("public_key", "TELNYX_PUBLIC_KEY"),  # base64 Ed25519 public key from the Telnyx portal
        Secret("api_key", "TELNYX_API_KEY"),  # Call Control commands (hang-up, transfer); not a webhook check
    ),
    webhook_path="/telnyx/voice",
    webhook_methods=("POST",),
    stream_path=STREAM_PATH,
    webhook_body="form",
    signs_raw_body=True,
    verify=_verify,
    read_call=read_form_call,
    answer=_answer,
    busy=say_and_hang_up,
    dialect=_dialect,
    check=_check,
    authenticated=lambda door: bool(door.secret("public_key")),  # the API key signs nothing Telnyx sends
    credential="TELNYX_PUBLIC_KEY",
    legacy_keys={"telnyx_codec": "codec"},
    call_control="telnyx_call_control",
)

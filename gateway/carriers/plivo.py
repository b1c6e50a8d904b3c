"""Plivo audio streams (XML ``<Stream bidirectional="true">``). Pure.

What Plivo documents, and what this module does with it (docs/how-to/carriers/plivo.md#protocol):

- inbound (JSON text, camelCase): ``start`` {``sequenceNumber``, ``start.{callId, streamId, accountId, tracks,
  mediaFormat{encoding, sampleRate}}``, ``extra_headers``}, ``media`` {``media.track/timestamp/chunk/payload``},
  ``dtmf``, **``playedStream``** (a checkpoint's echo, sent **only if the audio before it actually played**, unlike
  Twilio's marks; one support article calls it ``played``, so both are accepted), **``clearedAudio``** (the answer to
  ``clearAudio``). The socket closing is the hang-up; a ``stop`` is accepted if one comes.
- outbound: **``playAudio``** {``media:{contentType, sampleRate, payload}``} in the stream's own format,
  **``checkpoint``** {``streamId``, ``name``}, **``clearAudio``** {``streamId``}.
- formats (``contentType`` of ``<Stream>``): ``audio/x-l16;rate=8000`` (Plivo's default), ``audio/x-l16;rate=16000``,
  ``audio/x-mulaw;rate=8000``. L16 is taken as little-endian PCM16 [idea: see
  docs/how-to/carriers/index.md#assumptions].
- per-call data: ``extraHeaders`` is ≤ 512 bytes of alphanumerics only, too narrow for our token (``.``, ``-``, ``_``),
  so the token travels in the stream URL's path (``/plivo/stream/<token>``,
  docs/how-to/carriers/index.md#per-call-token: a path segment survives where query strings may not) and reaches the
  dialect as a transport parameter; ``extraHeaders`` carries the numbers as digits (``to=15550002222``), given their
  ``+`` back here.
- webhooks are signed with **V3** signatures: base64 HMAC-SHA256 with the Auth Token over the URL, the sorted
  parameters and the ``X-Plivo-Signature-V3-Nonce``, in ``X-Plivo-Signature-V3`` (:func:`plivo_v3_signature`; the
  construction follows plivo-python ``utils/signature_v3.py``).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from ..errors import CarrierProtocolError
from .base import (
    SAFE_ID,
    StreamDialect,
    b64,
    b64_payload,
    dumps,
    e164_from_digits,
    json_object,
    obj,
    opt_int,
    require_dtmf,
    require_str,
    screen_media,
)
from .events import (
    AudioReceived,
    CarrierEvent,
    DtmfReceived,
    PlaybackCheckpoint,
    PlaybackCleared,
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
from .twiml import xml_attr, xml_safe, xml_text

__all__ = [
    "CONTENT_TYPES",
    "NONCE_HEADER",
    "SIGNATURE_HEADER",
    "SPEC",
    "PlivoSettings",
    "PlivoStream",
    "dial_xml",
    "plivo_v3_signature",
    "speak_and_hang_up",
    "stream_xml",
    "validate_plivo_v3_signature",
]

SIGNATURE_HEADER = "X-Plivo-Signature-V3"
NONCE_HEADER = "X-Plivo-Signature-V3-Nonce"
#: ``<Stream contentType=…>`` → (agent-protocol encoding, rate, Plivo's playAudio contentType).
CONTENT_TYPES: dict[str, tuple[str, int, str]] = {
    "audio/x-mulaw;rate=8000": ("audio/pcmu", 8000, "audio/x-mulaw"),
    "audio/x-l16;rate=8000": ("audio/pcm", 8000, "audio/x-l16"),
    "audio/x-l16;rate=16000": ("audio/pcm", 16000, "audio/x-l16"),
}
_START_ENCODINGS = {"audio/x-mulaw": "audio/pcmu", "audio/x-l16": "audio/pcm"}
_PLAY_CONTENT_TYPE = {"audio/pcmu": "audio/x-mulaw", "audio/pcm": "audio/x-l16"}
_NUMBER_KEYS = ("to", "from")


def _extra_headers(value: Any) -> dict[str, str]:
    """``extra_headers`` as Plivo sends it: a JSON object, a JSON string of one, or ``k=v`` pairs split by ``,``/``;``.
    Plivo may prefix custom header names with ``X-PH-``; that prefix is dropped."""
    if value in (None, ""):
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            try:
                value = json.loads(text)
            except (ValueError, RecursionError):  # nested too deep to parse is not valid either
                raise CarrierProtocolError("extra_headers is not valid JSON") from None
        else:
            pairs = [p.split("=", 1) for p in re.split(r"[,;]", text) if p.strip()]
            if any(len(p) != 2 for p in pairs):
                raise CarrierProtocolError("extra_headers is not key=value pairs")
            value = {k.strip(): v.strip() for k, v in pairs}
    if not isinstance(value, dict):
        raise CarrierProtocolError("extra_headers must be an object")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(k, str) or not isinstance(v, (str, int)) or isinstance(v, bool):
            raise CarrierProtocolError("extra_headers must map strings to strings")
        key = k[5:] if k.lower().startswith("x-ph-") else k
        out[key] = str(v)
    for key in _NUMBER_KEYS:  # digits only on the way in (extraHeaders allows alphanumerics): E.164 again
        if key in out:
            out[key] = e164_from_digits(out[key])
    return out


class PlivoStream(StreamDialect):
    """Protocol state of one Plivo audio stream (a :class:`~gateway.carriers.base.Dialect`). A ``playedStream``
    comes only once the audio before its checkpoint played (docs/how-to/carriers/plivo.md#protocol)."""

    carrier = "plivo"
    label = "Plivo"

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        msg = json_object(data, "Plivo")
        event = msg.get("event")
        if event == "connected":  # not in Plivo's documented set; harmless if it comes
            return [StreamConnected()]
        if event == "start":
            return [self._parse_start(msg)]
        self._in_stream(event, msg.get("streamId", self.stream_id), "streamId")  # Plivo may leave it out
        if event == "media":
            media = obj(msg, "media")
            track = media.get("track", "inbound")
            if track != "inbound":
                raise CarrierProtocolError(f"media on track {track!r} (a bidirectional stream is inbound only)")
            ev = AudioReceived(
                b64_payload(media, "media"), opt_int(media.get("timestamp")), opt_int(media.get("chunk"))
            )
            screened = screen_media(ev, self.encoding, self.frame_bytes, self.media_faults)
            return [ev] if screened is None else screened
        if event in ("playedStream", "played"):
            return [PlaybackCheckpoint(require_str(msg, "name", event))]
        if event == "clearedAudio":
            return [PlaybackCleared()]
        if event == "dtmf":
            return [DtmfReceived(require_dtmf(obj(msg, "dtmf").get("digit"), "dtmf.digit"))]
        if event == "stop":
            self.stopped = True
            return [StreamStopped(call_id=self.call_id or "")]
        raise CarrierProtocolError(f"unknown event {event!r}")

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        self._first_start()
        start = obj(msg, "start")
        stream_id = require_str(start, "streamId", "start")
        call_id = require_str(start, "callId", "start")
        for name, value in (("streamId", stream_id), ("callId", call_id)):
            if not SAFE_ID.fullmatch(value):
                raise CarrierProtocolError(f"start.{name} has characters an id never has")
        if msg.get("streamId", stream_id) != stream_id:
            raise CarrierProtocolError("start.streamId and streamId disagree")
        fmt = obj(start, "mediaFormat")
        raw_enc, rate = fmt.get("encoding"), opt_int(fmt.get("sampleRate"))
        encoding = _START_ENCODINGS.get(raw_enc) if isinstance(raw_enc, str) else None
        valid = (8000,) if encoding == "audio/pcmu" else (8000, 16000)
        if encoding is None or rate not in valid:
            raise CarrierProtocolError(
                f"unsupported mediaFormat {raw_enc!r}/{fmt.get('sampleRate')!r}"
                " (expected audio/x-mulaw at 8000 or audio/x-l16 at 8000/16000)"
            )
        assert rate is not None
        tracks = start.get("tracks", ["inbound"])
        if not isinstance(tracks, list):
            raise CarrierProtocolError("start.tracks must be a list")
        params = self._custom_parameters(_extra_headers(msg.get("extra_headers", start.get("extra_headers"))))
        self._started(stream_id, call_id, encoding, rate)
        return StreamStarted(
            stream_id=stream_id,
            call_id=call_id,
            account_id=str(start.get("accountId", "")),
            encoding=encoding,
            sample_rate=rate,
            channels=1,
            tracks=tuple(str(t) for t in tracks),
            custom_parameters=params,
        )

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> str:
        self._sid()
        media = {
            "contentType": _PLAY_CONTENT_TYPE[self.encoding],
            "sampleRate": self.sample_rate,
            "payload": b64(payload),
        }
        return dumps({"event": "playAudio", "media": media})

    def build_mark(self, name: str) -> str:
        return dumps({"event": "checkpoint", "streamId": self._sid(), "name": name})

    def build_clear(self) -> str:
        return dumps({"event": "clearAudio", "streamId": self._sid()})


# ---- answer document -------------------------------------------------------------------------------------------
def stream_xml(
    stream_url: str,
    content_type: str = "audio/x-mulaw;rate=8000",
    extra_headers: Mapping[str, str] | None = None,
    status_callback: str | None = None,
) -> str:
    """Plivo XML ``<Stream bidirectional="true" keepCallAlive="true" …>wss://…</Stream>``. Nothing follows it, so the
    call ends when our socket closes. ``extra_headers`` values must be alphanumeric (Plivo's rule): numbers are
    passed as digits (the dialect puts the ``+`` back)."""
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"unknown Plivo contentType {content_type!r} (known: {', '.join(CONTENT_TYPES)})")
    attrs = f'bidirectional="true" keepCallAlive="true" audioTrack="inbound" contentType={xml_attr(content_type)}'
    if extra_headers:
        # XML-illegal characters dropped first (gateway.carriers.twiml.xml_safe), as every builder does.
        safe = {xml_safe(k): xml_safe(v) for k, v in extra_headers.items()}
        clean = {k: v.lstrip("+") if k in _NUMBER_KEYS else v for k, v in safe.items() if v}
        bad = [k for k, v in clean.items() if not (k.isalnum() and v.isalnum())]
        if bad:
            raise ValueError(f"Plivo extraHeaders must be alphanumeric: {bad}")
        header = ",".join(f"{k}={v}" for k, v in clean.items())
        if len(header) > 512:
            raise ValueError("Plivo extraHeaders are limited to 512 bytes")
        if header:
            attrs += f" extraHeaders={xml_attr(header)}"
    if status_callback:
        attrs += f' statusCallbackUrl={xml_attr(status_callback)} statusCallbackMethod="POST"'
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Stream {attrs}>{xml_text(stream_url)}</Stream></Response>'


def dial_xml(destination: str) -> str:
    """Plivo XML that transfers the call (docs/how-to/call-control.md#carriers): ``<Dial>`` to a ``<Number>`` (E.164
    digits, Plivo writes them without the ``+``) or a ``<User>`` (a SIP URI). ``destination`` was already normalised
    and allow-listed by the transfer tool. Nothing follows: when the dialled leg ends, the call ends."""
    if destination.startswith(("sip:", "sips:")):
        target = f"<User>{xml_text(destination)}</User>"
    else:
        target = f"<Number>{xml_text(destination.lstrip('+'))}</Number>"
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Dial>{target}</Dial></Response>'


def speak_and_hang_up(text: str) -> str:
    """Plivo XML that says ``text`` and hangs up (the busy answer)."""
    return f'<?xml version="1.0" encoding="UTF-8"?><Response><Speak>{xml_text(text)}</Speak><Hangup/></Response>'


# ---- V3 signatures ---------------------------------------------------------------------------------------------
def _sorted_query(params: Mapping[str, list[str]]) -> str:
    return "&".join(f"{k}={v}" for k in sorted(params) for v in sorted(params[k]))


def _sorted_params(params: Mapping[str, list[str]]) -> str:
    return "".join(f"{k}{v}" for k in sorted(params) for v in sorted(params[k]))


def _multi(params: Mapping[str, str | Iterable[str]]) -> dict[str, list[str]]:
    return {k: [v] if isinstance(v, str) else list(v) for k, v in params.items()}


def _signed_base(method: str, url: str, params: Mapping[str, str | Iterable[str]]) -> str:
    u = urlsplit(url)
    base = urlunsplit((u.scheme, u.netloc, u.path, "", ""))
    query = parse_qs(u.query, keep_blank_values=True)
    if method.upper() == "GET":
        # as plivo-python: the URL's own query values replace same-named params
        q = _sorted_query({**_multi(params), **{k: list(v) for k, v in query.items()}})
        return base + ("?" + q if q else "")
    post = _multi(params)
    q = _sorted_query({k: list(v) for k, v in query.items()})
    if q or post:
        base += "?" + q
    if q and post:
        base += "."
    return base + _sorted_params(post)


def plivo_v3_signature(
    auth_token: str, method: str, url: str, params: Mapping[str, str | Iterable[str]], nonce: str
) -> str:
    """The ``X-Plivo-Signature-V3`` Plivo sends for a ``method`` request to ``url`` with form ``params``."""
    message = f"{_signed_base(method, url, params)}.{nonce}".encode()
    return base64.b64encode(hmac.new(auth_token.encode(), message, hashlib.sha256).digest()).decode("ascii")


def validate_plivo_v3_signature(
    auth_token: str,
    method: str,
    url: str,
    params: Mapping[str, str | Iterable[str]],
    nonce: str | None,
    signature_header: str | None,
) -> bool:
    """True if one of the comma-separated signatures in ``X-Plivo-Signature-V3`` matches (constant-time compare)."""
    if not auth_token or not nonce or not signature_header:
        return False
    expected = plivo_v3_signature(auth_token, method, url, params, nonce).encode()
    ok = False
    for candidate in signature_header.split(","):
        ok |= hmac.compare_digest(expected, candidate.strip().encode())
    return ok


# ---- the carrier ---------------------------------------------------------------------------------------------------
#: The token rides in the path: extraHeaders only take alphanumerics, and a path segment survives where a query
#: string may not (docs/how-to/carriers/plivo.md#what-the-gateway-answers).
STREAM_PATH = "/plivo/stream/{token}"


@dataclass(frozen=True)
class PlivoSettings(CarrierDoor):
    """``[carriers.plivo]``: ``content_type`` of the ``<Stream>`` (:data:`CONTENT_TYPES`)."""

    content_type: str = "audio/x-mulaw;rate=8000"
    #: Plivo's API host (hang-up, transfer; gateway.control.plivo); tests point it at a local fake.
    api_base_url: str = "https://api.plivo.com"


def _alnum(text: str) -> str:
    return "".join(ch for ch in text if ch.isalnum())


def _verify(hook: Webhook, door: Door[PlivoSettings]) -> Refusal | None:
    if validate_plivo_v3_signature(
        door.secret("auth_token"),
        hook.method,
        hook.url,
        hook.form,
        hook.headers.get(NONCE_HEADER),
        hook.headers.get(SIGNATURE_HEADER),
    ):
        return None
    return Refusal("bad signature")


def _read_call(hook: Webhook) -> Call | Malformed:
    call_uuid = hook.field("CallUUID")
    if not call_uuid:
        return Malformed("CallUUID missing")
    # The numbers travel to the stream as extraHeaders, alphanumerics only, and get their + back (e164_from_digits).
    return Call(
        call_uuid,
        called=e164_from_digits(_alnum(hook.field("To"))),
        caller=e164_from_digits(_alnum(hook.field("From"))),
    )


def _answer(call: Call, ctx: AnswerContext[PlivoSettings]) -> Answer:
    url = ctx.stream_base + STREAM_PATH.replace("{token}", ctx.token)
    numbers = {"to": _alnum(call.called), "from": _alnum(call.caller)}
    return Answer(stream_xml(url, ctx.options.content_type, numbers))


def _busy(text: str) -> Answer:
    return Answer(speak_and_hang_up(text))


def _dialect(upgrade: Upgrade) -> PlivoStream:
    return PlivoStream(transport_params={"token": upgrade.path_params["token"]})


def _check(door: Door[PlivoSettings]) -> Iterator[tuple[str, str]]:
    if door.options.content_type not in CONTENT_TYPES:
        yield (
            "carriers.plivo.content_type",
            "must be audio/x-mulaw;rate=8000, audio/x-l16;rate=8000 or audio/x-l16;rate=16000",
        )
    if not door.options.api_base_url.startswith(("https://", "http://")):
        yield "carriers.plivo.api_base_url", "must be an http(s):// URL"


SPEC: CarrierSpec[PlivoSettings] = CarrierSpec(
    name="plivo",
    options=PlivoSettings,
    secrets=(
        Secret("auth_token", "PLIVO_AUTH_TOKEN"),  # webhook signatures; with PLIVO_AUTH_ID, the REST API
        Secret("auth_id", "PLIVO_AUTH_ID"),  # the account id of REST requests (hang-up, transfer); signs nothing
    ),
    webhook_path="/plivo/answer",
    webhook_methods=("POST",),
    stream_path=STREAM_PATH,
    webhook_body="form",
    verify=_verify,
    read_call=_read_call,
    answer=_answer,
    busy=_busy,
    dialect=_dialect,
    check=_check,
    authenticated=lambda door: bool(door.secret("auth_token")),
    credential="PLIVO_AUTH_TOKEN",
    legacy_keys={"plivo_content_type": "content_type"},
    call_control="plivo_rest",
)

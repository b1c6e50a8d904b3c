"""Exotel Voicebot applet streams (bidirectional). Pure.

What Exotel documents, and what this module does with it (docs/how-to/carriers/exotel.md#protocol):

- no XML: the Voicebot applet is configured in App Bazaar with either a fixed ``wss://`` URL or an ``https://``
  endpoint that returns the ``wss://`` URL per call. The gateway serves the latter (``GET /exotel/answer``): it mints
  the per-call token and returns ``{"url": "wss://…/exotel/stream?sample-rate=16000&token=…"}``
  (:func:`stream_url_document`). ``?sample-rate=8000|16000|24000`` picks the audio; up to 3 custom query parameters
  (≤ 256 characters in all) come back in ``start.custom_parameters``. [The response shape of the dynamic endpoint is
  not documented: see docs/how-to/carriers/index.md#assumptions.]
- inbound (JSON text, **snake_case** throughout): ``connected``; ``start`` {``sequence_number``, ``stream_sid``,
  ``start.{stream_sid, call_sid, account_sid, from, to, custom_parameters, media_format{encoding: "audio/x-raw",
  sample_rate: "8000", bit_rate: "16"}}``}; ``media`` {``chunk``, ``timestamp``, ``payload``; ~100 ms each};
  ``dtmf`` {``digit``, ``duration``}; ``mark`` (echo); ``stop``.
- outbound: ``media`` {``stream_sid``, ``media.payload``}, ``mark``, ``clear``. Audio is raw **PCM16LE** (slin),
  base64. An outbound chunk must be **≥ 3.2 KB and ≥ 100 ms, ≤ 100 KB, and a multiple of 320 bytes** (else gaps
  or timeouts): ``min_message_ms`` is set from the rate at ``start`` (200 ms at 8 kHz, 100 ms at 16/24 kHz),
  and 20 ms frames are 320/640/960 bytes, always multiples of 320.
- auth: IP allow-listing or Basic auth embedded in the URL (sent as ``Authorization: Basic``):
  :func:`verify_basic_auth`, :func:`ip_allowed`. The bot must answer within **10 s** (Exotel retries the handshake
  once); sessions last up to 60 min; closing the socket moves the flow to the next applet.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import json
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from ..errors import CarrierProtocolError, LocalProtocolError
from .base import (
    FRAME_MS,
    SAFE_ID,
    StreamDialect,
    b64,
    b64_payload,
    dumps,
    json_object,
    obj,
    opt_int,
    require_dtmf,
    require_str,
    screen_media,
    string_map,
)
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
    "MAX_MESSAGE_BYTES",
    "MIN_MESSAGE_BYTES",
    "SAMPLE_RATES",
    "SPEC",
    "ExotelSettings",
    "ExotelStream",
    "ip_allowed",
    "min_message_ms_for",
    "stream_url_document",
    "verify_basic_auth",
]

SAMPLE_RATES = (8000, 16000, 24000)
MIN_MESSAGE_BYTES = 3200
MAX_MESSAGE_BYTES = 100 * 1024
CUSTOM_PARAMETERS_MAX = 3
CUSTOM_PARAMETERS_CHARS = 256


def min_message_ms_for(sample_rate: int) -> int:
    """The shortest outbound message Exotel plays without gaps: ≥ 100 ms and ≥ 3.2 KB, in whole 20 ms frames."""
    bytes_per_ms = sample_rate * 2 // 1000
    ms = max(100, math.ceil(MIN_MESSAGE_BYTES / bytes_per_ms))
    return math.ceil(ms / FRAME_MS) * FRAME_MS


class ExotelStream(StreamDialect):
    """Protocol state of one Exotel Voicebot stream (a :class:`~gateway.carriers.base.Dialect`). Raw PCM16LE at the
    rate ``start`` says; ``min_message_ms`` follows the rate. One second per message is far below 100 KB at any
    rate (24 kHz: 48 KB)."""

    carrier = "exotel"
    label = "Exotel"

    def __init__(self, transport_params: Mapping[str, str] | None = None) -> None:
        super().__init__(transport_params, "audio/pcm", 8000)

    def _negotiate(self, encoding: str, sample_rate: int) -> None:
        super()._negotiate(encoding, sample_rate)
        self.min_message_ms = min_message_ms_for(sample_rate)

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        msg = json_object(data, "Exotel")
        event = msg.get("event")
        if event == "connected":
            return [StreamConnected()]
        if event == "start":
            return [self._parse_start(msg)]
        self._in_stream(event, msg.get("stream_sid"), "stream_sid")
        if event == "media":
            media = obj(msg, "media")
            ev = AudioReceived(
                b64_payload(media, "media"), opt_int(media.get("timestamp")), opt_int(media.get("chunk"))
            )
            screened = screen_media(ev, self.encoding, self.frame_bytes, self.media_faults)
            return [ev] if screened is None else screened
        if event == "mark":
            return [PlaybackCheckpoint(require_str(obj(msg, "mark"), "name", "mark"))]
        if event == "dtmf":
            return [DtmfReceived(require_dtmf(obj(msg, "dtmf").get("digit"), "dtmf.digit"))]
        if event == "stop":
            self.stopped = True
            raw_stop = msg.get("stop")
            stop = raw_stop if isinstance(raw_stop, dict) else {}
            return [StreamStopped(call_id=str(stop.get("call_sid", self.call_id or "")))]
        raise CarrierProtocolError(f"unknown event {event!r}")

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        self._first_start()
        start = obj(msg, "start")
        stream_sid = require_str(start, "stream_sid", "start")
        call_sid = require_str(start, "call_sid", "start")
        for name, value in (("stream_sid", stream_sid), ("call_sid", call_sid)):
            if not SAFE_ID.fullmatch(value):
                raise CarrierProtocolError(f"start.{name} has characters an id never has")
        if msg.get("stream_sid", stream_sid) != stream_sid:
            raise CarrierProtocolError("start.stream_sid and stream_sid disagree")
        fmt = obj(start, "media_format")
        encoding, rate, bits = fmt.get("encoding"), opt_int(fmt.get("sample_rate")), opt_int(fmt.get("bit_rate", "16"))
        if encoding != "audio/x-raw" or rate not in SAMPLE_RATES or bits != 16:
            raise CarrierProtocolError(
                f"unsupported media_format {encoding!r}/{fmt.get('sample_rate')!r}/{fmt.get('bit_rate')!r}"
                " (expected audio/x-raw, 8000/16000/24000, 16)"
            )
        assert rate is not None
        params = string_map(start.get("custom_parameters") or {}, "start.custom_parameters")
        for key in ("from", "to"):
            if isinstance(start.get(key), str):
                params.setdefault(key, start[key])
        self._started(stream_sid, call_sid, "audio/pcm", rate)
        return StreamStarted(
            stream_id=stream_sid,
            call_id=call_sid,
            account_id=str(start.get("account_sid", "")),
            encoding="audio/pcm",
            sample_rate=rate,
            channels=1,
            tracks=("inbound",),
            custom_parameters=self._custom_parameters(params),
        )

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> str:
        sid = self._sid()
        if len(payload) % 320 or not MIN_MESSAGE_BYTES <= len(payload) <= MAX_MESSAGE_BYTES:
            # The session pads and coalesces to min_message_ms whole frames: anything else is our bug.
            raise LocalProtocolError(f"Exotel media of {len(payload)} bytes (needs 3200..102400, a multiple of 320)")
        return dumps({"event": "media", "stream_sid": sid, "media": {"payload": b64(payload)}})

    def build_mark(self, name: str) -> str:
        return dumps({"event": "mark", "stream_sid": self._sid(), "mark": {"name": name}})

    def build_clear(self) -> str:
        return dumps({"event": "clear", "stream_sid": self._sid()})


# ---- the dynamic URL endpoint ----------------------------------------------------------------------------------
def stream_url_document(stream_url: str, sample_rate: int, parameters: Mapping[str, str]) -> dict[str, str]:
    """What ``GET /exotel/answer`` returns: the ``wss://`` URL for this call, with Exotel's ``sample-rate`` and our
    custom parameters (≤ 3, ≤ 256 characters) as the query string."""
    if sample_rate not in SAMPLE_RATES:
        raise ValueError(f"Exotel streams at {SAMPLE_RATES}; got {sample_rate}")
    custom = {k: v for k, v in parameters.items() if v}
    query = urlencode(custom)
    if len(custom) > CUSTOM_PARAMETERS_MAX or len(query) > CUSTOM_PARAMETERS_CHARS:
        raise ValueError("Exotel allows up to 3 custom parameters, 256 characters in all")
    sep = "&" if "?" in stream_url else "?"
    url = f"{stream_url}{sep}sample-rate={sample_rate}" + (f"&{query}" if query else "")
    return {"url": url}


# ---- auth ------------------------------------------------------------------------------------------------------
def verify_basic_auth(authorization: str | None, username: str, password: str) -> bool:
    """True if ``Authorization: Basic …`` carries exactly ``username:password`` (constant-time compare)."""
    if not authorization or not username or not authorization.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(authorization[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(given, f"{username}:{password}".encode())


def ip_allowed(remote: str | None, networks: Iterable[str]) -> bool:
    """True if ``remote`` is inside one of ``networks`` (addresses or CIDRs, e.g. Exotel's published ranges)."""
    if not remote:
        return False
    try:
        addr = ipaddress.ip_address(remote)
    except ValueError:
        return False
    for net in networks:
        try:
            if addr in ipaddress.ip_network(net.strip(), strict=False):
                return True
        except ValueError:
            continue
    return False


# ---- the carrier ---------------------------------------------------------------------------------------------------
STREAM_PATH = "/exotel/stream"


@dataclass(frozen=True)
class ExotelSettings(CarrierDoor):
    """``[carriers.exotel]``: ``sample_rate`` of the stream (8000, 16000 or 24000), and ``allowed_ips``: Exotel's
    source networks (CIDRs or addresses), to authenticate by source address instead of (or beside) Basic auth."""

    sample_rate: int = 8000
    allowed_ips: tuple[str, ...] = ()


def _authenticated(door: Door[ExotelSettings]) -> bool:
    return bool(door.secret("basic_auth") or door.options.allowed_ips)


def _authorized(authorization: str | None, remote: str | None, door: Door[ExotelSettings]) -> Refusal | None:
    """Basic auth (``EXOTEL_BASIC_AUTH``, as embedded in the applet URL) or a source address in ``allowed_ips``; the
    answer URL and the stream upgrade both need one."""
    basic, networks = door.secret("basic_auth"), door.options.allowed_ips
    user, _, password = basic.partition(":")
    if basic and verify_basic_auth(authorization, user, password):
        return None
    if networks and ip_allowed(remote, networks):
        return None
    return Refusal("bad credentials")


def _verify(hook: Webhook, door: Door[ExotelSettings]) -> Refusal | None:
    return _authorized(hook.headers.get("Authorization"), hook.remote, door)


def _check_upgrade(upgrade: Upgrade, door: Door[ExotelSettings]) -> Refusal | None:
    return _authorized(upgrade.headers.get("Authorization"), upgrade.remote, door)


def _read_call(hook: Webhook) -> Call | Malformed:
    call_sid = hook.query.get("CallSid", "")
    if not call_sid:
        return Malformed("CallSid missing")
    return Call(call_sid, called=hook.query.get("CallTo", ""), caller=hook.query.get("CallFrom", ""))


def _answer(call: Call, ctx: AnswerContext[ExotelSettings]) -> Answer:
    # The called number rides as a custom parameter, so the stream presents exactly the 'to' its token's profile
    # was chosen by (Exotel's own start.to is only a fallback the dialect uses when no parameter carries one).
    parameters = {"token": ctx.token, "to": call.called}
    document = stream_url_document(ctx.stream_base + STREAM_PATH, ctx.options.sample_rate, parameters)
    return Answer(json.dumps(document), "application/json")


def _busy(text: str) -> Answer:
    return Answer("not accepting calls", "text/plain", 503)  # the applet moves on; nothing to say here


def _dialect(upgrade: Upgrade) -> ExotelStream:
    token = upgrade.query.get("token")  # a custom query parameter (→ start.custom_parameters too)
    return ExotelStream(transport_params={"token": token} if token else None)


def _check(door: Door[ExotelSettings]) -> Iterator[tuple[str, str]]:
    if door.options.sample_rate not in SAMPLE_RATES:
        yield "carriers.exotel.sample_rate", "must be 8000, 16000 or 24000"
    basic = door.secret("basic_auth")
    if basic and ":" not in basic:
        yield "EXOTEL_BASIC_AUTH", "must be user:password"


SPEC: CarrierSpec[ExotelSettings] = CarrierSpec(
    name="exotel",
    options=ExotelSettings,
    secrets=(Secret("basic_auth", "EXOTEL_BASIC_AUTH"),),  # "user:password" as embedded in the Voicebot applet URL
    webhook_path="/exotel/answer",
    webhook_methods=("GET",),
    stream_path=STREAM_PATH,
    webhook_body="none",
    verify=_verify,
    read_call=_read_call,
    answer=_answer,
    busy=_busy,
    dialect=_dialect,
    check_upgrade=_check_upgrade,
    authenticated=_authenticated,
    credential="EXOTEL_BASIC_AUTH (or carriers.exotel.allowed_ips)",
    check=_check,
    legacy_keys={"exotel_sample_rate": "sample_rate", "exotel_allowed_ips": "allowed_ips"},
)

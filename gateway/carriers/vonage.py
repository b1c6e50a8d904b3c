"""Vonage Voice API WebSockets (NCCO ``connect`` to a ``websocket`` endpoint). Pure.

What Vonage documents, and what this module does with it (docs/how-to/carriers/vonage.md#protocol):

- the first message is **text** JSON: ``{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", …}``
  plus every ``headers`` entry of our NCCO endpoint (≤ 512 bytes; older platforms send the same object without the
  ``event`` key). That is where the per-call token, the call's ``uuid`` and the numbers travel. It parses to
  :class:`~gateway.carriers.events.StreamStarted`: Vonage has no separate start.
- after it, caller audio arrives as **binary** frames of 16-bit little-endian PCM, 20 ms each (320 bytes at 8 kHz,
  640 at 16 kHz). Text events: ``websocket:dtmf`` {``digit``, ``duration``}, ``websocket:cleared`` (answer to our
  ``clear``), ``websocket:notify`` (a ``notify`` we sent whose audio has played; its ``payload`` comes back).
  Unknown ``websocket:*`` events are ignored (forward compatible); anything else is a protocol error.
- we send **binary** frames in the same format, one 20 ms frame per message, odd lengths padded to even
  (vocode); and text commands ``{"action": "clear"}`` and ``{"action": "notify", "payload": {"name": …}}``.
- Vonage buffers at most **3072 messages (~60 s)**: ``max_lead_ms`` keeps the session's pacing under it.
- the socket is a call leg (a conference participant hears the mix); hang-up is the socket closing.
- webhooks carry a **JWT** (HS256, the account's signature secret) in ``Authorization: Bearer …``, whose
  ``payload_hash`` is the SHA-256 of the body (:func:`verify_vonage_jwt`).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from ..errors import CarrierProtocolError
from .base import (
    FRAME_MS,
    SAFE_ID,
    StreamDialect,
    dumps,
    e164_from_digits,
    json_object,
    require_dtmf,
    screen_media,
)
from .events import (
    AudioReceived,
    CarrierEvent,
    DtmfReceived,
    PlaybackCheckpoint,
    PlaybackCleared,
    StreamStarted,
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
    "CONTENT_TYPES",
    "MAX_BUFFER_MESSAGES",
    "SPEC",
    "VonageSettings",
    "VonageStream",
    "ncco_connect",
    "verify_vonage_jwt",
]

CONTENT_TYPES = {"audio/l16;rate=8000": 8000, "audio/l16;rate=16000": 16000}
#: Vonage's playback buffer, in messages of 20 ms (docs/how-to/carriers/vonage.md#protocol).
MAX_BUFFER_MESSAGES = 3072
_RESERVED = frozenset({"event", "content-type"})


class VonageStream(StreamDialect):
    """Protocol state of one Vonage WebSocket call leg (a :class:`~gateway.carriers.base.Dialect`). The call's
    ``uuid`` is both its stream and call id; a ``notify`` comes back only once the audio before it played."""

    carrier = "vonage"
    label = "Vonage"
    started_by = "websocket:connected"
    max_message_ms = FRAME_MS  # one 20 ms frame per binary message
    # Stay well inside the 3072-message buffer: pacing never lets more than this sit at Vonage.
    max_lead_ms: int | None = MAX_BUFFER_MESSAGES * FRAME_MS - 1440  # 60 s

    def __init__(self, transport_params: Mapping[str, str] | None = None) -> None:
        super().__init__(transport_params, "audio/pcm", 16000)

    # ---- inbound -----------------------------------------------------------------------------------------------
    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        if isinstance(data, bytes):
            if self.stream_id is None:
                raise CarrierProtocolError("binary audio before websocket:connected")
            ev = AudioReceived(data)
            screened = screen_media(ev, self.encoding, self.frame_bytes, self.media_faults)
            return [ev] if screened is None else screened
        msg = json_object(data, "Vonage")
        event = msg.get("event")
        if self.stream_id is None:
            if event in (None, "websocket:connected") and "content-type" in msg:
                return [self._parse_connected(msg)]
            raise CarrierProtocolError(f"{event!r} before websocket:connected")
        if event == "websocket:connected":
            raise CarrierProtocolError("second websocket:connected on one socket")
        if event == "websocket:notify":
            payload = msg.get("payload")
            name = payload.get("name") if isinstance(payload, dict) else None
            if not isinstance(name, str) or not name:
                raise CarrierProtocolError("websocket:notify without payload.name")
            return [PlaybackCheckpoint(name)]
        if event == "websocket:cleared":
            return [PlaybackCleared()]
        if event == "websocket:dtmf":
            digit = msg.get("digit")
            if digit is None and isinstance(msg.get("dtmf"), dict):
                digit = msg["dtmf"].get("digit")
            return [DtmfReceived(require_dtmf(digit, "websocket:dtmf digit"))]
        if isinstance(event, str) and event.startswith("websocket:"):
            return []  # an event type newer than this dialect: nothing the call needs
        raise CarrierProtocolError(f"unknown event {event!r}")

    def _parse_connected(self, msg: dict[str, Any]) -> StreamStarted:
        content_type = str(msg.get("content-type", "")).replace(" ", "").lower()
        rate = CONTENT_TYPES.get(content_type)
        if rate is None:
            raise CarrierProtocolError(
                f"unsupported content-type {msg.get('content-type')!r} (expected audio/l16;rate=8000 or 16000)"
            )
        headers = {k: v for k, v in msg.items() if k not in _RESERVED}
        if not all(isinstance(v, str) for v in headers.values()):
            raise CarrierProtocolError("NCCO headers must be strings")
        params = self._custom_parameters(headers)
        call_uuid = params.get("uuid", "")
        if not call_uuid or not SAFE_ID.fullmatch(call_uuid):
            raise CarrierProtocolError("websocket:connected without a usable 'uuid' header (set by our NCCO)")
        self._started(call_uuid, call_uuid, "audio/pcm", rate)
        return StreamStarted(
            stream_id=call_uuid,
            call_id=call_uuid,
            account_id=params.get("account", ""),
            encoding="audio/pcm",
            sample_rate=rate,
            channels=1,
            tracks=("inbound",),
            custom_parameters=params,
        )

    # ---- outbound ----------------------------------------------------------------------------------------------
    def build_media(self, payload: bytes) -> bytes:
        self._sid()
        return payload + b"\x00" if len(payload) % 2 else payload  # odd lengths are padded (vocode)

    def build_mark(self, name: str) -> str:
        self._sid()
        return dumps({"action": "notify", "payload": {"name": name}})

    def build_clear(self) -> str:
        self._sid()
        return dumps({"action": "clear"})


# ---- answer document -------------------------------------------------------------------------------------------
def ncco_connect(uri: str, headers: Mapping[str, str], sample_rate: int = 16000) -> list[dict[str, Any]]:
    """The NCCO: one ``connect`` to our WebSocket. Per-call data goes in ``headers`` (≤ 512 bytes), which Vonage
    repeats in the first message. Nothing follows, so the call ends when the socket closes."""
    content_type = f"audio/l16;rate={sample_rate}"
    if content_type not in CONTENT_TYPES:
        raise ValueError(f"Vonage streams L16 at 8000 or 16000 Hz; got {sample_rate}")
    clean = {k: v for k, v in headers.items() if v}
    if len(json.dumps(clean, separators=(",", ":")).encode()) > 512:
        raise ValueError("Vonage websocket headers are limited to 512 bytes")
    endpoint = {"type": "websocket", "uri": uri, "content-type": content_type, "headers": clean}
    return [{"action": "connect", "endpoint": [endpoint]}]


# ---- signed webhooks -------------------------------------------------------------------------------------------
def verify_vonage_jwt(
    signature_secret: str, authorization: str | None, body: bytes, now: float, tolerance_s: float = 300.0
) -> bool:
    """True if ``Authorization: Bearer <jwt>`` is an HS256 JWT signed with the signature secret, issued within
    ``tolerance_s`` of ``now``, and (when it has one) its ``payload_hash`` is the SHA-256 hex of ``body``. Only HS256
    is accepted (no ``alg`` confusion). Never raises for bad input."""
    if not signature_secret or not authorization or not authorization.startswith("Bearer "):
        return False
    token = authorization[len("Bearer ") :].strip()
    try:
        claims = jwt.decode(
            token,
            signature_secret,
            algorithms=["HS256"],
            options={"require": ["iat"], "verify_exp": False, "verify_iat": False, "verify_nbf": False},
        )
    except jwt.PyJWTError:
        return False
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or isinstance(iat, bool) or abs(now - iat) > tolerance_s:
        return False
    expected_hash = claims.get("payload_hash")
    if expected_hash is not None:
        actual = hashlib.sha256(body).hexdigest()
        if not isinstance(expected_hash, str) or not hmac.compare_digest(expected_hash.lower(), actual):
            return False
    return True


# ---- the carrier ---------------------------------------------------------------------------------------------------
STREAM_PATH = "/vonage/stream"


@dataclass(frozen=True)
class VonageSettings(CarrierDoor):
    """``[carriers.vonage]``: ``sample_rate`` of the binary L16 audio (8000 or 16000)."""

    sample_rate: int = 16000


def _json_answer(document: Any) -> Answer:
    return Answer(json.dumps(document), "application/json")


def _verify(hook: Webhook, door: Door[VonageSettings]) -> Refusal | None:
    if verify_vonage_jwt(door.secret("signature_secret"), hook.headers.get("Authorization"), hook.body, now=hook.now):
        return None
    return Refusal("bad signature")


def _read_call(hook: Webhook) -> Call | Malformed:
    # The answer URL is a GET with a query, or a POST with a JSON body (whose values win).
    fields = dict(hook.query)
    if hook.json_sent:
        if not isinstance(hook.json, dict):
            return Malformed("answer body is not a JSON object")
        fields.update({k: str(v) for k, v in hook.json.items()})
    call_uuid = fields.get("uuid", "")
    if not call_uuid:
        return Malformed("uuid missing")
    return Call(
        call_uuid, called=e164_from_digits(fields.get("to", "")), caller=e164_from_digits(fields.get("from", ""))
    )


def _answer(call: Call, ctx: AnswerContext[VonageSettings]) -> Answer:
    headers = {"token": ctx.token, "uuid": call.call_id, "from": call.caller, "to": call.called}
    return _json_answer(ncco_connect(ctx.stream_base + STREAM_PATH, headers, ctx.options.sample_rate))


def _busy(text: str) -> Answer:
    return _json_answer([{"action": "talk", "text": text}])


def _dialect(upgrade: Upgrade) -> VonageStream:
    return VonageStream()  # the token comes in websocket:connected (the NCCO's headers)


def _check(door: Door[VonageSettings]) -> Iterator[tuple[str, str]]:
    if door.options.sample_rate not in CONTENT_TYPES.values():
        yield "carriers.vonage.sample_rate", "must be 8000 or 16000"


SPEC: CarrierSpec[VonageSettings] = CarrierSpec(
    name="vonage",
    options=VonageSettings,
    secrets=(Secret("signature_secret", "VONAGE_SIGNATURE_SECRET"),),
    webhook_path="/vonage/answer",
    webhook_methods=("GET", "POST"),
    stream_path=STREAM_PATH,
    webhook_body="json",
    signs_raw_body=True,  # the JWT's payload_hash covers the body
    verify=_verify,
    read_call=_read_call,
    answer=_answer,
    busy=_busy,
    dialect=_dialect,
    check=_check,
    legacy_keys={"vonage_sample_rate": "sample_rate"},
)

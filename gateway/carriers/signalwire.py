"""SignalWire (cXML / Compatibility API) media streams. Pure.

What SignalWire documents, and what this module does with it (docs/how-to/carriers/signalwire.md#protocol): the cXML
``<Connect><Stream>`` and the stream events are Twilio-compatible
(``connected``/``start``/``media``/``dtmf``/``mark``/``stop`` in, ``media``/``mark``/``clear`` out, every message
carrying the ``streamSid``), so the parsing and building are :class:`~gateway.carriers.twilio.TwilioStream`'s. What
differs:

- the ``codec`` attribute of ``<Stream>`` picks the audio: ``PCMU`` (default), ``PCMA``, ``L16`` (8 kHz),
  ``L16@16000h``, ``L16@24000h``. With ``L16@24000h`` a ``pcm24k`` agent needs no resampling at all
  (docs/architecture/audio.md#carrier-rates). ``start.mediaFormat`` says which one the stream carries and the outbound
  audio uses the same.
- L16 payloads are taken to be in network byte order, as L16 is on RTP (RFC 3551 §4.5.11); the dialect swaps to and from
  the transcoder's little-endian PCM. [idea: not confirmed by SignalWire's docs, see
  docs/how-to/carriers/index.md#assumptions]
- webhooks and upgrades are signed like Twilio's (HMAC-SHA1 over URL + sorted params,
  docs/how-to/carriers/signalwire.md#protocol) with the Space's signing key, in ``X-SignalWire-Signature``; the legacy
  ``X-Twilio-Signature`` alias is accepted too.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..errors import CarrierProtocolError
from ..security import validate_twilio_signature
from .base import FRAME_MS, NegotiatedFormat, opt_int, pcm16_swap, screen_media
from .events import AudioReceived, CarrierEvent, StreamStarted
from .spec import Answer, AnswerContext, Call, CarrierDoor, CarrierSpec, Door, Refusal, Secret, Upgrade, Webhook
from .twilio import TwilioStream, read_form_call, say_and_hang_up
from .twiml import connect_stream as twiml_connect_stream

__all__ = [
    "CODECS",
    "SIGNATURE_HEADERS",
    "SPEC",
    "SignalWireSettings",
    "SignalWireStream",
    "connect_stream",
    "validate_signalwire_signature",
]

#: ``<Stream codec=…>`` → (agent-protocol encoding, sample rate). Ptime modifiers (``@40i``) are not used:
#: the session frames outbound audio itself.
CODECS: dict[str, tuple[str, int]] = {
    "PCMU": ("audio/pcmu", 8000),
    "PCMA": ("audio/pcma", 8000),
    "L16": ("audio/pcm", 8000),
    "L16@16000h": ("audio/pcm", 16000),
    "L16@24000h": ("audio/pcm", 24000),
}
#: ``start.mediaFormat.encoding`` spellings → agent-protocol encoding.
_ENCODINGS = {"audio/x-mulaw": "audio/pcmu", "audio/x-alaw": "audio/pcma", "audio/x-l16": "audio/pcm",
              "audio/l16": "audio/pcm"}  # fmt: skip
#: Header names SignalWire signs with, newest first (docs/how-to/carriers/signalwire.md#protocol).
SIGNATURE_HEADERS = ("X-SignalWire-Signature", "X-Twilio-Signature")


class _Core(TwilioStream):
    """TwilioStream with SignalWire's codec choices in ``start.mediaFormat``."""

    carrier = "signalwire"

    def _parse_start(self, msg: dict[str, Any]) -> StreamStarted:
        start = msg.get("start")
        fmt = start.get("mediaFormat") if isinstance(start, dict) else None
        if not isinstance(fmt, dict):
            return super()._parse_start(msg)  # raises with Twilio's message
        raw_enc = fmt.get("encoding")
        encoding = _ENCODINGS.get(raw_enc.lower()) if isinstance(raw_enc, str) else None
        rate = opt_int(fmt.get("sampleRate"))  # a number or a string of ASCII digits; a float or anything else: None
        channels = opt_int(fmt.get("channels", 1))
        valid_rates = (8000,) if encoding in ("audio/pcmu", "audio/pcma") else (8000, 16000, 24000)
        if encoding is None or rate not in valid_rates or channels != 1:
            raise CarrierProtocolError(
                f"unsupported mediaFormat {raw_enc!r}/{fmt.get('sampleRate')!r}/{fmt.get('channels')!r}"
                " (expected PCMU/PCMA at 8000 or L16 at 8000/16000/24000, mono)"
            )
        # Let Twilio's parser check everything else (SIDs, parameters, tracks) on a μ-law copy of the message.
        twin = copy.deepcopy(msg)
        twin["start"]["mediaFormat"] = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        ev = super()._parse_start(twin)
        assert isinstance(rate, int)
        return dataclasses.replace(ev, encoding=encoding, sample_rate=rate)


class SignalWireStream(NegotiatedFormat):
    """Protocol state of one SignalWire media stream (a :class:`~gateway.carriers.base.Dialect`): Twilio's parser and
    builders, SignalWire's negotiated codec. A ``clear`` flushes pending marks, as Twilio's does."""

    carrier = "signalwire"
    min_message_ms = FRAME_MS
    max_message_ms = 1000
    max_lead_ms: int | None = None

    def __init__(self, transport_params: Mapping[str, str] | None = None) -> None:
        super().__init__(transport_params, "audio/pcmu", 8000)
        self._core = _Core()
        self._swap = False

    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        if isinstance(data, bytes):
            raise CarrierProtocolError("binary frame (SignalWire sends JSON text only)")
        ev = self._core.parse(data)
        if type(ev) is AudioReceived:
            screened = screen_media(ev, self.encoding, self.frame_bytes, self.media_faults)
            events: list[CarrierEvent] = [ev] if screened is None else screened
            if self._swap:
                events = [
                    msgspec.structs.replace(e, payload=pcm16_swap(e.payload)) if type(e) is AudioReceived else e
                    for e in events
                ]
            return events
        if isinstance(ev, StreamStarted):
            self._negotiate(ev.encoding, ev.sample_rate)
            self._swap = ev.encoding == "audio/pcm"
            ev = dataclasses.replace(ev, custom_parameters=self._custom_parameters(ev.custom_parameters))
        return [ev]

    def build_media(self, payload: bytes) -> str:
        return self._core.build_media(pcm16_swap(payload) if self._swap else payload)

    def media_template(self) -> tuple[bytes, bytes] | None:
        # Twilio's message around the payload, for G.711; not for L16, whose samples are swapped before the base64.
        return None if self._swap else self._core.media_template()

    def build_mark(self, name: str) -> str:
        return self._core.build_mark(name)

    def build_clear(self) -> str:
        return self._core.build_clear()


def connect_stream(
    stream_url: str, parameters: Mapping[str, str], codec: str = "PCMU", status_callback: str | None = None
) -> str:
    """cXML ``<Connect><Stream codec=…>`` (bidirectional), per-call data in ``<Parameter>``s (no query string),
    no trailing verb (closing the socket ends the call)."""
    if codec not in CODECS:
        raise ValueError(f"unknown SignalWire codec {codec!r} (known: {', '.join(CODECS)})")
    return twiml_connect_stream(stream_url, parameters, status_callback, attributes={"codec": codec})


def validate_signalwire_signature(
    signing_key: str,
    url: str,
    params: Mapping[str, str | Iterable[str]],
    headers: Mapping[str, str],
) -> bool:
    """True if the request carries a valid Twilio-compatible signature made with the Space's signing key, in
    ``X-SignalWire-Signature`` or its legacy alias ``X-Twilio-Signature``
    (docs/how-to/carriers/signalwire.md#protocol)."""
    return any(validate_twilio_signature(signing_key, url, params, headers.get(h)) for h in SIGNATURE_HEADERS)


# ---- the carrier ---------------------------------------------------------------------------------------------------
STREAM_PATH = "/signalwire/stream"


@dataclass(frozen=True)
class SignalWireSettings(CarrierDoor):
    """``[carriers.signalwire]``: ``codec`` of the cXML ``<Stream>`` (:data:`CODECS`; ``L16@24000h`` needs no
    resampling for a ``pcm24k`` agent)."""

    codec: str = "PCMU"
    #: The Space's URL (``https://<space>.signalwire.com``): its LaML API serves hang-up and transfer
    #: (gateway.control.twilio) with SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN. Empty: no call control.
    space_url: str = ""


def _verify(hook: Webhook, door: Door[SignalWireSettings]) -> Refusal | None:
    if validate_signalwire_signature(door.secret("signing_key"), hook.url, hook.form, hook.headers):
        return None
    return Refusal("bad signature")


def _answer(call: Call, ctx: AnswerContext[SignalWireSettings]) -> Answer:
    parameters = {"token": ctx.token, "from": call.caller, "to": call.called}
    return Answer(connect_stream(ctx.stream_base + STREAM_PATH, parameters, codec=ctx.options.codec))


def _check_upgrade(upgrade: Upgrade, door: Door[SignalWireSettings]) -> Refusal | None:
    # Checked when sent (SignalWire does not document signing upgrades): like Twilio's, over the wss:// URL of the
    # cXML with no params.
    if not any(h in upgrade.headers for h in SIGNATURE_HEADERS):
        return None
    if validate_signalwire_signature(door.secret("signing_key"), upgrade.url, {}, upgrade.headers):
        return None
    return Refusal("bad upgrade signature")


def _dialect(upgrade: Upgrade) -> SignalWireStream:
    return SignalWireStream()


def _check(door: Door[SignalWireSettings]) -> Iterator[tuple[str, str]]:
    if door.options.codec not in CODECS:
        yield "carriers.signalwire.codec", "must be PCMU, PCMA, L16, L16@16000h or L16@24000h"
    space = door.options.space_url
    if space and not space.startswith(("https://", "http://")):
        yield "carriers.signalwire.space_url", "must be the Space's https:// URL (https://<space>.signalwire.com)"
    if (door.secret("project_id") or door.secret("api_token")) and not (
        space and door.secret("project_id") and door.secret("api_token")
    ):
        yield (
            "carriers.signalwire.space_url",
            "call control needs space_url, SIGNALWIRE_PROJECT_ID and SIGNALWIRE_API_TOKEN together",
        )


SPEC: CarrierSpec[SignalWireSettings] = CarrierSpec(
    name="signalwire",
    options=SignalWireSettings,
    secrets=(
        Secret("signing_key", "SIGNALWIRE_SIGNING_KEY"),  # webhook signatures
        Secret("project_id", "SIGNALWIRE_PROJECT_ID"),  # LaML API user (call control); signs nothing
        Secret("api_token", "SIGNALWIRE_API_TOKEN"),  # LaML API password (call control)
    ),
    webhook_path="/signalwire/voice",
    webhook_methods=("POST",),
    stream_path=STREAM_PATH,
    webhook_body="form",
    verify=_verify,
    read_call=read_form_call,
    answer=_answer,
    busy=say_and_hang_up,
    dialect=_dialect,
    check_upgrade=_check_upgrade,
    check=_check,
    authenticated=lambda door: bool(door.secret("signing_key")),
    credential="SIGNALWIRE_SIGNING_KEY",
    call_control="laml_rest",
    legacy_keys={"signalwire_codec": "codec"},
)

"""Which dialect serves which carrier. Pure.

:class:`TwilioDialect` presents :class:`~gateway.carriers.twilio.TwilioStream` (whose ``parse`` returns one event per
message, the API its tests and the fast path are pinned to) through the :class:`~gateway.carriers.base.Dialect`
protocol (``parse`` returns a list).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .base import Dialect
from .events import CarrierEvent
from .twilio import MULAW_FRAME_BYTES, TwilioStream

__all__ = ["CARRIERS", "TwilioDialect", "new_dialect"]

#: Every carrier the gateway speaks, in the order the README lists them.
CARRIERS = ("twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel")


class TwilioDialect:
    """Twilio Media Streams (telephony.md §A.3–§A.5) as a :class:`Dialect`."""

    carrier = "twilio"
    frame_bytes = MULAW_FRAME_BYTES
    min_message_ms = 20
    max_message_ms = 1000  # no documented maximum (§A.6); 20–100 ms is the practical choice
    max_lead_ms: int | None = None
    checkpoint_proves_playback = False  # clear flushes pending marks (§A.5 item 3)
    silence = 0xFF

    def __init__(self, stream: TwilioStream | None = None) -> None:
        self.stream = stream or TwilioStream()

    def parse(self, data: str | bytes) -> list[CarrierEvent]:
        return [self.stream.parse(data)]

    def build_media(self, payload: bytes) -> str:
        return self.stream.build_media(payload)

    def build_mark(self, name: str) -> str:
        return self.stream.build_mark(name)

    def build_clear(self) -> str:
        return self.stream.build_clear()


def _factories() -> dict[str, Callable[..., Dialect]]:
    from .exotel import ExotelStream
    from .plivo import PlivoStream
    from .signalwire import SignalWireStream
    from .telnyx import TelnyxStream
    from .vonage import VonageStream

    return {
        "twilio": lambda **_: TwilioDialect(),
        "signalwire": SignalWireStream,
        "telnyx": TelnyxStream,
        "plivo": PlivoStream,
        "vonage": VonageStream,
        "exotel": ExotelStream,
    }


def new_dialect(carrier: str, transport_params: Mapping[str, str] | None = None, **options: Any) -> Dialect:
    """A fresh dialect for one stream of ``carrier``. ``transport_params`` are per-call values that reached us outside
    the carrier's start message (a URL path segment, the upgrade's query string); the dialect merges them into
    ``StreamStarted.custom_parameters``, overriding what the start message says."""
    factories = _factories()
    if carrier not in factories:
        raise ValueError(f"unknown carrier {carrier!r} (known: {', '.join(CARRIERS)})")
    if carrier == "twilio":
        return TwilioDialect()
    return factories[carrier](transport_params=transport_params, **options)

"""The carriers the gateway speaks: one line each. Pure.

Each entry is a carrier's :class:`~gateway.carriers.spec.CarrierSpec` (its routes, settings table, secrets and pure
functions), declared in its own module. The generic handlers (:mod:`gateway.carrier_routes`), the config
(:mod:`gateway.config`: ``[carriers.NAME]`` tables, secrets, validation) and the call simulator read it from here;
docs/how-to/carriers/adding-a-carrier.md walks through adding one. The order is that of docs/how-to/carriers/index.md
(and of the start-up log).

:class:`~gateway.carriers.twilio.TwilioDialect` is re-exported for the call session, which defaults to it.
"""

from __future__ import annotations

from typing import Any

from . import asterisk_ws, audiosocket, exotel, freeswitch, plivo, signalwire, telnyx, twilio, vonage
from .spec import CarrierSpec
from .twilio import TwilioDialect

__all__ = ["CARRIERS", "TwilioDialect", "carrier", "names"]

CARRIERS: tuple[CarrierSpec[Any], ...] = (
    twilio.SPEC,
    signalwire.SPEC,
    telnyx.SPEC,
    plivo.SPEC,
    vonage.SPEC,
    exotel.SPEC,
    audiosocket.SPEC,
    freeswitch.SPEC,
    asterisk_ws.SPEC,
)


def names() -> tuple[str, ...]:
    """Every carrier's name, in the registry's order."""
    return tuple(spec.name for spec in CARRIERS)


def carrier(name: str) -> CarrierSpec[Any]:
    """The spec of carrier ``name``; ``KeyError`` naming the known ones otherwise."""
    for spec in CARRIERS:  # read at call time: tests/integration/test_adding_a_carrier.py registers one more
        if spec.name == name:
            return spec
    raise KeyError(f"unknown carrier {name!r} (known: {', '.join(names())})")

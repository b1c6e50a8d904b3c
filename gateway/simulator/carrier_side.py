"""The carrier's side of a call for every carrier the gateway speaks, as the call simulator plays it. Pure: no
sockets, no clock, no environment (the asyncio shell is :mod:`gateway.simulator.caller`).

Each :class:`CarrierSide` does, from the carrier's point of view (docs/how-to/carriers/index.md; one
module per carrier in :mod:`gateway.simulator.sides`, taking routes and secret variables from the carrier's
description, :mod:`gateway.carriers.registry`):

- **dialling**: the webhook request the carrier makes when a call comes in (:meth:`~CarrierSide.webhook`, signed the
  carrier's way when a secret is given) and how it reads the answer (TwiML / cXML / TeXML / Plivo XML / NCCO JSON /
  Exotel's dynamic-URL JSON: :meth:`~CarrierSide.read_answer`), and the headers of the stream upgrade;
- **streaming**: the messages the carrier sends (``connected``/``start``/``media``/mark echoes/``stop`` in its own
  dialect and audio format, e.g. binary PCM for Vonage, 100 ms chunks for Exotel, a few swapped frames for Telnyx,
  whose frame order is not guaranteed) and strict checks of what the gateway sends (:meth:`~CarrierSide.parse`);
- **clear semantics**: Twilio-style carriers echo pending marks on ``clear``; Plivo and Vonage acknowledge it
  (``clearedAudio`` / ``websocket:cleared``) and only ever echo a checkpoint after its audio played.

The simulator's caller, playout buffer and recording work in 8 kHz μ-law 20 ms frames whatever the carrier; each side
converts at its edge (G.711 / PCM16 in the carrier's byte order, block-free resampling), so every message carries
exactly 20 ms of audio (Exotel: 100 ms) at every rate. :class:`SideOptions` plays what the answer cannot say: the L16
byte order (assumed per carrier in the simulator itself, or forced either way) and a Telnyx L16 stream.
"""

from __future__ import annotations

from .sides.asterisk_ws import AsteriskWsCarrier
from .sides.audiosocket import AudioSocketCarrier
from .sides.common import CallIds, CarrierSide, Message, SideOptions, StreamTarget, WebhookRequest
from .sides.exotel import ExotelCarrier
from .sides.freeswitch import FreeswitchCarrier
from .sides.plivo import PlivoCarrier
from .sides.telnyx import TelnyxCarrier
from .sides.twilio import SignalWireCarrier, TwilioCarrier
from .sides.vonage import VonageCarrier

__all__ = [
    "CARRIER_SIDES",
    "CallIds",
    "CarrierSide",
    "Message",
    "SideOptions",
    "StreamTarget",
    "WebhookRequest",
    "new_carrier_side",
    "secret_env",
]

#: Each carrier's side, by carrier name (the registry's names: tests/unit/test_simulator_sides.py holds them equal).
CARRIER_SIDES: dict[str, type[CarrierSide]] = {
    "twilio": TwilioCarrier,
    "signalwire": SignalWireCarrier,
    "telnyx": TelnyxCarrier,
    "plivo": PlivoCarrier,
    "vonage": VonageCarrier,
    "exotel": ExotelCarrier,
    "audiosocket": AudioSocketCarrier,
    "freeswitch": FreeswitchCarrier,
    "asterisk-ws": AsteriskWsCarrier,
}


def new_carrier_side(carrier: str, ids: CallIds, options: SideOptions | None = None) -> CarrierSide:
    try:
        cls = CARRIER_SIDES[carrier]
    except KeyError:
        raise ValueError(f"unknown carrier {carrier!r} (known: {', '.join(CARRIER_SIDES)})") from None
    return cls(ids, options)


def secret_env(carrier: str) -> str:
    """The environment variable the simulator signs ``carrier``'s requests with when no secret is given: the
    carrier's own (its description's first secret), but for a carrier whose signing key is not the gateway's
    (Telnyx: the gateway holds the public key, the simulator the private one)."""
    return CARRIER_SIDES[carrier].secret_env

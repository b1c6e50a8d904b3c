"""Call control that belongs to the carrier carrying the call: REST hang-up and transfer. Not pure: the Twilio
implementation makes HTTP requests (docs/how-to/call-control.md).

A call's session gets exactly one :class:`CarrierControl`, chosen by the stream door the call came in through
(:func:`carrier_control`). Only the ``twilio`` door gets Twilio's REST API, and only when it is configured
(``TWILIO_ACCOUNT_SID`` + ``TWILIO_AUTH_TOKEN``): a Telnyx, Plivo, Vonage, Exotel or SignalWire call id means nothing
to Twilio's API (a Telnyx ``v3:…`` id is not even a valid path segment there), and the browser softphone's calls
are not Twilio calls. Every other door gets :class:`NoCarrierControl`, whose answer the agent hears as a clean
``is_error`` tool result ("not available on this carrier") while the call goes on.

Failures of a control that exists come back as :class:`gateway.errors.CallControlFailed` (HTTP status, carrier error
code, message), whatever the carrier's client raised, so the session handles one exception type.
"""

from __future__ import annotations

from typing import Protocol

from ...carriers import twiml
from ...carriers.twilio_rest import TwilioRest, TwilioRestError
from ...errors import CallControlFailed

__all__ = ["CarrierControl", "NoCarrierControl", "TwilioControl", "carrier_control"]


class CarrierControl(Protocol):
    """What a carrier offers for the call it carries, beyond its media stream."""

    #: The carrier (door) this control speaks for, for logs.
    carrier: str
    #: Whether :meth:`hang_up` / :meth:`transfer` can do anything; when False they raise CallControlFailed.
    available: bool
    #: Why not, when ``available`` is False: a log reason (``twilio_not_configured``, ``not_on_this_carrier``).
    unavailable_reason: str

    async def hang_up(self, call_id: str) -> bool:
        """End the call at the carrier. True if this ended it, False if it was already over."""
        ...

    async def transfer(self, call_id: str, destination: str) -> None:
        """Hand the live call to ``destination`` (E.164 or SIP URI, already allow-listed)."""
        ...


class NoCarrierControl:
    """A carrier (or configuration) without call control: the tools say so, nothing is sent anywhere."""

    available = False

    def __init__(self, carrier: str, reason: str) -> None:
        self.carrier = carrier
        self.unavailable_reason = reason

    async def hang_up(self, call_id: str) -> bool:
        raise CallControlFailed(0, None, f"call control is not available on this carrier ({self.carrier})")

    async def transfer(self, call_id: str, destination: str) -> None:
        raise CallControlFailed(0, None, f"call control is not available on this carrier ({self.carrier})")


class TwilioControl:
    """Twilio's REST API for a call that came in through the ``twilio`` door: ``Status=completed`` to hang up, a
    ``<Dial>`` redirect to transfer (docs/how-to/call-control.md)."""

    carrier = "twilio"
    available = True
    unavailable_reason = ""

    def __init__(self, rest: TwilioRest) -> None:
        self._rest = rest

    async def hang_up(self, call_id: str) -> bool:
        try:
            return await self._rest.hang_up(call_id)
        except TwilioRestError as exc:
            raise CallControlFailed(exc.status, exc.code, exc.message) from None
        except ValueError as exc:  # not a Twilio CallSid: nothing was sent
            raise CallControlFailed(0, None, str(exc)) from None

    async def transfer(self, call_id: str, destination: str) -> None:
        try:
            await self._rest.redirect(call_id, twiml=twiml.dial(destination))
        except TwilioRestError as exc:
            raise CallControlFailed(exc.status, exc.code, exc.message) from None
        except ValueError as exc:
            raise CallControlFailed(0, None, str(exc)) from None


def carrier_control(door: str, rest: TwilioRest | None) -> CarrierControl:
    """The call control of a stream that came in through ``door`` (``twilio``, ``telnyx``, ``softphone``…)."""
    if door != "twilio":
        return NoCarrierControl(door, "not_on_this_carrier")
    if rest is None:
        return NoCarrierControl(door, "twilio_not_configured")
    return TwilioControl(rest)

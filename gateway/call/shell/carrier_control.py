"""Call control that belongs to the carrier carrying the call: REST hang-up and transfer. Not pure: the clients
(:mod:`gateway.control`) make HTTP requests (docs/how-to/call-control.md#carriers).

A call's session gets exactly one :class:`CarrierControl`, chosen by the stream door the call came in through
(:func:`carrier_control`), each speaking its own carrier's API with that carrier's ids and credentials:

- ``twilio``: :class:`TwilioControl`, ``Status=completed``; transfer = redirect to inline ``<Dial>`` TwiML
  (``TWILIO_ACCOUNT_SID``, ``TWILIO_AUTH_TOKEN``);
- ``signalwire``: :class:`TwilioControl` on the LaML API at the Space URL; transfer = redirect to a ``<Dial>`` URL
  (``SIGNALWIRE_PROJECT_ID``, ``SIGNALWIRE_API_TOKEN``, ``[carriers.signalwire] space_url``);
- ``telnyx``: :class:`TelnyxControl`, ``actions/hangup`` and ``actions/transfer`` (``TELNYX_API_KEY``);
- ``plivo``: :class:`PlivoControl`, ``DELETE`` the call; transfer = ``aleg_url`` of a ``<Dial>`` document
  (``PLIVO_AUTH_ID``, ``PLIVO_AUTH_TOKEN``);
- any other door (Vonage, Exotel, the softphone): :class:`NoCarrierControl`; hang-up is closing the stream.

A carrier's call id goes only to that carrier's API: nothing a Telnyx, Plivo, Vonage or Exotel call carries is ever
sent to Twilio. A door whose credentials are not set gets :class:`NoCarrierControl` with a reason naming what is
missing; its answer the agent hears as a clean ``is_error`` tool result ("not available on this carrier") while the
call goes on.

Failures of a control that exists come back as :class:`gateway.errors.CallControlFailed` (HTTP status, carrier error
code, message), whatever the carrier's client raised, so the session handles one exception type.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import aiohttp
from aiohttp import web

from ... import urls
from ...carriers import twiml
from ...config import Settings
from ...control import dial
from ...control.plivo import PlivoCallControl
from ...control.telnyx import TelnyxCallControl
from ...control.twilio import TwilioRest, TwilioRestError
from ...errors import CallControlFailed
from ...keys import HTTP, SETTINGS

__all__ = [
    "CarrierControl",
    "NoCarrierControl",
    "PlivoControl",
    "TelnyxControl",
    "TwilioControl",
    "carrier_control",
    "for_stream",
]


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
    """Twilio's REST API (or SignalWire's LaML API, the same API at a Space URL) for a call that came in through its
    door: ``Status=completed`` to hang up, a ``<Dial>`` redirect to transfer: inline TwiML on Twilio, a URL of the
    gateway's ``<Dial>`` document when ``dial_url`` is given (SignalWire documents ``Url`` only)."""

    available = True
    unavailable_reason = ""

    def __init__(self, rest: TwilioRest, carrier: str = "twilio", dial_url: Callable[[str], str] | None = None) -> None:
        self._rest = rest
        self.carrier = carrier
        self._dial_url = dial_url

    async def hang_up(self, call_id: str) -> bool:
        try:
            return await self._rest.hang_up(call_id)
        except TwilioRestError as exc:
            if self.carrier != "twilio" and exc.status == 404:
                return False  # SignalWire: a call that is over is not found (no Twilio-specific 20404 code)
            raise CallControlFailed(exc.status, exc.code, exc.message) from None
        except ValueError as exc:  # not a CallSid: nothing was sent
            raise CallControlFailed(0, None, str(exc)) from None

    async def transfer(self, call_id: str, destination: str) -> None:
        try:
            if self._dial_url is None:
                await self._rest.redirect(call_id, twiml=twiml.dial(destination))
            else:
                await self._rest.redirect(call_id, url=self._dial_url(destination), method="POST")
        except TwilioRestError as exc:
            raise CallControlFailed(exc.status, exc.code, exc.message) from None
        except ValueError as exc:
            raise CallControlFailed(0, None, str(exc)) from None


class TelnyxControl:
    """Telnyx Call Control for a call that came in through the ``telnyx`` door (the id is its ``call_control_id``)."""

    carrier = "telnyx"
    available = True
    unavailable_reason = ""

    def __init__(self, client: TelnyxCallControl) -> None:
        self._client = client

    async def hang_up(self, call_id: str) -> bool:
        return await self._client.hang_up(call_id)

    async def transfer(self, call_id: str, destination: str) -> None:
        await self._client.transfer(call_id, destination)


class PlivoControl:
    """Plivo's Call API for a call that came in through the ``plivo`` door (the id is its ``CallUUID``); a transfer
    points the caller's leg at the gateway's ``<Dial>`` document."""

    carrier = "plivo"
    available = True
    unavailable_reason = ""

    def __init__(self, client: PlivoCallControl, dial_url: Callable[[str], str]) -> None:
        self._client = client
        self._dial_url = dial_url

    async def hang_up(self, call_id: str) -> bool:
        return await self._client.hang_up(call_id)

    async def transfer(self, call_id: str, destination: str) -> None:
        await self._client.transfer(call_id, self._dial_url(destination))


def carrier_control(
    door: str,
    settings: Settings,
    http: aiohttp.ClientSession | None,
    dial_base: str = "",
    clock: Callable[[], float] = time.time,
) -> CarrierControl:
    """The call control of a stream that came in through ``door`` (``twilio``, ``telnyx``, ``softphone``…).
    ``dial_base``: where the carrier fetches a transfer's ``<Dial>`` document (:mod:`gateway.control.dial`)."""

    def dial_url_for(carrier: str) -> Callable[[str], str]:
        secret = settings.secrets.token_secret
        return lambda destination: dial.dial_url(dial_base, secret, carrier, destination, clock())

    if door not in ("twilio", "signalwire", "telnyx", "plivo"):
        return NoCarrierControl(door, "not_on_this_carrier")
    if http is None:
        return NoCarrierControl(door, "no_http_client")
    if door == "twilio":
        if not settings.twilio_rest_configured:
            return NoCarrierControl(door, "twilio_not_configured")
        rest = TwilioRest(
            http,
            settings.secrets.twilio_account_sid,
            settings.secrets.twilio_auth_token,
            base_url=settings.twilio.api_base_url,
            timeout_s=settings.twilio.request_timeout_s,
        )
        return TwilioControl(rest)
    d = settings.carrier_door(door)
    if door == "signalwire":
        project, token, space = d.secret("project_id"), d.secret("api_token"), d.options.space_url
        if not (project and token and space):
            return NoCarrierControl(door, "signalwire_not_configured")
        rest = TwilioRest(http, project, token, base_url=space.rstrip("/") + "/api/laml")
        return TwilioControl(rest, "signalwire", dial_url_for("signalwire"))
    if door == "telnyx":
        if not d.secret("api_key"):
            return NoCarrierControl(door, "telnyx_not_configured")
        return TelnyxControl(TelnyxCallControl(http, d.secret("api_key"), base_url=d.options.api_base_url))
    if not (d.secret("auth_id") and d.secret("auth_token")):
        return NoCarrierControl(door, "plivo_not_configured")
    client = PlivoCallControl(http, d.secret("auth_id"), d.secret("auth_token"), base_url=d.options.api_base_url)
    return PlivoControl(client, dial_url_for("plivo"))


def for_stream(app: web.Application, door: str, local: Sequence[Any] | None) -> CarrierControl:
    """:func:`carrier_control` for a carrier connection: the app's settings and HTTP client; ``<Dial>`` documents on
    the public URL, or on the listener the connection came in on (``local``, its socket address: development)."""
    settings = app[SETTINGS]
    base = settings.server.public_url or urls.local_url(local, settings.server.port, "", scheme="http")
    return carrier_control(door, settings, app.get(HTTP), base)

"""Warm transfer over Twilio (docs/how-to/conversation.md#warm-transfer): dialling the human, joining the caller,
and ``POST /twilio/transfer``, where Twilio reports on the human's leg. Thin aiohttp/REST shell around
:mod:`gateway.conference` (pure); what each step means for the call is the core's
(:mod:`gateway.call.conversation`).

One :class:`WarmDialer` per app (``app[WARM]``) knows the human legs it placed: their CallSid → the caller's call
waiting for them. The callback is checked like ``/twilio/status`` (``X-Twilio-Signature`` over the public URL and
the form): a forged one answers 403, one about a leg it did not place 404, and neither changes anything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import structlog
from aiohttp import web

from . import urls
from .call_control_http import rest_client
from .conference import WARM_CALLBACK_PATH, join_twiml, room_name, transfer_result, whisper_twiml
from .config import Settings
from .control.twilio import TwilioRest, TwilioRestError
from .errors import CallControlFailed
from .http_input import read_form
from .keys import METRICS, SETTINGS, WARM
from .security import validate_twilio_signature

__all__ = ["WarmDialer", "setup"]

log = structlog.get_logger("gateway.warm_transfer")


@dataclass
class _Leg:
    caller_sid: str
    on_result: Callable[[str], None]
    joined: bool = False


class WarmDialer:
    """The app's warm transfers in flight (human CallSid → the caller's call)."""

    def __init__(self, settings: Settings, rest: Callable[[], TwilioRest | None]) -> None:
        self._rest_factory = rest  # the app's HTTP client exists only once the app runs
        self._callback = settings.server.public_url.rstrip("/") + WARM_CALLBACK_PATH
        self.available = (
            settings.twilio_rest_configured and bool(settings.server.public_url) and "twilio" in settings.open_doors()
        )
        self._legs: dict[str, _Leg] = {}

    async def dial(
        self,
        *,
        caller_sid: str,
        from_: str,
        destination: str,
        whisper: str,
        timeout_s: int,
        on_result: Callable[[str], None],
    ) -> str:
        """Place the human's leg (whisper, then the room). Returns its CallSid; raises CallControlFailed."""
        rest = self._require()
        try:
            call = await rest.create_call(
                to=destination,
                from_=from_,
                twiml=whisper_twiml(whisper, room_name(caller_sid), self._callback),
                status_callback=self._callback,
                timeout_s=timeout_s,
            )
        except TwilioRestError as exc:
            raise CallControlFailed(exc.status, exc.code, exc.message) from None
        self._legs[call.sid] = _Leg(caller_sid, on_result)
        return call.sid

    async def join(self, caller_sid: str) -> None:
        """Redirect the caller's call into the room the human is in."""
        rest = self._require()
        try:
            await rest.redirect(caller_sid, twiml=join_twiml(room_name(caller_sid)))
        except TwilioRestError as exc:
            raise CallControlFailed(exc.status, exc.code, exc.message) from None

    async def cancel(self, human_sid: str) -> None:
        """Stop the human's leg (no answer in time, or the caller is gone)."""
        self._legs.pop(human_sid, None)
        rest = self._rest_factory()
        if rest is None:
            return
        try:
            await rest.hang_up(human_sid)
        except TwilioRestError as exc:
            log.warning("warm_transfer.cancel_failed", status=exc.status, code=exc.code, error=exc.message[:200])

    def abandon(self, caller_sid: str) -> list[str]:
        """The caller's call ended: forget its legs; returns their CallSids (to cancel)."""
        sids = [sid for sid, leg in self._legs.items() if leg.caller_sid == caller_sid]
        for sid in sids:
            self._legs.pop(sid, None)
        return sids

    def on_callback(self, human_sid: str, call_status: str, conference_event: str) -> bool:
        """A callback about a leg; False if it is not one of ours."""
        leg = self._legs.get(human_sid)
        if leg is None:
            return False
        result = transfer_result(call_status, conference_event, leg.joined)
        if result == "answered":
            leg.joined = True
        elif result is not None:
            self._legs.pop(human_sid, None)
        if result is not None:
            leg.on_result(result)
        return True

    def _require(self) -> TwilioRest:
        rest = self._rest_factory() if self.available else None
        if rest is None:
            raise CallControlFailed(0, None, "warm transfers need Twilio REST and a public URL")
        return rest


async def transfer_callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    params, flat = await read_form(request)  # a body that is not form data: 400
    human_sid = flat.get("CallSid") or None
    token = settings.secrets.twilio_auth_token
    signed_url = urls.webhook_url(settings.server.public_url, request.host, request.path_qs)
    if token and not validate_twilio_signature(token, signed_url, params, request.headers.get("X-Twilio-Signature")):
        log.warning("warm_transfer.refused", reason="bad_signature", call_sid=human_sid)
        request.app[METRICS].refused("transfer", "bad_signature")
        return web.Response(status=403, text="invalid signature")
    call_status = flat.get("CallStatus", "")
    event = flat.get("StatusCallbackEvent", "")
    if not human_sid or not (call_status or event):
        return web.Response(status=400, text="CallSid and CallStatus or StatusCallbackEvent are required")
    log.info(
        "warm_transfer.callback", call_sid=human_sid, call_status=call_status or None, conference_event=event or None
    )
    if not request.app[WARM].on_callback(human_sid, call_status, event):
        log.info("warm_transfer.refused", reason="unknown_leg", call_sid=human_sid)
        return web.Response(status=404, text="no warm transfer with this CallSid")
    return web.Response(status=204)


def setup(app: web.Application) -> None:
    """``app[WARM]`` and ``POST /twilio/transfer`` (while Twilio's doors are open, like ``/twilio/status``)."""
    settings = app[SETTINGS]
    app[WARM] = WarmDialer(settings, lambda: rest_client(app))
    if "twilio" in settings.open_doors():
        app.router.add_post(WARM_CALLBACK_PATH, transfer_callback)

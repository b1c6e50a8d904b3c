"""Answering-machine detection over Twilio (docs/how-to/conversation.md#voicemail): the create-call request of an
outbound call placed with detection, and ``POST /twilio/amd``, where Twilio posts the verdict. Thin aiohttp shell
around :mod:`gateway.amd` (pure).

The callback is checked like ``/twilio/status`` (``X-Twilio-Signature`` over the public URL and the form, with
``TWILIO_AUTH_TOKEN``): a forged one is refused (403) and changes nothing; one for a call that has no live stream
here answers 404 and changes nothing either.
"""

from __future__ import annotations

import structlog
from aiohttp import web

from . import urls
from .amd import AMD_CALLBACK_PATH, ANSWERED_BY, amd_create_form
from .config import Settings
from .control.twilio import CallResource, TwilioRest
from .http_input import read_form
from .keys import CALLS, METRICS, SETTINGS
from .security import validate_twilio_signature

__all__ = ["amd_callback_url", "amd_refusal", "create_call_with_amd", "setup"]

log = structlog.get_logger("gateway.amd")


def amd_callback_url(settings: Settings) -> str:
    return settings.server.public_url.rstrip("/") + AMD_CALLBACK_PATH


def amd_refusal(settings: Settings) -> str | None:
    """Why ``machine_detection`` cannot be served here (None: it can)."""
    if not settings.server.public_url:
        return "machine_detection needs a public URL (GATEWAY_PUBLIC_URL): Twilio posts the result to it"
    if "twilio" not in settings.open_doors():
        return "machine_detection needs the Twilio door (its result comes to POST /twilio/amd)"
    return None


async def create_call_with_amd(
    rest: TwilioRest, *, to: str, from_: str, twiml: str, status_callback: str | None, amd_callback: str
) -> CallResource:
    """Twilio's create-call with asynchronous detection that waits for a machine's greeting to end. Never retried."""
    return await rest.create_call(
        to=to, from_=from_, twiml=twiml, status_callback=status_callback, extra_form=amd_create_form(amd_callback)
    )


async def amd_callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    params, flat = await read_form(request)  # a body that is not form data: 400
    call_sid = flat.get("CallSid") or None
    token = settings.secrets.twilio_auth_token
    signed_url = urls.webhook_url(settings.server.public_url, request.host, request.path_qs)
    if token and not validate_twilio_signature(token, signed_url, params, request.headers.get("X-Twilio-Signature")):
        log.warning("amd.refused", reason="bad_signature", call_sid=call_sid)
        request.app[METRICS].refused("amd", "bad_signature")
        return web.Response(status=403, text="invalid signature")
    answered_by = flat.get("AnsweredBy", "")
    if not call_sid or answered_by not in ANSWERED_BY:
        log.warning("amd.refused", reason="invalid", call_sid=call_sid, answered_by=answered_by[:40] or None)
        return web.Response(status=400, text="CallSid and a documented AnsweredBy are required")
    duration = flat.get("MachineDetectionDuration", "")
    log.info(
        "amd.result",
        call_sid=call_sid,
        answered_by=answered_by,
        detection_ms=int(duration) if duration.isascii() and duration.isdigit() and len(duration) <= 9 else None,
    )
    for session, _task in list(request.app[CALLS].active.values()):
        if session.summary.call_sid == call_sid:
            session.machine_detected(answered_by)
            return web.Response(status=204)
    log.info("amd.refused", reason="unknown_call", call_sid=call_sid)
    return web.Response(status=404, text="no live call with this CallSid")


def setup(app: web.Application) -> None:
    """``POST /twilio/amd``, while Twilio's doors are open (like ``/twilio/status``)."""
    if "twilio" in app[SETTINGS].open_doors():
        app.router.add_post(AMD_CALLBACK_PATH, amd_callback)

"""The HTTP doors of call control (issue #8, docs/how-to/call-control.md, docs/how-to/outbound-calls.md). Thin aiohttp
handlers; the decisions live in pure modules (:mod:`gateway.outbound`, :mod:`gateway.security`) and the REST calls in
:mod:`gateway.control.twilio`.

- ``POST /calls``          place an outbound call (bearer ``GATEWAY_API_KEY``): JSON ``{to, from, profile?,
  variables?}`` → Twilio create-call with TwiML that connects the stream → ``201 {"call_sid", "status"}``. Only
  destinations ``[twilio] dial_allow`` allows are dialled (E.164 numbers when it is empty): others get ``422
  {"error", "reason": "destination_not_allowed"}``, logged as ``outbound.refused`` with the number masked and
  counted in ``voice_gateway_call_refusals_total{stage="outbound"}`` (docs/security.md).
- ``POST /twilio/status``  Twilio call status callbacks (``CallStatus``…) and stream status callbacks (``StreamEvent``,
  ``StreamError``), signature-checked like the voice webhook (docs/how-to/call-control.md#status-callbacks): logged as
  ``call.status`` / ``stream.status`` and counted. A final call status (``completed``…) is the authoritative end of the
  call: a live stream of that call is ended and a parked agent session (:mod:`gateway.reattach`) is released.

Live calls and call control from any replica (``GET /calls/live``, ``POST /calls/{call_sid}/hangup|transfer|say``)
are :mod:`gateway.cluster.control`'s, registered from :func:`setup` (docs/architecture/scale-out.md).

Bodies are read with :mod:`gateway.http_input`: whatever anyone sends, a malformed body is a 400, never a 500.

App state added here (:func:`setup`): ``app[PARKED]`` (the re-attach registry, :mod:`gateway.keys`). The REST client
is built per use from the app's shared ``aiohttp`` session (:func:`rest_client`); it holds no state of its own.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from . import urls
from .amd_http import amd_callback_url, amd_refusal, create_call_with_amd
from .carriers import twiml
from .carriers.twilio import STREAM_PATH as TWILIO_STREAM_PATH
from .cluster import control as cluster_control
from .config import Settings
from .control.twilio import TwilioRest, TwilioRestError
from .http_input import read_form, read_json
from .keys import CALLS, HTTP, METRICS, PARKED, SETTINGS
from .logs import mask_number
from .outbound import (
    RequestInvalid,
    dial_allowed,
    new_outbound_id,
    outbound_parameters,
    parse_outbound_request,
    token_subject,
)
from .reattach import ParkedAgents
from .security import mint_call_token, validate_twilio_signature

__all__ = ["FINAL_CALL_STATUSES", "rest_client", "setup", "status_callback_url"]

log = structlog.get_logger("gateway")

#: CallStatus values after which the call is over (docs/architecture/twilio-media-streams.md#call-status).
FINAL_CALL_STATUSES = frozenset({"completed", "busy", "failed", "no-answer", "canceled"})


def rest_client(app: web.Application) -> TwilioRest | None:
    """Twilio REST on the app's HTTP session, or None without TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN."""
    settings = app[SETTINGS]
    if not settings.twilio_rest_configured or HTTP not in app:
        return None
    return TwilioRest(
        app[HTTP],
        settings.secrets.twilio_account_sid,
        settings.secrets.twilio_auth_token,
        base_url=settings.twilio.api_base_url,
        timeout_s=settings.twilio.request_timeout_s,
    )


def status_callback_url(settings: Settings) -> str | None:
    """Where Twilio posts status callbacks (:func:`gateway.urls.status_callback_url`): only with a public URL and
    ``[twilio] status_callbacks`` on."""
    return urls.status_callback_url(settings.server.public_url, settings.twilio.status_callbacks)


def _json_error(status: int, error: str, **extra: object) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


# ---- POST /calls -------------------------------------------------------------------------------------------------
async def create_outbound_call(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    key = settings.secrets.gateway_api_key
    # aiohttp decodes header bytes that are not UTF-8 as lone surrogates (surrogateescape): encode them back the
    # same way, or a non-UTF-8 header would raise here, before authentication, as a 500.
    presented = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    # Constant-time compare; with no key configured nothing is accepted (the endpoint is off).
    if not key or not hmac.compare_digest(presented, f"Bearer {key}".encode()):
        log.warning("outbound.refused", reason="unauthorized", status=401)
        metrics.refused("outbound", "unauthorized")
        return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})
    rest = rest_client(request.app)
    if rest is None:
        log.warning("outbound.refused", reason="twilio_not_configured", status=503)
        return _json_error(503, "outbound calls need TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN")
    try:
        body = await read_json(request)
    except web.HTTPBadRequest as exc:
        log.info("outbound.refused", reason="invalid_request", status=400)
        return _json_error(400, f"body must be JSON: {exc.text}")
    # 'from' picks the default profile only once it is a string (a list or an object is not a key; the parser
    # below refuses it with a 400).
    sender = body.get("from") if isinstance(body, dict) else None
    default_profile = settings.numbers.get(sender, "default") if isinstance(sender, str) else "default"
    try:
        req = parse_outbound_request(body, settings.profiles, default_profile)
    except RequestInvalid as exc:
        log.info("outbound.refused", reason="invalid_request", status=exc.status)
        return _json_error(exc.status, str(exc))
    if not dial_allowed(req.to, settings.twilio.dial_allow):
        log.warning("outbound.refused", reason="destination_not_allowed", status=422, to=mask_number(req.to))
        metrics.refused("outbound", "destination_not_allowed")
        return _json_error(
            422,
            "'to' is not an allowed destination ([twilio] dial_allow; with none configured, E.164 numbers only)",
            reason="destination_not_allowed",
        )
    if req.machine_detection and (why := amd_refusal(settings)) is not None:
        log.info("outbound.refused", reason="machine_detection", status=422)
        return _json_error(422, why)
    calls = request.app[CALLS]
    now = time.monotonic()
    if not calls.admission.has_room(now):
        log.warning("outbound.refused", reason="at_capacity" if calls.accepting else "draining", status=503)
        metrics.refused("outbound", "at_capacity" if calls.accepting else "draining")
        return _json_error(503, "not accepting calls")
    params = outbound_parameters(new_outbound_id(), req)
    token = mint_call_token(
        settings.secrets.token_secret,
        token_subject(params, "", req.profile),
        time.time(),
        settings.server.call_token_ttl_s,
        scope="twilio",
    )
    status_url = status_callback_url(settings)
    stream_url = urls.stream_url(
        settings.server.public_url, TWILIO_STREAM_PATH, urls.sockname(request.transport), settings.server.port
    )
    body_twiml = twiml.connect_stream(stream_url, {"token": token, **params}, status_url)
    try:
        if req.machine_detection:  # answering-machine detection (gateway.amd_http)
            amd_url = amd_callback_url(settings)
            call = await create_call_with_amd(
                rest, to=req.to, from_=req.from_, twiml=body_twiml, status_callback=status_url, amd_callback=amd_url
            )
        else:
            call = await rest.create_call(to=req.to, from_=req.from_, twiml=body_twiml, status_callback=status_url)
    except TwilioRestError as exc:
        log.warning("outbound.failed", status=exc.status, code=exc.code, error=exc.message[:200])
        metrics.on_call_control("outbound", "failed")
        return _json_error(
            502,
            "Twilio did not place the call",
            twilio_status=exc.status,
            twilio_code=exc.code,
            message=exc.message[:200],
        )
    # Hold a slot for the call's stream, as the voice webhook does for inbound calls (gateway.admission).
    calls.admission.reserve(call.sid, time.monotonic())
    metrics.on_call_control("outbound", "ok")
    log.info(
        "outbound.created", call_sid=call.sid, to=mask_number(req.to), profile=req.profile, variables=len(req.variables)
    )
    return web.json_response({"call_sid": call.sid, "status": call.status}, status=201)


# ---- POST /twilio/status -----------------------------------------------------------------------------------------
async def status_callback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    metrics = request.app[METRICS]
    params, flat = await read_form(request)  # a body that is not form data: 400
    call_sid = flat.get("CallSid") or None
    token = settings.secrets.twilio_auth_token
    signed_url = urls.webhook_url(settings.server.public_url, request.host, request.path_qs)
    if token and not validate_twilio_signature(token, signed_url, params, request.headers.get("X-Twilio-Signature")):
        log.warning("status.refused", reason="bad signature", call_sid=call_sid)
        metrics.refused("status", "bad_signature")
        return web.Response(status=403, text="invalid signature")
    stream_event = flat.get("StreamEvent") or None
    call_status = flat.get("CallStatus") or None
    if stream_event is not None:
        error = flat.get("StreamError") or None
        stream_sid = flat.get("StreamSid", "")
        if stream_event == "stream-error":
            # The only place a failed stream handshake shows: log its text with the call.
            log.warning(
                "stream.status", call_sid=call_sid, stream_sid=stream_sid, stream_event=stream_event, stream_error=error
            )
        else:
            log.info(
                "stream.status", call_sid=call_sid, stream_sid=stream_sid, stream_event=stream_event, stream_error=error
            )
    if call_status is not None:
        duration = flat.get("CallDuration", "")
        log.info(
            "call.status",
            call_sid=call_sid,
            call_status=call_status,
            # at most 9 digits: int() of a longer string is slow, and of over 4300 digits a ValueError
            call_duration_s=int(duration) if duration.isascii() and duration.isdigit() and len(duration) <= 9 else None,
            direction=flat.get("Direction") or None,
        )
    if stream_event is None and call_status is None:
        return web.Response(status=400, text="neither CallStatus nor StreamEvent")
    metrics.on_status_callback(call_status, stream_event)
    if call_status in FINAL_CALL_STATUSES and call_sid:
        # The authoritative end of the call (docs/architecture/twilio-media-streams.md#call-status): nothing of it may
        # live on here.
        request.app[PARKED].release(call_sid, "call_completed")
        for session, _task in list(request.app[CALLS].active.values()):
            if session.summary.call_sid == call_sid:
                session.request_end("call_completed")
    return web.Response(status=204)


# ---- wiring ----------------------------------------------------------------------------------------------------
def setup(app: web.Application) -> None:
    """Routes and state of call control (needs ``app[SETTINGS]``). ``POST /twilio/status`` exists only while
    Twilio's doors are open (:meth:`gateway.config.Settings.open_doors`), since it can end calls."""
    settings = app[SETTINGS]
    app[PARKED] = ParkedAgents(settings.server.reattach_window_s, end_timeout_s=settings.agent.end_timeout_s)
    # The cluster (GET /calls/live, POST /calls/{call_sid}/hangup|transfer|say, the internal listener) stops after
    # the parked sessions are closed below: cleanup_ctx runs in reverse.
    cluster_control.setup(app)

    async def parked_ctx(app: web.Application) -> AsyncIterator[None]:
        yield
        await app[PARKED].close()  # end every parked agent session (session.end stops its billing)

    app.cleanup_ctx.append(parked_ctx)
    app.router.add_post("/calls", create_outbound_call)
    if "twilio" in settings.open_doors():
        app.router.add_post("/twilio/status", status_callback)

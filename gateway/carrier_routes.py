"""Every carrier's doors: one generic webhook handler and one generic stream handler, serving each carrier of
:mod:`gateway.carriers.registry` from its description (:class:`~gateway.carriers.spec.CarrierSpec`; the order of the
steps is in :mod:`gateway.carriers.spec`). Thin aiohttp glue: signatures, answer documents and dialects are the
carriers' pure modules; every stream is served by :func:`gateway.media_stream.serve_stream`, so admission, the
per-call token, the transcoder and playout accounting are the same for all.

Routes (docs/how-to/carriers/index.md#comparison; each carrier's module has the details):

====================================  ===========================================================================
``POST /twilio/voice``                TwiML ``<Connect><Stream>``; ``X-Twilio-Signature`` with ``TWILIO_AUTH_TOKEN``
``GET  /twilio/stream``               token in ``<Parameter name="token">``; upgrade signature required with the
                                      auth token set
``POST /signalwire/voice``            cXML ``<Connect><Stream codec=…>``; ``X-SignalWire-Signature`` (or legacy
                                      ``X-Twilio-Signature``) checked with ``SIGNALWIRE_SIGNING_KEY``
``GET  /signalwire/stream``           token in ``<Parameter name="token">``; upgrade signature checked if sent
``POST /telnyx/voice``                TeXML ``<Connect><Stream bidirectionalMode="rtp">``; Ed25519 signature checked
                                      with ``TELNYX_PUBLIC_KEY``
``GET  /telnyx/stream``               token in ``<Parameter name="token">`` (→ ``start.custom_parameters``)
``POST /plivo/answer``                Plivo XML ``<Stream bidirectional="true" keepCallAlive="true">``; V3
                                      signature checked with ``PLIVO_AUTH_TOKEN``
``GET  /plivo/stream/{token}``        token in the URL path (``extraHeaders`` cannot carry it)
``GET|POST /vonage/answer``           NCCO ``connect`` → websocket; JWT checked with ``VONAGE_SIGNATURE_SECRET``
``GET  /vonage/stream``               token in the NCCO ``headers`` (→ ``websocket:connected``)
``GET  /exotel/answer``               the Voicebot applet's dynamic URL: ``{"url": "wss://…"}``; Basic auth
                                      (``EXOTEL_BASIC_AUTH``) or ``carriers.exotel.allowed_ips``
``GET  /exotel/stream``               token as a custom query parameter (→ ``start.custom_parameters``); same auth
====================================  ===========================================================================

A carrier's routes exist only when its door is open (:meth:`gateway.config.Settings.open_doors`: its secret is set,
or development without a public URL, or an explicit ``carriers.NAME.enabled = true``); with its secret unset its
webhook signature is not checked. The per-call token is always required, and only a token minted at the same door
opens its stream (docs/security.md).

Logs and metrics (docs/reference/logs.md): a refused webhook is ``webhook.refused`` (``reason``: the carrier's, e.g.
``bad signature``; ``draining`` at info level; ``at_capacity`` with ``active``), a refused upgrade
``stream.refused``, each counted in ``call_refusals_total`` (``stage`` webhook/stream); an answered one
``webhook.answered``. Every line names its ``carrier``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from aiohttp import web

from . import urls
from .admission import REFUSED_DRAINING
from .carriers import registry
from .carriers.spec import BUSY, DRAINING, Answer, AnswerContext, CarrierSpec, Malformed, Refusal, Upgrade, Webhook
from .cluster.control import reserve as cluster_reserve
from .http_input import read_form, read_json
from .keys import CALLS, METRICS, SETTINGS
from .media_stream import serve_stream
from .outbound import token_subject
from .security import mint_call_token

__all__ = ["setup"]

log = structlog.get_logger("gateway")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _respond(answer: Answer) -> web.Response:
    return web.Response(text=answer.body, content_type=answer.content_type, status=answer.status)


def _refuse(request: web.Request, stage: str, carrier: str, refusal: Refusal) -> web.Response:
    if stage == "webhook":
        log.warning("webhook.refused", reason=refusal.reason, carrier=carrier, call_sid=None)
    else:
        log.warning("stream.refused", reason=refusal.reason, carrier=carrier)
    request.app[METRICS].refused(stage, refusal.reason.replace(" ", "_"))
    return web.Response(status=refusal.status, text=refusal.text or refusal.reason)


async def _decode(request: web.Request, spec: CarrierSpec[Any]) -> dict[str, Any]:
    """The body the way the carrier sends it (a body that cannot be decoded is a 400, gateway.http_input)."""
    if spec.webhook_body == "form":
        form, _ = await read_form(request)
        return {"form": form}
    if spec.webhook_body == "json" and request.method == "POST" and await request.read():
        return {"json": await read_json(request), "json_sent": True}
    return {}


def webhook_handler(spec: CarrierSpec[Any]) -> Handler:
    """The answer/webhook endpoint of ``spec``'s carrier."""

    async def webhook(request: web.Request) -> web.Response:
        settings = request.app[SETTINGS]
        door = settings.carrier_door(spec.name)
        hook = Webhook(
            method=request.method,
            url=urls.webhook_url(settings.server.public_url, request.host, request.path_qs),
            headers=request.headers,
            query=request.query,
            # Signed as bytes: check before decoding. Signed over the parameters: decode first.
            body=await request.read() if spec.signs_raw_body else b"",
            remote=request.remote,
            now=time.time(),
        )
        if not spec.signs_raw_body:
            hook = dataclasses.replace(hook, **await _decode(request, spec))
        if spec.authenticated(door):
            refusal = spec.verify(hook, door)
            if refusal is not None:
                return _refuse(request, "webhook", spec.name, refusal)
        if spec.signs_raw_body:
            hook = dataclasses.replace(hook, **await _decode(request, spec))
        call = spec.read_call(hook)
        if isinstance(call, Malformed):
            return web.Response(status=400, text=call.text)
        calls = request.app[CALLS]
        # Reserve the slot now, not when the stream starts, so a burst of webhooks cannot race past the limit; the
        # stream claims it at 'start' (gateway.admission).
        reserved = calls.admission.reserve(call.call_id, time.monotonic()) or await cluster_reserve(
            request.app, call.call_id
        )
        if reserved is not None:
            draining = reserved == REFUSED_DRAINING
            reason = "draining" if draining else "at_capacity"
            if draining:  # a planned restart: expected, not a warning
                log.info("webhook.refused", reason=reason, call_sid=call.call_id, carrier=spec.name)
            else:
                log.warning(
                    "webhook.refused", reason=reason, call_sid=call.call_id, carrier=spec.name, active=len(calls)
                )
            request.app[METRICS].refused("webhook", reason)
            return _respond(spec.busy(DRAINING if draining else BUSY))
        # Valid only at this door, for this call, with the profile its called number selects (docs/security.md).
        subject = token_subject({}, call.call_id, settings.profile_for(call.called)[0])
        token = mint_call_token(
            settings.secrets.token_secret, subject, time.time(), settings.server.call_token_ttl_s, scope=spec.name
        )
        status_callback = urls.status_callback_url(settings.server.public_url, settings.twilio.status_callbacks)
        context = AnswerContext(
            token=token,
            stream_base=urls.stream_url(
                settings.server.public_url, "", urls.sockname(request.transport), settings.server.port
            ),
            options=door.options,
            status_callback=status_callback if spec.status_callbacks else None,
        )
        answer = spec.answer(call, context)
        log.info("webhook.answered", call_sid=call.call_id, carrier=spec.name)
        return _respond(answer)

    return webhook


def stream_handler(spec: CarrierSpec[Any]) -> Handler:
    """The media-stream route of ``spec``'s carrier."""

    async def stream(request: web.Request) -> web.StreamResponse:
        settings = request.app[SETTINGS]
        door = settings.carrier_door(spec.name)
        upgrade = Upgrade(
            # The stream URL as the answer wrote it: what an upgrade signature covers.
            url=urls.stream_url(
                settings.server.public_url,
                request.rel_url.raw_path,
                urls.sockname(request.transport),
                settings.server.port,
            ),
            headers=request.headers,
            query=request.query,
            path_params=dict(request.match_info),
            remote=request.remote,
        )
        if spec.authenticated(door):
            refusal = spec.check_upgrade(upgrade, door)
            if refusal is not None:
                return _refuse(request, "stream", spec.name, refusal)
        return await serve_stream(request, spec.dialect(upgrade), scope=spec.name, protocols=spec.subprotocols)

    return stream


def setup(app: web.Application) -> None:
    """Add the routes of every carrier whose door is open (``app[SETTINGS]``), and warn once about each one that is
    open without its secret (development only)."""
    doors = app[SETTINGS].open_doors()
    for spec in registry.CARRIERS:
        if spec.name not in doors or spec.served_by:
            continue  # a closed door answers 404: nothing tells which carriers are not used
        if not doors[spec.name]:
            # Development only (config refuses this with a public URL): say it loudly, once per door.
            log.warning(
                "carrier.unauthenticated",
                carrier=spec.name,
                detail="its webhook and stream accept anyone who can reach this port; set its secret "
                "before exposing the gateway (docs/security.md)",
            )
        webhook = webhook_handler(spec)
        for method in spec.webhook_methods:
            if method == "GET":
                app.router.add_get(spec.webhook_path, webhook)  # HEAD too, as aiohttp does for GET routes
            else:
                app.router.add_route(method, spec.webhook_path, webhook)
        app.router.add_get(spec.stream_path, stream_handler(spec))

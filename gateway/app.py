"""The aiohttp application: HTTP surface, the media-stream route, and (with no agent configured) the embedded
local agent. Thin: every call is handed to a :class:`gateway.session.CallSession`.

Routes (README "HTTP surface"):
- ``POST /twilio/voice``  voice webhook → TwiML ``<Connect><Stream>`` with the per-call token
- ``GET  /twilio/stream`` Twilio Media Streams WebSocket
- SignalWire, Telnyx, Plivo, Vonage, Exotel: an answer endpoint and a stream route each
  (:mod:`gateway.carrier_routes`, README "Carriers"), served by :func:`serve_stream` with the carrier's dialect
- ``GET  /healthz``       process alive;  ``GET /readyz``: accepting calls
- ``GET  /metrics``       Prometheus metrics of this process (gateway.metrics)
- ``POST /calls``         outbound call (bearer GATEWAY_API_KEY);  ``POST /twilio/status``: Twilio status callbacks
  (gateway.call_control_http, issue #8)
- ``/agent/v1/ws``, ``/agent/v1/token``: the embedded local agent, when no ASSEMBLYAI_API_KEY / AGENT_URL is set
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from dataclasses import dataclass, field
from typing import AsyncIterator, Callable
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import structlog
from aiohttp import web

from .admission import REFUSED_DRAINING, Admission
from .agent.client import AgentEndpoint, new_http_session
from .call.events import CallEvent
from .call.shell.carrier_control import carrier_control
from .call_control_http import PARKED, rest_client, setup_call_control, status_callback_url
from .carriers import twiml
from .carriers.base import Dialect
from .carriers.registry import TwilioDialect
from .config import BUILTIN_TOOLS, Settings
from .metrics import GatewayMetrics, loop_lag_probe, metrics_handler
from .outbound import token_subject
from .security import mint_call_token, validate_twilio_signature
from .session import CallSession, CallSummary
from .tools.registry import ToolRegistry

__all__ = ["create_app", "SETTINGS", "CALLS", "CallRegistry"]

log = structlog.get_logger("gateway")

#: Seconds a webhook's slot reservation waits for its stream's 'start' (gateway.admission).
RESERVATION_TTL_S = 30.0


@dataclass
class CallRegistry:
    """Live calls of this process (for readiness, limits, drain and tests). Who may take a slot is decided by
    ``admission`` (:mod:`gateway.admission`: reservations at the webhook, claims at the stream's ``start``)."""

    active: dict[int, tuple[CallSession, asyncio.Task[None] | None]] = field(default_factory=dict)
    completed: list[CallSummary] = field(default_factory=list)
    admission: Admission = field(default_factory=lambda: Admission(limit=100))
    keep_summaries: int = 1000
    #: Live viewers of per-call timelines: called with (call_sid, typed event; gateway.call.events).
    listeners: list[Callable[[str, CallEvent], None]] = field(default_factory=list)
    #: Called with every finished call's summary (metrics; see gateway.metrics).
    on_record: list[Callable[[CallSummary], None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.active)

    @property
    def accepting(self) -> bool:
        """False once the process drains (gateway.drain): new webhooks and unreserved streams are refused."""
        return self.admission.accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        self.admission.accepting = value

    def record(self, summary: CallSummary) -> None:
        self.completed.append(summary)
        del self.completed[: -self.keep_summaries]
        for hook in list(self.on_record):
            hook(summary)


SETTINGS = web.AppKey("settings", Settings)
CALLS = web.AppKey("calls", CallRegistry)
HTTP = web.AppKey("http", aiohttp.ClientSession)
AGENT_HTTP = web.AppKey("agent_http", aiohttp.ClientSession)  # agent sockets (agent.transport = "aiohttp")
LOCAL_AGENT_KEY = web.AppKey("local_agent_key", str)
METRICS = web.AppKey("metrics", GatewayMetrics)


def _stream_url(settings: Settings, request: web.Request) -> str:
    base = settings.server.public_url
    if base:
        u = urlsplit(base)
        scheme = "wss" if u.scheme == "https" else "ws"
        return urlunsplit((scheme, u.netloc, u.path.rstrip("/") + "/twilio/stream", "", ""))
    # No public URL configured (local development): point at our own loopback listener. Never derived from
    # request headers, which a caller controls (telephony.md §A.2).
    host, port = _bound_address(request)
    return f"ws://{host}:{port}/twilio/stream"


def _bound_address(request: web.Request) -> tuple[str, int]:
    sock = request.transport.get_extra_info("sockname") if request.transport else None
    if not sock:
        return "127.0.0.1", request.app[SETTINGS].server.port
    host = sock[0]
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return host, int(sock[1])


def _webhook_url(settings: Settings, request: web.Request) -> str:
    """The URL Twilio signed: the configured public URL + path + query (telephony.md §A.2)."""
    base = settings.server.public_url or f"http://{request.host}"
    return base.rstrip("/") + request.path_qs


async def voice_webhook(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    form = await request.post()
    params = {k: form.getall(k) for k in set(form.keys())}
    flat = {k: str(v[0]) for k, v in params.items()}
    token = settings.secrets.twilio_auth_token
    if token:
        signed = {k: [str(x) for x in v] for k, v in params.items()}
        if not validate_twilio_signature(token, _webhook_url(settings, request), signed,
                                         request.headers.get("X-Twilio-Signature")):
            log.warning("webhook.refused", reason="bad signature", call_sid=flat.get("CallSid"))
            request.app[METRICS].refused("webhook", "bad_signature")
            return web.Response(status=403, text="invalid signature")
    call_sid = flat.get("CallSid", "")
    if not call_sid:
        return web.Response(status=400, text="CallSid missing")
    calls = request.app[CALLS]
    # Reserve the slot now, not when the stream starts, so a burst of webhooks cannot race past the limit
    # (telephony.md §C item 12). The stream claims it at 'start' (gateway.admission).
    refusal = calls.admission.reserve(call_sid, time.monotonic())
    if refusal == REFUSED_DRAINING:
        log.info("webhook.refused", reason="draining", call_sid=call_sid)
        request.app[METRICS].refused("webhook", "draining")
        return _twiml(twiml.say_and_hang_up("Sorry, we can't take your call right now. Please call again shortly."))
    if refusal is not None:
        log.warning("webhook.refused", reason="at_capacity", call_sid=call_sid, active=len(calls))
        request.app[METRICS].refused("webhook", "at_capacity")
        return _twiml(twiml.say_and_hang_up("Sorry, all our lines are busy. Please call again in a few minutes."))
    params = {"from": flat.get("From", ""), "to": flat.get("To", "")}
    call_token = mint_call_token(settings.secrets.token_secret,
                                 token_subject(params, call_sid, settings.profile_for(params["to"])[0]), time.time(),
                                 settings.server.call_token_ttl_s, scope="twilio")
    body = twiml.connect_stream(
        _stream_url(settings, request),
        {"token": call_token, **params},
        status_callback_url(settings),  # stream-started/stopped/error reach POST /twilio/status (issue #8)
    )
    log.info("webhook.answered", call_sid=call_sid)
    return _twiml(body)


def _twiml(body: str) -> web.Response:
    return web.Response(text=body, content_type="application/xml")


async def media_stream(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    auth = settings.secrets.twilio_auth_token
    sig = request.headers.get("X-Twilio-Signature")
    if auth and sig is not None:
        # The upgrade is signed over the wss:// URL exactly as in the TwiML, with no params (§A.2).
        if not validate_twilio_signature(auth, _stream_url(settings, request), {}, sig):
            log.warning("stream.refused", reason="bad upgrade signature")
            request.app[METRICS].refused("stream", "bad_signature")
            return web.Response(status=403, text="invalid signature")
    return await serve_stream(request, TwilioDialect())


async def serve_stream(request: web.Request, dialect: Dialect, scope: str | None = None) -> web.StreamResponse:
    """One carrier media stream, whatever the carrier: admission, the WebSocket, and a :class:`CallSession` speaking
    ``dialect`` (the carrier's own checks of the upgrade happen before, in its route). ``scope``: the door's name,
    which the stream's token must have been minted for (default: the dialect's carrier)."""
    settings = request.app[SETTINGS]
    calls = request.app[CALLS]
    admission = calls.admission
    ticket = admission.open_stream(time.monotonic())
    if isinstance(ticket, str):
        log.warning("stream.refused", reason=ticket)
        request.app[METRICS].refused("stream", ticket)
        return web.Response(status=503, text="not accepting calls")
    try:
        ws = web.WebSocketResponse(max_msg_size=settings.server.max_message_bytes, autoping=True)
        await ws.prepare(request)
        session = CallSession(
            ws=ws,
            settings=settings,
            endpoint=_agent_endpoint(request),
            tools=ToolRegistry(settings.tools, request.app[HTTP]),
            on_summary=calls.record,
            on_event=lambda event: _publish(calls, session, event),
            admit=lambda call_sid, token: admission.start(ticket, call_sid, token, time.monotonic()),
            call_control=carrier_control(scope or dialect.carrier, rest_client(request.app)),
            parked=request.app[PARKED],
            stream_stopping=lambda call_sid: any(
                s is not session and s.summary.call_sid == call_sid for s, _ in list(calls.active.values())
            ),
            dialect=dialect,
            token_scope=scope,
        )
        key = id(session)
        calls.active[key] = (session, asyncio.current_task())
        try:
            with structlog.contextvars.bound_contextvars():
                await session.run()
        finally:
            calls.active.pop(key, None)
    finally:
        admission.release(ticket)  # the slot and the live token go with the call, whatever ended it
    return ws


def _publish(calls: CallRegistry, session: CallSession, event: CallEvent) -> None:
    for listener in list(calls.listeners):
        listener(session.summary.call_sid, event)


def _agent_endpoint(request: web.Request) -> AgentEndpoint:
    settings = request.app[SETTINGS]
    if settings.use_local_agent:
        host, port = _bound_address(request)
        url, key, name = f"ws://{host}:{port}/agent/v1/ws", request.app[LOCAL_AGENT_KEY], "local"
    else:
        url, key = settings.agent_url(), settings.secrets.assemblyai_api_key
        name = "cloud-" + (settings.agent.region if not settings.agent.url else (urlsplit(url).hostname or "custom"))
    return AgentEndpoint(url, key, name, transport=settings.agent.transport, http=request.app[AGENT_HTTP])


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    settings = request.app[SETTINGS]
    ready = calls.admission.has_room(time.monotonic())
    return web.json_response(
        {
            "status": "ready" if ready else "not_ready",
            "active_calls": len(calls),
            "reserved": calls.admission.reservations,
            "limit": settings.server.max_concurrent_calls,
            "accepting": calls.accepting,
        },
        status=200 if ready else 503,
    )


async def _http_client(app: web.Application) -> AsyncIterator[None]:
    app[HTTP] = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    yield
    await app[HTTP].close()


async def _agent_http(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the one client session every agent socket of this process is opened on (aiohttp transport).
    Cleaned up after the parked agent sessions (registered later, so ended first) and closes any socket left."""
    app[AGENT_HTTP] = new_http_session()
    yield
    await app[AGENT_HTTP].close()


async def _loop_lag(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the event-loop lag probe of gateway.metrics, cancelled on cleanup."""
    task = asyncio.create_task(loop_lag_probe(app[METRICS]), name="metrics.loop_lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close_calls(app: web.Application) -> None:
    """on_shutdown: close live carrier sockets so their handlers finish (aiohttp web_ws.py pattern)."""
    for session, _task in list(app[CALLS].active.values()):
        await session.shutdown()


def create_app(settings: Settings, *, local_agent_models: object | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    app[CALLS] = calls = CallRegistry(
        admission=Admission(
            limit=settings.server.max_concurrent_calls,
            # Twilio opens the stream within a second or two of the TwiML; a reservation whose stream never comes
            # (the caller hung up meanwhile) frees its slot after this, at most the token's own lifetime.
            reservation_ttl_s=min(RESERVATION_TTL_S, settings.server.call_token_ttl_s),
        )
    )
    app[METRICS] = metrics = GatewayMetrics(
        active_calls=lambda: len(calls),
        accepting=lambda: calls.accepting,
        max_concurrent_calls=settings.server.max_concurrent_calls,
        tool_names=[*settings.tools, *BUILTIN_TOOLS],
        agent="local" if settings.use_local_agent else settings.agent_url(),
    )
    calls.listeners.append(metrics.on_event)
    calls.on_record.append(metrics.on_summary)
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_agent_http)
    app.cleanup_ctx.append(_loop_lag)
    app.on_shutdown.append(_close_calls)
    app.router.add_post("/twilio/voice", voice_webhook)
    app.router.add_get("/twilio/stream", media_stream)
    from .carrier_routes import setup_carrier_routes  # issue #9: SignalWire, Telnyx, Plivo, Vonage, Exotel

    setup_carrier_routes(app)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(metrics))
    from .softphone import setup_softphone  # issue #4: /softphone, when [softphone] enabled allows it

    setup_softphone(app, settings)
    setup_call_control(app, settings)  # issue #8: POST /calls, POST /twilio/status, parked agent sessions
    if settings.use_local_agent:
        from .local_agent.bridge import build_embedded_agent

        key = settings.secrets.local_agent_api_key or secrets.token_urlsafe(24)
        app[LOCAL_AGENT_KEY] = key
        app.add_subapp("/agent", build_embedded_agent(settings, key, local_agent_models))
    return app

"""One media stream, whatever door it came through: admission, the WebSocket, and a
:class:`gateway.session.CallSession` speaking the door's dialect. Not pure: the aiohttp shell of a call.

Served by the generic carrier stream handler (:mod:`gateway.carrier_routes`) and by the softphone's stream
(:mod:`gateway.softphone`); each runs its own checks of the upgrade first. :func:`close_calls` is the app's
``on_shutdown`` hook that closes live carrier sockets (aiohttp ``web_ws.py`` pattern).
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from . import urls
from .agent.client import AgentEndpoint
from .call.events import AgentSessionReady, CallEvent, Reattach
from .call.shell.accept import Handover
from .call.shell.carrier_control import for_request as carrier_control_for
from .call_registry import CallRegistry
from .carriers.base import Dialect
from .carriers.events import StreamStarted
from .cluster.control import claim_remote
from .keys import AGENT_HTTP, CALLS, CLUSTER, HTTP, LOCAL_AGENT_KEY, METRICS, PARKED, SETTINGS, WARM
from .session import CallSession
from .state.store import LiveCall
from .tools.registry import ToolRegistry

__all__ = ["close_calls", "serve_stream"]

log = structlog.get_logger("gateway")


async def serve_stream(request: web.Request, dialect: Dialect, scope: str | None = None) -> web.StreamResponse:
    """One carrier media stream, whatever the carrier: admission, the WebSocket, and a :class:`CallSession` speaking
    ``dialect`` (the door's own checks of the upgrade happen before, in its route). ``scope``: the door's name,
    which the stream's token must have been minted for (default: the dialect's carrier)."""
    settings = request.app[SETTINGS]
    calls = request.app[CALLS]
    admission = calls.admission
    opened = admission.open_stream(time.monotonic())
    if isinstance(opened, str):
        log.warning("stream.refused", reason=opened)
        request.app[METRICS].refused("stream", opened)
        return web.Response(status=503, text="not accepting calls")
    ticket, evicted = opened
    if evicted is not None:
        _evict(calls, evicted)
        request.app[METRICS].refused("stream", "evicted_waiting_for_start")
    try:
        ws = web.WebSocketResponse(max_msg_size=settings.server.max_message_bytes, autoping=True)
        await ws.prepare(request)
        session = CallSession(
            ws=ws,
            settings=settings,
            endpoint=_agent_endpoint(request),
            tools=ToolRegistry(settings.tools, request.app[HTTP]),
            on_summary=calls.record,
            on_event=lambda event: _publish(request.app, session, event),
            admit=lambda call_sid, token: admission.start(ticket, call_sid, token, time.monotonic()),
            call_control=carrier_control_for(request, scope or dialect.carrier),
            parked=request.app[PARKED],
            stream_stopping=lambda call_sid: any(
                s is not session and s.summary.call_sid == call_sid for s, _ in list(calls.active.values())
            ),
            shared_admit=lambda start, token, profile: _shared_admit(
                request.app, scope or dialect.carrier, start, token, profile
            ),
            dialect=dialect,
            token_scope=scope,
            on_accept=calls.accepted,
            warm=request.app[WARM] if (scope or dialect.carrier) == "twilio" and WARM in request.app else None,
        )
        key = id(session)
        calls.active[key] = (session, asyncio.current_task())
        calls.waiting[ticket] = session
        try:
            with structlog.contextvars.bound_contextvars():
                await session.run()
        finally:
            calls.active.pop(key, None)
            calls.waiting.pop(ticket, None)
            s = session.summary
            # A refused stream (a replayed start may carry the live call's own ids) never touched the registry.
            if session.started and request.app[PARKED].stream_of(s.call_sid) != s.stream_sid:
                request.app[CLUSTER].ended(s.call_sid, s.stream_sid)  # else: parked (the registry was told)
    finally:
        admission.release(ticket)  # the slot and the live token go with the call, whatever ended it
    return ws


async def _shared_admit(
    app: web.Application, carrier: str, start: StreamStarted, token: str, profile: str
) -> tuple[str | None, Handover | None]:
    """The cluster's half of admission (gateway.cluster): the token's single use across replicas, the call's entry
    in the registry, and, when another replica held the call, how to take over its parked agent session."""
    cluster = app[CLUSTER]
    call = LiveCall(start.call_id, start.stream_id, carrier, profile, time.time())
    refusal, previous = await cluster.admit(call, token)
    if refusal is not None or previous is None or previous.replica is None or not app[PARKED].enabled:
        return refusal, None
    if not app[CALLS].accepting:  # a draining replica takes no re-attach: this stream starts afresh
        return None, None
    owner = previous.replica
    return None, lambda: claim_remote(app, owner, start.call_id)


def _evict(calls: CallRegistry, ticket: int) -> None:
    """The pending pool was full: close the oldest stream still waiting for its ``start`` (gateway.admission)."""
    session = calls.waiting.pop(ticket, None)
    if session is not None and not session.started:
        log.warning("stream.refused", reason="evicted_waiting_for_start")
        session.request_end("evicted")


def _publish(app: web.Application, session: CallSession, event: CallEvent) -> None:
    calls = app[CALLS]
    for listener in list(calls.listeners):
        listener(session.summary.call_sid, event)
    if isinstance(event, AgentSessionReady | Reattach):  # a few per call, never per frame
        s = session.summary
        app[CLUSTER].session_known(s.call_sid, s.stream_sid, event.session_id)


def _agent_endpoint(request: web.Request) -> AgentEndpoint:
    settings = request.app[SETTINGS]
    if settings.use_local_agent:
        url = urls.local_url(urls.sockname(request.transport), settings.server.port, "/agent/v1/ws")
        key, name = request.app[LOCAL_AGENT_KEY], "local"
    else:
        url, key = settings.agent_url(), settings.secrets.assemblyai_api_key
        name = "cloud-" + (settings.agent.region if not settings.agent.url else (urlsplit(url).hostname or "custom"))
    return AgentEndpoint(url, key, name, transport=settings.agent.transport, http=request.app[AGENT_HTTP])


async def close_calls(app: web.Application) -> None:
    """on_shutdown: close live carrier sockets so their handlers finish (aiohttp web_ws.py pattern)."""
    for session, _task in list(app[CALLS].active.values()):
        await session.shutdown()

"""One media stream, whatever door it came through: admission, the WebSocket, and a
:class:`gateway.session.CallSession` speaking the door's dialect. Not pure: the aiohttp shell of a call.

Served by the generic carrier stream handler (:mod:`gateway.carrier_routes`) and by the softphone's stream
(:mod:`gateway.softphone`); each runs its own checks of the upgrade first. AudioSocket's TCP listener
(:mod:`gateway.audiosocket_server`) runs its calls through the same :func:`open_stream` and :func:`run_call`.
:func:`close_calls` is the app's ``on_shutdown`` hook that closes live carrier sockets (aiohttp ``web_ws.py``
pattern).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from . import urls
from .agent.client import AgentEndpoint
from .call.events import AgentSessionReady, CallEvent, Reattach
from .call.shell.accept import Handover
from .call.shell.carrier import CarrierTransport
from .call.shell.carrier_control import for_stream as carrier_control_for
from .call_registry import CallRegistry
from .carriers.base import Dialect
from .carriers.events import StreamStarted
from .cluster.control import claim_remote
from .keys import AGENT_HTTP, CALLS, CLUSTER, HTTP, LOCAL_AGENT_KEY, METRICS, PARKED, SETTINGS, WARM
from .session import CallSession
from .state.store import LiveCall
from .tools.registry import ToolRegistry

__all__ = ["close_calls", "open_stream", "run_call", "serve_stream"]

log = structlog.get_logger("gateway")


async def serve_stream(
    request: web.Request, dialect: Dialect, scope: str | None = None, protocols: tuple[str, ...] = ()
) -> web.StreamResponse:
    """One carrier media stream, whatever the carrier: admission, the WebSocket, and a :class:`CallSession` speaking
    ``dialect`` (the door's own checks of the upgrade happen before, in its route). ``scope``: the door's name,
    which the stream's token must have been minted for (default: the dialect's carrier); ``protocols``: the
    subprotocols to select when the carrier offers one."""
    app = request.app
    ticket = open_stream(app)
    if ticket is None:
        return web.Response(status=503, text="not accepting calls")
    try:
        ws = web.WebSocketResponse(
            max_msg_size=app[SETTINGS].server.max_message_bytes, autoping=True, protocols=protocols
        )
        await ws.prepare(request)
        await run_call(app, dialect, ticket, ws=ws, scope=scope, local=urls.sockname(request.transport))
    finally:
        app[CALLS].admission.release(ticket)  # the slot and the live token go with the call, whatever ended it
    return ws


def open_stream(app: web.Application) -> int | None:
    """A carrier connection arrives: its admission ticket, or None when it is refused (logged and counted; the
    caller answers it: 503 for an upgrade, a close for a TCP stream). The ticket must be released
    (``admission.release``) whatever happens next."""
    calls = app[CALLS]
    opened = calls.admission.open_stream(time.monotonic())
    if isinstance(opened, str):
        log.warning("stream.refused", reason=opened)
        app[METRICS].refused("stream", opened)
        return None
    ticket, evicted = opened
    if evicted is not None:
        _evict(calls, evicted)
        app[METRICS].refused("stream", "evicted_waiting_for_start")
    return ticket


async def run_call(
    app: web.Application,
    dialect: Dialect,
    ticket: int,
    *,
    ws: web.WebSocketResponse | None = None,
    carrier: CarrierTransport | None = None,
    scope: str | None,
    local: Sequence[Any] | None,
) -> None:
    """Serve one admitted carrier connection (``ticket``: :func:`open_stream`) as a call until it ends, whatever
    carries it: a prepared WebSocket (``ws``) or another transport (``carrier``: AudioSocket's TCP stream,
    :mod:`gateway.audiosocket_server`). ``local``: the address this process was reached on (the embedded agent is
    reached there)."""
    settings = app[SETTINGS]
    calls = app[CALLS]
    admission = calls.admission
    door = scope or dialect.carrier
    session = CallSession(
        ws=ws,
        carrier=carrier,
        settings=settings,
        endpoint=_agent_endpoint(app, local),
        tools=ToolRegistry(settings.tools, app[HTTP]),
        on_summary=calls.record,
        on_event=lambda event: _publish(app, session, event),
        admit=lambda call_sid, token: admission.start(ticket, call_sid, token, time.monotonic()),
        call_control=carrier_control_for(app, door, local),
        parked=app[PARKED],
        stream_stopping=lambda call_sid: any(
            s is not session and s.summary.call_sid == call_sid for s, _ in list(calls.active.values())
        ),
        shared_admit=lambda start, token, profile: _shared_admit(app, door, start, token, profile),
        dialect=dialect,
        token_scope=scope,
        on_accept=calls.accepted,
        warm=app[WARM] if door == "twilio" and WARM in app else None,
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
        if session.started and app[PARKED].stream_of(s.call_sid) != s.stream_sid:
            app[CLUSTER].ended(s.call_sid, s.stream_sid)  # else: parked (the registry was told)


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


def _agent_endpoint(app: web.Application, local: Sequence[Any] | None) -> AgentEndpoint:
    settings = app[SETTINGS]
    if settings.use_local_agent:
        url = urls.local_url(local, settings.server.port, "/agent/v1/ws")
        key, name = app[LOCAL_AGENT_KEY], "local"
    else:
        url, key = settings.agent_url(), settings.secrets.assemblyai_api_key
        name = "cloud-" + (settings.agent.region if not settings.agent.url else (urlsplit(url).hostname or "custom"))
    return AgentEndpoint(url, key, name, transport=settings.agent.transport, http=app[AGENT_HTTP])


async def close_calls(app: web.Application) -> None:
    """on_shutdown: close live carrier sockets so their handlers finish (aiohttp web_ws.py pattern)."""
    for session, _task in list(app[CALLS].active.values()):
        await session.shutdown()

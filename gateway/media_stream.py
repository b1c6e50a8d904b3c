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
from .call.events import CallEvent
from .call.shell.carrier import CarrierTransport
from .call.shell.carrier_control import carrier_control
from .call_control_http import rest_client
from .call_registry import CallRegistry
from .carriers.base import Dialect
from .keys import AGENT_HTTP, CALLS, HTTP, LOCAL_AGENT_KEY, METRICS, PARKED, SETTINGS
from .session import CallSession
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
    session = CallSession(
        ws=ws,
        carrier=carrier,
        settings=settings,
        endpoint=_agent_endpoint(app, local),
        tools=ToolRegistry(settings.tools, app[HTTP]),
        on_summary=calls.record,
        on_event=lambda event: _publish(calls, session, event),
        admit=lambda call_sid, token: admission.start(ticket, call_sid, token, time.monotonic()),
        call_control=carrier_control(scope or dialect.carrier, rest_client(app)),
        parked=app[PARKED],
        stream_stopping=lambda call_sid: any(
            s is not session and s.summary.call_sid == call_sid for s, _ in list(calls.active.values())
        ),
        dialect=dialect,
        token_scope=scope,
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


def _evict(calls: CallRegistry, ticket: int) -> None:
    """The pending pool was full: close the oldest stream still waiting for its ``start`` (gateway.admission)."""
    session = calls.waiting.pop(ticket, None)
    if session is not None and not session.started:
        log.warning("stream.refused", reason="evicted_waiting_for_start")
        session.request_end("evicted")


def _publish(calls: CallRegistry, session: CallSession, event: CallEvent) -> None:
    for listener in list(calls.listeners):
        listener(session.summary.call_sid, event)


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

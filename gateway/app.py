"""The composition root: :func:`create_app` builds the state the settings imply and asks each HTTP area to add its
routes. Nothing in the gateway imports this module but the entry points (:mod:`gateway.cli`, :mod:`gateway.workers`;
tests and benchmarks too): app state is read through :mod:`gateway.keys` (tests/unit/test_import_graph.py).

The HTTP areas (docs/reference/http.md), each with its ``setup(app)``:

- :mod:`gateway.carrier_routes`: each open carrier door's webhook and media stream (Twilio, SignalWire, Telnyx,
  Plivo, Vonage, Exotel; docs/how-to/carriers/index.md), every call served by :func:`gateway.media_stream.serve_stream`
- :mod:`gateway.audiosocket_server`: Asterisk AudioSocket's TCP listener and its UUID endpoint, when
  ``[carriers.audiosocket]`` is configured (docs/how-to/pbx/asterisk-audiosocket.md)
- :mod:`gateway.ops`: ``GET /healthz``, ``GET /readyz``, ``GET /metrics``
- :mod:`gateway.softphone`: ``/softphone`` when ``[softphone] enabled`` allows it
- :mod:`gateway.call_control_http`: ``POST /calls``, ``POST /twilio/status``, parked agent sessions
- :mod:`gateway.control.dial`: ``/control/dial/{carrier}/{token}``, the ``<Dial>`` documents of transfers by URL
- :mod:`gateway.records.http`: ``GET /calls``, ``GET /calls/{call_sid}``, its recording; the call records
- :mod:`gateway.amd_http`: ``POST /twilio/amd`` (answering-machine detection results)
- :mod:`gateway.warm_transfer_http`: ``POST /twilio/transfer`` (warm transfers' human legs)
- ``/agent/v1/ws``, ``/agent/v1/token``: the embedded local agent, when no ASSEMBLYAI_API_KEY / AGENT_URL is set
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from . import amd_http, audiosocket_server, call_control_http, carrier_routes, ops, softphone, warm_transfer_http
from .admission import Admission
from .agent.client import new_http_session
from .audio.transcode import load_kernels
from .call_registry import RESERVATION_TTL_S, CallRegistry
from .config import BUILTIN_TOOLS, Settings
from .control import dial
from .keys import AGENT_HTTP, CALLS, HTTP, LOCAL_AGENT_KEY, METRICS, SETTINGS
from .media_stream import close_calls
from .metrics import GatewayMetrics
from .records import http as records_http

__all__ = ["create_app"]


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


def create_app(settings: Settings, *, local_agent_models: object | None = None) -> web.Application:
    app = web.Application(client_max_size=64 * 1024)
    app[SETTINGS] = settings
    audio = settings.audio
    load_kernels(audio.agent_format, audio.inbound_resample_quality, audio.outbound_resample_quality)
    app[CALLS] = calls = CallRegistry(
        admission=Admission(
            limit=settings.server.max_concurrent_calls,
            # A carrier opens the stream within a second or two of the answer; a reservation whose stream never
            # comes (the caller hung up meanwhile) frees its slot after this, at most the token's own lifetime.
            reservation_ttl_s=min(RESERVATION_TTL_S, settings.server.call_token_ttl_s),
            pending_limit=settings.server.max_pending_streams,
            token_ttl_s=settings.server.call_token_ttl_s,
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
    # cleanup_ctx runs in reverse on shutdown: the parked agent sessions (call control, below) end before the
    # agent client session closes, and that before the shared HTTP client.
    app.cleanup_ctx.append(_http_client)
    app.cleanup_ctx.append(_agent_http)
    app.on_shutdown.append(close_calls)
    carrier_routes.setup(app)
    audiosocket_server.setup(app)
    ops.setup(app)
    softphone.setup(app)
    call_control_http.setup(app)
    dial.setup(app)
    records_http.setup(app)
    amd_http.setup(app)
    warm_transfer_http.setup(app)
    if settings.use_local_agent:
        from .local_agent.bridge import build_embedded_agent

        key = settings.secrets.local_agent_api_key or secrets.token_urlsafe(24)
        app[LOCAL_AGENT_KEY] = key
        app.add_subapp("/agent", build_embedded_agent(settings, key, local_agent_models))
    return app

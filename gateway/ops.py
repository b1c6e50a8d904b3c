"""The operator's routes (docs/reference/http.md#operations): ``GET /healthz`` (process alive), ``GET /readyz``
(accepting calls: 200, else 503), ``GET /metrics`` (Prometheus, :mod:`gateway.metrics`) and ``GET /openapi.json``
(the HTTP API, :mod:`gateway.openapi`), plus the event-loop lag probe that feeds ``voice_gateway_loop_lag_seconds``.
Thin aiohttp handlers over ``app[CALLS]`` and ``app[METRICS]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from aiohttp import web

from .keys import CALLS, METRICS, SETTINGS
from .metrics import loop_lag_probe, metrics_handler
from .openapi import openapi_document

__all__ = ["healthz", "readyz", "setup"]


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


async def _loop_lag(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the event-loop lag probe of gateway.metrics, cancelled on cleanup."""
    task = asyncio.create_task(loop_lag_probe(app[METRICS]), name="metrics.loop_lag")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def setup(app: web.Application) -> None:
    """Add the operator's routes and the loop-lag probe (needs ``app[METRICS]``)."""
    app.cleanup_ctx.append(_loop_lag)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_handler(app[METRICS]))
    document = openapi_document(app[SETTINGS])  # built once: it depends on the settings only

    async def openapi(request: web.Request) -> web.Response:
        return web.json_response(document)

    app.router.add_get("/openapi.json", openapi)

"""Serving and draining: ``python -m gateway serve``'s run loop. Not pure (sockets, signals, the clock).

aiohttp's ``run_app`` turns SIGTERM into ``GracefulExit`` and then gives live handlers only ``shutdown_timeout``
before cancelling them: every live phone call would be cut. Here the process runs its own loop (``AppRunner`` +
``TCPSite`` + signal handlers) and drains instead (docs/how-to/operations/drain.md):

1. SIGTERM (or SIGINT): ``accepting`` turns False at once, so ``/readyz`` answers 503 (the orchestrator stops
   routing new calls here), new webhooks get the polite refusal TwiML and new streams 503. Streams of calls whose
   webhook was already answered may still connect (``gateway.admission``).
2. Live calls go on until they end by themselves, for at most ``server.drain_budget_s``.
3. At the deadline (or on a second signal) every remaining call hears the bundled goodbye prompt and is hung up
   (its socket closed: under ``<Connect>`` that ends the call); each takes at most ``agent.end_timeout_s`` +
   the goodbye's length + ``PROMPT_ECHO_SLACK_S``.
4. The server shuts down (``AppRunner.cleanup``) and the process exits 0.

So the orchestrator's grace period (Kubernetes ``terminationGracePeriodSeconds``) must be at least ``drain_budget_s`` +
:func:`hangup_allowance_s` (about 10 s) + a margin; docs/how-to/operations/drain.md#set-the-orchestrators-grace-period
has numbers.

:func:`listening` builds the server the way every ``serve`` does (one process or ``--workers N``, which calls
:func:`serve` in each worker): the runner, a :class:`~gateway.http_input.RequestHeadDeadline` of
``server.header_timeout_s`` on its connections (slowloris, docs/security.md), then the TCP site. Tests start the
gateway through it too.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from .http_input import SERVER_LOG, RequestHeadDeadline
from .keys import CALLS, METRICS, SETTINGS
from .prompts import GOODBYE, prompt_ulaw
from .session import PROMPT_ECHO_SLACK_S

__all__ = ["serve", "drain", "hangup_allowance_s", "listening"]

log = structlog.get_logger("gateway")

_POLL_S = 0.05


def hangup_allowance_s(app: web.Application) -> float:
    """Upper bound for a call asked to end to be gone: agent session end + goodbye + its mark echo + close."""
    settings = app[SETTINGS]
    goodbye_s = len(prompt_ulaw(GOODBYE)) / 8000
    return settings.agent.end_timeout_s + 2.0 + goodbye_s + PROMPT_ECHO_SLACK_S + 2.0


async def drain(app: web.Application, budget_s: float, *, hurry: asyncio.Event | None = None) -> int:
    """Stop taking calls, let live ones finish within ``budget_s``, then end the rest with the goodbye.
    Returns how many calls had to be ended by the gateway."""
    calls = app[CALLS]
    calls.accepting = False
    t0 = time.monotonic()
    log.info("gateway.drain_started", active_calls=len(calls), budget_s=budget_s)
    deadline = t0 + budget_s
    while calls.active and time.monotonic() < deadline and not (hurry is not None and hurry.is_set()):
        await asyncio.sleep(_POLL_S)
    ended = len(calls.active)
    if ended:
        log.warning("gateway.drain_deadline", ending_calls=ended, waited_s=round(time.monotonic() - t0, 2))
        stop_by = time.monotonic() + hangup_allowance_s(app)
        while calls.active and time.monotonic() < stop_by:
            # Every poll: a call whose webhook was answered before the drain may still start now, and it hears the
            # goodbye too (request_end is idempotent).
            for session, _task in list(calls.active.values()):
                session.request_end("drained")
            await asyncio.sleep(_POLL_S)
    log.info(
        "gateway.drain_finished",
        ended_by_gateway=ended,
        still_active=len(calls.active),
        drain_s=round(time.monotonic() - t0, 2),
    )
    return ended


@contextlib.asynccontextmanager
async def listening(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> AsyncIterator[web.AppRunner]:
    """The app served on ``host:port`` until the block exits (then ``AppRunner.cleanup``: on_shutdown, cleanup_ctx).
    Port 0 picks a free port: ``runner.addresses`` tells which."""
    settings = app[SETTINGS]
    # shutdown_timeout only matters for handlers still alive after the drain (it already ended every call).
    # SERVER_LOG: no traceback for each malformed request head a peer sends (aiohttp answers those 400 itself).
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=5.0, logger=SERVER_LOG)
    await runner.setup()
    try:
        assert runner.server is not None  # set by setup()
        metrics = app[METRICS]
        # Before the site starts: every connection must be made through the hooked server.
        RequestHeadDeadline(
            settings.server.header_timeout_s, on_expired=lambda: metrics.refused("http", "header_timeout")
        ).install(runner.server)
        await web.TCPSite(runner, host, port, reuse_port=reuse_port or None).start()
        yield runner
    finally:
        await runner.cleanup()


async def serve(app: web.Application, host: str, port: int, *, reuse_port: bool = False) -> None:
    """Serve until SIGTERM/SIGINT, then drain (a second signal cuts the budget short) and shut down.
    ``reuse_port``: several worker processes share the port (SO_REUSEPORT), as ``web.run_app(reuse_port=)``."""
    settings = app[SETTINGS]
    try:
        async with listening(app, host, port, reuse_port=reuse_port):
            log.info("gateway.listening", host=host, port=port)
            # Everything built so far (modules, the app, settings: ~58 000 objects, ~190 000 with the FIR's numba
            # loaded) lives as long as the process.
            # Frozen, the collector no longer walks it: a full collection under load measured 22–29 ms before, ~0
            # after, and a pause that long alone breaks a 5 ms p99
            # (docs/architecture/decisions/0003-msgspec-fast-path.md).
            gc.freeze()
            loop = asyncio.get_running_loop()
            stop = asyncio.Event()
            hurry = asyncio.Event()

            def on_signal(signame: str) -> None:
                if stop.is_set():
                    log.warning("gateway.signal_again", signal=signame, detail="ending live calls now")
                    hurry.set()
                else:
                    log.info("gateway.signal", signal=signame)
                    stop.set()

            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, on_signal, sig.name)
            try:
                await stop.wait()
                await drain(app, settings.server.drain_budget_s, hurry=hurry)
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
    finally:
        log.info("gateway.stopped")

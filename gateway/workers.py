"""``voice-gateway serve --workers N``: N worker processes on one port, for machines with many cores.

Each worker is a whole gateway (its own event loop, calls, metrics) listening on the shared port with
``SO_REUSEPORT``, so the kernel spreads new connections across them; a call's webhook and its stream may land on
different workers, which is fine because every worker verifies call tokens with the same secret (the parent's
settings, including a generated secret, are handed to each worker). Each worker also serves ``/metrics`` on a port
of its own (``metrics_port + index``): a scrape of the shared port would reach a random worker.

The parent only supervises: it forwards SIGTERM/SIGINT to the workers as SIGTERM (each drains as a single process
does, gateway.drain; a second signal cuts the drain short),
restarts a worker that dies on its own, and exits when all workers have stopped. Workers run in their own session,
so a terminal's Ctrl-C reaches the parent once, not every process.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import multiprocessing.connection
import os
import secrets
import signal
import socket
import sys
import threading
import time
from typing import Any

import structlog

from .config import Settings

__all__ = ["run_worker", "serve_workers"]

_RESTART_DELAY_S = 1.0
_CRASH_LOOP_S = 10.0  # a worker that dies this soon after its start, …
_CRASH_LOOP_LIMIT = 3  # … this many times in a row, stops the whole server


def _whole_lines() -> None:
    """Every process of the group writes to the same stdout: emit each log line with a single write() so lines of
    different workers never interleave (print() writes the text and the newline separately)."""
    structlog.configure(logger_factory=structlog.WriteLoggerFactory(sys.stdout))


def run_worker(settings: Settings, index: int, metrics_port: int | None, log_format: str) -> None:
    """Body of one worker process (also used in-process when N == 1 and a metrics port is asked for)."""
    from . import eventloop
    from .app import create_app
    from .drain import serve
    from .keys import METRICS
    from .logs import configure_logging
    from .metrics import serve_metrics_on

    configure_logging(log_format)
    _whole_lines()
    structlog.contextvars.bind_contextvars(worker=index, pid=os.getpid())
    server = settings.server
    app = create_app(settings)
    if metrics_port is not None:
        sock = socket.socket(socket.AF_INET6 if ":" in server.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((server.host, metrics_port + index))
        app.cleanup_ctx.append(serve_metrics_on(sock, lambda: app[METRICS]))
    structlog.get_logger("gateway").info(
        "gateway.worker_started",
        worker=index,
        pid=os.getpid(),
        metrics_port=None if metrics_port is None else metrics_port + index,
    )
    # drains on SIGTERM, as one process does
    eventloop.run(serve(app, server.host, server.port, reuse_port=True), server.loop)


def _worker_main(settings: Settings, index: int, metrics_port: int | None, log_format: str) -> None:
    os.setsid()  # the parent forwards signals; a terminal's Ctrl-C must not hit every worker too
    parent = multiprocessing.parent_process()
    if parent is not None:
        # If the supervisor dies without telling us (SIGKILL), drain and stop rather than live on as an orphan.
        def watch() -> None:
            multiprocessing.connection.wait([parent.sentinel])
            os.kill(os.getpid(), signal.SIGTERM)

        threading.Thread(target=watch, name="parent-watch", daemon=True).start()
    run_worker(settings, index, metrics_port, log_format)


def serve_workers(settings: Settings, workers: int, metrics_port: int, log_format: str) -> int:
    """Run ``workers`` gateway processes until SIGTERM/SIGINT; returns the exit status (1 if a worker keeps dying
    right after start, e.g. the port is taken)."""
    _whole_lines()
    if settings.use_local_agent and not settings.secrets.local_agent_api_key:
        # A call's embedded-agent socket dials the shared port too, so it may reach another worker's local agent:
        # every worker must accept the same key.
        settings = dataclasses.replace(
            settings, secrets=dataclasses.replace(settings.secrets, local_agent_api_key=secrets.token_urlsafe(24))
        )
    log = structlog.get_logger("gateway")
    ctx = multiprocessing.get_context("spawn")  # a clean interpreter per worker: no inherited loop or sockets
    procs: dict[int, Any] = {}
    started_at: dict[int, float] = {}
    quick_deaths: dict[int, int] = {}
    stopping = threading.Event()

    def start(i: int) -> None:
        p = ctx.Process(
            target=_worker_main,
            args=(settings, i, metrics_port, log_format),
            name=f"voice-gateway-worker-{i}",
            daemon=False,
        )
        p.start()
        procs[i], started_at[i] = p, time.monotonic()

    def stop_all(signum: int = signal.SIGTERM, _frame: Any = None) -> None:
        # First signal: every worker drains. A second one is forwarded too: the workers cut the drain short.
        stopping.set()
        for p in procs.values():
            if p.pid is not None and p.exitcode is None:
                os.kill(p.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_all)
    signal.signal(signal.SIGINT, stop_all)
    for i in range(workers):
        start(i)
    status = 0
    while procs:
        live = {p.sentinel: i for i, p in procs.items()}
        for sentinel in multiprocessing.connection.wait(list(live), timeout=1.0):
            i = live[sentinel]
            p = procs.pop(i)
            p.join()
            if stopping.is_set():
                continue
            log.error("gateway.worker_exited", worker=i, pid=p.pid, exit_code=p.exitcode)
            quick = time.monotonic() - started_at[i] < _CRASH_LOOP_S
            quick_deaths[i] = quick_deaths.get(i, 0) + 1 if quick else 0
            if quick_deaths[i] >= _CRASH_LOOP_LIMIT:
                status = 1
                stop_all()
                continue
            time.sleep(_RESTART_DELAY_S)
            if not stopping.is_set():
                start(i)
    return status

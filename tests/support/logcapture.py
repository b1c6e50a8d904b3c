"""Capture structlog events *with* the bound context (call_sid, stream_sid, session_id), which
``structlog.testing.capture_logs`` leaves out, so a test can tell which call logged what."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import structlog


@contextlib.contextmanager
def capture_call_logs() -> Iterator[list[dict[str, Any]]]:
    cap = structlog.testing.LogCapture()
    old = structlog.get_config()
    structlog.configure(processors=[structlog.contextvars.merge_contextvars, cap], cache_logger_on_first_use=False)
    try:
        yield cap.entries
    finally:
        structlog.configure(**old)


def events(logs: list[dict[str, Any]], name: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


async def wait_event(logs: list[dict[str, Any]], name: str, timeout: float = 5.0, **match: Any) -> dict[str, Any]:
    """Wait until an event was logged (e.g. ``call.ended``, which comes just after the socket closes)."""
    import asyncio

    async with asyncio.timeout(timeout):
        while not (found := events(logs, name, **match)):
            await asyncio.sleep(0.005)
    return found[0]

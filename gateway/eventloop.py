"""Which asyncio event loop ``serve`` runs on (``[server] loop``, ``--loop``). Not pure: imports uvloop.

``auto`` (the default) takes uvloop when it is importable: the benchmark measured less CPU per call with it
(docs/architecture/decisions/0002-uvloop.md); ``asyncio`` forces the standard loop, ``uvloop`` requires it."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from .errors import ConfigError

__all__ = ["resolve_loop", "run"]

T = TypeVar("T")


def resolve_loop(choice: str) -> str:
    """``auto`` | ``asyncio`` | ``uvloop`` → the loop that will run: ``asyncio`` or ``uvloop``."""
    available = importlib.util.find_spec("uvloop") is not None
    if choice == "uvloop" and not available:
        raise ConfigError("server.loop: uvloop is not installed (pip install uvloop, or use auto / asyncio)")
    if choice == "auto":
        return "uvloop" if available else "asyncio"
    return choice


def run(main: Coroutine[Any, Any, T], choice: str) -> T:
    """``asyncio.run(main)`` on the loop ``choice`` resolves to."""
    factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if resolve_loop(choice) == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)

"""How a local-agent connection ends, and the control-flow exception that ends it. Pure.

Whichever of a connection's tasks notices the end first raises :class:`ConnectionDone` with the :class:`EndReason`; the
task group cancels the others and the connection reports the reason (docs/reference/local-agent-api.md#implemented:
resume, session.end, shutdown). Not an error: in the project's tree (:mod:`gateway.errors`) it is a
:class:`~gateway.errors.CallEnded`, the agent side's "ended normally".
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

from gateway.errors import CallEnded

__all__ = ["ConnectionDone", "EndReason", "first_reason"]


class EndReason(str, enum.Enum):  # noqa: UP042 - StrEnum changes str() and format() of a member
    CLIENT_END = "client_end"  # session.end: session.ended, close 1000, session gone
    PEER_GONE = "peer_gone"  # socket closed/failed without session.end: keep the session for resume
    IDLE = "idle"  # nothing received for idle_timeout_s: session.ended, close 1000
    SHUTDOWN = "shutdown"  # server shutting down
    TAKEN_OVER = "taken_over"  # the session was resumed on another socket


class ConnectionDone(CallEnded):
    """Control flow: the connection ends for ``reason`` (raised by whichever task notices first)."""

    reason: EndReason

    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


def first_reason(excs: Iterable[BaseException]) -> EndReason:
    """The reason of the first :class:`ConnectionDone` among a task group's errors (nested groups included)."""
    for e in excs:
        if isinstance(e, ConnectionDone):
            return e.reason
        if isinstance(e, BaseExceptionGroup):
            return first_reason(e.exceptions)
    return EndReason.PEER_GONE

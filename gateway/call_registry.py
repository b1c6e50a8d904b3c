"""The live calls of one gateway process, and who watches them. Not I/O, but holds running sessions and their tasks.

One :class:`CallRegistry` per app (``app[CALLS]``, :mod:`gateway.keys`), built by :func:`gateway.app.create_app`.
Readiness (``/readyz``), limits, drain (:mod:`gateway.drain`), status callbacks and tests read it; the media
stream shell (:mod:`gateway.media_stream`) adds and removes calls. Who may take a slot is decided by ``admission``
(:mod:`gateway.admission`: reservations at the webhook, claims at the stream's ``start``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .admission import Admission

if TYPE_CHECKING:
    from .call.events import CallEvent
    from .call.setup import CallSetup
    from .call.shell.accepted import AcceptedCall
    from .session import CallSession, CallSummary

__all__ = ["RESERVATION_TTL_S", "CallRegistry"]

#: Seconds a webhook's slot reservation waits for its stream's 'start' (gateway.admission).
RESERVATION_TTL_S = 30.0


@dataclass
class CallRegistry:
    """Live calls of this process (for readiness, limits, drain and tests)."""

    active: dict[int, tuple[CallSession, asyncio.Task[None] | None]] = field(default_factory=dict)
    completed: list[CallSummary] = field(default_factory=list)
    admission: Admission = field(default_factory=lambda: Admission(limit=100))
    keep_summaries: int = 1000
    #: Live viewers of per-call timelines: called with (call_sid, typed event; gateway.call.events).
    listeners: list[Callable[[str, CallEvent], None]] = field(default_factory=list)
    #: Called with every finished call's summary (metrics; see gateway.metrics).
    on_record: list[Callable[[CallSummary], None]] = field(default_factory=list)
    #: Called with every admitted call before it runs, and its setup (gateway.records: the recording's taps).
    on_accept: list[Callable[[AcceptedCall, CallSetup], None]] = field(default_factory=list)
    #: Sessions by admission ticket, so a stream evicted from the pending pool can be closed.
    waiting: dict[int, CallSession] = field(default_factory=dict)
    #: Called when ``accepting`` changes (drain: the cluster registry is told at once, gateway.cluster).
    on_accepting: list[Callable[[], None]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.active)

    @property
    def accepting(self) -> bool:
        """False once the process drains (gateway.drain): new webhooks and unreserved streams are refused."""
        return self.admission.accepting

    @accepting.setter
    def accepting(self, value: bool) -> None:
        changed = value != self.admission.accepting
        self.admission.accepting = value
        if changed:
            for hook in list(self.on_accepting):
                hook()

    def accepted(self, call: AcceptedCall, setup: CallSetup) -> None:
        for hook in list(self.on_accept):
            hook(call, setup)

    def record(self, summary: CallSummary) -> None:
        self.completed.append(summary)
        del self.completed[: -self.keep_summaries]
        for hook in list(self.on_record):
            hook(summary)

"""Tool calls in flight: which are waiting, which timed out, and when a reply's calls are all answered. Pure.

A reply may emit several ``tool.call`` events (its *group*). ``tool.result`` is accepted at any time, even before the
reply that made the call is done; once every call of a group has a result or has timed out (its tool's
``timeout_seconds``), the group's answer reply is due. A result for a call already answered or timed out is
ignored; one for a call whose answer reply is already due is *late* (ignored, logged); one for a call never made
is the client's mistake. docs/reference/local-agent-api.md#implemented (Tools).

Time is the caller's clock (the event loop's, in practice), passed in as ``now``; nothing here reads a clock.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .brain import ToolOutcome

__all__ = ["PendingCall", "Resolution", "ResultStatus", "ToolCalls"]


@dataclass(slots=True)
class PendingCall:
    call_id: str
    name: str
    arguments: dict[str, Any]
    context: dict[str, Any]
    group: str  # reply_id of the reply that emitted it
    deadline: float  # the caller's clock
    result: str | None = None
    is_error: bool = False
    timed_out: bool = False
    answered: bool = False

    @property
    def resolved(self) -> bool:
        return self.answered or self.timed_out

    def outcome(self) -> ToolOutcome:
        return ToolOutcome(self.call_id, self.name, self.context, self.result, self.is_error, self.timed_out)


class ResultStatus(enum.Enum):
    """What became of one ``tool.result``."""

    RECORDED = "recorded"  # the call's result: its group may now be due (see ToolCalls.resolve)
    IGNORED = "ignored"  # the call was already answered or timed out
    LATE = "late"  # the call's group was already answered
    UNKNOWN = "unknown"  # no call has this id


@dataclass(frozen=True, slots=True)
class Resolution:
    #: Calls that timed out just now.
    timed_out: tuple[PendingCall, ...] = ()
    #: The outcomes of each group whose calls are now all resolved, one tuple per group: answer each.
    due: tuple[tuple[ToolOutcome, ...], ...] = ()


class ToolCalls:
    """The calls of one session that are not finished yet, and the ids of the last ``remember`` finished ones."""

    def __init__(self, *, remember: int = 256) -> None:
        self._calls: dict[str, PendingCall] = {}
        self._finished: deque[str] = deque(maxlen=remember)

    def issue(
        self,
        call_id: str,
        name: str,
        arguments: Mapping[str, Any],
        context: Mapping[str, Any],
        *,
        group: str,
        deadline: float,
    ) -> PendingCall:
        call = PendingCall(call_id, name, dict(arguments), dict(context), group, deadline)
        self._calls[call_id] = call
        return call

    def answer(self, call_id: str, result: str, *, is_error: bool = False) -> ResultStatus:
        call = self._calls.get(call_id)
        if call is None:
            return ResultStatus.LATE if call_id in self._finished else ResultStatus.UNKNOWN
        if call.resolved:
            return ResultStatus.IGNORED
        call.answered, call.result, call.is_error = True, result, is_error
        return ResultStatus.RECORDED

    def resolve(self, now: float) -> Resolution:
        """Time out the calls overdue at ``now``; hand back (and forget) every group whose calls are all
        resolved, in the order the groups' first calls were made."""
        timed_out = []
        for c in self._calls.values():
            if not c.resolved and now >= c.deadline:
                c.timed_out = True
                timed_out.append(c)
        groups: dict[str, list[PendingCall]] = {}
        for c in self._calls.values():
            groups.setdefault(c.group, []).append(c)
        due = []
        for calls in groups.values():
            if all(c.resolved for c in calls):
                for c in calls:
                    del self._calls[c.call_id]
                    self._finished.append(c.call_id)
                due.append(tuple(c.outcome() for c in calls))
        return Resolution(tuple(timed_out), tuple(due))

    @property
    def pending(self) -> Mapping[str, PendingCall]:
        """The calls not finished yet, by ``call_id`` (a read-only view)."""
        return MappingProxyType(self._calls)

    def next_deadline(self) -> float | None:
        """When the next call times out, if one is waiting."""
        pending = [c.deadline for c in self._calls.values() if not c.resolved]
        return min(pending) if pending else None

    def __len__(self) -> int:
        return len(self._calls)

"""``end_call`` and ``transfer_call``: the agent's last words are heard before the call is let go. Pure.

docs/how-to/call-control.md: the tool result asks the agent to say goodbye (or the transfer announcement); the gateway
gives that reply up to ``LAST_REPLY_START_S`` to start, waits for it to end, then for the echo of a mark queued
after it (proof the caller heard it), all within the profile's ``end_call_timeout_s``; then it hangs up or
transfers. One way out at a time: a second ``end_call`` is ignored, a ``transfer_call`` refused.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["LAST_REPLY_START_S", "LastWords", "Stage", "Step"]

#: After end_call / transfer_call, how long the agent may take to start the reply that says goodbye.
LAST_REPLY_START_S = 3.0


class Stage(enum.Enum):
    REPLY_START = "reply_start"  # waiting (briefly) for the agent's last reply to start
    REPLY_DONE = "reply_done"  # waiting for it to end
    MARK = "mark"  # waiting for the echo of the mark queued after it
    CONTROL = "control"  # the carrier's call control is acting (REST)


class Step(enum.Enum):
    """What the call does next."""

    QUEUE_MARK = "queue_mark"  # the last reply is over: queue the mark whose echo proves it was heard
    LEAVE = "leave"  # heard: hang up or transfer now
    TIMED_OUT = "timed_out"  # end_call_timeout_s passed without proof: hang up or transfer anyway


@dataclass(slots=True)
class LastWords:
    kind: str  # hangup | transfer
    destination: str
    deadline: float
    start_until: float
    stage: Stage = Stage.REPLY_START
    control_at: float = 0.0

    @classmethod
    def begin(cls, kind: str, destination: str, now: float, limit_s: float) -> LastWords:
        return cls(kind, destination, now + limit_s, now + min(LAST_REPLY_START_S, limit_s))

    def reply_started(self) -> None:
        if self.stage is Stage.REPLY_START:
            self.stage = Stage.REPLY_DONE

    def reply_done(self) -> Step | None:
        if self.stage is Stage.REPLY_DONE:
            self.stage = Stage.MARK
            return Step.QUEUE_MARK
        return None

    def mark_heard(self) -> Step | None:
        return Step.LEAVE if self.stage is Stage.MARK else None

    def due(self, now: float, reply_active: bool) -> Step | None:
        """What the time ``now`` calls for."""
        if self.stage is Stage.CONTROL:
            return None
        if now >= self.deadline:
            return Step.TIMED_OUT
        if self.stage is Stage.REPLY_START and now >= self.start_until:
            if reply_active:  # the reply that carried the tool call is still speaking: its end counts
                self.stage = Stage.REPLY_DONE
                return None
            self.stage = Stage.MARK
            return Step.QUEUE_MARK
        return None

    def next_deadline(self) -> float | None:
        if self.stage is Stage.CONTROL:
            return None
        return self.start_until if self.stage is Stage.REPLY_START else self.deadline

    def leaving(self, now: float) -> None:
        """The carrier's call control acts from now on."""
        self.stage, self.control_at = Stage.CONTROL, now

"""Per-call statistics: :class:`CallSummary`, what the ``call.ended`` line reports and metrics are derived from.
Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import Outcome

__all__ = ["HUNG_UP_BY", "CallSummary"]

#: Who ended the call, by outcome (``call.ended`` ``hung_up_by``); every other outcome is the gateway's.
HUNG_UP_BY: dict[str, str] = {
    Outcome.CALLER_HANGUP: "caller",
    Outcome.CARRIER_CLOSED: "caller",
    Outcome.AGENT_HANGUP: "agent",
    Outcome.AGENT_ENDED: "agent",
    Outcome.TRANSFERRED: "agent",  # transfer_call: the agent handed the caller on
    Outcome.CALL_COMPLETED: "caller",  # the carrier's completed status callback for a stream still live here
}


@dataclass(slots=True)
class CallSummary:
    """What ``call.ended`` reports; also what metrics are derived from."""

    call_sid: str = ""
    stream_sid: str = ""
    session_id: str = ""
    profile: str = ""
    outcome: str = ""  # an Outcome (a str): caller_hangup | agent_hangup | agent_ended | refused | …
    hung_up_by: str = ""  # caller | agent | gateway
    duration_s: float = 0.0
    turns: int = 0
    replies: int = 0
    interruptions: int = 0
    tool_calls: int = 0
    frames_in: int = 0
    frames_to_agent: int = 0
    frames_dropped_to_agent: int = 0
    frames_dropped_rate_limit: int = 0  # caller audio beyond server.inbound_rate_limit × real time (gateway.ratelimit)
    frames_out: int = 0
    #: Carrier media payloads that were not whole 20 ms frames, by reason (gateway.carriers.base.MEDIA_FAULTS).
    media_faults: dict[str, int] = field(default_factory=dict)
    agent_resumes: int = 0
    resume_gaps_ms: list[float] = field(default_factory=list)  # agent drop noticed → session resumed
    prompt: str = ""  # bundled prompt the gateway played itself (gateway.prompts), if any
    time_to_first_agent_audio_ms: float | None = None
    response_latencies_ms: list[float] = field(default_factory=list)
    clear_latencies_ms: list[float] = field(default_factory=list)
    mark_round_trips_ms: list[float] = field(default_factory=list)  # mark sent → echoed (carrier buffer depth)
    stale_mark_echoes: int = 0
    agent_close_code: int | None = None
    error: str = ""

    def end(self, outcome: str, error: str = "") -> None:
        """Record how the call ended (first caller wins: an ending call keeps the outcome it started ending with)."""
        if self.outcome:
            return
        self.outcome = outcome
        self.hung_up_by = HUNG_UP_BY.get(outcome, "gateway")
        if error:
            self.error = error

    def log_fields(self) -> dict[str, Any]:
        lat = sorted(self.response_latencies_ms)
        return {
            "outcome": self.outcome,
            "hung_up_by": self.hung_up_by,
            "duration_s": round(self.duration_s, 3),
            "profile": self.profile,
            "turns": self.turns,
            "replies": self.replies,
            "interruptions": self.interruptions,
            "tool_calls": self.tool_calls,
            "frames_in": self.frames_in,
            "frames_to_agent": self.frames_to_agent,
            "frames_dropped_to_agent": self.frames_dropped_to_agent,
            "frames_dropped_rate_limit": self.frames_dropped_rate_limit,
            "frames_out": self.frames_out,
            **({"media_faults": dict(self.media_faults)} if self.media_faults else {}),
            "agent_resumes": self.agent_resumes,
            **({"prompt": self.prompt} if self.prompt else {}),
            "time_to_first_agent_audio_ms": _r(self.time_to_first_agent_audio_ms),
            "response_latency_median_ms": _r(lat[len(lat) // 2]) if lat else None,
            "stale_mark_echoes": self.stale_mark_echoes,
            "agent_close_code": self.agent_close_code,
            **({"error": self.error} if self.error else {}),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)

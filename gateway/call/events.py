"""Typed call events: what happened in one call, for live viewers (the softphone's timeline) and metrics. Pure.

Each event is a frozen dataclass named as a noun, with the timeline name it has always had (``kind``, e.g.
``call.barge_in``) and :meth:`CallEvent.fields`, the timeline's JSON fields. ``t`` is seconds since the call's
stream started. Subscribers (``CallRegistry.listeners``) are called with ``(call_sid, event)``; they dispatch on the
event's type (:meth:`gateway.metrics.GatewayMetrics.on_event`) or forward ``kind`` and ``fields()`` (the softphone's
event feed). Unlike log lines, events may carry transcript text, so they only reach viewers the operator enabled.
Never per audio frame: a handful per turn (docs/reference/logs.md; docs/reference/metrics.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

__all__ = [
    "AgentDrop",
    "AgentFirstAudio",
    "AgentReplyStarted",
    "AgentResume",
    "AgentSessionReady",
    "AgentTranscript",
    "BargeIn",
    "CallEnd",
    "CallEvent",
    "CallStarted",
    "CallerKeypress",
    "CallerSpeechStarted",
    "CallerSpeechStopped",
    "CallerTranscript",
    "CarrierCleared",
    "ControlAction",
    "HoldAudio",
    "IdlePrompt",
    "MachineDetection",
    "ProtocolViolation",
    "Reattach",
    "SessionErrorReport",
    "TonesSent",
    "ToolCalled",
    "ToolFinished",
    "WarmTransfer",
]


@dataclass(frozen=True, slots=True)
class CallEvent:
    """Base of every call event. ``kind`` is the timeline name; ``t`` seconds since the stream started."""

    kind: ClassVar[str] = ""
    t: float = field(default=0.0, kw_only=True)

    def fields(self) -> dict[str, Any]:
        """The timeline's fields: the event's own, then ``t``."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "t"}
        out["t"] = self.t
        return out


@dataclass(frozen=True, slots=True)
class CallStarted(CallEvent):
    kind: ClassVar[str] = "call.started"
    call_sid: str
    profile: str


@dataclass(frozen=True, slots=True)
class AgentSessionReady(CallEvent):
    kind: ClassVar[str] = "agent.session_ready"
    session_id: str


@dataclass(frozen=True, slots=True)
class AgentReplyStarted(CallEvent):
    kind: ClassVar[str] = "agent.reply_started"
    reply_id: str | None


@dataclass(frozen=True, slots=True)
class AgentFirstAudio(CallEvent):
    """The first audio of a reply reached the gateway: ``latency_ms`` since the caller stopped speaking (or since
    the session was ready, for the greeting)."""

    kind: ClassVar[str] = "agent.first_audio"
    reply_id: str | None
    latency_ms: float


@dataclass(frozen=True, slots=True)
class AgentTranscript(CallEvent):
    kind: ClassVar[str] = "agent.transcript"
    reply_id: str | None
    text: str
    interrupted: bool


@dataclass(frozen=True, slots=True)
class CallerSpeechStarted(CallEvent):
    kind: ClassVar[str] = "caller.speech_started"


@dataclass(frozen=True, slots=True)
class CallerSpeechStopped(CallEvent):
    kind: ClassVar[str] = "caller.speech_stopped"


@dataclass(frozen=True, slots=True)
class CallerTranscript(CallEvent):
    kind: ClassVar[str] = "caller.transcript"
    text: str


@dataclass(frozen=True, slots=True)
class CallerKeypress(CallEvent):
    """A DTMF digit from the caller. Counted only: the digit itself goes nowhere but the agent."""

    kind: ClassVar[str] = "call.dtmf"


@dataclass(frozen=True, slots=True)
class BargeIn(CallEvent):
    """Agent audio was flushed here and at the carrier (``clear``) because the caller spoke over it."""

    kind: ClassVar[str] = "call.barge_in"
    reply_id: str | None
    cause: str  # speech_started | reply_interrupted
    dropped_unplayed_ms: int


@dataclass(frozen=True, slots=True)
class CarrierCleared(CallEvent):
    """The carrier acknowledged a ``clear`` (Plivo ``clearedAudio``, Vonage ``websocket:cleared``)."""

    kind: ClassVar[str] = "carrier.cleared"


@dataclass(frozen=True, slots=True)
class ToolCalled(CallEvent):
    kind: ClassVar[str] = "tool.called"
    tool: str
    call_id: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ToolFinished(CallEvent):
    """A tool call's result is in (the call record keeps it: gateway.records.record)."""

    kind: ClassVar[str] = "tool.result"
    tool: str
    call_id: str
    result: str
    is_error: bool
    duration_ms: float


@dataclass(frozen=True, slots=True)
class SessionErrorReport(CallEvent):
    """The agent sent ``session.error`` (fatal or not)."""

    kind: ClassVar[str] = "agent.session_error"
    code: str
    fatal: bool


@dataclass(frozen=True, slots=True)
class AgentDrop(CallEvent):
    """The agent socket closed without ``session.ended``: a resume follows."""

    kind: ClassVar[str] = "agent.dropped"
    close_code: int | None


@dataclass(frozen=True, slots=True)
class AgentResume(CallEvent):
    kind: ClassVar[str] = "agent.resumed"
    attempts: int
    gap_ms: float


@dataclass(frozen=True, slots=True)
class TonesSent(CallEvent):
    """``send_dtmf`` played ``digits`` keypad tones into the call."""

    kind: ClassVar[str] = "call.dtmf_sent"
    digits: int


@dataclass(frozen=True, slots=True)
class ControlAction(CallEvent):
    """A carrier call-control action: ``action`` hangup | transfer; ``result`` ok | already_ended | refused |
    failed."""

    kind: ClassVar[str] = "call.control"
    action: str
    result: str


@dataclass(frozen=True, slots=True)
class Reattach(CallEvent):
    """This stream took over the call's parked agent session (gateway.reattach)."""

    kind: ClassVar[str] = "call.reattached"
    session_id: str
    gap_ms: float


@dataclass(frozen=True, slots=True)
class IdlePrompt(CallEvent):
    """The caller said nothing for ``idle.after_s``: the agent was asked for a reprompt (``step`` reprompt, with
    its ``count``) or, after ``idle.max_prompts``, for the goodbye (docs/how-to/conversation.md#idle-callers)."""

    kind: ClassVar[str] = "call.idle_prompt"
    step: str
    count: int


@dataclass(frozen=True, slots=True)
class HoldAudio(CallEvent):
    """Hold audio for the caller ``started`` (a tool ran long) or stopped (``cause``: agent_audio | barge_in |
    call_ending | no_reply), ``ms`` played; never audio for the agent (docs/how-to/conversation.md#hold-audio)."""

    kind: ClassVar[str] = "call.hold_audio"
    started: bool
    cause: str = ""
    ms: int = 0


@dataclass(frozen=True, slots=True)
class MachineDetection(CallEvent):
    """Twilio's answering-machine detection answered for this outbound call (``AnsweredBy``:
    docs/how-to/conversation.md#voicemail)."""

    kind: ClassVar[str] = "call.amd"
    answered_by: str


@dataclass(frozen=True, slots=True)
class WarmTransfer(CallEvent):
    """A warm transfer's progress (docs/how-to/conversation.md#warm-transfer): ``result`` dialling | answered |
    busy | no-answer | failed | canceled."""

    kind: ClassVar[str] = "call.warm_transfer"
    result: str


@dataclass(frozen=True, slots=True)
class ProtocolViolation(CallEvent):
    """A peer broke its protocol and the call ends: ``side`` carrier | agent."""

    kind: ClassVar[str] = "call.protocol_error"
    side: str


@dataclass(frozen=True, slots=True)
class CallEnd(CallEvent):
    """The call is over; ``summary`` is the ``call.ended`` line's fields (CallSummary.log_fields)."""

    kind: ClassVar[str] = "call.ended"
    summary: Mapping[str, Any]

    def fields(self) -> dict[str, Any]:
        return {**self.summary, "t": self.t}

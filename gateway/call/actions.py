"""What the call core asks its shell to do: frozen dataclasses named as nouns. Pure.

Audio is not here: caller audio for the agent and everything for the carrier (media, marks, ``clear``, prompts)
wait in the core's bounded buffers until the shell, when its socket can take them, pulls them
(:meth:`~gateway.call.core.CallCore.agent_audio`, :meth:`~gateway.call.core.CallCore.carrier_data`), the way
websockets' protocol hands out ``data_to_send()``. What is left is below; the shell executes each in order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..agent.protocol import ToolCall
from ..errors import Outcome
from .events import CallEvent

__all__ = [
    "Action",
    "ControlRequest",
    "EndAgentSession",
    "EndCall",
    "LogLine",
    "MarkHeard",
    "Publish",
    "RunTool",
    "SendAgent",
    "WakeAt",
]


@dataclass(frozen=True, slots=True)
class SendAgent:
    """A control message for the agent (``tool.result``, ``reply.create``). ``keep`` when it must survive a socket
    found dropped: the shell hands it back (:meth:`~gateway.call.core.CallCore.agent_message_unsent`) and the core
    sends it after the resume; otherwise it is lost with the socket."""

    text: str
    keep: bool = False


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run the agent's tool call; its result comes back through :meth:`~gateway.call.core.CallCore.tool_done`."""

    call: ToolCall


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """Ask the carrier's call control to hang up or transfer the call (REST; a warm transfer's steps:
    gateway.call.warm); the answer comes back through
    :meth:`~gateway.call.core.CallCore.control_done`."""

    action: Literal["hangup", "transfer", "warm_dial", "warm_join", "warm_cancel"]
    destination: str = ""  # warm_dial: the human; warm_cancel: the human's CallSid


@dataclass(frozen=True, slots=True)
class MarkHeard:
    """The mark queued after audio tagged ``tag`` (``send_dtmf`` tones) was echoed: the caller heard it."""

    tag: str


@dataclass(frozen=True, slots=True)
class EndAgentSession:
    """The call is ending with the gateway's own prompt: stop reading the agent and end its session now."""


@dataclass(frozen=True, slots=True)
class EndCall:
    """The call is over: end its tasks and tear it down."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Call :meth:`~gateway.call.core.CallCore.tick` at ``t`` (monotonic seconds), or earlier."""

    t: float


@dataclass(frozen=True, slots=True)
class Publish:
    """Hand a typed call event to the call's subscribers (timeline viewers, metrics)."""

    event: CallEvent


@dataclass(frozen=True, slots=True)
class LogLine:
    """A structured log line for the shell to write (the core reads no logger: it only says what to log)."""

    level: Literal["info", "warning", "error"]
    event: str
    fields: dict[str, Any] = field(default_factory=dict)


Action = SendAgent | RunTool | ControlRequest | MarkHeard | EndAgentSession | EndCall | WakeAt | Publish | LogLine

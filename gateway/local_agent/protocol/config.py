"""A session's resolved config and its echo: what ``session.ready`` / ``session.updated`` report. Pure.

:class:`SessionConfig` is what the client set (validated by :mod:`.session_update`) with the agent's defaults filled in;
:func:`config_echo` renders it in the live service's shape, unset fields ``null``
(docs/reference/local-agent-api.md#implemented).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

__all__ = [
    "ENCODINGS",
    "PASSIVE_INPUT_KEYS",
    "RATES",
    "TOOL_ECHO_NULLS",
    "AudioFormat",
    "SessionConfig",
    "ToolDef",
    "TurnDetection",
    "config_echo",
]

ENCODINGS: Final = ("audio/pcm", "audio/pcmu", "audio/pcma")
#: The one sample rate of each encoding: PCM is 24 kHz only, G.711 8 kHz by definition.
RATES: Final = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
# Input fields the local agent accepts and echoes but has no use for (its STT takes no prompt or keyterms).
PASSIVE_INPUT_KEYS: Final = (
    "keyterms", "transcription_mode", "transcription_prompt", "language_codes", "voice_focus",
    "voice_focus_threshold", "continuous_partials",
)  # fmt: skip
#: Tool fields the agent keeps only to echo them (``null`` when unset).
TOOL_ECHO_NULLS: Final = ("http", "response_instructions", "deployment_id", "session_update", "image_tag")


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: str = "audio/pcm"

    @property
    def sample_rate(self) -> int:
        return RATES[self.encoding]

    def echo(self) -> dict[str, Any]:
        # Live echoes pcmu/pcma with sample_rate 8000 (docs/reference/local-agent-api.md#implemented, audio in and out).
        return {"encoding": self.encoding, "sample_rate": self.sample_rate}


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """What the client set in ``input.turn_detection`` (``None`` = unset; the agent applies its own defaults)."""

    vad_threshold: float | None = None
    min_silence: int | None = None
    max_silence: int | None = None
    interrupt_response: bool | None = None
    interruption_delay: int | None = None
    uninterruptible_turns: tuple[str, ...] | None = None
    type: str | None = None

    def echo(self) -> dict[str, Any]:
        return {
            "vad_threshold": self.vad_threshold,
            "min_silence": self.min_silence,
            "max_silence": self.max_silence,
            "interrupt_response": self.interrupt_response,
            "interruption_delay": self.interruption_delay,
            "uninterruptible_turns": list(self.uninterruptible_turns) if self.uninterruptible_turns else None,
            "type": self.type,
        }


@dataclass(frozen=True, slots=True)
class ToolDef:
    """One inline tool (the flat format). ``extra`` keeps other known fields (``http``…) for the echo."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: int = 120
    execution_mode: str = "interactive"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def echo(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
            "timeout_seconds": self.timeout_seconds,
            "execution_mode": self.execution_mode,
        }
        for key in TOOL_ECHO_NULLS:
            out[key] = self.extra.get(key)
        return out


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The resolved config of one session: what the client set, with defaults filled in."""

    voice: str
    system_prompt: str | None = None
    greeting: str | None = None
    input_format: AudioFormat = AudioFormat()
    output_format: AudioFormat = AudioFormat()
    volume: float | None = None
    turn_detection: TurnDetection | None = None
    tools: tuple[ToolDef, ...] = ()
    input_extra: Mapping[str, Any] = field(default_factory=dict)
    pre_connect_requests: tuple[Any, ...] = ()
    #: The stored agent the session was opened with (``session.update{agent_id}``); not echoed.
    agent_id: str | None = None

    def tool(self, name: str) -> ToolDef | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


def config_echo(config: SessionConfig, session_id: str) -> dict[str, Any]:
    """``session.ready.config`` / ``session.updated.config`` in the live shape (unset fields are null)."""
    input_: dict[str, Any] = {"type": "audio", "format": config.input_format.echo()}
    for key in PASSIVE_INPUT_KEYS:
        input_[key] = config.input_extra.get(key)
    input_["turn_detection"] = config.turn_detection.echo() if config.turn_detection else None
    return {
        "id": session_id,
        "system_prompt": config.system_prompt,
        "greeting": config.greeting,
        "input": input_,
        "output": {
            "type": "audio",
            "voice": config.voice,
            "format": config.output_format.echo(),
            "volume": config.volume,
        },
        "tools": [t.echo() for t in config.tools],
        "llm": [],
        "pre_connect_requests": list(config.pre_connect_requests),
    }

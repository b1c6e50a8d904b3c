"""A call core on a scripted carrier, for the synchronous tests of gateway/call/ (tests/unit/test_call_core*.py).

The dialect builds readable messages (``"media 2"``: a media message of two 20 ms frames, ``"mark g0.1"``,
``"clear"``), the agent format is G.711 passthrough (a 160-byte frame in is a 160-byte frame out), and prompts are
silence of a known length, so a test reads like a script: feed events at given times, pull what the carrier gets,
assert the actions."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from gateway.call.actions import Action, LogLine, Publish
from gateway.call.core import CallCore
from gateway.call.setup import CallSetup
from gateway.carriers.events import CarrierEvent, StreamStarted
from gateway.config import AudioSettings, HttpTool, Profile, ServerSettings, Settings

FRAME = b"\xff" * 160  # 20 ms of μ-law
PROMPT_FRAMES = 10  # every bundled prompt is 200 ms here


class ScriptDialect:
    """A pure dialect whose messages say what they are."""

    carrier = "script"
    frame_bytes = 160
    max_message_ms = 1000
    max_lead_ms: int | None = None
    checkpoint_proves_playback = False
    silence = 0xFF

    def __init__(self, *, min_message_ms: int = 20, marks: bool = True) -> None:
        self.min_message_ms = min_message_ms
        self._marks = marks

    def parse(self, data: str | bytes) -> list[CarrierEvent]:  # pragma: no cover - the tests feed events
        raise NotImplementedError

    def build_media(self, payload: bytes) -> str:
        return f"media {len(payload) // 160}"

    def build_mark(self, name: str) -> str | None:
        return f"mark {name}" if self._marks else None

    def build_clear(self) -> str:
        return "clear"


def start(**params: str) -> StreamStarted:
    return StreamStarted("MZ1", "CA1", "AC1", "audio/pcmu", 8000, custom_parameters=params)


def make_core(
    *,
    profile: Profile | None = None,
    dialect: ScriptDialect | None = None,
    now: float = 0.0,
    control: bool = False,
    tools: dict[str, HttpTool] | None = None,
    hold_audio: bytes = b"",
    params: dict[str, str] | None = None,
    **audio: Any,
) -> CallCore:
    audio_settings = dataclasses.replace(AudioSettings(agent_format="pcmu"), **audio)
    settings = Settings(
        audio=audio_settings, server=ServerSettings(max_call_s=60.0, no_media_timeout_s=4.0), tools=tools or {}
    )
    setup = CallSetup(start(**(params or {})), "default", profile or Profile(greeting=""))
    return CallCore(
        setup,
        settings,
        dialect or ScriptDialect(),
        now,
        prompt_audio=lambda name: FRAME * PROMPT_FRAMES,
        control_available=control,
        hold_audio=hold_audio,
    )


def live_core(**kw: Any) -> CallCore:
    core = make_core(**kw)
    core.agent_ready("sess_1", 0.0)
    return core


def pull(core: CallCore, now: float) -> list[str]:
    """Everything the carrier gets at ``now`` (what the shell's writer would send)."""
    out = []
    while (msg := core.carrier_data(now)) is not None:
        out.append(str(msg))
    return out


def kinds(actions: Sequence[Action]) -> list[str]:
    """Actions as short names: ``Publish`` and ``LogLine`` by their event name, the rest by class."""
    names = []
    for a in actions:
        if isinstance(a, Publish):
            names.append(a.event.kind)
        elif isinstance(a, LogLine):
            names.append("log:" + a.event)
        else:
            names.append(type(a).__name__)
    return names


def of_type(actions: Sequence[Action], kind: type) -> list[Any]:
    return [a for a in actions if isinstance(a, kind)]


def play_out(core: CallCore, now: float) -> list[str]:
    """Everything queued, pulled as the shell's writer would: now, then at each time the queue says to come back."""
    out = pull(core, now)
    while core.carrier_pending and core.outbound.wake_at is not None:
        out += pull(core, core.outbound.wake_at)
    return out

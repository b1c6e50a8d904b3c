"""What a session's replier runs, one at a time: the greeting, a caller's turn, ``reply.create``, tool answers.

Queued on the session (:attr:`.session.Session.jobs`, 32 at most), so a job queued before a socket dropped is run on the
resumed one. Plain data; a :class:`TurnJob` may carry the task working it out ahead
(docs/architecture/local-agent.md#working-ahead).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TypeAlias

from .brain import Step, ToolOutcome
from .synth_cache import Pieces

__all__ = ["CreateJob", "GreetJob", "Job", "Prepared", "ToolsJob", "TurnJob"]


@dataclass(frozen=True, slots=True)
class GreetJob:
    text: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A turn worked out ahead while the caller paused (TurnPausing): its text and, for a deterministic engine,
    the reply's steps and the first sentence already synthesized."""

    text: str
    steps: tuple[Step, ...] | None = None
    first_sentence: tuple[str, Pieces] | None = None
    #: The pending tool request (:attr:`.conversation.Conversation.slots`) the steps were worked out with.
    slots: object = None


@dataclass(frozen=True, slots=True)
class TurnJob:
    audio16k: bytes
    ended_at: float  # loop time the end of turn was decided
    #: Preparation started when the caller paused (TurnPausing) over exactly this audio.
    prepared: asyncio.Task[Prepared] | None = None
    #: TurnEnded.reason: "silence", "early"/"late" (adaptive), "max_silence", "max_turn".
    end_reason: str = "silence"
    #: Where the turn's speech ended (the detector's sample clock); -1: unknown.
    end_sample: int = -1


@dataclass(frozen=True, slots=True)
class CreateJob:
    instructions: str | None


@dataclass(frozen=True, slots=True)
class ToolsJob:
    outcomes: tuple[ToolOutcome, ...]


Job: TypeAlias = GreetJob | TurnJob | CreateJob | ToolsJob

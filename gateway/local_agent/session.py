"""A local-agent session: what lives from ``session.ready`` to ``session.end``, across sockets. Not pure (its job
queue and detach signal are asyncio's).

A :class:`Session` holds the config, the conversation, the tool calls in flight, the queued jobs and the caller's side
(:class:`~.hearing.Hearing`). It outlives an *unclean* disconnect for ``resume_window_s`` so ``session.resume`` on a new
socket picks it up where the old one left it: the config and conversation kept, the greeting not repeated, pending tool
calls still pending, a turn cut by the drop going on as the same turn (docs/reference/local-agent-api.md#implemented,
resume). The socket itself, and everything that runs, is the :class:`~.connection.Connection` attached to it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

import structlog

from . import protocol as proto
from .conversation import Conversation
from .hearing import POSTROLL_SAMPLES, PREROLL_SAMPLES
from .jobs import Job, ToolsJob
from .store.recorder import NULL_RECORDER, NullRecorder, Recorder
from .tool_calls import PendingCall, ToolCalls

if TYPE_CHECKING:
    from .connection import Connection
    from .hearing import Hearing

# POSTROLL_SAMPLES and PREROLL_SAMPLES stay importable from here for scripts/check_turn_ends.
__all__ = ["JOBS_MAX", "POSTROLL_SAMPLES", "PREROLL_SAMPLES", "Session"]

log = structlog.get_logger("local_agent")

#: Queued jobs per session; a full queue drops the new job (logged: ``local_agent.job_dropped``).
JOBS_MAX = 32


class Session:
    """A configured session: lives from ``session.ready`` to ``session.end`` (or the resume window running out)."""

    def __init__(
        self, session_id: str, config: proto.SessionConfig, *, now: float, expires_at: float, resume_token: str
    ) -> None:
        self.id = session_id
        self.config = config
        self.created_at = now  # wall clock, for session_duration_seconds
        self.expires_at = expires_at
        self.resume_token = resume_token
        self.conversation = Conversation()
        self.jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=JOBS_MAX)
        self.tool_calls = ToolCalls()
        self.connection: Connection | None = None
        self.detached_at: float | None = None
        self.detached = asyncio.Event()
        self.ended = False
        self.input_audio_s = 0.0
        self.hearing: Hearing | None = None  # created by the first connection (it needs the runtime's models)
        self.job_running = False  # a job taken off ``jobs`` is being run (by whichever connection is attached)
        #: Records the session (timeline, stereo recording) once the store knows it (:mod:`.store.recorder`).
        self.recorder: Recorder | NullRecorder = NULL_RECORDER

    @property
    def settled(self) -> bool:
        """Everything the caller said so far has been dealt with: all audio received has been heard, the caller
        is not mid-utterance, no turn is held, and no job is queued or running. A snapshot (the next frame may
        change it); tests and tools use it to wait for the agent, which can run seconds behind real time."""
        h = self.hearing
        return (h is None or h.caught_up) and self.jobs.empty() and not self.job_running

    @property
    def calls(self) -> Mapping[str, PendingCall]:
        """The session's tool calls not finished yet, by ``call_id`` (read-only; tests wait on them)."""
        return self.tool_calls.pending

    def enqueue(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("local_agent.job_dropped", session_id=self.id, job=type(job).__name__)

    def next_deadline(self) -> float | None:
        return self.tool_calls.next_deadline()

    def resolve_calls(self, now_loop: float) -> None:
        """Time out overdue calls, and queue the answer reply of every group whose calls are all resolved."""
        resolution = self.tool_calls.resolve(now_loop)
        for c in resolution.timed_out:
            log.info("local_agent.tool_timeout", session_id=self.id, tool=c.name, call_id=c.call_id)
        for outcomes in resolution.due:
            self.enqueue(ToolsJob(outcomes))

"""The caller's side of a session: everything between inbound audio and a finished turn. Not pure (the inbound
queue and the VAD call in flight are asyncio's); the rules it keeps state for are (:mod:`.turns`,
:mod:`.turn_merge`).

Per session, not per socket, so a socket that drops mid-utterance and comes back with ``session.resume``
continues the same turn (docs/reference/local-agent-api.md#implemented, resume). The :class:`~.listener.Listener`
of the connection attached to the session is the only code that works on it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Any

from . import protocol as proto
from .codec import VAD_RATE, InputDecoder
from .jobs import Prepared
from .settings import LocalAgentSettings
from .turn_merge import TurnMerge
from .turns import TurnDetector, TurnEvent, TurnKnobs, UtteranceBuffer

__all__ = ["INBOUND_MAX", "POSTROLL_SAMPLES", "PREROLL_SAMPLES", "Hearing", "Speculation", "turn_knobs"]

#: Inbound audio messages queued for the listener (~5 s of 20 ms frames); see :mod:`.connection`.
INBOUND_MAX = 250
#: Audio kept before the detector's speech start / after its end when a turn is cut out for STT.
PREROLL_SAMPLES = VAD_RATE * 200 // 1000
POSTROLL_SAMPLES = VAD_RATE * 100 // 1000


def turn_knobs(settings: LocalAgentSettings, config: proto.SessionConfig) -> TurnKnobs:
    """The turn detector's knobs: what the client set in ``turn_detection``, the agent's defaults elsewhere."""
    s = settings
    td = config.turn_detection or proto.TurnDetection()
    min_silence = td.min_silence if td.min_silence is not None else s.min_silence_ms
    max_silence = td.max_silence if td.max_silence is not None else max(s.max_silence_ms, min_silence)
    return TurnKnobs(
        vad_threshold=td.vad_threshold if td.vad_threshold is not None else s.vad_threshold,
        min_silence_ms=min_silence,
        max_silence_ms=max(max_silence, min_silence),
        interrupt_response=td.interrupt_response if td.interrupt_response is not None else True,
        backchannel_max_ms=s.backchannel_max_ms,
        speculate_ms=s.speculate_ms,
        judge_overlap=True,
    )


@dataclass(slots=True)
class Speculation:
    """Work started at a pause (TurnPausing) on the turn ``[start, end)`` so far: its audio and the task."""

    start: int
    end: int
    audio: bytes
    task: asyncio.Task[Prepared] | None = None


class Hearing:
    """The frames received but not yet heard, the input decoder, the VAD stream (Silero's recurrent state and
    context), the turn detector and its clock, the audio of the utterance so far, the speculative preparation, a
    VAD call still running when the socket closed, turn events not yet handled, and the turns held for merging.
    It runs no tasks itself (the speculation task belongs to a connection's task group and is restarted on
    resume)."""

    def __init__(self, decoder: InputDecoder, vad: Any, detector: TurnDetector) -> None:
        #: Bounded at INBOUND_MAX by the connection's reader, not by the queue itself, so a socket being taken
        #: over can hand on everything it had received (:meth:`.connection.Connection.take_over`).
        self.inbound: asyncio.Queue[bytes] = asyncio.Queue()
        self.room = asyncio.Event()  # set when inbound is below INBOUND_MAX (or a take-over wakes the reader)
        self.room.set()
        self.decoder = decoder
        self.vad = vad
        self.detector = detector
        self.utterance = UtteranceBuffer()
        self.spec: Speculation | None = None
        #: A VAD call (in the pool) whose probabilities the detector has not seen yet: set while it runs, and
        #: left set when the socket closed during it, so the next connection feeds them in first.
        self.vad_pending: asyncio.Future[list[float]] | None = None
        #: Turn events decided but not yet fully handled (a socket that closes mid-event leaves the rest here).
        self.backlog: deque[TurnEvent] = deque()
        self.merge = TurnMerge()
        self.turn_over = asyncio.Event()  # set whenever the detector is seen outside a caller's turn

    @property
    def held_text(self) -> str | None:
        """A turn whose reply was held because the caller kept talking (:class:`~.turn_merge.TurnMerge`)."""
        return self.merge.held_text

    @property
    def caught_up(self) -> bool:
        """No audio waiting to be heard, no turn event or speculation pending, no speech in progress, nothing
        held."""
        return (
            self.inbound.empty()
            and self.vad_pending is None
            and not self.backlog
            and self.spec is None
            and not self.detector.caller_speaking
            and self.merge.held_text is None
        )

    def turn_audio(self, start: int, end: int) -> bytes:
        """The 16 kHz audio of a turn the detector reported, with a little before and after it."""
        return self.utterance.slice(start - PREROLL_SAMPLES, end + POSTROLL_SAMPLES)

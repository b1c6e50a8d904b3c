"""When one utterance became two turns: which transcribed turn is answered now, which is held and answered with the
caller's next turn, and which waits for the caller's new turn to end first. Pure.

An end of turn can come too early: the caller pauses, the silence timer (or an early verdict) ends the turn, and
they go on. docs/architecture/local-agent.md#turn-detection and #barge-in say what the caller gets then, and this module
decides it, on the detector's sample clock (16 kHz sample positions, never wall time):

- A turn transcribed while the caller is talking again, their new turn having started less than
  :data:`CONTINUE_SAMPLES` after this turn's speech ended, is *held* (``local_agent.turn_held``): its reply would
  be spoken over the caller, and the two parts are one sentence. It is answered together with the next turn.
- A turn transcribed while the caller is talking again after a real pause is a turn of its own, merely transcribed
  late (the agent fell behind real time): it is answered on its own, once the new turn is over
  (``local_agent.turn_deferred``).
- A turn ended by an *early* verdict is remembered while it is answered: if the caller goes on within the plain
  timer (``BargeIn.continuation``), its reply is interrupted and it is held, to be answered with what follows.
"""

from __future__ import annotations

from dataclasses import dataclass

from .turns import SAMPLE_RATE

__all__ = ["CONTINUE_SAMPLES", "Answer", "Hold", "TurnMerge"]

#: Speech that starts again this soon after a turn's speech ended continues that turn (its reply is held and the
#: two are answered together); later speech is a new turn. Longer than any end-of-turn silence (early 400 ms,
#: min_silence 600 ms, late 1000 ms) plus a Whisper run on time (~0.3 s), so an end of turn called too early is
#: still caught, while a caller who paused for seconds is not merged just because the agent was slow.
CONTINUE_SAMPLES = SAMPLE_RATE * 1500 // 1000


@dataclass(frozen=True, slots=True)
class Hold:
    """Do not answer now: the text is held and answered with the caller's next turn."""

    text: str


@dataclass(frozen=True, slots=True)
class Answer:
    """Answer ``text``; if ``after_turn`` is set, only once the caller's turn that started there has ended (so the
    reply is not spoken over them)."""

    text: str
    after_turn: int | None = None


class TurnMerge:
    """One session's held and early-ended turns (it outlives a socket, with the rest of the caller's side)."""

    __slots__ = ("early_text", "held_text")

    def __init__(self) -> None:
        #: A turn whose reply was held because the caller kept talking.
        self.held_text: str | None = None
        #: The last turn answered, if an early verdict ended it (see ``BargeIn.continuation``).
        self.early_text: str | None = None

    def continuation(self) -> None:
        """The caller went on after a turn that ended early, over its reply: that turn is held, to be answered
        with what they are saying now, as when they go on before the reply starts."""
        if self.early_text:
            self.held_text, self.early_text = self.early_text, None

    def transcribed(self, text: str, *, end_sample: int, turn_start: int | None) -> Hold | Answer:
        """A finished turn's text is known. ``end_sample``: where its speech ended (-1: unknown);
        ``turn_start``: where the caller's current turn started, if they are talking again."""
        if self.held_text:
            text = f"{self.held_text} {text}"
            self.held_text = None
        if turn_start is not None and (end_sample < 0 or turn_start - end_sample < CONTINUE_SAMPLES):
            self.held_text = text
            return Hold(text)
        return Answer(text, after_turn=turn_start)

    def answering(self, text: str, *, end_reason: str) -> None:
        """``text`` is being answered now; ``end_reason`` is how its turn ended (``TurnEnded.reason``). Called only
        once any wait for the caller's turn is over, so a continuation in that wait cannot take this turn."""
        self.early_text = text if end_reason == "early" else None

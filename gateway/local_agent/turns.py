"""Turn detection for the local agent: VAD speech probabilities in, turn decisions out. Pure.

No models, no clock, no asyncio. :class:`TurnDetector` is fed one Silero probability per 32 ms window (time is the
window count, i.e. sample positions at 16 kHz, never wall clock) together with whether the agent is currently
speaking, and returns :data:`TurnEvent` values:

- :class:`SpeechStarted`: the caller started a turn while the agent was silent (→ ``input.speech.started``).
- :class:`BargeIn`: the caller has spoken over a reply for longer than a back-channel, and interrupting is allowed
  (→ stop the reply: ``input.speech.started``, ``transcript.agent{interrupted}``, ``reply.done{interrupted}``;
  docs/architecture/local-agent.md#barge-in). The speech then goes on as the caller's turn.
- :class:`TurnEnded`: end of the caller's turn (→ ``input.speech.stopped``, then transcribe
  ``[start_sample, end_sample)``).
- :class:`TurnPausing`: the caller has been silent for ``speculate_ms`` inside a turn, so the turn will probably
  end at ``end_sample`` unless they speak again. The session starts transcribing then, so the text is ready when
  :class:`TurnEnded` confirms the same span (the transcription is thrown away if speech resumes).
- :class:`SpeechDiscarded`: speech over a reply that ended while the reply was still playing and was too short to
  interrupt ("uh-huh", "okay": a back-channel), or was not allowed to interrupt.

Semantic barge-in (``judge_overlap``; docs/architecture/local-agent.md#barge-in): sound over an interruptible reply
*holds* the reply at once and the words decide, so the caller is not talked over while that is worked out:

- :class:`OverlapStarted`: the first speech window over an interruptible reply (and again whenever the caller
  speaks on after an :class:`OverlapPausing`) → stop sending the reply's audio (hold it; it resumes where it was).
- :class:`OverlapPausing`: the caller paused inside that speech → judge its words so far; the session then either
  calls :meth:`TurnDetector.commit_overlap` (a real interruption: a :class:`BargeIn`) or lets the reply go on.
- :class:`SpeechDiscarded` ends a held overlap that was noise, or a back-channel that is over → let the reply go on.
- Voiced time over a reply of ``backchannel_max_ms`` is an interruption whatever the words (:class:`BargeIn`).

Adaptive end of turn: once the speculative transcript of a pause is known, the session may tell the detector how
long the silence after *that* speech must last (:meth:`TurnDetector.set_pause_verdict`, policy in
:func:`pause_verdict`): shorter when the words are a complete, confidently understood request, longer when they
stop mid-sentence. The verdict is tied to the end of the speech it judged, so any new speech voids it.

Knobs (the client's ``turn_detection``, the agent's settings by default): ``vad_threshold`` (a window at or
above it is speech; below ``vad_threshold - 0.15`` is silence, in between keeps the current state: Silero's usual
hysteresis),
``min_silence_ms`` (confident silence that ends a turn), ``max_silence_ms`` (time since the last confident speech
window that forces the end of a turn even when the line hovers in the ambiguous band, e.g. noise),
``interrupt_response`` and ``backchannel_max_ms`` (voiced time over a reply below which speech is a back-channel).

:class:`UtteranceBuffer` keeps recent 16 kHz audio addressed by absolute sample position so the session can cut
out a turn the detector reported.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "BargeIn",
    "OverlapPausing",
    "OverlapStarted",
    "OverlapVerdict",
    "SpeechDiscarded",
    "SpeechStarted",
    "TurnDetector",
    "TurnEnded",
    "TurnEvent",
    "TurnKnobs",
    "TurnPausing",
    "UtteranceBuffer",
    "pause_verdict",
]

SAMPLE_RATE = 16000
WINDOW_SAMPLES = 512  # Silero's only window at 16 kHz (docs/architecture/speech-stack.md#vad)


@dataclass(frozen=True, slots=True)
class TurnKnobs:
    vad_threshold: float = 0.5
    min_silence_ms: int = 600
    max_silence_ms: int = 3000
    interrupt_response: bool = True
    backchannel_max_ms: int = 600
    #: Voiced time before a sound counts as speech at all (filters clicks and breaths).
    start_ms: int = 96
    #: A candidate that goes quiet this long before reaching ``start_ms`` was noise.
    candidate_reset_ms: int = 256
    #: Force the end of a turn this long after it started (Whisper reads at most 30 s).
    max_turn_ms: int = 28000
    #: Hysteresis below ``vad_threshold`` (Silero's recommended 0.15).
    hysteresis: float = 0.15
    #: Silence inside a turn after which :class:`TurnPausing` is reported (0: never). Whisper takes ~0.3 s and
    #: the first sentence's synthesis ~0.1 s, so starting them this far into the silence has the reply ready
    #: about when ``min_silence_ms`` ends the turn. Shorter pauses (commas) cost a wasted transcription.
    speculate_ms: int = 160
    #: Semantic barge-in: hold the reply at the first sound over it and let its words decide (module docstring).
    #: Off by default here so the plain duration rule stays testable on its own; the local agent turns it on.
    judge_overlap: bool = False
    #: Silence inside held speech over a reply after which its words are judged (:class:`OverlapPausing`). Apart
    #: from ``speculate_ms``: a judgement sooner in the pause would read less of a word's clipped end ("Stop.").
    judge_pause_ms: int = 96


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    start_sample: int


@dataclass(frozen=True, slots=True)
class BargeIn:
    start_sample: int
    at_sample: int
    #: The caller went on speaking after a turn that an *early* verdict ended, sooner than ``min_silence_ms``
    #: would have ended it: the same utterance, cut too soon. Decided as soon as it is speech (``start_ms``),
    #: not after ``backchannel_max_ms``, so a short continuation ("…on Sunday?") is not dropped as a
    #: back-channel; the session answers both parts together.
    continuation: bool = False


@dataclass(frozen=True, slots=True)
class TurnEnded:
    start_sample: int
    end_sample: int
    #: Why: "silence" (min_silence), "early"/"late" (a pause verdict), "max_silence", or "max_turn".
    reason: str


@dataclass(frozen=True, slots=True)
class TurnPausing:
    start_sample: int
    end_sample: int


@dataclass(frozen=True, slots=True)
class OverlapStarted:
    start_sample: int


@dataclass(frozen=True, slots=True)
class OverlapPausing:
    start_sample: int
    end_sample: int


@dataclass(frozen=True, slots=True)
class OverlapVerdict:
    """Not the detector's: the session's judgement of the words of an :class:`OverlapPausing` (``seq`` says which
    one), queued with the detector's events so it is handled in order with them."""

    start_sample: int
    end_sample: int
    interrupt: bool
    seq: int
    text: str = ""


@dataclass(frozen=True, slots=True)
class SpeechDiscarded:
    start_sample: int
    end_sample: int
    voiced_ms: int


TurnEvent: TypeAlias = (
    SpeechStarted
    | BargeIn
    | TurnEnded
    | TurnPausing
    | SpeechDiscarded
    | OverlapStarted
    | OverlapPausing
    | OverlapVerdict
)


class _State(enum.Enum):
    IDLE = "idle"  # no speech
    CANDIDATE = "candidate"  # a sound, not yet long enough to be speech
    TURN = "turn"  # the caller's turn (speech.started has been reported, or a barge-in happened)
    OVERLAP = "overlap"  # speech over a reply, not (yet) an interruption


class TurnDetector:
    """One caller's turn-taking state. Feed :meth:`push` every probability the VAD produces, in order."""

    __slots__ = (
        "knobs", "_state", "_window", "_start", "_voiced", "_silence_run", "_last_voiced_end", "_last_sure", "_barged",
        "_verdict_end", "_verdict_ms", "_early_end", "_held", "_overlap_paused",
    )  # fmt: skip

    def __init__(self, knobs: TurnKnobs | None = None) -> None:
        self.knobs = knobs or TurnKnobs()
        self._window = 0  # index of the next window
        self._early_end = -1  # speech end of the last turn an early verdict ended
        self._reset_utterance()

    def _reset_utterance(self) -> None:
        self._state = _State.IDLE
        self._start = 0
        self._voiced = 0  # windows at or above the threshold in the current utterance
        self._silence_run = 0  # consecutive windows below the negative threshold
        self._last_voiced_end = 0  # sample position just after the last speech window
        self._last_sure = 0  # index of the last window at or above the threshold
        self._barged = False  # at most one barge-in per utterance
        self._verdict_end = -1  # set_pause_verdict: the speech end it judged…
        self._verdict_ms = 0  # …and the silence that ends the turn after it
        self._held = False  # judge_overlap: an OverlapStarted was reported for this utterance
        self._overlap_paused = False  # …and an OverlapPausing since its last speech window

    @property
    def position(self) -> int:
        """Samples consumed so far (the detector's clock)."""
        return self._window * WINDOW_SAMPLES

    @property
    def caller_has_turn(self) -> bool:
        """The caller is in the middle of a turn (reported as started and not yet ended)."""
        return self._state is _State.TURN

    @property
    def turn_start(self) -> int | None:
        """Where the caller's current turn started (sample position), while they have the turn."""
        return self._start if self._state is _State.TURN else None

    @property
    def caller_speaking(self) -> bool:
        """Any confirmed speech is in progress (a turn, or speech over a reply)."""
        return self._state in (_State.TURN, _State.OVERLAP)

    @property
    def overlap_start(self) -> int | None:
        """Where the caller's speech over a reply started, while it is held for judging (``judge_overlap``)."""
        return self._start if self._held and self._state in (_State.CANDIDATE, _State.OVERLAP) else None

    def reset(self) -> None:
        """Drop any utterance in progress (the clock keeps running)."""
        self._reset_utterance()

    def commit_overlap(self, start_sample: int) -> BargeIn | None:
        """The words of the held speech over a reply starting at ``start_sample`` are a real interruption: the
        caller takes the turn (a :class:`BargeIn`, as the duration rule gives). ``None`` if that speech is no
        longer held (it ended, or was already decided)."""
        if self.overlap_start != start_sample or self._state is not _State.OVERLAP:
            return None
        ev = self._barge_in()
        return BargeIn(ev.start_sample, self.position)  # between pushes: decided at the clock as it stands

    def set_pause_verdict(self, end_sample: int, silence_ms: int) -> bool:
        """The caller's turn, if its speech still ends at ``end_sample`` (the :class:`TurnPausing` it was judged
        on), ends after ``silence_ms`` of silence instead of ``min_silence_ms``. Speech after that point voids it
        (the turn goes back to ``min_silence_ms``). Returns whether it applies. If the silence is already that
        long, the turn ends on the next window pushed."""
        if self._state is not _State.TURN or end_sample != self._last_voiced_end:
            return False
        self._verdict_end, self._verdict_ms = end_sample, silence_ms
        return True

    def push(self, probs: Iterable[float], *, agent_speaking: bool, interruptible: bool = True) -> list[TurnEvent]:
        """Consume probabilities for consecutive windows. ``agent_speaking``: a reply is being sent right now;
        ``interruptible``: that reply may be interrupted (false for ``uninterruptible_turns``)."""
        events: list[TurnEvent] = []
        for p in probs:
            ev = self._step(p, agent_speaking, interruptible and self.knobs.interrupt_response)
            if ev is not None:
                events.append(ev)
            self._window += 1
        return events

    def _ms(self, windows: int) -> int:
        return windows * WINDOW_SAMPLES * 1000 // SAMPLE_RATE

    def _step(self, p: float, agent_speaking: bool, may_interrupt: bool) -> TurnEvent | None:
        k = self.knobs
        speech = p >= k.vad_threshold
        silence = p < k.vad_threshold - k.hysteresis
        i = self._window
        if speech:
            self._voiced += 1
            self._silence_run = 0
            self._last_voiced_end = (i + 1) * WINDOW_SAMPLES
            self._last_sure = i
        elif silence:
            self._silence_run += 1

        state = self._state
        judge = k.judge_overlap and agent_speaking and may_interrupt
        if state is _State.IDLE:
            if speech:
                self._state = _State.CANDIDATE
                self._start = i * WINDOW_SAMPLES
                self._voiced = 1
                if judge:
                    # Hold the reply at the first sound: undone at once if it proves to be a click.
                    self._held = True
                    return OverlapStarted(self._start)
                return self._maybe_confirm(agent_speaking, may_interrupt)
            self._voiced = 0
            return None

        if state is _State.CANDIDATE:
            if self._ms(self._silence_run) >= k.candidate_reset_ms:
                ev = SpeechDiscarded(self._start, self._last_voiced_end, self._ms(self._voiced)) if self._held else None
                self._reset_utterance()
                return ev
            return self._maybe_confirm(agent_speaking, may_interrupt)

        if state is _State.OVERLAP:
            # Over when the silence is long enough, or (held: the reply waits on it) the line has hovered in the
            # ambiguous band that long again since the last confident speech.
            quiet = self._ms(self._silence_run) >= k.min_silence_ms
            if quiet or (self._held and self._ms(i - self._last_sure) >= 2 * k.min_silence_ms):
                ev = SpeechDiscarded(self._start, self._last_voiced_end, self._ms(self._voiced))
                self._reset_utterance()
                return ev
            if agent_speaking:
                if may_interrupt and self._ms(self._voiced) >= k.backchannel_max_ms:
                    return self._barge_in()
                if judge and self._held:
                    if speech and self._overlap_paused:
                        self._overlap_paused = False
                        return OverlapStarted(self._start)  # speaking on: hold again until judged again
                    pause_windows = max(1, -(-k.judge_pause_ms * SAMPLE_RATE // (1000 * WINDOW_SAMPLES)))
                    if silence and self._silence_run == pause_windows:
                        self._overlap_paused = True
                        return OverlapPausing(self._start, self._last_voiced_end)
                return None
            if speech:
                # The reply ended while the caller was still talking: their speech is a turn after all.
                self._state = _State.TURN
                return SpeechStarted(self._start)
            return None

        # TURN
        if agent_speaking and may_interrupt and speech and not self._barged:
            if self._ms(self._voiced) >= k.backchannel_max_ms:
                # A reply started while the caller was still mid-turn (an end of turn called too early): the
                # caller wins, and their turn goes on.
                return self._barge_in()
        end = (i + 1) * WINDOW_SAMPLES
        limit = self._verdict_ms if self._verdict_end == self._last_voiced_end else k.min_silence_ms
        # An early verdict counts from the last speech window, ambiguous windows included: after a finished sentence
        # Silero's probability often lingers in the hysteresis band for 0.1-0.2 s, and that is not speech either.
        silent_windows = i - self._last_sure if limit < k.min_silence_ms else self._silence_run
        if self._ms(silent_windows) >= limit:
            if limit == k.min_silence_ms:
                return self._end("silence")
            return self._end("early" if limit < k.min_silence_ms else "late")
        if self._ms(i - self._last_sure) >= k.max_silence_ms:
            return self._end("max_silence")
        if (end - self._start) * 1000 // SAMPLE_RATE >= k.max_turn_ms:
            return self._end("max_turn", end)
        speculate_windows = -(-k.speculate_ms * SAMPLE_RATE // (1000 * WINDOW_SAMPLES))  # ceil
        if k.speculate_ms and silence and self._silence_run == speculate_windows:
            return TurnPausing(self._start, self._last_voiced_end)
        return None

    def _maybe_confirm(self, agent_speaking: bool, may_interrupt: bool) -> TurnEvent | None:
        if self._ms(self._voiced) < self.knobs.start_ms:
            return None
        early_end, self._early_end = self._early_end, -1
        continuing = early_end >= 0 and (self._start - early_end) * 1000 // SAMPLE_RATE < self.knobs.min_silence_ms
        if agent_speaking and may_interrupt and continuing:
            ev = self._barge_in()
            return BargeIn(ev.start_sample, ev.at_sample, continuation=True)
        if agent_speaking:
            self._state = _State.OVERLAP
            if may_interrupt and self._ms(self._voiced) >= self.knobs.backchannel_max_ms:
                return self._barge_in()
            if self.knobs.judge_overlap and may_interrupt and not self._held:
                self._held = True  # the reply started during the candidate
                return OverlapStarted(self._start)
            return None
        self._state = _State.TURN
        return SpeechStarted(self._start)

    def _barge_in(self) -> BargeIn:
        self._state = _State.TURN
        self._barged = True
        self._held = self._overlap_paused = False
        return BargeIn(self._start, (self._window + 1) * WINDOW_SAMPLES)

    def _end(self, reason: str, end_sample: int | None = None) -> TurnEnded:
        ev = TurnEnded(self._start, end_sample if end_sample is not None else self._last_voiced_end, reason)
        self._reset_utterance()
        if reason == "early":
            self._early_end = ev.end_sample
        return ev


#: Words after which a sentence is not over ("I'd like a table for…", "and…", "my…"): the caller is probably
#: looking for the next word, so the turn waits longer instead of ending. Only words that cannot end an English
#: sentence: not pronouns or demonstratives ("I don't need that."), not auxiliaries ("Can you?").
_OPEN_ENDINGS = frozenset(
    """
    a an the and or but because if than for to of in on at by from into onto about with without as like
    my your our their his her its i'm i'd um uh er erm
    """.split()
)
#: …and words that leave a statement open but end a question ("my number is" / "do you know where it is?").
_OPEN_UNLESS_QUESTION = frozenset("is are was were".split())
_WORD = re.compile(r"[a-z']+")


def pause_verdict(
    text: str,
    intent: str | None,
    score: float | None,
    *,
    min_silence_ms: int,
    early_ms: int,
    late_ms: int,
    confident: float,
) -> int | None:
    """How long the silence after a pause's speech should be for the turn to end, judged on the speculative
    transcript ``text`` and what the intent engine made of it; ``None`` keeps ``min_silence_ms``. Pure.

    - ``late_ms`` when the words stop mid-sentence: a trailing conjunction, preposition, article, possessive or
      "is"/"are" outside a question ("…a table for", "my number is", "and"), or a trailing comma or ellipsis.
    - ``early_ms`` when the words are a finished sentence (final ``.``/``?``/``!``) that the intent engine matched
      at ``score >= confident``.
    - otherwise ``None``.
    """
    t = text.strip()
    if not t:
        return None
    words = _WORD.findall(t.lower())
    last = words[-1] if words else ""
    if (
        t.endswith((",", "...", "…", "-", ":", ";"))
        or last in _OPEN_ENDINGS
        or (last in _OPEN_UNLESS_QUESTION and not t.endswith("?"))
    ):
        return late_ms if late_ms > min_silence_ms else None
    if not t.endswith((".", "?", "!")):
        return None  # unpunctuated (Whisper leaves short answers so at times): no evidence either way
    if intent is not None and score is not None and score >= confident and early_ms < min_silence_ms:
        return early_ms
    return None


class UtteranceBuffer:
    """Recent 16 kHz PCM16 addressed by absolute sample position (the detector's clock). Pure.

    Holds at most ``keep_s`` seconds (trimmed in batches so appends stay cheap).
    """

    __slots__ = ("_buf", "_first", "_keep")

    def __init__(self, keep_s: float = 32.0) -> None:
        self._buf = bytearray()
        self._first = 0  # absolute sample index of _buf[0]
        self._keep = int(keep_s * SAMPLE_RATE)

    @property
    def end(self) -> int:
        """Absolute sample position just after the newest sample held."""
        return self._first + len(self._buf) // 2

    def push(self, pcm16: bytes) -> None:
        self._buf += pcm16[: len(pcm16) - len(pcm16) % 2]
        held = len(self._buf) // 2
        if held > self._keep * 3 // 2:
            drop = held - self._keep
            del self._buf[: drop * 2]
            self._first += drop

    def slice(self, start: int, end: int) -> bytes:
        """Samples ``[start, end)``, clamped to what is still held."""
        s = max(start, self._first) - self._first
        e = max(min(end, self.end), self._first) - self._first
        if e <= s:
            return b""
        return bytes(self._buf[s * 2 : e * 2])

    def clear(self) -> None:
        self._first = self.end
        self._buf.clear()

"""Semantic barge-in, the pure parts: the turn detector holding a reply at the first sound over it and asking for a
judgement at the caller's pause (``judge_overlap``), and the words rule that judges
(gateway/local_agent/backchannel.py).
Timelines as in test_turns.py: one character per 32 ms window, ``#`` speech, ``.`` silence, ``~`` ambiguous."""

from __future__ import annotations

import pytest

from gateway.local_agent.backchannel import is_interruption
from gateway.local_agent.turns import (
    WINDOW_SAMPLES,
    BargeIn,
    OverlapPausing,
    OverlapStarted,
    SpeechDiscarded,
    SpeechStarted,
    TurnDetector,
    TurnEnded,
    TurnEvent,
    TurnKnobs,
    TurnPausing,
)

P = {"#": 0.9, ".": 0.05, "~": 0.42}
W = WINDOW_SAMPLES
JUDGE = TurnKnobs(judge_overlap=True, speculate_ms=96)


def feed(d: TurnDetector, timeline: str, speaking: bool = True, interruptible: bool = True) -> list[TurnEvent]:
    return d.push([P[c] for c in timeline], agent_speaking=speaking, interruptible=interruptible)


@pytest.mark.parametrize(
    "text",
    ["Stop.", "stop", "Wait, stop.", "Hold on a second.", "Sorry, that's not right.", "What time do you close?",
     "No.", "Can you repeat that?", "Is it open on Sunday", "Actually, I want something else.", "Hello?",
     "Excuse me.", "Could you say that again?", "why"],
)  # fmt: skip
def test_words_that_ask_the_agent_to_stop_or_answer_interrupt(text: str) -> None:
    assert is_interruption(text)


@pytest.mark.parametrize(
    "text",
    ["Uh-huh.", "Mm-hmm.", "Yeah.", "Okay.", "Right.", "Right?", "Okay?", "Sure.", "I see.", "Got it.",
     "Yeah, makes sense.", "Great.", "That is great.", "", "Thank you.", "in my mom.", "Wow.", "MMO"],
)  # fmt: skip
def test_acknowledgements_and_misheard_hums_do_not(text: str) -> None:
    assert not is_interruption(text)


def test_the_first_sound_over_a_reply_holds_it_and_a_click_lets_it_go() -> None:
    d = TurnDetector(JUDGE)
    assert feed(d, "....") == []
    assert feed(d, "#") == [OverlapStarted(4 * W)]  # the first speech window: hold at once
    assert d.overlap_start == 4 * W
    out = feed(d, "." * 8)  # 256 ms of silence: it was a click
    assert out == [SpeechDiscarded(4 * W, 5 * W, 32)]
    assert d.overlap_start is None and not d.caller_speaking


def test_a_pause_asks_for_a_judgement_and_committing_it_is_a_barge_in_that_becomes_the_turn() -> None:
    d = TurnDetector(JUDGE)
    assert feed(d, "#" * 10) == [OverlapStarted(0)]
    assert feed(d, "...") == [OverlapPausing(0, 10 * W)]  # 96 ms into the pause
    assert d.commit_overlap(0) == BargeIn(0, 13 * W)
    assert d.caller_has_turn and d.overlap_start is None
    assert d.commit_overlap(0) is None  # decided once
    out = feed(d, "." * 19, speaking=False)
    assert out == [TurnEnded(0, 10 * W, "silence")]


def test_a_back_channel_left_alone_ends_as_discarded_speech_and_a_late_commit_does_nothing() -> None:
    d = TurnDetector(JUDGE)
    out = feed(d, "#" * 10 + "." * 19)
    assert out == [OverlapStarted(0), OverlapPausing(0, 10 * W), SpeechDiscarded(0, 10 * W, 320)]
    assert d.commit_overlap(0) is None and not d.caller_speaking


def test_speaking_on_after_a_pause_holds_again_and_is_judged_again_at_the_next_pause() -> None:
    d = TurnDetector(JUDGE)
    out = feed(d, "#" * 5 + "...." + "#" * 5 + "...")
    assert out == [OverlapStarted(0), OverlapPausing(0, 5 * W), OverlapStarted(0), OverlapPausing(0, 14 * W)]


def test_long_speech_over_a_reply_interrupts_on_its_duration_without_a_judgement() -> None:
    d = TurnDetector(JUDGE)
    out = feed(d, "#" * 19)
    assert out == [OverlapStarted(0), BargeIn(0, 19 * W)]  # backchannel_max_ms (600) of voiced time


def test_a_held_overlap_hovering_in_the_ambiguous_band_is_let_go() -> None:
    d = TurnDetector(JUDGE)
    out = feed(d, "#" * 5 + "~" * 40)
    assert out[0] == OverlapStarted(0) and out[-1] == SpeechDiscarded(0, 5 * W, 160)
    assert d.overlap_start is None


def test_nothing_is_held_over_an_uninterruptible_reply_or_with_the_agent_silent() -> None:
    d = TurnDetector(JUDGE)
    assert feed(d, "#" * 10 + "." * 19, interruptible=False) == [SpeechDiscarded(0, 10 * W, 320)]
    d = TurnDetector(JUDGE)
    assert feed(d, "#" * 4, speaking=False) == [SpeechStarted(0)]


def test_without_judge_overlap_the_detector_behaves_as_before() -> None:
    d = TurnDetector(TurnKnobs(speculate_ms=96))
    assert feed(d, "#" * 10 + "." * 19) == [SpeechDiscarded(0, 10 * W, 320)]


@pytest.mark.parametrize("text", ["start.", "Wake, stop.", "stuff.", "That stuff."])
def test_how_whisper_misreads_a_short_stop_or_wait_still_interrupts(text: str) -> None:
    assert is_interruption(text)


def test_a_replys_first_audio_loses_the_silence_it_opens_with_but_5_ms() -> None:
    import numpy as np

    from gateway.local_agent.speaker import trim_leading_silence

    quiet = np.full(960, 40, dtype="<i2")  # 40 ms of near-silence at 24 kHz
    loud = np.tile(np.array([5000, -5000], dtype="<i2"), 240)
    out = np.frombuffer(trim_leading_silence(quiet.tobytes() + loud.tobytes()), dtype="<i2")
    assert len(out) == 120 + 480 and (out[120:] == loud).all()
    assert trim_leading_silence(quiet.tobytes()) == quiet.tobytes()  # all quiet: left alone


def test_held_speech_is_judged_96_ms_into_a_pause_however_soon_turns_are_worked_out_ahead() -> None:
    d = TurnDetector(TurnKnobs(judge_overlap=True, speculate_ms=32))
    assert feed(d, "#" * 10 + "..") == [OverlapStarted(0)]  # 64 ms: not yet (a clipped "Stop." ends in silence)
    assert feed(d, ".") == [OverlapPausing(0, 10 * W)]
    d = TurnDetector(TurnKnobs(speculate_ms=32))
    assert feed(d, "#" * 10, speaking=False) == [SpeechStarted(0)]
    assert feed(d, ".", speaking=False) == [TurnPausing(0, 10 * W)]  # the caller's own turn: at once

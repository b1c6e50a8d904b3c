"""The pure turn detector (gateway/local_agent/turns.py): speech start, end of turn, barge-in and back-channels
decided from VAD probabilities, one per 32 ms window. Timelines are written as strings, one character per window:
``#`` speech (0.9), ``.`` silence (0.05), ``~`` ambiguous (0.42: below the 0.5 threshold, above 0.35)."""

from __future__ import annotations

import pytest

from gateway.local_agent.turns import (
    WINDOW_SAMPLES,
    BargeIn,
    SpeechDiscarded,
    SpeechStarted,
    TurnDetector,
    TurnEnded,
    TurnEvent,
    TurnKnobs,
    TurnPausing,
    UtteranceBuffer,
    pause_verdict,
)

P = {"#": 0.9, ".": 0.05, "~": 0.42}
W = WINDOW_SAMPLES


def probs(timeline: str) -> list[float]:
    return [P[c] for c in timeline.replace(" ", "")]


def run(
    segments: list[tuple[str, bool]],
    knobs: TurnKnobs | None = None,
    interruptible: bool = True,
    pausing: bool = False,
) -> list[TurnEvent]:
    """Feed ``(timeline, agent_speaking)`` segments in order; :class:`TurnPausing` hints only if ``pausing``."""
    d = TurnDetector(knobs)
    out: list[TurnEvent] = []
    for timeline, speaking in segments:
        out += d.push(probs(timeline), agent_speaking=speaking, interruptible=interruptible)
    return out if pausing else [e for e in out if not isinstance(e, TurnPausing)]


SIL = "." * 19  # 608 ms: just past the default 600 ms min_silence


@pytest.mark.parametrize(
    "name,segments,knobs,expected",
    [
        (
            "a turn while the agent is silent",
            [("....", False), ("#" * 10, False), (SIL, False)],
            None,
            [SpeechStarted(4 * W), TurnEnded(4 * W, 14 * W, "silence")],
        ),
        ("a click is not speech", [("##" + "." * 30, False)], None, []),
        (
            "a short pause inside a turn does not end it",
            [("#" * 10 + "." * 10 + "#" * 5 + SIL, False)],
            None,
            [SpeechStarted(0), TurnEnded(0, 25 * W, "silence")],
        ),
        (
            "min_silence is a knob",
            [("#" * 10 + "." * 10, False)],
            TurnKnobs(min_silence_ms=300),
            [SpeechStarted(0), TurnEnded(0, 10 * W, "silence")],
        ),
        (
            "ambiguous windows keep a turn open until max_silence",
            [("#" * 10 + "~" * 100, False)],
            TurnKnobs(max_silence_ms=1000),
            [SpeechStarted(0), TurnEnded(0, 10 * W, "max_silence")],
        ),
        ("vad_threshold is a knob", [("#" * 20 + SIL, False)], TurnKnobs(vad_threshold=0.95), []),
        (
            "a back-channel over a reply is discarded",
            [("#" * 15 + SIL, True)],
            None,
            [SpeechDiscarded(0, 15 * W, 480)],
        ),
        (
            "speech over a reply longer than a back-channel barges in",
            [("#" * 25, True), (SIL, False)],
            None,
            [BargeIn(0, 19 * W), TurnEnded(0, 25 * W, "silence")],
        ),
        (
            "backchannel_max_ms is a knob",
            [("#" * 25, True)],
            TurnKnobs(backchannel_max_ms=1000),
            [],
        ),
        (
            "interrupt_response false: no barge-in, and speech ending during the reply is discarded",
            [("#" * 40 + SIL, True)],
            TurnKnobs(interrupt_response=False),
            [SpeechDiscarded(0, 40 * W, 1280)],
        ),
        (
            "speech that began over a reply and goes on after it becomes a turn",
            [("#" * 10, True), ("##", False), (SIL, False)],
            None,
            [SpeechStarted(0), TurnEnded(0, 12 * W, "silence")],
        ),
        (
            "a back-channel that ended before the reply did stays discarded",
            [("#" * 10 + "...", True), (SIL, False)],
            None,
            [SpeechDiscarded(0, 10 * W, 320)],
        ),
        (
            "a reply starting while the caller is mid-turn is interrupted at once",
            [("#" * 20, False), ("#", True)],
            None,
            [SpeechStarted(0), BargeIn(0, 21 * W)],
        ),
    ],
)
def test_turn_decisions(
    name: str, segments: list[tuple[str, bool]], knobs: TurnKnobs | None, expected: list[TurnEvent]
) -> None:
    assert run(segments, knobs) == expected, name


def test_a_pause_inside_a_turn_is_reported_once_per_silence_so_stt_can_start_early() -> None:
    # 5 silent windows (160 ms) reach the default speculate_ms of 160.
    events = run([("#" * 10 + "." * 5 + "#" * 5 + "~~" + SIL, False)], pausing=True)
    assert events == [
        SpeechStarted(0),
        TurnPausing(0, 10 * W),
        TurnPausing(0, 20 * W),
        TurnEnded(0, 20 * W, "silence"),
    ]
    assert run([("#" * 10 + SIL, False)], TurnKnobs(speculate_ms=0), pausing=True) == [
        SpeechStarted(0),
        TurnEnded(0, 10 * W, "silence"),
    ]
    # Not for speech over a reply: that is not a turn (yet).
    assert run([("#" * 10 + SIL, True)], pausing=True) == [SpeechDiscarded(0, 10 * W, 320)]


def test_an_uninterruptible_reply_is_not_barged_in() -> None:
    assert run([("#" * 40 + SIL, True)], interruptible=False) == [SpeechDiscarded(0, 40 * W, 1280)]


def test_at_most_one_barge_in_per_utterance_even_if_the_reply_keeps_going() -> None:
    events = run([("#" * 60, True)])
    assert events == [BargeIn(0, 19 * W)]


def test_a_turn_is_cut_at_max_turn_ms_and_speech_going_on_starts_the_next() -> None:
    events = run([("#" * 100, False)], TurnKnobs(max_turn_ms=1600))
    assert events == [
        SpeechStarted(0),
        TurnEnded(0, 50 * W, "max_turn"),
        SpeechStarted(50 * W),
        TurnEnded(50 * W, 100 * W, "max_turn"),
    ]


def test_decisions_do_not_depend_on_how_probabilities_are_batched() -> None:
    timeline = "...." + "#" * 12 + "." * 5 + "#" * 8 + SIL + "##" + "." * 30 + "#" * 30 + SIL
    whole = run([(timeline, False)])
    d = TurnDetector()
    one_by_one: list[TurnEvent] = []
    for c in timeline:
        one_by_one += d.push([P[c]], agent_speaking=False)
    assert whole == [e for e in one_by_one if not isinstance(e, TurnPausing)] and len(whole) == 4


def test_state_properties_follow_the_utterance() -> None:
    d = TurnDetector()
    d.push(probs("#" * 5), agent_speaking=False)
    assert d.caller_has_turn and d.caller_speaking and d.position == 5 * W
    d.push(probs(SIL), agent_speaking=False)
    assert not d.caller_has_turn and not d.caller_speaking
    d.push(probs("#" * 5), agent_speaking=True)
    assert d.caller_speaking and not d.caller_has_turn
    d.reset()
    assert not d.caller_speaking and d.position == 29 * W


def test_utterance_buffer_slices_by_absolute_sample_and_trims_old_audio() -> None:
    buf = UtteranceBuffer(keep_s=1.0)  # 16000 samples, trimmed past 24000
    samples = bytes(range(256)) * 125  # 32000 bytes = 16000 samples
    buf.push(samples)
    assert buf.end == 16000
    assert buf.slice(0, 2) == samples[:4]
    assert buf.slice(-100, 1) == samples[:2]
    assert buf.slice(15999, 20000) == samples[-2:]
    assert buf.slice(10, 5) == b""
    buf.push(samples)  # 32000 held > 24000: trimmed back to 16000
    assert buf.end == 32000
    assert buf.slice(0, 16000) == b""  # gone
    assert buf.slice(16000, 16002) == samples[:4]
    buf.push(b"\x01\x02\x03")  # an odd byte is dropped, not misaligned
    assert buf.end == 32001
    buf.clear()
    assert buf.end == 32001 and buf.slice(0, 10**9) == b""


# ---------------------------------------------------------------------------------------------------------------
# Adaptive end of turn: a verdict on the pause's words moves the end of that turn earlier or later


def paused_detector() -> tuple[TurnDetector, TurnPausing, list[TurnEvent]]:
    """A turn of 10 speech windows, then silence up to its TurnPausing (160 ms: 5 windows)."""
    d = TurnDetector()
    out = d.push(probs("#" * 10 + "." * 5), agent_speaking=False)
    pause = next(e for e in out if isinstance(e, TurnPausing))
    return d, pause, out


def test_an_early_verdict_ends_the_turn_after_its_shorter_silence_at_the_same_span() -> None:
    d, pause, _ = paused_detector()
    assert d.set_pause_verdict(pause.end_sample, 400)
    out = d.push(probs("." * 7), agent_speaking=False)  # 12 silent windows = 384 ms: not yet
    assert out == []
    assert d.push(probs("."), agent_speaking=False) == [TurnEnded(0, 10 * W, "early")]  # 416 ms


def test_an_early_verdict_counts_the_ambiguous_windows_after_the_speech_as_silence() -> None:
    # Silero's probability often lingers in the hysteresis band after a finished sentence: an early end counts from
    # the last speech window, so the turn ends 416 ms after it, not 416 ms after the line is confidently silent.
    d = TurnDetector(TurnKnobs(speculate_ms=32))
    out = d.push(probs("#" * 10 + "~" * 4 + "."), agent_speaking=False)
    pause = next(e for e in out if isinstance(e, TurnPausing))
    assert d.set_pause_verdict(pause.end_sample, 400)
    assert d.push(probs("." * 7), agent_speaking=False) == []  # 12 windows since the speech: not yet
    assert d.push(probs("."), agent_speaking=False) == [TurnEnded(0, 10 * W, "early")]  # 13 windows: 416 ms


def test_without_a_verdict_only_confident_silence_ends_a_turn() -> None:
    d = TurnDetector(TurnKnobs(speculate_ms=32))
    assert [
        e for e in d.push(probs("#" * 10 + "~" * 4 + "." * 18), agent_speaking=False) if isinstance(e, TurnEnded)
    ] == []
    assert d.push(probs("."), agent_speaking=False) == [TurnEnded(0, 10 * W, "silence")]  # 19 silent windows


def test_a_verdict_that_arrives_after_its_silence_ends_the_turn_on_the_next_window() -> None:
    d, pause, _ = paused_detector()
    d.push(probs("." * 10), agent_speaking=False)  # 480 ms of silence
    assert d.set_pause_verdict(pause.end_sample, 400)
    assert d.push(probs("."), agent_speaking=False) == [TurnEnded(0, 10 * W, "early")]


def test_speech_after_the_pause_voids_the_verdict_and_the_default_silence_applies_again() -> None:
    d, pause, _ = paused_detector()
    assert d.set_pause_verdict(pause.end_sample, 400)
    out = d.push(probs("#" * 5 + "." * 15), agent_speaking=False)  # the caller goes on; 480 ms of silence
    assert [e for e in out if isinstance(e, TurnEnded)] == []
    out = d.push(probs("." * 4), agent_speaking=False)  # 608 ms
    assert [e for e in out if isinstance(e, TurnEnded)] == [TurnEnded(0, 20 * W, "silence")]


def test_a_late_verdict_keeps_the_turn_open_past_min_silence() -> None:
    d, pause, _ = paused_detector()
    assert d.set_pause_verdict(pause.end_sample, 1000)
    assert d.push(probs("." * 25), agent_speaking=False) == []  # 960 ms
    assert d.push(probs("." * 2), agent_speaking=False) == [TurnEnded(0, 10 * W, "late")]


def test_a_verdict_for_speech_that_is_not_the_current_turn_is_refused() -> None:
    d, pause, _ = paused_detector()
    assert not d.set_pause_verdict(pause.end_sample - W, 400)  # another span
    d.push(probs("." * 15), agent_speaking=False)  # the turn ended at 600 ms
    assert not d.set_pause_verdict(pause.end_sample, 400)  # no turn any more


@pytest.mark.parametrize(
    "text,intent,score,expected",
    [
        ("What hours are you open on Saturday?", "opening_hours", 0.8, 400),
        ("Okay, that is everything. Goodbye.", "goodbye", 0.6, 400),
        ("What hours are you open on Saturday?", "opening_hours", 0.40, None),  # not confident enough
        ("Something I said.", None, None, None),  # nothing matched
        ("I'd like to book a table for", "book_table", 0.7, 1000),  # an open word at the end
        ("I'd like to book a table for.", "book_table", 0.7, 1000),  # Whisper's full stop does not close it
        ("My phone number is", None, None, 1000),
        ("Yes, and...", "affirm", 0.6, 1000),
        ("I want to book a table,", "book_table", 0.7, 1000),
        ("yes", "affirm", 0.9, None),  # unpunctuated: no evidence either way
        ("", None, None, None),
    ],
)
def test_pause_verdict_policy(text: str, intent: str | None, score: float | None, expected: int | None) -> None:
    got = pause_verdict(text, intent, score, min_silence_ms=600, early_ms=400, late_ms=1000, confident=0.45)
    assert got == expected


def test_pause_verdict_only_moves_the_end_towards_its_own_side_of_min_silence() -> None:
    # An "early" at or above min_silence, or a "late" at or below it, is no verdict at all (e.g. a client's or a
    # server's shorter min_silence).
    assert pause_verdict("Open on Sunday?", "opening_hours", 0.9, min_silence_ms=300, early_ms=400, late_ms=1000,
                         confident=0.45) is None  # fmt: skip
    assert pause_verdict("a table for", None, None, min_silence_ms=1200, early_ms=400, late_ms=1000,
                         confident=0.45) is None  # fmt: skip


def early_ended_detector() -> TurnDetector:
    d, pause, _ = paused_detector()
    d.set_pause_verdict(pause.end_sample, 400)
    assert d.push(probs("." * 8), agent_speaking=False) == [TurnEnded(0, 10 * W, "early")]  # 13 silent windows
    return d


def test_speech_soon_after_an_early_end_is_a_continuation_that_interrupts_at_once() -> None:
    d = early_ended_detector()
    # The reply is playing; the caller goes on 2 windows later (15 silent windows in all = 480 ms < 600 ms).
    out = d.push(probs(".." + "###"), agent_speaking=True)
    assert out == [BargeIn(25 * W, 28 * W, continuation=True)]  # at start_ms (96 ms), not after 600 ms


def test_speech_after_what_min_silence_would_have_allowed_is_not_a_continuation() -> None:
    d = early_ended_detector()
    out = d.push(probs("." * 8 + "#" * 15), agent_speaking=True)  # 21 silent windows = 672 ms
    assert out == []  # a back-channel candidate, as over any reply
    assert d.push(probs("#" * 5), agent_speaking=True) == [BargeIn(31 * W, 50 * W)]


def test_a_continuation_over_an_uninterruptible_reply_does_not_interrupt() -> None:
    d = early_ended_detector()
    assert d.push(probs(".." + "#" * 10), agent_speaking=True, interruptible=False) == []

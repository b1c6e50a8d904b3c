"""Held, deferred and early-ended turns (gateway/local_agent/turn_merge.py), on the detector's sample clock (16 kHz
sample positions). docs/architecture/local-agent.md#turn-detection and #barge-in; the same rules on real speech are
tests/integration/local_agent/test_adaptive_turns.py and test_late_turn.py."""

from __future__ import annotations

import pytest

from gateway.local_agent.turn_merge import CONTINUE_SAMPLES, Answer, Hold, TurnMerge

S = 16  # samples per millisecond


def test_a_turn_with_the_caller_silent_is_answered_now() -> None:
    m = TurnMerge()
    assert m.transcribed("What time do you open?", end_sample=10_000, turn_start=None) == Answer(
        "What time do you open?"
    )
    assert m.held_text is None


@pytest.mark.parametrize(
    "end_sample,turn_start,expected",
    [
        (10_000, 10_000 + 500 * S, "hold"),  # went on 0.5 s after the speech ended
        (10_000, 10_000 + CONTINUE_SAMPLES - 1, "hold"),
        (10_000, 10_000 + CONTINUE_SAMPLES, "defer"),  # 1.5 s: a turn of its own
        (10_000, 10_000 + 4000 * S, "defer"),
        (-1, 10_000, "hold"),  # where the speech ended is unknown: hold rather than talk over the caller
    ],
)
def test_a_turn_transcribed_while_the_caller_talks_again_is_held_or_deferred(
    end_sample: int, turn_start: int, expected: str
) -> None:
    m = TurnMerge()
    decision = m.transcribed("Do you have parking", end_sample=end_sample, turn_start=turn_start)
    if expected == "hold":
        assert decision == Hold("Do you have parking") and m.held_text == "Do you have parking"
    else:
        assert decision == Answer("Do you have parking", after_turn=turn_start) and m.held_text is None


def test_a_held_turn_is_answered_with_the_next_one_as_one_sentence() -> None:
    m = TurnMerge()
    m.transcribed("Do you have parking", end_sample=10_000, turn_start=10_000 + 300 * S)
    assert m.transcribed("near the restaurant?", end_sample=40_000, turn_start=None) == Answer(
        "Do you have parking near the restaurant?"
    )
    assert m.held_text is None


def test_held_parts_keep_adding_up_while_the_caller_keeps_going_on() -> None:
    m = TurnMerge()
    m.transcribed("I'd like", end_sample=10_000, turn_start=10_000 + 300 * S)
    assert m.transcribed("a table", end_sample=20_000, turn_start=20_000 + 300 * S) == Hold("I'd like a table")
    assert m.transcribed("for two.", end_sample=30_000, turn_start=None) == Answer("I'd like a table for two.")


def test_a_continuation_after_an_early_end_holds_that_turn_for_the_next() -> None:
    m = TurnMerge()
    m.answering("Do you have parking?", end_reason="early")
    m.continuation()
    assert m.held_text == "Do you have parking?" and m.early_text is None
    assert m.transcribed("near the restaurant?", end_sample=40_000, turn_start=None) == Answer(
        "Do you have parking? near the restaurant?"
    )


def test_a_continuation_before_any_turn_was_answered_changes_nothing() -> None:
    # The state a fresh session starts in: nothing ended early, nothing held (the bug: this raised).
    m = TurnMerge()
    m.continuation()
    assert m.held_text is None and m.early_text is None


@pytest.mark.parametrize("reason", ["silence", "late", "max_silence", "max_turn"])
def test_only_an_early_end_is_remembered_for_a_continuation(reason: str) -> None:
    m = TurnMerge()
    m.answering("Do you have parking?", end_reason="early")
    m.answering("What time do you open?", end_reason=reason)
    m.continuation()
    assert m.held_text is None and m.early_text is None

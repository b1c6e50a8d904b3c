"""The call's phase table (gateway/call/phase.py): every move it allows, and that nothing else moves a call."""

from __future__ import annotations

import itertools

import pytest

from gateway.call.phase import TRANSITIONS, Phase, Trigger, next_phase
from gateway.errors import CallPhaseError

P, T = Phase, Trigger

ALLOWED = [
    (P.AWAITING_START, T.ACCEPTED, P.CONNECTING_AGENT),
    (P.CONNECTING_AGENT, T.AGENT_READY, P.LIVE),
    (P.LIVE, T.AGENT_DROPPED, P.RESUMING),
    (P.RESUMING, T.AGENT_RESUMED, P.LIVE),
    (P.CONNECTING_AGENT, T.FAREWELL, P.ENDING),
    (P.LIVE, T.FAREWELL, P.ENDING),
    (P.RESUMING, T.FAREWELL, P.ENDING),
    (P.AWAITING_START, T.ENDED, P.ENDED),
    (P.CONNECTING_AGENT, T.ENDED, P.ENDED),
    (P.LIVE, T.ENDED, P.ENDED),
    (P.RESUMING, T.ENDED, P.ENDED),
    (P.ENDING, T.ENDED, P.ENDED),
]


@pytest.mark.parametrize(("phase", "trigger", "after"), ALLOWED)
def test_the_table_allows(phase: Phase, trigger: Trigger, after: Phase) -> None:
    assert next_phase(phase, trigger) is after


def test_the_table_is_exactly_these_moves() -> None:
    assert dict(TRANSITIONS) == {(p, t): a for p, t, a in ALLOWED}


@pytest.mark.parametrize(
    ("phase", "trigger"), [(p, t) for p, t in itertools.product(Phase, Trigger) if (p, t) not in TRANSITIONS]
)
def test_any_other_move_is_our_bug(phase: Phase, trigger: Trigger) -> None:
    with pytest.raises(CallPhaseError):
        next_phase(phase, trigger)


def test_nothing_leaves_ended_and_every_other_phase_can_end() -> None:
    assert not [t for (p, t) in TRANSITIONS if p is P.ENDED]
    assert {p for (p, t) in TRANSITIONS if t is T.ENDED} == set(Phase) - {P.ENDED}

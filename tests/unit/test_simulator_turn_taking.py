"""When the simulated caller speaks (pure state machine, fed frame by frame)."""

from __future__ import annotations

from gateway.audio import g711
from gateway.simulator.turn_taking import HangUp, StartTurn, TurnTaking, TurnTakingConfig, frame_audible, frame_rms
from tests.support.audio import tone


def run(tt: TurnTaking, agent: list[bool], turn_len: int = 10) -> list[tuple[int, object]]:
    """Feed ``agent`` audibility per frame; each started turn lasts ``turn_len`` frames. Returns the actions."""
    actions = []
    speaking_until = None
    for frame, audible in enumerate(agent):
        if speaking_until is not None and frame >= speaking_until:
            tt.turn_finished(frame)
            speaking_until = None
        a = tt.on_frame(frame, audible)
        if a is not None:
            actions.append((frame, a))
            if isinstance(a, StartTurn):
                speaking_until = frame + turn_len
            if isinstance(a, HangUp):
                break
    return actions


def timeline(*parts: tuple[bool, int]) -> list[bool]:
    out: list[bool] = []
    for audible, n in parts:
        out += [audible] * n
    return out


def test_first_turn_waits_for_the_greeting_to_end_plus_pause():
    tt = TurnTaking(TurnTakingConfig(turns=1, pause=5))
    actions = run(tt, timeline((False, 3), (True, 20), (False, 100)))
    assert actions[0] == (23 + 5, StartTurn(0))


def test_no_greeting_speaks_after_the_greeting_timeout():
    tt = TurnTaking(TurnTakingConfig(turns=1, greeting_timeout=30))
    assert run(tt, [False] * 100)[0] == (30, StartTurn(0))


def test_next_turn_follows_the_reply_and_the_last_reply_ends_the_call():
    tt = TurnTaking(TurnTakingConfig(turns=2, pause=5, greeting_timeout=2))
    # turn 0 at frame 2 (no greeting) until 12; reply 15-30; turn 1 at 35 until 45; reply 50-60; hang up at 65
    agent = timeline((False, 15), (True, 15), (False, 20), (True, 10), (False, 20))
    assert run(tt, agent) == [(2, StartTurn(0)), (35, StartTurn(1)), (65, HangUp("script_done"))]


def test_audio_still_playing_when_a_turn_ends_is_not_its_reply():
    tt = TurnTaking(TurnTakingConfig(turns=1, pause=5, greeting_timeout=2))
    # the turn runs 2-12; the agent talks 3-20 (over its end) and stops; the real reply is 30-35
    agent = timeline((False, 3), (True, 17), (False, 10), (True, 5), (False, 20))
    assert run(tt, agent) == [(2, StartTurn(0)), (40, HangUp("script_done"))]


def test_barge_in_starts_the_next_turn_into_the_reply():
    tt = TurnTaking(TurnTakingConfig(turns=2, pause=5, greeting_timeout=2, barge_in_after=7))
    agent = timeline((False, 15), (True, 100))
    actions = run(tt, agent)
    assert actions[1] == (15 + 7, StartTurn(1, barge_in=True))


def test_barge_in_never_interrupts_the_greeting():
    tt = TurnTaking(TurnTakingConfig(turns=2, pause=5, barge_in_after=1))
    actions = run(tt, timeline((True, 50), (False, 10)))
    assert actions[0] == (55, StartTurn(0))


def test_no_reply_moves_on_and_is_remembered():
    tt = TurnTaking(TurnTakingConfig(turns=2, greeting_timeout=1, reply_timeout=20))
    actions = run(tt, [False] * 200)
    assert actions == [(1, StartTurn(0)), (31, StartTurn(1)), (61, HangUp("no_reply"))]
    assert tt.unanswered == [0, 1]


def test_hangup_after_wins_over_everything():
    tt = TurnTaking(TurnTakingConfig(turns=3, hangup_after=40))
    assert run(tt, [True] * 100) == [(40, HangUp("hangup_after"))]


def test_endless_reply_is_abandoned_after_max_reply():
    tt = TurnTaking(TurnTakingConfig(turns=1, greeting_timeout=1, max_reply=50))
    agent = timeline((False, 15), (True, 500))
    assert run(tt, agent)[-1] == (65, HangUp("script_done"))


def test_silence_is_not_audible_and_speech_is():
    assert frame_rms(b"\xff" * 160) == 0.0
    assert not frame_audible(b"\xff" * 160)
    assert frame_audible(g711.pcm16_to_ulaw(tone(440, 0.02, 8000, amplitude=0.1)))
    assert not frame_audible(g711.pcm16_to_ulaw(tone(440, 0.02, 8000, amplitude=0.002)))


def test_after_a_barge_in_the_old_replys_tail_is_not_the_answer_once_a_clear_comes():
    tt = TurnTaking(TurnTakingConfig(turns=2, pause=5, greeting_timeout=2, barge_in_after=5))
    # turn 0: frames 2-12; reply 0 from 15; turn 1 barges in at 20 (until 30). The agent keeps talking,
    # pauses 31-33, talks again 34-40 (the old reply's tail), the clear comes at 41; the answer is 50-60.
    agent = timeline((False, 15), (True, 16), (False, 3), (True, 7), (False, 9), (True, 11), (False, 20))
    actions = []
    for frame, audible in enumerate(agent):
        if frame in (12, 30):
            tt.turn_finished(frame)  # the caller's audio for turn 0 / turn 1 has all been sent
        if frame == 41:
            tt.on_clear(41)
        if (a := tt.on_frame(frame, audible)) is not None:
            actions.append((frame, a))
    # without the clear rule the tail (34-40) would count as the answer and the call would end at 46
    assert actions == [(2, StartTurn(0)), (20, StartTurn(1, barge_in=True)), (66, HangUp("script_done"))]


def test_a_clear_during_the_barge_in_turn_itself_changes_nothing_later():
    tt = TurnTaking(TurnTakingConfig(turns=2, pause=5, greeting_timeout=2, barge_in_after=5))
    tt.on_frame(2, False)  # turn 0 starts
    tt.turn_finished(12)
    for f in range(13, 20):
        tt.on_frame(f, f >= 15)
    assert tt.on_frame(20, True) == StartTurn(1, barge_in=True)
    tt.on_clear(22)  # the clear comes while the caller is still speaking, as it should
    tt.turn_finished(30)
    assert tt.on_frame(31, False) is None
    assert tt.on_frame(35, True) is None  # the answer starts ...
    assert [tt.on_frame(f, False) for f in range(36, 42)][-1] == HangUp("script_done")


def test_without_a_clear_the_answer_is_audio_after_a_pause_not_the_replys_next_sentence():
    tt = TurnTaking(TurnTakingConfig(turns=2, pause=5, greeting_timeout=2, barge_in_after=5))
    # reply 0 from 15; turn 1 barges in at 20 (until 30); the agent ignores it: sentences 15-33 and 36-44 (a 2-frame
    # gap), then silence, then the answer at 55-60 (after a 10-frame gap). No clear ever comes.
    agent = timeline((False, 15), (True, 19), (False, 2), (True, 9), (False, 10), (True, 6), (False, 20))
    actions = []
    for frame, audible in enumerate(agent):
        if frame in (12, 30):
            tt.turn_finished(frame)
        if (a := tt.on_frame(frame, audible)) is not None:
            actions.append((frame, a))
    assert actions == [(2, StartTurn(0)), (20, StartTurn(1, barge_in=True)), (66, HangUp("script_done"))]


def test_a_caller_who_stays_on_the_line_says_nothing_and_never_hangs_up_by_itself():
    # no turns at all: a silent caller (idle callers, docs/how-to/conversation.md#idle-callers)
    tt = TurnTaking(TurnTakingConfig(turns=0, pause=5, stay_on_line=True))
    assert run(tt, timeline((True, 20), (False, 500), (True, 10), (False, 100))) == []
    # after its last turn and the reply it stays, until hangup_after
    tt = TurnTaking(TurnTakingConfig(turns=1, pause=5, greeting_timeout=2, stay_on_line=True, hangup_after=200))
    agent = timeline((False, 15), (True, 15), (False, 300))
    assert run(tt, agent) == [(2, StartTurn(0)), (200, HangUp("hangup_after"))]

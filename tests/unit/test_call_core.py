"""The call's pure core (gateway/call/core.py), driven synchronously: each test is a script of events at given times
and the actions and carrier messages they produce (tests/support/call_script.py explains the notation)."""

from __future__ import annotations

import json

import pytest

from gateway.agent import protocol as ap
from gateway.call.actions import (
    ControlRequest,
    EndAgentSession,
    EndCall,
    MarkHeard,
    Publish,
    RunTool,
    SendAgent,
    WakeAt,
)
from gateway.call.events import AgentFirstAudio, BargeIn, ControlAction
from gateway.call.phase import Phase
from gateway.carriers.events import DtmfReceived, PlaybackCheckpoint, StreamStopped
from gateway.config import Profile
from gateway.errors import AgentUnavailable, CallControlFailed, Outcome
from gateway.profile_options import TurnDetection
from tests.support.call_script import (
    FRAME,
    PROMPT_FRAMES,
    ScriptDialect,
    kinds,
    live_core,
    make_core,
    of_type,
    play_out,
    pull,
)


def reply(core, now: float, reply_id: str = "r1", frames: int = 5, done: bool = True) -> list:
    """The agent speaks ``frames`` × 20 ms at ``now``."""
    actions = [
        *core.agent_event(ap.ReplyStarted(reply_id), now),
        *core.agent_event(ap.ReplyAudio(reply_id, FRAME * frames), now),
    ]
    if done:
        actions += core.agent_event(ap.ReplyDone(reply_id, "completed"), now)
    return actions


def echo(core, message: str, now: float) -> list:
    """The carrier echoes the mark ``message`` ("mark <name>")."""
    return list(core.carrier_event(PlaybackCheckpoint(message.split()[1]), now))


# ---- caller → agent ----------------------------------------------------------------------------------------------
def test_caller_audio_before_ready_waits_and_the_oldest_goes_when_the_buffer_is_full():
    core = make_core(preready_buffer_ms=100)  # 5 frames
    for i in range(8):
        assert core.caller_audio(bytes([i]) * 160, 0.0, send_now=True) is None  # no agent yet
    assert core.summary.frames_dropped_to_agent == 3 and core.agent_audio() == []  # not live: nothing goes
    core.agent_ready("sess_1", 1.0)
    assert core.phase is Phase.LIVE
    assert [f[0] for f in core.agent_audio(5)] == [3, 4, 5, 6, 7]  # the newest five, in order
    assert core.summary.frames_to_agent == 5


def test_a_live_call_sends_caller_audio_at_once_unless_something_waits_before_it():
    core = live_core()
    assert core.caller_audio(FRAME, 0.0, send_now=True) == FRAME  # the fast path
    assert core.caller_audio(FRAME, 0.0, send_now=False) is None  # the socket is busy: it waits ...
    assert core.caller_audio(FRAME, 0.0, send_now=True) is None  # ... and so does the next, behind it
    assert core.agent_audio(5) == [FRAME, FRAME]
    assert core.summary.frames_in == 3 and core.summary.frames_to_agent == 3


def test_frames_whose_send_failed_go_back_before_newer_ones():
    core = live_core()
    core.caller_audio(b"\x03" * 160, 0.0, send_now=False)
    core.agent_audio_unsent([b"\x01" * 160, b"\x02" * 160])
    assert [f[0] for f in core.agent_audio(5)] == [1, 2, 3]


# ---- agent → caller ----------------------------------------------------------------------------------------------
def test_agent_audio_is_paced_to_the_lead_target_and_ends_with_a_mark():
    core = live_core()  # playout_lead_ms = 200: at most 200 ms ahead at the carrier
    reply(core, 0.0, frames=20)
    assert pull(core, 0.0) == ["media 1"] * 10
    assert core.outbound.wake_at == pytest.approx(0.02)
    assert pull(core, 0.02) == ["media 1"]
    assert play_out(core, 0.5) == ["media 1"] * 9 + ["mark g0.1"]  # the reply's end, after its last frame
    assert core.summary.frames_out == 20


def test_frames_coalesce_up_to_frames_per_message_within_one_generation():
    core = live_core(frames_per_message=3)
    reply(core, 0.0, frames=7)
    assert pull(core, 0.0) == ["media 3", "media 3", "media 1", "mark g0.1"]


def test_first_audio_after_the_caller_stopped_speaking_reports_the_response_latency():
    core = live_core()
    core.agent_event(ap.SpeechStopped(), 1.0)
    actions = reply(core, 1.7)
    first = [a.event for a in of_type(actions, Publish) if isinstance(a.event, AgentFirstAudio)]
    assert first == [AgentFirstAudio("r1", 700.0, t=1.7)]
    assert core.summary.time_to_first_agent_audio_ms == 1700.0


def test_a_mark_echo_measures_the_round_trip_and_a_stale_one_counts():
    core = live_core()
    reply(core, 0.0, frames=2)
    mark = pull(core, 0.0)[-1]
    echo(core, mark, 0.04)
    assert core.summary.mark_round_trips_ms == [pytest.approx(40.0)]
    core.carrier_event(PlaybackCheckpoint("g9.9"), 0.05)  # unknown: ignored
    assert len(core.summary.mark_round_trips_ms) == 1


# ---- barge-in ----------------------------------------------------------------------------------------------------
def test_the_caller_speaking_over_the_agent_clears_everything_first():
    core = live_core()
    reply(core, 0.0, frames=20, done=False)
    pull(core, 0.0)  # 200 ms at the carrier, 200 ms still queued here
    actions = core.agent_event(ap.SpeechStarted(), 0.05)
    assert kinds(actions) == ["caller.speech_started", "call.barge_in", "log:call.barge_in"]
    barge = next(a.event for a in actions if isinstance(a, Publish) and isinstance(a.event, BargeIn))
    assert barge == BargeIn("r1", "speech_started", 150, t=0.05)
    assert pull(core, 0.051) == ["clear"]  # before anything else, and the queue is gone
    assert core.summary.interruptions == 1 and core.summary.clear_latencies_ms == [pytest.approx(1.0)]
    core.agent_event(ap.ReplyAudio("r1", FRAME * 5), 0.06)  # late audio of the interrupted reply
    assert pull(core, 0.06) == []


@pytest.mark.parametrize(
    ("profile", "frames", "cleared"),
    [
        (Profile(greeting=""), 5, True),
        (Profile(greeting=""), 0, False),  # nothing queued or playing: nothing to clear
        (Profile(greeting="", turn_detection=TurnDetection(interrupt_response=False)), 5, False),
    ],
)
def test_barge_in_happens_only_over_audio_and_only_when_the_profile_allows(profile, frames, cleared):
    core = live_core(profile=profile)
    if frames:
        reply(core, 0.0, frames=frames, done=False)
    core.agent_event(ap.SpeechStarted(), 0.01)
    assert (pull(core, 0.01)[:1] == ["clear"]) is cleared
    assert core.summary.interruptions == (1 if cleared else 0)


def test_an_interrupted_reply_done_clears_what_is_left_of_it():
    core = live_core()
    reply(core, 0.0, frames=3, done=False)
    core.agent_event(ap.ReplyDone("r1", "interrupted"), 0.0)
    assert pull(core, 0.0) == ["clear"]


# ---- tools ---------------------------------------------------------------------------------------------------------
def test_a_tool_result_waits_for_the_reply_that_called_it_to_end():
    core = live_core()
    core.agent_event(ap.ReplyStarted("r1"), 0.0)
    call = ap.ToolCall("call_1", "lookup", {})
    assert of_type(core.agent_event(call, 0.1), RunTool) == [RunTool(call)]
    assert of_type(core.tool_done(call, '{"ok":true}', False, 0.2), SendAgent) == []  # held: the reply goes on
    sent = of_type(core.agent_event(ap.ReplyDone("r1", "completed"), 0.3), SendAgent)
    assert [json.loads(s.text) for s in sent] == [
        {"type": "tool.result", "call_id": "call_1", "result": '{"ok":true}', "is_error": False}
    ]


def test_a_tool_result_during_a_resume_is_sent_once_the_session_is_back():
    core = live_core()
    call = ap.ToolCall("call_1", "lookup", {})
    core.agent_event(call, 0.0)
    core.agent_dropped(None, "", 0.1)
    assert of_type(core.tool_done(call, "r", False, 0.2), SendAgent) == []
    actions = core.agent_resumed("sess_1", 2, 400.0, 0.5)
    assert core.phase is Phase.LIVE and [json.loads(s.text)["call_id"] for s in of_type(actions, SendAgent)] == [
        "call_1"
    ]


# ---- the end of a call -----------------------------------------------------------------------------------------------
def test_end_call_hangs_up_once_the_goodbye_was_heard():
    core = live_core()
    assert of_type(core.request_hangup(0.0), WakeAt) == [WakeAt(3.0)]  # the goodbye may take 3 s to start
    reply(core, 0.5, reply_id="bye", frames=5)
    sent = pull(core, 0.5)
    assert sent[-2:] == ["mark g0.1", "mark g0.2"]  # the reply's end, then the hang-up mark
    assert echo(core, sent[-2], 0.6) == []
    assert of_type(echo(core, sent[-1], 0.6), EndCall) == [EndCall(Outcome.AGENT_HANGUP)]
    assert core.phase is Phase.ENDED and core.summary.hung_up_by == "agent"


def test_end_call_without_a_goodbye_hangs_up_after_its_timeout():
    core = live_core(profile=Profile(greeting="", end_call_timeout_s=2.0))
    core.request_hangup(0.0)
    assert of_type(core.tick(1.9), EndCall) == []
    actions = core.tick(2.0)
    assert kinds(actions) == ["log:call.end_call_timeout", "EndCall"]


def test_end_call_on_a_rest_profile_asks_the_carrier_to_hang_up_and_ends_on_its_answer():
    core = live_core(profile=Profile(greeting="", hangup_via_rest=True), control=True)
    core.request_hangup(0.0)
    core.tick(3.0)  # no goodbye started: the hang-up mark goes now
    mark = pull(core, 3.0)[-1]
    assert of_type(echo(core, mark, 3.1), ControlRequest) == [ControlRequest("hangup")]
    core.carrier_event(StreamStopped(), 3.2)  # the carrier's 'stop' for our own hang-up: expected
    assert core.carrier_stopped and core.phase is Phase.LIVE
    actions = core.control_done(ControlRequest("hangup"), 3.3, ended_now=False)
    assert kinds(actions) == ["log:call.hangup_rest", "call.control", "EndCall"]
    assert of_type(actions, Publish)[0].event == ControlAction("hangup", "already_ended", t=3.3)


def test_a_failed_transfer_keeps_the_call_and_tells_the_agent():
    core = live_core(control=True)
    why, _ = core.request_transfer("+15550003333", 0.0)
    assert why is None
    core.tick(3.0)
    echo(core, pull(core, 3.0)[-1], 3.1)
    failure = CallControlFailed(400, 13214, "Dial: Invalid number")
    actions = core.control_done(ControlRequest("transfer", "+15550003333"), 3.2, failure=failure)
    assert kinds(actions) == ["log:call.transfer_failed", "call.control", "SendAgent"]
    assert json.loads(of_type(actions, SendAgent)[0].text)["type"] == "reply.create"
    assert core.phase is Phase.LIVE
    why, _ = core.request_transfer("+15550003333", 4.0)  # a second attempt is allowed
    assert why is None


@pytest.mark.parametrize(
    ("failure", "outcome"),
    [(CallControlFailed(404, 20404, "The requested resource was not found"), Outcome.CALLER_HANGUP), (None, None)],
)
def test_a_callers_stop_during_a_transfer_leaves_the_end_to_its_answer_and_a_failure_is_their_hang_up(failure, outcome):
    """The caller's 'stop' while the redirect is in flight may be the redirect's own doing: its answer decides. A
    success is the transfer; a failure keeps the call only while the carrier is there, and it is not: the call ends
    at once as the caller's hang-up (not at no_media_timeout_s), and the agent is not asked to tell anyone."""
    core = live_core(control=True)
    core.request_transfer("+15550003333", 0.0)
    core.tick(3.0)
    request = ControlRequest("transfer", "+15550003333")
    assert of_type(echo(core, pull(core, 3.0)[-1], 3.1), ControlRequest) == [request]
    assert core.control_pending
    assert of_type(core.carrier_event(StreamStopped(), 3.2), EndCall) == []  # the redirect's answer ends it
    actions = core.control_done(request, 3.4, failure=failure)
    if failure is None:
        assert of_type(actions, EndCall) == [EndCall(Outcome.TRANSFERRED)]
        return
    assert kinds(actions) == ["log:call.transfer_failed", "call.control", "EndCall"]  # no reply.create
    assert of_type(actions, EndCall) == [EndCall(outcome)]
    assert core.phase is Phase.ENDED and core.summary.outcome == "caller_hangup" and core.next_deadline() is None


def test_a_transfer_while_the_call_is_ending_is_refused():
    core = live_core(control=True)
    core.request_hangup(0.0)
    why, actions = core.request_transfer("+15550003333", 0.1)
    assert why == "the call is already ending" and kinds(actions) == ["log:call.transfer_refused"]


def test_the_caller_hanging_up_ends_the_call():
    core = live_core()
    assert of_type(core.carrier_event(StreamStopped(), 5.0), EndCall) == [EndCall(Outcome.CALLER_HANGUP)]
    assert core.summary.outcome == "caller_hangup" and core.was_live


@pytest.mark.parametrize(
    ("error", "outcome", "prompt"),
    [
        (AgentUnavailable("no route"), Outcome.AGENT_UNAVAILABLE, "agent_unavailable"),
        (None, Outcome.AGENT_ERROR, "agent_unavailable"),
    ],
)
def test_an_agent_that_fails_for_good_hears_the_apology_then_the_call_ends(error, outcome, prompt):
    core = live_core()
    if error is None:  # a fatal session.error while live
        actions = core.agent_event(ap.SessionError("agent_timeout", "gone"), 1.0)
    else:
        actions = core.agent_failed(error, 1.0)
    assert EndAgentSession() in actions and core.phase is Phase.ENDING and core.summary.outcome == outcome
    sent = play_out(core, 1.0)
    assert sent == ["media 1"] * PROMPT_FRAMES + ["mark g0.1"] and core.summary.prompt == prompt
    ended = echo(core, sent[-1], 1.3)
    assert kinds(ended) == ["log:call.prompt_played", "EndCall"] and ended[0].fields["heard"] is True


def test_a_prompt_that_is_never_confirmed_ends_the_call_after_its_length_and_slack():
    core = live_core()
    core.agent_failed(AgentUnavailable("x"), 1.0)
    assert core.next_deadline() == pytest.approx(1.0 + 0.2 + 2.0)
    ended = core.tick(3.2)
    assert ended[0].fields["heard"] is False and of_type(ended, EndCall) == [EndCall(Outcome.AGENT_UNAVAILABLE)]


def test_a_caller_who_hangs_up_on_the_prompt_keeps_the_calls_outcome():
    core = live_core()
    core.agent_failed(AgentUnavailable("x"), 1.0)
    assert of_type(core.carrier_event(StreamStopped(), 1.1), EndCall) == [EndCall(Outcome.AGENT_UNAVAILABLE)]


def test_the_maximum_duration_cuts_the_agent_short_with_the_goodbye():
    core = live_core()
    reply(core, 59.9, frames=20, done=False)
    pull(core, 59.9)
    actions = core.tick(60.0)
    assert EndAgentSession() in actions and core.summary.outcome == "max_duration"
    assert pull(core, 60.0)[0] == "clear" and core.summary.prompt == "goodbye"


@pytest.mark.parametrize(("reason", "speaks"), [(Outcome.DRAINED, True), (Outcome.CALL_COMPLETED, False)])
def test_a_requested_end_happens_at_the_next_tick(reason, speaks):
    core = live_core()
    assert of_type(core.request_end(reason), WakeAt) and core.next_deadline() == float("-inf")
    actions = core.tick(1.0)
    assert (EndAgentSession() in actions) is speaks and (EndCall(reason) in actions) is not speaks


def test_a_line_without_media_ends_its_timeout_after_the_last_frame():
    core = live_core()  # no_media_timeout_s = 4
    for i in range(500):  # 10 s of media
        core.caller_audio(FRAME, i * 0.02, send_now=False)
    assert core.next_deadline() == pytest.approx(9.98 + 4.0)
    assert of_type(core.tick(13.9), EndCall) == []
    assert of_type(core.tick(13.98), EndCall) == [EndCall(Outcome.NO_MEDIA)]


# ---- agent drops and keypresses ------------------------------------------------------------------------------------
def test_a_drop_mid_reply_ends_the_reply_and_a_resume_brings_the_call_back():
    core = live_core()
    reply(core, 0.0, frames=3, done=False)
    actions = core.agent_dropped(1006, "", 0.1)
    assert kinds(actions) == ["log:agent.dropped", "agent.dropped", "log:agent.reply_cut"]
    assert core.phase is Phase.RESUMING and pull(core, 0.1)[-1] == "mark g0.1"  # what was queued still plays
    core.caller_audio(FRAME, 0.2, send_now=True)  # buffered during the gap
    actions = core.agent_resumed(None, 1, 250.0, 0.4)  # a server that just carried on
    assert core.phase is Phase.LIVE and actions[0].fields["confirmed"] is False
    assert core.agent_audio() == [FRAME]


def test_keypresses_in_reply_mode_reach_the_agent_after_the_interdigit_pause():
    core = live_core(profile=Profile(greeting="", dtmf_mode="reply", dtmf_interdigit_ms=500))
    core.carrier_event(DtmfReceived("1"), 1.0)
    assert of_type(core.carrier_event(DtmfReceived("2"), 1.2), WakeAt) == [WakeAt(1.7)]
    assert of_type(core.tick(1.5), SendAgent) == []
    sent = of_type(core.tick(1.7), SendAgent)
    assert "1 2" in json.loads(sent[0].text)["instructions"]


def test_keypresses_due_while_the_agent_is_away_wait_for_the_resume():
    core = live_core(profile=Profile(greeting="", dtmf_mode="reply", dtmf_interdigit_ms=100))
    core.agent_dropped(None, "", 0.0)
    core.carrier_event(DtmfReceived("9"), 0.1)
    assert of_type(core.tick(0.3), SendAgent) == []
    assert len(of_type(core.agent_resumed("sess_1", 1, 500.0, 0.5), SendAgent)) == 1


def test_tones_are_queued_as_audio_and_their_mark_echo_is_reported():
    core = live_core()
    plan = core.play_tones("1#", 0.0)
    assert plan.ms == 400 and plan.wait_s == pytest.approx(0.4 + 0.2 + 2.0)
    sent = play_out(core, 0.0)
    assert sent == ["media 1"] * 20 + ["mark g0.1"]
    assert of_type(echo(core, sent[-1], 1.0), MarkHeard) == [MarkHeard(plan.tag)]


def test_marks_resolve_from_the_clock_on_a_carrier_that_cannot_echo_them():
    core = live_core(dialect=ScriptDialect(marks=False))
    reply(core, 0.0, frames=5)
    assert pull(core, 0.0) == ["media 1"] * 5  # no mark message ...
    assert core.clock_changed() and core.next_deadline() == pytest.approx(0.1)  # ... its echo is due at 100 ms
    core.tick(0.1)
    assert core.summary.mark_round_trips_ms == [pytest.approx(100.0)]


def test_late_inputs_after_the_call_started_ending_change_nothing():
    core = make_core()
    core.agent_failed(AgentUnavailable("x"), 0.5)  # while connecting
    assert core.agent_ready("sess_1", 0.6) == () and core.phase is Phase.ENDING
    assert core.caller_audio(FRAME, 0.7, send_now=True) is None and core.to_agent_pending == 0

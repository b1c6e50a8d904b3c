"""The idle caller and hold audio in the call core (gateway/call/idle.py, gateway/call/hold.py,
gateway/call/conversation.py), as scripts: feed events at given times, assert what the agent and the carrier get."""

from __future__ import annotations

import json
from typing import Any

from gateway.agent import protocol as ap
from gateway.call.actions import EndCall, Publish, SendAgent
from gateway.call.events import HoldAudio, IdlePrompt
from gateway.call.hold import HOLD_TAG, HoldLoop
from gateway.call.idle import IdleStep, IdleWatch
from gateway.call.phase import Phase
from gateway.carriers.events import DtmfReceived, PlaybackCheckpoint
from gateway.config import HttpTool, Profile
from gateway.errors import Outcome
from gateway.profile_options import HoldAudioSettings, IdleSettings
from tests.support.call_script import FRAME, live_core, of_type, pull

IDLE = IdleSettings(after_s=1.0, max_prompts=2, instructions="Are you still there?", goodbye="Goodbye then.")
HOLD_FRAME = b"\x42" * 160
SLOW = {"slow": HttpTool(url="http://127.0.0.1:9/slow"), "held": HttpTool(url="http://x/h", execution_mode="hold")}


def reply(core, now: float, reply_id: str, frames: int = 5) -> list:
    return [
        *core.agent_event(ap.ReplyStarted(reply_id), now),
        *core.agent_event(ap.ReplyAudio(reply_id, FRAME * frames), now),
        *core.agent_event(ap.ReplyDone(reply_id, "completed"), now),
    ]


def instructions(actions) -> list[str]:
    return [json.loads(a.text).get("instructions") for a in of_type(actions, SendAgent)]


def tick_at_deadline(core) -> tuple[float, list]:
    t = core.next_deadline()
    core.caller_audio(FRAME, t, False)  # the line carries silence: no no-media end
    return t, list(core.tick(t))


# ---- idle caller ---------------------------------------------------------------------------------------------------
def test_idle_watch_reprompts_max_prompts_times_then_says_goodbye():
    w = IdleWatch(IDLE)
    w.agent_finished(0.5)
    assert w.deadline(busy=True) is None and w.deadline(busy=False) == 1.5
    assert w.due(1.4, busy=False) is None
    assert w.due(1.5, busy=False) is IdleStep.REPROMPT and w.deadline(busy=False) is None  # waits for the agent
    w.agent_finished(3.0)
    assert w.due(4.0, busy=False) is IdleStep.REPROMPT
    w.agent_finished(5.0)
    w.caller_active()  # they spoke: the count starts again, and nothing is armed until the agent answered
    assert w.prompts == 0 and w.deadline(busy=False) is None
    assert IdleWatch(IdleSettings()).deadline(busy=False) is None  # after_s = 0: off


def test_a_silent_caller_hears_max_prompts_reprompts_then_the_goodbye_and_the_call_ends_caller_idle():
    core = live_core(profile=Profile(greeting="", idle=IDLE))
    reply(core, 0.0, "greeting")
    pull(core, 0.0)  # 100 ms to the carrier
    sent: list[str | None] = []
    for n in (1, 2):
        t, actions = tick_at_deadline(core)
        assert t == 1.1 + (n - 1) * 1.1  # 1 s after the last reply finished playing
        sent += instructions(actions)
        assert [a.event for a in of_type(actions, Publish) if isinstance(a.event, IdlePrompt)] == [
            IdlePrompt("reprompt", n, t=round(t, 3))
        ]
        reply(core, t, f"re{n}")  # the agent asks
        pull(core, t)
    assert sent == ["Are you still there?", "Are you still there?"]
    t, actions = tick_at_deadline(core)
    assert instructions(actions) == ["Goodbye then."]
    assert core.phase is Phase.LIVE  # not yet: the goodbye must be heard first
    reply(core, t + 0.2, "bye")
    out = pull(core, t + 0.2)
    assert out[-1].startswith("mark")  # the hang-up mark after the goodbye
    ended = []
    for msg in [m for m in out if m.startswith("mark")]:
        ended += of_type(core.carrier_event(PlaybackCheckpoint(msg.split()[1]), t + 0.4), EndCall)
    assert ended == [EndCall(Outcome.CALLER_IDLE)] and core.summary.outcome == "caller_idle"


def test_caller_speech_or_a_keypress_resets_the_idle_count():
    core = live_core(profile=Profile(greeting="", idle=IDLE, dtmf_mode="buffer"))
    reply(core, 0.0, "greeting")
    pull(core, 0.0)
    t, actions = tick_at_deadline(core)
    assert instructions(actions) == ["Are you still there?"]
    core.agent_event(ap.SpeechStarted(), t + 0.5)  # "yes, sorry"
    assert core.next_deadline() != t + 1.0  # nothing armed until the agent answered
    reply(core, t + 1.0, "answer")
    pull(core, t + 1.0)
    core.carrier_event(DtmfReceived("5"), t + 1.5)
    reply(core, t + 2.0, "answer2")
    pull(core, t + 2.0)
    t2, actions = tick_at_deadline(core)
    assert instructions(actions) == ["Are you still there?"] and t2 == t + 2.0 + 0.1 + 1.0
    # after the reset, the next prompt is again the first of max_prompts
    assert [a.event.count for a in of_type(actions, Publish) if isinstance(a.event, IdlePrompt)] == [1]


def test_a_running_tool_pauses_the_idle_clock():
    core = live_core(profile=Profile(greeting="", idle=IDLE))
    reply(core, 0.0, "greeting")
    pull(core, 0.0)
    call = ap.ToolCall("c1", "lookup", {})
    core.agent_event(call, 0.5)
    assert core.next_deadline() == 4.0  # only the no-media watchdog: the agent is busy, not the caller
    core.tool_done(call, "{}", False, 3.0)
    assert core.next_deadline() == 1.1  # due again once the tool is back (the agent answers next)


# ---- hold audio ----------------------------------------------------------------------------------------------------
def hold_core(**hold):
    profile = Profile(greeting="", hold_audio=HoldAudioSettings(enabled=True, after_ms=500, **hold))
    return live_core(profile=profile, tools=SLOW, hold_audio=HOLD_FRAME * 3)


def hold_events(actions) -> list[HoldAudio]:
    return [a.event for a in of_type(actions, Publish) if isinstance(a.event, HoldAudio)]


def test_hold_audio_starts_after_after_ms_loops_paced_and_stops_the_moment_agent_audio_arrives():
    core = hold_core()
    call = ap.ToolCall("c1", "slow", {})
    core.agent_event(call, 0.0)
    assert core.next_deadline() == 0.5
    assert hold_events(core.tick(0.5)) == [HoldAudio(True, t=0.5)]
    first = pull(core, 0.5)
    assert first == ["media 1"] * 9 and core.outbound.frames > 0  # paced: 180 ms ahead at most, the rest waits
    assert pull(core, 0.6) == ["media 1"] * 5  # and keeps coming as it plays, looped, for as long as needed
    assert core.playout.reply_played_ms.get(HOLD_TAG) is not None or core.playout.lead_ms(0.6) > 0
    core.tool_done(call, "{}", False, 1.0)
    assert core.next_deadline() >= 1.0  # hold goes on until the reply comes (or HOLD_NO_REPLY_S)
    pull(core, 1.15)  # the writer keeps pulling: the carrier holds some hold audio when the reply comes
    actions = core.agent_event(ap.ReplyStarted("r2"), 1.2)
    actions = [*actions, *core.agent_event(ap.ReplyAudio("r2", FRAME * 3), 1.2)]
    (stopped,) = hold_events(actions)
    assert stopped.started is False and stopped.cause == "agent_audio" and stopped.ms == 700
    out = pull(core, 1.2)
    assert out[0] == "clear" and out[1:] == ["media 1"] * 3  # what the carrier held of it is dropped first
    assert core.agent_audio() == []  # nothing of it ever goes to the agent


def test_a_barge_in_during_hold_stops_it_at_once():
    core = hold_core()
    core.agent_event(ap.ToolCall("c1", "slow", {}), 0.0)
    core.tick(0.5)
    pull(core, 0.5)
    pull(core, 0.75)
    actions = core.agent_event(ap.SpeechStarted(), 0.8)
    (stopped,) = hold_events(actions)
    assert stopped.cause == "barge_in"
    assert pull(core, 0.8) == ["clear"] and not core.carrier_pending


def test_a_tool_that_answers_before_after_ms_gets_no_hold_audio_and_a_hold_mode_tool_gets_it_at_once():
    core = hold_core()
    call = ap.ToolCall("c1", "slow", {})
    core.agent_event(call, 0.0)
    core.tool_done(call, "{}", False, 0.3)
    assert hold_events(core.tick(0.5)) == [] and pull(core, 0.5) == []
    core = hold_core()
    core.agent_event(ap.ToolCall("c2", "held", {}), 2.0)
    assert hold_events(core.tick(2.0)) == [HoldAudio(True, t=2.0)]
    # built-in tools never get it (they are quick, or play keypad tones)
    core = hold_core()
    core.agent_event(ap.ToolCall("c3", "send_dtmf", {"digits": "1"}), 0.0)
    assert core.next_deadline() == 4.0


def test_hold_audio_waits_for_the_agents_preamble_to_play_out():
    core = hold_core()
    reply(core, 0.0, "pre", frames=40)  # 800 ms "let me check"
    core.agent_event(ap.ToolCall("c1", "slow", {}), 0.0)
    pull(core, 0.0)
    assert hold_events(core.tick(0.5)) == []  # still speaking
    t = 0.5
    while not hold_events(core.tick(t)):
        pull(core, t)
        t = core.next_deadline()
    assert t >= 0.8


def test_hold_audio_stops_if_the_agent_says_nothing_after_the_tool():
    core = hold_core()
    call = ap.ToolCall("c1", "slow", {})
    core.agent_event(call, 0.0)
    core.tick(0.5)
    pull(core, 0.5)
    core.tool_done(call, "{}", False, 1.0)
    stopped: list[HoldAudio] = []
    while not stopped:
        t = core.next_deadline()
        core.caller_audio(FRAME, t, False)
        stopped = hold_events(core.tick(t))
    assert [e.cause for e in stopped] == ["no_reply"] and t == 9.0


def test_the_hold_loop_wraps():
    loop = HoldLoop([b"a", b"b", b"c"])
    assert loop.next(4) + loop.next(3) == [b"a", b"b", b"c", b"a", b"b", b"c", b"a"] and loop.sent_ms == 140


# ---- answering-machine detection (outbound calls) ------------------------------------------------------------------
def amd_core(message: str = "Hi, this is Acme: please call us back.") -> Any:
    from gateway.profile_options import VoicemailSettings
    from tests.support.call_script import make_core

    profile = Profile(greeting="Hello!", voicemail=VoicemailSettings(message=message))
    core = make_core(profile=profile, params={"outbound": "ob_1", "amd": "1"})
    core.agent_ready("sess_1", 0.0)
    return core


def test_while_detection_runs_neither_the_agent_nor_the_callee_is_heard():
    core = amd_core()
    assert core.caller_audio(FRAME, 0.1, send_now=True) is None  # not to the agent: it would answer the greeting
    assert core.agent_audio() == []
    reply(core, 0.2, "greeting")
    assert pull(core, 0.2) == []  # not over a machine's greeting


def test_a_human_releases_what_was_held_both_ways():
    core = amd_core()
    core.caller_audio(FRAME, 0.1, send_now=True)
    reply(core, 0.2, "greeting", frames=3)
    actions = core.machine_detected("human", 1.5)
    assert [a.event.answered_by for a in of_type(actions, Publish)] == ["human"]
    assert pull(core, 1.5)[:3] == ["media 1", "media 1", "media 1"]  # the greeting plays now, then its mark
    assert len(core.agent_audio()) == 1  # the callee's "hello?" reaches the agent
    assert core.caller_audio(FRAME, 1.6, send_now=True) is not None  # and the fast path is back


def test_a_machine_gets_the_voicemail_after_the_beep_and_the_call_ends_voicemail_left():
    core = amd_core()
    core.caller_audio(FRAME, 0.1, send_now=True)  # the machine's greeting
    core.agent_event(ap.ReplyStarted("greeting"), 0.2)
    core.agent_event(ap.ReplyAudio("greeting", FRAME * 3), 0.2)
    assert core.machine_detected("machine_start", 1.0) and core.amd_pending  # Enable mode only: keep waiting
    actions = core.machine_detected("machine_end_beep", 6.0)
    assert instructions(actions) == ["Hi, this is Acme: please call us back."]
    assert core.agent_audio() == [] and pull(core, 6.0) == []  # the held greeting and caller audio are gone
    core.agent_event(ap.ReplyAudio("greeting", FRAME * 3), 6.1)  # late audio of the greeting: never plays
    core.agent_event(ap.ReplyDone("greeting", "completed"), 6.1)
    assert [m for m in pull(core, 6.1) if m.startswith("media")] == []
    reply(core, 6.3, "vm", frames=5)
    out = pull(core, 6.3)
    assert out.count("media 1") == 5
    ended = []
    for msg in [m for m in out if m.startswith("mark")]:
        ended += of_type(core.carrier_event(PlaybackCheckpoint(msg.split()[1]), 6.5), EndCall)
    assert ended == [EndCall(Outcome.VOICEMAIL_LEFT)]


def test_a_fax_or_a_machine_without_a_message_is_hung_up_and_odd_verdicts_change_nothing():
    core = amd_core(message="")
    assert of_type(core.machine_detected("machine_end_silence", 3.0), EndCall) == [EndCall(Outcome.AGENT_HANGUP)]
    core = amd_core()
    assert of_type(core.machine_detected("fax", 3.0), EndCall) == [EndCall(Outcome.AGENT_HANGUP)]
    core = amd_core()
    assert not of_type(core.machine_detected("robot", 3.0), EndCall) and core.amd_pending  # undocumented value
    core.machine_detected("human", 3.0)
    assert not of_type(core.machine_detected("machine_end_beep", 4.0), SendAgent)  # decided already


def test_no_verdict_in_time_proceeds_as_a_human():
    core = amd_core()
    reply(core, 0.2, "greeting", frames=2)
    t = 0.0
    while core.amd_pending:  # the line carries the callee's silence meanwhile
        t = core.next_deadline()
        core.caller_audio(FRAME, t, False)
        core.tick(t)
    assert t == 30.0  # voicemail.beep_timeout_s
    assert pull(core, 30.0)[:2] == ["media 1", "media 1"]


def test_twilio_amd_values_and_the_create_form():
    from gateway.amd import AmdVerdict, amd_create_form, verdict

    assert [verdict(v) for v in ("human", "unknown", "machine_start", "machine_end_other", "fax", "x")] == [
        AmdVerdict.HUMAN,
        AmdVerdict.HUMAN,
        AmdVerdict.MACHINE_START,
        AmdVerdict.MESSAGE_END,
        AmdVerdict.FAX,
        None,
    ]
    assert amd_create_form("https://v.example/twilio/amd") == [
        ("MachineDetection", "DetectMessageEnd"),
        ("AsyncAmd", "true"),
        ("AsyncAmdStatusCallback", "https://v.example/twilio/amd"),
        ("AsyncAmdStatusCallbackMethod", "POST"),
    ]


# ---- warm transfer ---------------------------------------------------------------------------------------------------
def warm_core() -> Any:
    from gateway.call.actions import ControlRequest

    profile = Profile(greeting="", tools=("transfer_call",), transfer_allow=("+1555*",))
    core = live_core(profile=profile, control=True, hold_audio=HOLD_FRAME * 3, params={"to": "+15550001000"})
    why, _ = core.request_transfer("+15550003333", 0.0, warm_summary="Ada wants a table for two.")
    assert why is None and core.warm_summary == "Ada wants a table for two."
    reply(core, 0.5, "announce")  # "please hold while I connect you"
    out = pull(core, 0.5)
    requests = []
    for msg in [m for m in out if m.startswith("mark")]:
        requests += of_type(core.carrier_event(PlaybackCheckpoint(msg.split()[1]), 0.7), ControlRequest)
    assert requests == [ControlRequest("warm_dial", "+15550003333")]  # only once the announcement was heard
    assert core.own_number == "+15550001000"  # the human's leg comes from the number the caller called
    return core


def warm_events(actions) -> list[str]:
    from gateway.call.events import WarmTransfer

    return [a.event.result for a in of_type(actions, Publish) if isinstance(a.event, WarmTransfer)]


def test_a_warm_transfer_keeps_the_caller_on_hold_until_the_human_is_in_the_room_then_joins_them():
    from gateway.call.actions import ControlRequest
    from gateway.carriers.events import StreamStopped

    core = warm_core()
    actions = core.warm_dialled("CA" + "7" * 32, 1.0)
    assert warm_events(actions) == ["dialling"] and core.phase is Phase.LIVE
    assert pull(core, 1.0)[:2] == ["media 1", "media 1"]  # the caller hears hold audio meanwhile
    actions = core.warm_result("answered", 6.0)  # the whisper was heard, the human is in the room
    assert warm_events(actions) == ["answered"] and of_type(actions, ControlRequest) == [ControlRequest("warm_join")]
    assert not of_type(core.carrier_event(StreamStopped(), 6.2), EndCall)  # Twilio's stop of the redirect: expected
    assert of_type(core.warm_joined(6.3), EndCall) == [EndCall(Outcome.TRANSFERRED)]


def test_a_busy_or_unanswered_human_returns_the_caller_to_the_agent_which_is_told():
    from gateway.conference import failed_instructions

    core = warm_core()
    core.warm_dialled("CA" + "7" * 32, 1.0)
    pull(core, 1.0)
    actions = core.warm_result("busy", 3.0)
    assert warm_events(actions) == ["busy"] and instructions(actions) == [failed_instructions("busy")]
    assert "busy" in failed_instructions("busy") and [e.cause for e in hold_events(actions)] == ["transfer_busy"]
    assert core.phase is Phase.LIVE and not core.outbound.loop  # no more hold audio, the agent speaks next
    assert warm_events(core.warm_result("answered", 4.0)) == []  # a late report changes nothing


def test_no_word_from_twilio_in_time_counts_as_no_answer_and_cancels_the_human_leg():
    from gateway.call.actions import ControlRequest

    core = warm_core()
    core.warm_dialled("CA" + "7" * 32, 1.0)
    deadline = 1.0 + 20 + 15.0  # warm_transfer.timeout_s + WARM_SLACK_S
    t, actions = 1.0, []
    while not warm_events(actions):
        t = core.next_deadline()
        core.caller_audio(FRAME, t, False)
        actions = list(core.tick(t))
    assert t == deadline and warm_events(actions) == ["no-answer"]
    assert of_type(actions, ControlRequest) == [ControlRequest("warm_cancel", "CA" + "7" * 32)]


def test_a_failed_dial_tells_the_agent_at_once():
    from gateway.errors import CallControlFailed

    core = warm_core()
    actions = core.warm_dialled("", 1.0, CallControlFailed(400, 21211, "Invalid 'To' Phone Number"))
    assert warm_events(actions) == ["failed"] and instructions(actions) and core.phase is Phase.LIVE


def test_a_callers_stop_while_the_human_is_dialled_ends_the_call_as_their_hang_up_whatever_the_dial_said():
    """The caller hangs up while the human's leg is being placed (the 'stop' is left to the dial's answer): placed
    or not, the call that would go on has no carrier any more. It ends at once as the caller's hang-up; the agent is
    not told, and the teardown cancels a human leg still ringing (ToolPort.warm_abandon)."""
    from gateway.carriers.events import StreamStopped
    from gateway.errors import CallControlFailed

    for failure in (None, CallControlFailed(400, 21211, "Invalid 'To' Phone Number")):
        core = warm_core()
        assert core.control_pending and not of_type(core.carrier_event(StreamStopped(), 0.8), EndCall)
        actions = core.warm_dialled("" if failure else "CA" + "7" * 32, 1.0, failure)
        assert of_type(actions, EndCall) == [EndCall(Outcome.CALLER_HANGUP)] and not instructions(actions)
        assert core.phase is Phase.ENDED and core.summary.outcome == "caller_hangup"


def test_a_callers_stop_while_they_are_joined_to_the_human_ends_the_call_as_their_hang_up_if_the_join_fails():
    from gateway.call.actions import ControlRequest
    from gateway.carriers.events import StreamStopped
    from gateway.errors import CallControlFailed

    human = "CA" + "7" * 32
    core = warm_core()
    core.warm_dialled(human, 1.0)
    assert of_type(core.warm_result("answered", 6.0), ControlRequest) == [ControlRequest("warm_join")]
    assert not of_type(core.carrier_event(StreamStopped(), 6.2), EndCall)  # maybe the join's own 'stop'
    actions = core.warm_joined(6.3, CallControlFailed(404, 20404, "The requested resource was not found"))
    assert of_type(actions, EndCall) == [EndCall(Outcome.CALLER_HANGUP)] and not instructions(actions)
    assert of_type(actions, ControlRequest) == [ControlRequest("warm_cancel", human)]  # the human is let go too
    assert core.phase is Phase.ENDED


def test_conference_twiml_and_what_twilio_callbacks_mean():
    from xml.etree import ElementTree

    from gateway.conference import join_twiml, transfer_result, whisper_text, whisper_twiml

    root = ElementTree.fromstring(
        whisper_twiml("Incoming transfer. Ada <VIP>", "warm-CA1", "https://v.ex/twilio/transfer")
    )
    assert [c.tag for c in root] == ["Say", "Dial"] and root[0].text == "Incoming transfer. Ada <VIP>"
    room = root.find("./Dial/Conference")
    assert room is not None and room.text == "warm-CA1"
    assert (
        room.attrib["statusCallback"] == "https://v.ex/twilio/transfer" and room.attrib["statusCallbackEvent"] == "join"
    )
    assert ElementTree.fromstring(join_twiml("warm-CA1")).find("./Dial/Conference").text == "warm-CA1"
    assert (
        whisper_text(" Incoming. ", "x" * 2000).startswith("Incoming. x") and len(whisper_text("a", "x" * 2000)) == 1000
    )
    table = [
        (("ringing", "", False), None),
        (("in-progress", "", False), None),  # answered: the whisper plays, the human is not in the room yet
        (("", "participant-join", False), "answered"),
        (("", "participant-join", True), None),
        (("busy", "", False), "busy"),
        (("no-answer", "", False), "no-answer"),
        (("completed", "", False), "failed"),  # hung up during the whisper
        (("completed", "", True), None),  # the transferred call ended later: not ours any more
    ]
    assert [transfer_result(*args) for args, _ in table] == [want for _, want in table]

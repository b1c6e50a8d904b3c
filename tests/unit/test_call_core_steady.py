"""The agent reader's fast lane (CallCore.steady, convert_out, OutboundQueue.take, driven by CarrierWriter.send_audio):
whenever the core hands a chunk's frames to the lane, the call comes out exactly as if ``agent_event`` had taken the
chunk: the same actions (none), the same carrier messages at the same moments, the same counts, the same later
behaviour. Two cores run the same script; one always takes ``agent_event``, the other the lane when it is offered."""

from __future__ import annotations

import dataclasses
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.agent import protocol as ap
from gateway.amd import AMD_PARAM
from gateway.call.core import CallCore
from gateway.carriers.events import PlaybackCheckpoint
from gateway.config import HttpTool, Profile
from gateway.outbound import OUTBOUND_PARAM
from gateway.profile_options import HoldAudioSettings
from tests.support.call_script import ScriptDialect, kinds, live_core

SLOW = {"slow": HttpTool(url="http://127.0.0.1:9/slow")}


class _PayloadDialect(ScriptDialect):
    """Says which bytes a media message carries."""

    def build_media(self, payload: bytes) -> str:
        return f"media {payload.hex()}"


def _core(agent_format: str, marks: bool, greeting: str = "hello", amd: bool = False) -> CallCore:
    profile = Profile(greeting=greeting, hold_audio=HoldAudioSettings(enabled=True, after_ms=60))
    return live_core(
        profile=profile,
        params={OUTBOUND_PARAM: "1", AMD_PARAM: "1"} if amd else None,  # an outbound call, answering machine detection
        tools=SLOW,
        hold_audio=b"\x42" * 480,
        dialect=_PayloadDialect(marks=marks),
        agent_format=agent_format,
        playout_lead_ms=100,
        mark_interval_ms=200,
    )


def _chunk(agent_format: str, n: int) -> bytes:
    """10 ms of agent audio, different every time (so every frame says where it came from)."""
    if agent_format == "pcm24k":
        return bytes((n * 7 + i) % 256 for i in range(480))
    return bytes((n + i) % 256 for i in range(80))


_REPLY = st.sampled_from(["r1", "r2", "r3"])
_AUDIO = st.tuples(st.just("audio"), _REPLY, st.integers(1, 8))  # that many 10 ms chunks, back to back
_STEP = st.one_of(
    _AUDIO,
    _AUDIO,
    _AUDIO,
    st.tuples(st.just("started"), _REPLY, st.just(0)),
    st.tuples(st.just("done"), _REPLY, st.booleans()),  # interrupted or not
    st.tuples(st.just("speech"), st.just(None), st.just(0)),  # the caller speaks: a barge-in while audio plays
    st.tuples(st.just("stopped"), st.just(None), st.just(0)),
    st.tuples(st.just("tool"), st.just(None), st.booleans()),  # a slow tool called (True) or its result back
    st.tuples(st.just("time"), st.just(None), st.integers(0, 150)),  # ms pass: the clock ticks, the writer pulls
    st.tuples(st.just("echo"), st.just(None), st.just(0)),  # the carrier echoes the marks it has
    st.tuples(st.just("human"), st.just(None), st.just(0)),  # detection's verdict (an outbound call with it on)
)


def _steady_frames(core: CallCore, event: ap.ReplyAudio) -> list[bytes] | None:
    """What the agent reader does with a chunk when the core says it is in the steady state: its frames (possibly
    none); None when it is not, and ``agent_event`` takes it."""
    return core.convert_out(event.data) if core.steady(event.reply_id) else None


def _pull(core: CallCore, now: float) -> list[str]:
    out = []
    while (msg := core.carrier_data(now)) is not None:
        out.append(str(msg))
    return out


def _seen(core: CallCore) -> dict[str, Any]:
    q = core.outbound
    return {
        "items": list(q.items), "urgent": list(q.urgent), "wake_at": q.wake_at, "clock_marks": list(q.clock_marks),
        "buffer_end": core.playout.buffer_end, "sent_ms": core.playout.sent_ms, "deadline": core.next_deadline(),
        "summary": dataclasses.asdict(core.summary), "phase": core.phase,
    }  # fmt: skip


#: Late audio of the current reply while hold audio plays (a tool ran after the reply was done): it stops the hold.
_HOLD = [("started", "r1", 0), ("audio", "r1", 6), ("done", "r1", False), ("tool", None, True), ("time", None, 150)]


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(
    steps=st.lists(_STEP, max_size=50),
    agent_format=st.sampled_from(["pcm24k", "pcmu"]),
    marks=st.booleans(),
    greeting=st.sampled_from(["", "hello"]),
    amd=st.booleans(),
)
@example(
    steps=[*_HOLD, ("time", None, 150), ("audio", "r1", 4)], agent_format="pcm24k", marks=True, greeting="", amd=False
)
def test_the_fast_lane_changes_nothing_but_the_cost(steps, agent_format, marks, greeting, amd):
    plain, lane = _core(agent_format, marks, greeting, amd), _core(agent_format, marks, greeting, amd)
    now, n, tool, taken = 0.0, 0, 0, 0
    for op, reply_id, arg in steps:
        events: list[Any] = []
        if op == "audio":
            for _ in range(arg):
                events.append(ap.ReplyAudio(reply_id, _chunk(agent_format, n)))
                n += 1
        elif op == "started":
            events.append(ap.ReplyStarted(reply_id))
        elif op == "done":
            events.append(ap.ReplyDone(reply_id, "interrupted" if arg else "completed"))
        elif op == "speech":
            events.append(ap.SpeechStarted())
        elif op == "stopped":
            events.append(ap.SpeechStopped())
        elif op == "tool":
            if arg:
                tool += 1
                events.append(ap.ToolCall(f"c{tool}", "slow", {}))
        for event in events:
            expected = kinds(plain.agent_event(event, now))
            frames = _steady_frames(lane, event) if type(event) is ap.ReplyAudio else None
            if frames is None:
                assert kinds(lane.agent_event(event, now)) == expected
            else:
                taken += 1
                assert expected == []  # the lane is only offered when agent_event would do nothing else
                if frames:
                    lane.outbound.put_audio(
                        event.reply_id, frames
                    )  # (take is put_audio + pull: test_call_core_outbound)
            assert _seen(lane) == _seen(plain)
        if op == "tool" and not arg and tool:
            call = ap.ToolCall(f"c{tool}", "slow", {})
            assert kinds(lane.tool_done(call, "{}", False, now)) == kinds(plain.tool_done(call, "{}", False, now))
        if op == "time":
            now += arg / 1000.0
            assert kinds(lane.tick(now)) == kinds(plain.tick(now))
        if op == "human":
            assert kinds(lane.machine_detected("human", now)) == kinds(plain.machine_detected("human", now))
        if op == "echo":
            for core in (plain, lane):
                for name in list(core.outbound.tag_of) + [f"g{core.playout.generation}.{k}" for k in range(1, 4)]:
                    core.carrier_event(PlaybackCheckpoint(name), now)
        assert _pull(lane, now) == _pull(plain, now)
        assert _seen(lane) == _seen(plain)
    # Nothing of the lane's shows later either: everything still queued plays out the same.
    for t in (now + 0.5, now + 2.0, now + 10.0):
        assert _pull(lane, t) == _pull(plain, t)
        assert kinds(lane.tick(t)) == kinds(plain.tick(t))
    assert _seen(lane) == _seen(plain)


def test_the_lane_is_offered_in_a_replys_steady_state():
    """The test above compares nothing if the lane is never taken: a plain reply must take it."""
    core = _core("pcm24k", True)
    core.agent_event(ap.ReplyStarted("r1"), 0.0)
    k = 0
    while core.summary.time_to_first_agent_audio_ms is None:  # until its first frame: agent_event counts when it came
        chunk = ap.ReplyAudio("r1", _chunk("pcm24k", k))
        assert _steady_frames(core, chunk) is None
        core.agent_event(chunk, 0.0)
        k += 1
    offered = [_steady_frames(core, ap.ReplyAudio("r1", _chunk("pcm24k", k + i))) for i in range(4)]
    assert sorted(len(f) if f is not None else None for f in offered) == [0, 0, 1, 1]  # a frame every other chunk
    core.agent_event(ap.SpeechStarted(), 0.05)  # a barge-in: the reply is interrupted
    assert _steady_frames(core, ap.ReplyAudio("r1", _chunk("pcm24k", k + 4))) is None

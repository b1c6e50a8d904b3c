"""The simulator's timeline (pure): from heard/said audio and events to turns, replies, latencies, JSON, plot data."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from gateway.audio import g711
from gateway.simulator.timeline import (
    SCHEMA_VERSION,
    CallRecord,
    Span,
    TurnSpec,
    audible_spans,
    build_timeline,
    frame_levels,
    plot_data,
)
from tests.support.audio import tone

SILENCE = b"\xff"


def line(*parts: tuple[str, float]) -> bytearray:
    """μ-law audio: ("tone"|"quiet", seconds) pieces, 8 kHz."""
    out = bytearray()
    for kind, seconds in parts:
        if kind == "tone":
            out += g711.pcm16_to_ulaw(tone(300, seconds, 8000, amplitude=0.3))
        else:
            out += SILENCE * round(seconds * 8000)
    return out


def record() -> CallRecord:
    """A call: greeting 0.5–2.5 s; turn 1 3.0–4.0 s, its reply 4.6–8.4 s, interrupted by turn 2 (8.0–9.0 s:
    cleared at 8.3 s, silent from 8.4 s); reply to turn 2 at 9.8–10.8 s; caller hangs up at 12 s."""
    r = CallRecord(
        base_url="http://127.0.0.1:8080",
        call_sid="CA" + "1" * 32,
        stream_sid="MZ" + "2" * 32,
        turns=(TurnSpec("say", "what time do you open?"), TurnSpec("wav", "stop.wav")),
    )
    r.heard = line(
        ("quiet", 0.5), ("tone", 2.0), ("quiet", 2.1), ("tone", 3.8), ("quiet", 1.4), ("tone", 1.0), ("quiet", 1.2)
    )
    r.said = line(("quiet", 3.0), ("tone", 1.0), ("quiet", 4.0), ("tone", 1.0), ("quiet", 3.0))
    r.add(3.0, "turn_started", index=0, barge_in=False)
    r.add(4.0, "turn_ended", index=0)
    r.add(5.0, "mark_received", name="g0.1")
    r.add(6.02, "mark_echoed", name="g0.1", flushed=False)
    r.add(7.5, "mark_received", name="g0.2")
    r.add(8.0, "turn_started", index=1, barge_in=True)
    r.add(8.3, "clear", dropped_ms=1500.0, marks=["g0.2"])
    r.add(8.31, "mark_echoed", name="g0.2", flushed=True)
    r.add(9.0, "turn_ended", index=1)
    r.add(12.0, "hangup", by="caller", reason="script_done")
    r.media_sent = 600
    r.media_received = 290
    r.media_received_bytes = 290 * 160
    return r


def test_levels_and_spans_follow_the_audio():
    levels = frame_levels(line(("quiet", 0.1), ("tone", 0.2), ("quiet", 0.1), ("tone", 0.2), ("quiet", 1.0)))
    assert len(levels) == 80
    # a 100 ms gap is a pause between words (merged), a 1 s gap is not
    assert audible_spans(levels) == [Span(pytest.approx(0.1), pytest.approx(0.6))]
    assert len(audible_spans(levels, merge_gap_s=0.05)) == 2
    assert audible_spans(np.zeros(10)) == []


def test_greeting_is_agent_audio_before_the_first_turn():
    tl = build_timeline(record())
    assert tl.greeting == Span(pytest.approx(0.5), pytest.approx(2.5))


def test_reply_and_response_latency_are_measured_from_the_end_of_the_turn():
    t1 = build_timeline(record()).turns[0]
    assert (t1.index, t1.start_s, t1.end_s, t1.barge_in) == (1, 3.0, 4.0, False)
    assert t1.reply == Span(pytest.approx(4.6), pytest.approx(8.4))
    assert t1.response_latency_ms == pytest.approx(600, abs=1)


def test_barge_in_turn_reports_clear_and_when_the_agent_stopped():
    t2 = build_timeline(record()).turns[1]
    assert t2.barge_in
    assert t2.clear_after_ms == pytest.approx(300, abs=1)
    assert t2.agent_stopped_after_ms == pytest.approx(400, abs=1)  # reply 1 audio ended at 8.4 s
    assert t2.reply == Span(pytest.approx(9.8), pytest.approx(10.8))
    assert t2.response_latency_ms == pytest.approx(800, abs=1)


def test_turn_without_any_later_agent_audio_has_no_reply():
    r = record()
    r.heard = line(("quiet", 12.0))
    tl = build_timeline(r)
    assert tl.greeting is None
    assert all(t.reply is None and t.response_latency_ms is None for t in tl.turns)
    assert "no reply to turn 1" in tl.format_text()


def test_marks_clears_and_hangup_are_reported():
    tl = build_timeline(record())
    assert [(m.name, m.flushed) for m in tl.marks] == [("g0.1", False), ("g0.2", True)]
    assert tl.marks[0].echoed_s - tl.marks[0].received_s == pytest.approx(1.02)
    assert tl.clears[0].dropped_ms == 1500.0 and tl.clears[0].flushed_marks == ("g0.2",)
    assert tl.hangup == {"by": "caller", "at_s": 12.0, "reason": "script_done"}
    assert tl.duration_s == pytest.approx(12.0)


def test_json_has_the_documented_stable_keys():
    d = json.loads(json.dumps(build_timeline(record()).to_dict()))
    assert set(d) == {
        "version",
        "outcome",
        "exit_code",
        "errors",
        "warnings",
        "call",
        "webhook",
        "stream",
        "duration_s",
        "out_wav",
        "records",
        "greeting",
        "turns",
        "agent_audio",
        "clears",
        "marks",
        "hangup",
        "tone_check",
        "counts",
    }
    assert set(d["tone_check"]) == {"loud_s", "flatness", "noise"}
    assert d["version"] == SCHEMA_VERSION and d["outcome"] == "completed" and d["exit_code"] == 0
    assert set(d["call"]) == {"call_sid", "account_sid", "stream_sid", "from", "to"}
    assert set(d["webhook"]) == {"url", "status", "ms", "signed"}
    assert set(d["stream"]) == {"twiml_url", "connected_url", "parameters"}
    assert set(d["turns"][0]) == {
        "index",
        "source",
        "label",
        "start_s",
        "end_s",
        "barge_in",
        "clear_after_ms",
        "agent_stopped_after_ms",
        "reply",
        "response_latency_ms",
    }
    assert set(d["clears"][0]) == {"at_s", "dropped_ms", "flushed_marks"}
    assert set(d["marks"][0]) == {"name", "received_s", "echoed_s", "flushed"}
    assert set(d["hangup"]) == {"by", "at_s", "reason"}
    assert d["counts"] == {
        "media_sent": 600,
        "media_received": 290,
        "media_received_ms": 5800,
        "marks_received": 2,
        "marks_played": 1,
        "marks_flushed": 1,
        "clears": 1,
    }


@pytest.mark.parametrize(
    "outcome, code", [("completed", 0), ("protocol_error", 1), ("refused", 3), ("connect_failed", 3)]
)
def test_exit_code_follows_the_outcome(outcome, code):
    r = record()
    r.outcome = outcome
    assert build_timeline(r).exit_code == code


def test_text_timeline_is_in_time_order_and_names_every_moment():
    text = build_timeline(record()).format_text()
    body = [ln for ln in text.splitlines() if re.match(r"^ +\d+\.\d\d s  ", ln)]
    assert len(body) == 15
    times = [float(ln.split()[0]) for ln in body]
    assert times == sorted(times)
    for needle in (
        "greeting starts",
        "turn 1 starts: 'what time do you open?'",
        "turn 1 ends",
        "reply to turn 1 starts (response latency 600 ms)",
        "(barge-in)",
        "dropped 1500 ms",
        "g0.1 echoed after 1.02 s of playout",
        "g0.2 echoed by the clear",
        "by caller (script_done)",
        "stops talking (400 ms after turn 2 started)",
    ):
        assert needle in text, needle


def test_plot_data_covers_the_call_on_one_axis():
    d = plot_data(build_timeline(record()), max_points=500)
    assert len(d.t) == len(d.caller_min) == len(d.agent_max) <= 500
    assert d.t[-1] == pytest.approx(12.0, abs=0.05)
    assert -1.0 <= d.agent_min.min() < -0.2 and 0.2 < d.agent_max.max() <= 1.0
    assert [i for i, _s, _b in d.turns] == [1, 2] and d.turns[1][2] is True
    assert [name for name, _ in d.agent_speech] == ["greeting", "reply 1", "reply 2"]
    assert d.agent_speech[1][1] == Span(pytest.approx(4.6), pytest.approx(8.4))
    assert d.clears == (8.3,)
    assert [round(ms) for _e, _s, ms in d.latencies] == [600, 800]


def test_barge_in_reply_starts_after_the_clear_not_with_the_interrupted_replys_tail():
    r = CallRecord(turns=(TurnSpec("say", "menu"), TurnSpec("say", "hours")))
    # reply 1 at 2.0-5.0 s; turn 2 barges in at 4.0-5.0; the agent goes on 5.5-6.5 (the tail), clear at 6.5,
    # the answer is 7.5-8.5
    r.heard = line(
        ("quiet", 2.0), ("tone", 3.0), ("quiet", 0.5), ("tone", 1.0), ("quiet", 1.0), ("tone", 1.0), ("quiet", 1.5)
    )
    r.said = line(("quiet", 10.0))
    r.add(0.5, "turn_started", index=0, barge_in=False)
    r.add(1.5, "turn_ended", index=0)
    r.add(4.0, "turn_started", index=1, barge_in=True)
    r.add(5.0, "turn_ended", index=1)
    r.add(6.5, "clear", dropped_ms=100.0, marks=[])
    t1, t2 = build_timeline(r).turns
    assert t1.reply == Span(pytest.approx(2.0), pytest.approx(6.5))
    assert t2.barge_in and t2.clear_after_ms == pytest.approx(2500, abs=1)
    assert t2.agent_stopped_after_ms == pytest.approx(2500, abs=1)
    assert t2.reply == Span(pytest.approx(7.5), pytest.approx(8.5))
    assert t2.response_latency_ms == pytest.approx(2500, abs=1)


def test_barge_in_is_reported_from_the_script_even_in_a_pause_between_sentences():
    r = CallRecord(turns=(TurnSpec("say", "a"), TurnSpec("say", "b")))
    r.heard = line(("quiet", 2.0), ("tone", 1.0), ("quiet", 1.0), ("tone", 1.0), ("quiet", 2.0))
    r.add(0.5, "turn_started", index=0, barge_in=False)
    r.add(1.5, "turn_ended", index=0)
    r.add(3.5, "turn_started", index=1, barge_in=True)  # in the pause at 3.0-4.0
    r.add(4.5, "turn_ended", index=1)
    t2 = build_timeline(r).turns[1]
    assert t2.barge_in and t2.clear_after_ms is None  # no clear came: the timeline says so
    assert t2.agent_stopped_after_ms == pytest.approx(1500, abs=1)  # the reply went on until 5.0


def test_without_a_clear_the_answer_is_the_audio_after_a_pause():
    r = CallRecord(turns=(TurnSpec("say", "a"), TurnSpec("say", "b")), pause_s=1.0)
    # reply 1 at 2.0-5.0; turn 2 barges in at 3.5-4.5; the agent goes on (5.4-6.0, a 0.4 s gap) and answers at
    # 7.5 (a 1.5 s gap); no clear
    r.heard = line(
        ("quiet", 2.0), ("tone", 3.0), ("quiet", 0.4), ("tone", 0.6), ("quiet", 1.5), ("tone", 1.0), ("quiet", 1.0)
    )
    r.add(0.5, "turn_started", index=0, barge_in=False)
    r.add(1.5, "turn_ended", index=0)
    r.add(3.5, "turn_started", index=1, barge_in=True)
    r.add(4.5, "turn_ended", index=1)
    t2 = build_timeline(r).turns[1]
    assert t2.reply == Span(pytest.approx(7.5), pytest.approx(8.5))
    assert t2.response_latency_ms == pytest.approx(3000, abs=1)
    assert t2.clear_after_ms is None and t2.agent_stopped_after_ms == pytest.approx(2500, abs=1)  # went on to 6.0

"""The outbound queue (gateway/call/outbound_queue.py): what goes to the carrier, when, and in which messages."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.call.outbound_queue import OutboundQueue
from gateway.call.stats import CallSummary
from gateway.playout import PlayoutTracker
from tests.support.call_script import FRAME, ScriptDialect


def queue(*, min_message_ms: int = 20, per_message: int = 1, max_frames: int = 50) -> OutboundQueue:
    return OutboundQueue(
        ScriptDialect(min_message_ms=min_message_ms),
        PlayoutTracker(),
        CallSummary(),
        frames_per_message=per_message,
        lead_target_ms=200,
        mark_interval_ms=1000,
        max_frames=max_frames,
    )


def drain(q: OutboundQueue, now: float) -> list[str]:
    out = []
    while (msg := q.pull(now)) is not None:
        out.append(str(msg))
    return out


@pytest.mark.parametrize(
    ("per_message", "min_ms", "frames", "expect"),
    [
        (1, 20, 3, ["media 1", "media 1", "media 1", "mark g0.1"]),
        (2, 20, 3, ["media 2", "media 1", "mark g0.1"]),
        (1, 100, 7, ["media 5", "media 5", "mark g0.1"]),  # Exotel: ≥ 100 ms, the tail padded with silence
        (9, 20, 3, ["media 3", "mark g0.1"]),
    ],
)
def test_a_finished_reply_goes_out_in_messages_within_the_dialects_bounds(per_message, min_ms, frames, expect):
    q = queue(per_message=per_message, min_message_ms=min_ms)
    q.put_audio("r1", [FRAME] * frames)
    q.put_mark("r1")
    assert drain(q, 0.0) + drain(q, 1.0) == expect  # (at most 200 ms ahead: the rest a second later)


def test_a_carrier_with_a_minimum_message_waits_for_more_of_a_live_reply_then_pads():
    q = queue(min_message_ms=100)
    q.reply_active = True
    q.put_audio("r1", [FRAME] * 3)
    assert drain(q, 0.0) == [] and q.wake_at == pytest.approx(0.02)
    assert drain(q, 0.1) == []  # still within two message lengths of quiet
    assert drain(q, 0.2) == ["media 5"]  # the agent went quiet: send what there is, padded


def test_room_is_counted_in_audio_frames_and_a_clear_empties_the_queue_first_in_line():
    q = queue(max_frames=4)
    q.put_audio("r1", [FRAME] * 4)
    q.put_mark("r1")
    assert not q.has_room and q.queued_ms == 80
    assert q.clear("clear", 0.0, asked_at=None) == 80
    assert q.has_room and drain(q, 0.0) == ["clear"]


def test_a_mark_is_sent_after_each_second_of_audio():
    q = queue()
    q.put_audio("r1", [FRAME] * 60)
    sent = []
    now = 0.0
    while q.pending:
        sent += drain(q, now)
        now += 0.02
    assert [m for m in sent if m.startswith("mark")] == ["mark g0.1"] and sent.index("mark g0.1") == 50


# ---- take: the fast lane's put_audio + pull in one step ---------------------------------------------------------
class _PayloadDialect(ScriptDialect):
    """Says which bytes a media message carries, so two queues' messages can be compared byte for byte."""

    def build_media(self, payload: bytes) -> str:
        return f"media {payload.hex()}"


_TAGS = ["r1", "r2", None]


def _state(q: OutboundQueue, playout: PlayoutTracker, summary: CallSummary) -> dict[str, Any]:
    """What can be seen of a queue, its playout model and its call's counts."""
    return {
        "items": list(q.items), "urgent": list(q.urgent), "frames": q.frames, "wake_at": q.wake_at,
        "clock_marks": list(q.clock_marks), "tag_of": dict(q.tag_of), "generation": playout.generation,
        "sent_ms": playout.sent_ms, "buffer_end": playout.buffer_end, "pending_marks": playout.pending_marks,
        "reply_sent": [playout.reply_sent_ms(t) for t in _TAGS], "summary": asdict(summary),
    }  # fmt: skip


_OP = st.one_of(
    st.tuples(st.just("audio"), st.sampled_from(["r1", "r2", None]), st.integers(1, 3)),
    st.tuples(st.just("mark"), st.sampled_from(["r1", "r2", None]), st.booleans()),
    st.tuples(st.just("pull"), st.just(None), st.just(0)),
    st.tuples(st.just("clear"), st.just(None), st.just(0)),
    st.tuples(st.just("active"), st.just(None), st.booleans()),
    st.tuples(st.just("time"), st.just(None), st.integers(0, 120)),
    st.tuples(st.just("loop"), st.just(None), st.booleans()),
)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(
    ops=st.lists(_OP, max_size=60),
    per_message=st.sampled_from([1, 2, 5]),
    min_ms=st.sampled_from([20, 100]),
    marks=st.booleans(),
    mark_ms=st.sampled_from([40, 1000]),
)
def test_take_is_put_audio_then_pull(ops, per_message, min_ms, marks, mark_ms):
    """OutboundQueue.take (CarrierWriter.send_audio's step) hands out the message put_audio + pull would, and leaves
    the queue, the playout model and the call's counts exactly as they would: whatever is queued, urgent, held back
    for pacing or for a carrier's minimum message, with hold audio looping or not, with or without mark echoes."""

    def new() -> tuple[OutboundQueue, PlayoutTracker, CallSummary]:
        playout, summary = PlayoutTracker(), CallSummary()
        q = OutboundQueue(
            _PayloadDialect(min_message_ms=min_ms, marks=marks),
            playout,
            summary,
            frames_per_message=per_message,
            lead_target_ms=100,
            mark_interval_ms=mark_ms,
            max_frames=50,
        )
        return q, playout, summary

    fast, slow = new(), new()
    now, n = 0.0, 0
    for op, tag, arg in ops:
        if op == "audio":
            frames = [bytes([(n + i) % 256]) * 160 for i in range(arg)]
            n += arg
            slow[0].put_audio(tag, frames)
            assert fast[0].take(tag, frames, now) == slow[0].pull(now)
        elif op == "time":
            now += arg / 1000.0
        else:
            for q, playout, _summary in (fast, slow):
                if op == "mark":
                    q.put_mark(tag, waited=arg)
                elif op == "pull":
                    q.pull(now)
                elif op == "clear":
                    playout.clear(now)
                    q.clear("clear", now, asked_at=None)
                elif op == "active":
                    q.reply_active = arg
                elif op == "loop":  # hold audio starts or stops (gateway.call.hold)
                    q.loop = ("__hold__", lambda k: [b"\x01" * 160] * k) if arg else None
                    if not arg:
                        q.drop_tag("__hold__")
        assert _state(*fast) == _state(*slow)
    # What is still queued, and what each mark proves when it comes back: the same for both.
    outs = []
    for q, playout, _summary in (fast, slow):
        sent, t = [], now
        q.loop = None
        while q.pending and t < now + 60:
            while (msg := q.pull(t)) is not None:
                sent.append(msg)
            t += 0.02
        names = [m.split(" ", 1)[1] for m in sent if str(m).startswith("mark ")] + [name for _at, name in q.clock_marks]
        outs.append((sent, [playout.on_mark(name, t) for name in names]))
    assert outs[0] == outs[1]

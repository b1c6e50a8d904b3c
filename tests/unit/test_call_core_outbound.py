"""The outbound queue (gateway/call/outbound_queue.py): what goes to the carrier, when, and in which messages."""

from __future__ import annotations

import pytest

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

"""Playout accounting (gateway/playout.py), pinned to docs/architecture/twilio-media-streams.md#ordering: FIFO playout
at real time, mark echoes once everything before them has played, and ``clear`` flushing every pending mark (so old
echoes prove nothing)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.playout import MarkEcho, PlayoutTracker

T0 = 1000.0  # an arbitrary monotonic clock reading


def test_nothing_sent_means_nothing_queued() -> None:
    p = PlayoutTracker()
    assert p.lead_ms(T0) == 0.0
    assert not p.playing(T0)
    assert p.pending_marks == 0


@pytest.mark.parametrize(
    ("sends", "now", "lead"),
    [
        # (duration_ms, sent_at) ..., when we ask, expected lead in ms
        ([(20, T0)], T0, 20.0),
        # sent faster than real time: it all queues up (docs/architecture/twilio-media-streams.md#fifo-playout)
        ([(20, T0)] * 10, T0, 200.0),
        ([(20, T0)] * 10, T0 + 0.05, 150.0),  # and drains in real time
        ([(20, T0)] * 10, T0 + 0.2, 0.0),
        ([(20, T0)] * 10, T0 + 5.0, 0.0),  # never negative
        ([(100, T0), (100, T0 + 1.0)], T0 + 1.0, 100.0),  # a gap in sending lets the queue run dry first
        ([(100, T0), (100, T0 + 0.05)], T0 + 0.05, 150.0),  # sending mid-playout appends to the queue
    ],
)
def test_lead_grows_with_audio_sent_and_drains_with_time(
    sends: list[tuple[int, float]], now: float, lead: float
) -> None:
    p = PlayoutTracker()
    for ms, at in sends:
        p.on_sent(ms, at)
    assert p.lead_ms(now) == pytest.approx(lead)
    assert p.playing(now) == (lead > 0)


def test_sent_ms_and_reply_sent_ms_count_audio_per_reply() -> None:
    p = PlayoutTracker()
    p.on_sent(200, T0, "r1")
    p.on_sent(100, T0, "r1")
    p.on_sent(40, T0, "r2")
    assert p.sent_ms == 340
    assert (p.reply_sent_ms("r1"), p.reply_sent_ms("r2"), p.reply_sent_ms("r3")) == (300, 40, 0)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(st.lists(st.tuples(st.sampled_from([None, "r1", "r2", "r3"]), st.sampled_from([20, 40, 100])), max_size=30))
def test_reply_sent_ms_is_every_send_of_that_reply_summed(sends: list[tuple[str | None, int]]) -> None:
    # The reply being sent is counted apart from the others (no dict update per frame): switching back and forth
    # between replies, and audio with no reply, must still add up per reply, as a plain sum does.
    p = PlayoutTracker()
    for reply_id, ms in sends:
        p.on_sent(ms, T0, reply_id)
    for reply_id in (None, "r1", "r2", "r3"):
        assert p.reply_sent_ms(reply_id) == sum(ms for r, ms in sends if r == reply_id)
    assert p.sent_ms == sum(ms for _r, ms in sends)


def test_mark_echo_corrects_buffer_end_to_now_plus_audio_sent_after_the_mark() -> None:
    p = PlayoutTracker()
    p.on_sent(1000, T0, "r1")
    name = p.new_mark(T0, "r1")
    p.on_sent(500, T0, "r1")
    # Our model says 1.5 s queued; the echo arrives late (the carrier started playing 300 ms after we sent).
    echo = p.on_mark(name, T0 + 1.3)
    assert echo == MarkEcho(name=name, reply_id="r1", reply_played_ms=1000, round_trip_s=pytest.approx(1.3))
    assert p.lead_ms(T0 + 1.3) == pytest.approx(500.0)  # exactly what was sent after the mark
    assert p.lead_ms(T0 + 1.5) == pytest.approx(300.0)


def test_mark_echo_can_also_shorten_the_modelled_queue() -> None:
    p = PlayoutTracker()
    p.on_sent(2000, T0)
    name = p.new_mark(T0, None)
    # An echo earlier than the model expects: playback was faster than we thought.
    p.on_mark(name, T0 + 1.0)
    assert p.lead_ms(T0 + 1.0) == 0.0
    assert not p.playing(T0 + 1.0)


def test_reply_played_ms_is_audio_of_that_reply_sent_before_the_mark() -> None:
    p = PlayoutTracker()
    p.on_sent(300, T0, "r1")
    m1 = p.new_mark(T0, "r1")
    p.on_sent(200, T0, "r2")
    m2 = p.new_mark(T0, "r2")
    p.on_sent(200, T0, "r2")
    m3 = p.new_mark(T0, "r2")
    assert p.on_mark(m1, T0 + 0.3).reply_played_ms == 300
    assert p.on_mark(m2, T0 + 0.5).reply_played_ms == 200
    assert p.on_mark(m3, T0 + 0.7).reply_played_ms == 400
    assert p.reply_played_ms == {"r1": 300, "r2": 400}


def test_reply_played_ms_never_goes_backwards_on_out_of_order_echoes() -> None:
    p = PlayoutTracker()
    p.on_sent(100, T0, "r1")
    early = p.new_mark(T0, "r1")
    p.on_sent(100, T0, "r1")
    late = p.new_mark(T0, "r1")
    assert p.on_mark(late, T0 + 0.2).reply_played_ms == 200
    assert p.on_mark(early, T0 + 0.2).reply_played_ms == 200
    assert p.reply_played_ms["r1"] == 200


def test_mark_names_are_unique_and_name_their_generation() -> None:
    p = PlayoutTracker()
    names = [p.new_mark(T0, None) for _ in range(3)]
    p.clear(T0)
    names.append(p.new_mark(T0, None))
    assert len(set(names)) == 4
    assert names[0].startswith("g0.") and names[-1].startswith("g1.")
    assert p.pending_marks == 1  # only the current generation's marks count


@pytest.mark.parametrize("name", ["g0.99", "nope", "", "g1.1"])
def test_unknown_mark_echo_returns_none_and_changes_nothing(name: str) -> None:
    p = PlayoutTracker()
    p.on_sent(400, T0, "r1")
    p.new_mark(T0, "r1")
    assert p.on_mark(name, T0 + 0.1) is None
    assert p.lead_ms(T0 + 0.1) == pytest.approx(300.0)
    assert p.reply_played_ms == {}
    assert p.stale_echoes == 0
    assert p.pending_marks == 1


def test_a_mark_echo_counts_once() -> None:
    p = PlayoutTracker()
    p.on_sent(100, T0)
    name = p.new_mark(T0, None)
    assert p.on_mark(name, T0 + 0.1) is not None
    assert p.on_mark(name, T0 + 0.2) is None
    assert p.pending_marks == 0


def test_clear_returns_unplayed_ms_and_starts_a_new_generation() -> None:
    p = PlayoutTracker()
    p.on_sent(3000, T0, "r1")
    dropped = p.clear(T0 + 1.0)
    assert dropped == pytest.approx(2000.0)
    assert p.generation == 1
    assert p.sent_ms == 0
    assert p.lead_ms(T0 + 1.0) == 0.0
    assert not p.playing(T0 + 1.0)
    assert p.clear(T0 + 1.0) == 0.0  # a second clear has nothing to drop
    assert p.generation == 2


def test_clear_after_everything_played_drops_nothing() -> None:
    p = PlayoutTracker()
    p.on_sent(500, T0)
    assert p.clear(T0 + 2.0) == 0.0


def test_echoes_of_a_cleared_generation_are_stale_and_prove_nothing() -> None:
    p = PlayoutTracker()
    p.on_sent(1000, T0, "r1")
    m1 = p.new_mark(T0, "r1")
    p.on_sent(1000, T0, "r1")
    m2 = p.new_mark(T0, "r1")
    # barge-in: Twilio now echoes both pending marks at once (docs/architecture/twilio-media-streams.md#marks-and-clear)
    p.clear(T0 + 0.2)
    p.on_sent(400, T0 + 0.3, "r2")  # the next reply starts
    assert p.on_mark(m1, T0 + 0.31) is None
    assert p.on_mark(m2, T0 + 0.31) is None
    assert p.stale_echoes == 2
    assert p.reply_played_ms == {}  # the caller heard only 200 ms of r1, not 1 s or 2 s
    assert p.lead_ms(T0 + 0.31) == pytest.approx(390.0)  # the model of the new generation is untouched


def test_after_clear_new_marks_work_against_the_new_generation() -> None:
    p = PlayoutTracker()
    p.on_sent(1000, T0, "r1")
    stale = p.new_mark(T0, "r1")
    p.clear(T0 + 0.1)
    p.on_sent(600, T0 + 0.2, "r2")
    fresh = p.new_mark(T0 + 0.2, "r2")
    p.on_sent(400, T0 + 0.2, "r2")
    assert p.on_mark(stale, T0 + 0.2) is None
    echo = p.on_mark(fresh, T0 + 0.8)
    assert echo is not None and echo.reply_id == "r2" and echo.reply_played_ms == 600
    assert p.lead_ms(T0 + 0.8) == pytest.approx(400.0)
    assert p.stale_echoes == 1

"""Property-based tests of gateway.admission (pure): under any interleaving of webhooks, upgrades, starts, hang-ups
and clock jumps, the process never holds more live calls than its limit, never admits a live token twice, and
ends idle once every stream has gone."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.admission import REFUSED_AT_CAPACITY, REFUSED_DRAINING, REFUSED_TOKEN_IN_USE, Admission

ops = st.lists(
    st.one_of(
        st.tuples(st.just("reserve"), st.integers(0, 7)),
        st.tuples(st.just("open"), st.just(0)),
        st.tuples(st.just("start"), st.integers(0, 7)),
        st.tuples(st.just("release"), st.integers(0, 20)),
        st.tuples(st.just("tick"), st.integers(1, 40)),
        st.tuples(st.just("drain"), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 4), ops)
def test_limit_and_token_invariants_hold_under_any_interleaving(limit, sequence):
    a = Admission(limit=limit, reservation_ttl_s=30.0)
    now = 0.0
    pending: list[int] = []
    live: dict[int, str] = {}
    for op, arg in sequence:
        if op == "reserve":
            r = a.reserve(f"CA{arg}", now)
            assert r in (None, REFUSED_AT_CAPACITY, REFUSED_DRAINING)
            assert r != REFUSED_DRAINING or not a.accepting
        elif op == "open":
            t = a.open_stream(now)
            if isinstance(t, int):
                pending.append(t)
        elif op == "start" and pending:
            t = pending.pop(0)
            token = f"tok{arg}"
            r = a.start(t, f"CA{arg}", token, now)
            if r is None:
                assert token not in live.values()  # a live token is never admitted twice
                live[t] = token
            else:
                assert r in (REFUSED_AT_CAPACITY, REFUSED_TOKEN_IN_USE)
                assert r != REFUSED_TOKEN_IN_USE or token in live.values()
                a.release(t)
        elif op == "release":
            tickets = list(live) + pending
            if tickets:
                t = tickets[arg % len(tickets)]
                a.release(t)
                live.pop(t, None)
                if t in pending:
                    pending.remove(t)
        elif op == "tick":
            now += arg
        elif op == "drain":
            a.accepting = False
        assert a.live == len(live) <= limit
        assert a.occupancy(now) <= limit
    for t in list(live) + pending:
        a.release(t)
    assert a.idle


def test_a_reservation_expires_and_frees_its_slot():
    a = Admission(limit=1, reservation_ttl_s=30.0)
    assert a.reserve("CA1", 0.0) is None
    assert a.reserve("CA2", 10.0) == REFUSED_AT_CAPACITY
    assert a.reserve("CA1", 10.0) is None  # a webhook retry keeps (and refreshes) the same slot
    assert a.reserve("CA2", 39.0) == REFUSED_AT_CAPACITY
    assert a.reserve("CA2", 40.5) is None


def test_a_stream_claims_its_own_reservation_even_when_full():
    a = Admission(limit=2)
    assert a.reserve("CA1", 0) is None and a.reserve("CA2", 0) is None
    t1, t2 = a.open_stream(0), a.open_stream(0)
    assert isinstance(t1, int) and isinstance(t2, int)
    assert a.open_stream(0) == REFUSED_AT_CAPACITY  # a third upgrade cannot belong to a reservation
    assert a.start(t2, "CA2", "tok2", 0) is None and a.start(t1, "CA1", "tok1", 0) is None
    assert a.live == 2 and a.reservations == 0


def test_draining_refuses_new_work_but_lets_answered_calls_connect():
    a = Admission(limit=5)
    assert a.reserve("CA1", 0) is None
    a.accepting = False
    assert a.reserve("CA2", 0) == REFUSED_DRAINING
    t = a.open_stream(0)
    assert isinstance(t, int)  # CA1's webhook was answered before the drain
    assert a.open_stream(0) == REFUSED_DRAINING
    assert a.start(t, "CA1", "tok", 0) is None

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
    a = Admission(limit=limit, reservation_ttl_s=30.0, pending_limit=3, token_ttl_s=10_000.0)
    now = 0.0
    admitted: set[str] = set()
    pending: list[int] = []
    live: dict[int, str] = {}
    for op, arg in sequence:
        if op == "reserve":
            r = a.reserve(f"CA{arg}", now)
            assert r in (None, REFUSED_AT_CAPACITY, REFUSED_DRAINING)
            assert r != REFUSED_DRAINING or not a.accepting
        elif op == "open":
            opened = a.open_stream(now)
            if not isinstance(opened, str):
                t, evicted = opened
                if evicted is not None:  # the pool was full: the oldest waiting stream was closed
                    assert evicted == pending[0]
                    pending.pop(0)
                    a.release(evicted)
                pending.append(t)
            else:
                assert opened in (REFUSED_AT_CAPACITY, REFUSED_DRAINING)
        elif op == "start" and pending:
            t = pending.pop(0)
            token = f"tok{arg}"
            r = a.start(t, f"CA{arg}", token, now)
            if r is None:
                assert token not in admitted  # a token is never admitted twice (while remembered: no tick > TTL)
                admitted.add(token)
                live[t] = token
            else:  # a draining process refuses a start it promised nothing (no reservation of its CallSid)
                assert r in (REFUSED_AT_CAPACITY, REFUSED_TOKEN_IN_USE) or (r == REFUSED_DRAINING and not a.accepting)
                assert r != REFUSED_TOKEN_IN_USE or token in admitted
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
        assert a.pending == len(pending) <= 3
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
    (t1, _), (t2, _), (t3, _) = a.open_stream(0), a.open_stream(0), a.open_stream(0)  # waiting holds no slot
    assert a.start(t2, "CA2", "tok2", 0) is None and a.start(t1, "CA1", "tok1", 0) is None
    assert a.live == 2 and a.reservations == 0
    assert a.start(t3, "CA3", "tok3", 0) == REFUSED_AT_CAPACITY  # no reservation and no free slot
    a.release(t3)
    assert a.open_stream(0) == REFUSED_AT_CAPACITY  # live calls fill the limit and nobody is expected


def test_idle_upgrades_never_keep_a_reserved_stream_out():
    a = Admission(limit=100, pending_limit=32)
    waiting = []
    for _ in range(100):  # a flood of sockets that never send 'start'
        opened = a.open_stream(0)
        assert not isinstance(opened, str)
        ticket, evicted = opened
        waiting.append(ticket)
        if evicted is not None:
            assert evicted == waiting.pop(0)  # the oldest waiting socket makes room
    assert a.pending == 32 and a.occupancy(0) == 0  # they hold no call slot
    assert a.reserve("CAsigned", 0) is None  # a signed webhook is answered
    opened = a.open_stream(0)
    assert not isinstance(opened, str)
    ticket, evicted = opened
    assert evicted == waiting[0]
    assert a.start(ticket, "CAsigned", "tok", 0) is None and a.live == 1


def test_draining_refuses_new_work_but_lets_answered_calls_connect():
    a = Admission(limit=5)
    assert a.reserve("CA1", 0) is None
    a.accepting = False
    assert a.reserve("CA2", 0) == REFUSED_DRAINING
    opened = a.open_stream(0)
    assert not isinstance(opened, str)  # CA1's webhook was answered before the drain
    assert a.start(opened[0], "CA1", "tok", 0) is None
    assert a.open_stream(0) == REFUSED_DRAINING  # nobody else is expected


def test_a_used_token_is_remembered_until_its_lifetime_ends():
    a = Admission(limit=5, token_ttl_s=300.0)
    (t1, _) = a.open_stream(0.0)
    assert a.start(t1, "CA1", "tok", 0.0) is None
    a.release(t1)  # the call ended
    (t2, _) = a.open_stream(10.0)
    assert a.start(t2, "CA1", "tok", 10.0) == REFUSED_TOKEN_IN_USE
    a.release(t2)
    (t3, _) = a.open_stream(301.0)  # past its lifetime the token would not verify anyway: forgotten
    assert a.start(t3, "CA1", "tok", 301.0) is None


def test_a_draining_process_refuses_at_start_a_stream_it_promised_nothing():
    """While draining, a stream gets past open_stream whenever a reservation waits (it names no call yet); its
    'start' is then refused unless it claims a reservation: a draining process takes no new call."""
    a = Admission(limit=5)
    assert a.reserve("CA1", 0) is None  # CA1's webhook was answered before the drain
    a.accepting = False
    opened = a.open_stream(0)
    assert not isinstance(opened, str)
    ticket, _ = opened
    assert a.start(ticket, "CA_unexpected", "tok-x", 0) == REFUSED_DRAINING
    assert a.live == 0
    opened = a.open_stream(0)
    assert not isinstance(opened, str)
    assert a.start(opened[0], "CA1", "tok-1", 0) is None  # the promised call still starts
    assert a.live == 1

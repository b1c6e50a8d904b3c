"""The state store contract (gateway/state/store.py), held by the in-process store and by the Redis store against a
real ``redis-server``; and what a replica does when Redis is gone or silent (gateway/cluster/node.py): every call
bounded by ``state.op_timeout_s``, calls go on (degrade) or new streams are refused (refuse)."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from prometheus_client import CollectorRegistry, Counter

from gateway.cluster.node import Cluster
from gateway.errors import StateUnavailable
from gateway.state.redis_store import RedisStore
from gateway.state.settings import StateSettings
from gateway.state.store import Admitted, InProcessStore, LiveCall, Replica, StateStore
from tests.support.replicas import RedisServer, free_port

pytestmark = pytest.mark.asyncio(loop_scope="module")

A = Replica("replica-a", "http://127.0.0.1:1", False, 1.0)
B = Replica("replica-b", "http://127.0.0.1:2", False, 2.0)


def call(sid: str, stream: str = "MZ1", state: str = "live") -> LiveCall:
    return LiveCall(sid, stream, "twilio", "default", 1700000000.0, state)


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def redis() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    yield server
    await server.stop()


@pytest_asyncio.fixture(loop_scope="module", params=["memory", "redis"])
async def store(request, redis) -> AsyncIterator[StateStore]:
    if request.param == "memory":
        yield InProcessStore()
        return
    s = RedisStore(redis.url, prefix=f"t{time.monotonic_ns()}:", op_timeout_s=1.0)
    yield s
    await s.close()


async def test_a_token_opens_one_call_once_across_replicas(store):
    first = await store.admit_call(A, call("CA1"), "tok1", 60, 5)
    again = await store.admit_call(B, call("CA1", "MZ2"), "tok1", 60, 5)
    assert first.first_use and not again.first_use
    owner = await store.owner_of("CA1")  # the refused stream registered nothing
    assert owner is not None and owner.call.stream_sid == "MZ1"


async def test_a_new_stream_of_a_call_learns_which_live_replica_held_it(store):
    await store.heartbeat(A, [], 5)
    await store.heartbeat(B, [], 5)
    assert (await store.admit_call(A, call("CA2", "MZ1"), "tok2a", 60, 5)).previous is None
    moved = await store.admit_call(B, call("CA2", "MZ2"), "tok2b", 60, 5)
    assert moved.previous is not None and moved.previous.replica is not None
    assert moved.previous.replica.id == "replica-a" and moved.previous.replica.address == A.address
    assert moved.previous.call.stream_sid == "MZ1"
    await store.drop_calls(A, ["CA2"])
    owner = await store.owner_of("CA2")
    assert owner is not None and owner.replica is not None and owner.replica.id == "replica-b"


async def test_the_registry_mirrors_each_heartbeat_and_forgets_what_was_dropped(store):
    await store.heartbeat(A, [call("CA3"), call("CA4", state="parked")], 5)
    live = {c.call_sid: (r.id, c.state) for r, c in await store.live_calls()}
    assert live["CA3"] == ("replica-a", "live") and live["CA4"] == ("replica-a", "parked")
    await store.update_call(A, call("CA3", state="parked"))
    assert {c.call_sid: c.state for _, c in await store.live_calls()}["CA3"] == "parked"
    await store.drop_calls(A, ["CA3"])
    assert await store.owner_of("CA3") is None
    await store.heartbeat(A, [], 5)  # exactly what the replica holds: CA4 went with its call
    assert await store.owner_of("CA4") is None
    await store.leave(A)
    assert all(r.id != "replica-a" for r, _ in await store.live_calls())


async def test_a_replica_that_stops_beating_is_gone_within_its_ttl(store):
    await store.heartbeat(B, [call("CA5")], 1.0)
    owner = await store.owner_of("CA5")
    assert owner is not None and owner.replica is not None
    await asyncio.sleep(1.1)
    assert all(c.call_sid != "CA5" for _, c in await store.live_calls())
    gone = await store.owner_of("CA5")
    # Redis keeps the calls one TTL longer than the replica: call control answers 410 (gone), then 404.
    assert gone is None or gone.replica is None


async def test_a_dead_redis_fails_fast_and_a_silent_one_within_the_timeout():
    dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", op_timeout_s=0.2)
    with pytest.raises(StateUnavailable):
        await dead.owner_of("CA1")
    # A server that accepts and never answers: bounded by op_timeout_s, not by TCP.
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    silent = RedisStore(f"redis://127.0.0.1:{port}/0", op_timeout_s=0.2)
    with pytest.raises(StateUnavailable, match="took over 0.2 s"):  # ended by the op timeout, not by TCP
        await silent.admit_call(A, call("CA1"), "tok", 60, 5)
    server.close()
    await asyncio.gather(dead.close(), silent.close(), return_exceptions=True)


@pytest.mark.parametrize(("mode", "refusal"), [("degrade", None), ("refuse", "store_unavailable")])
async def test_a_replica_without_its_store_degrades_or_refuses_as_configured(mode, refusal):
    settings = StateSettings(redis_url=f"redis://127.0.0.1:{free_port()}/0", on_unavailable=mode, op_timeout_s=0.2)
    store = RedisStore(settings.redis_url, op_timeout_s=0.2)
    registry = CollectorRegistry()
    counter = Counter("state_unavailable", "", ["op"], registry=registry)
    cluster = Cluster(settings, store, token_secret=b"s", token_ttl_s=60, accepting=lambda: True, unavailable=counter)
    assert await cluster.admit(call("CA9"), "tok") == (refusal, None)
    assert registry.get_sample_value("state_unavailable_total", {"op": "admit"}) == 1
    assert ("CA9" in cluster.local) is (refusal is None)
    calls, complete = await cluster.live_calls()
    assert not complete and [c.call_sid for _, c in calls] == (["CA9"] if refusal is None else [])
    await store.close()


async def test_cluster_slots_hold_the_limit_expire_and_free(store):
    assert await store.reserve_slot("CS1", 2, 60) and await store.reserve_slot("CS2", 2, 0.3)
    assert not await store.reserve_slot("CS3", 2, 60), "the limit holds across replicas"
    assert await store.reserve_slot("CS1", 2, 60), "the same call keeps its slot (a retried webhook)"
    await asyncio.sleep(0.4)  # CS2's reservation expired: its stream never started
    assert await store.reserve_slot("CS3", 2, 60)
    await store.free_slots(["CS1"])  # hung up
    assert await store.reserve_slot("CS4", 2, 0.3)
    await store.keep_slots(["CS4"], 60)  # its stream started: the heartbeat keeps it
    await asyncio.sleep(0.4)
    assert not await store.reserve_slot("CS5", 2, 60)
    await store.free_slots(["CS3", "CS4"])


async def test_the_ends_of_one_moment_are_written_together():
    class CountingStore(InProcessStore):
        def __init__(self) -> None:
            super().__init__()
            self.batches: list[list[str]] = []

        async def drop_calls(self, me: Replica, call_sids: list[str]) -> None:
            self.batches.append(call_sids)
            await super().drop_calls(me, call_sids)

    store = CountingStore()
    cluster = Cluster(StateSettings(), store, token_secret=b"s", token_ttl_s=60, accepting=lambda: True)
    for i in range(5):
        assert await cluster.admit(call(f"CB{i}", f"MZ{i}"), f"tok-b{i}") == (None, None)
    for i in range(5):
        cluster.ended(f"CB{i}", f"MZ{i}")
    cluster.ended("CB0", "MZ0")  # twice: nothing more to write
    await cluster.stop()  # waits for the writes under way
    assert store.batches == [[f"CB{i}" for i in range(5)]]


async def test_a_draining_replica_tells_the_registry_at_once_not_at_its_next_heartbeat():
    from gateway.call_registry import CallRegistry

    calls = CallRegistry()
    store = InProcessStore()
    settings = StateSettings(call_ttl_s=300)  # the next regular heartbeat is 100 s away
    cluster = Cluster(settings, store, token_secret=b"s", token_ttl_s=60, accepting=lambda: calls.accepting)
    calls.on_accepting.append(cluster.draining_changed)
    await cluster.start(None)
    await cluster.admit(call("CD1"), "tok-d1")
    assert [r.draining for r, _ in await store.live_calls()] == [False]
    calls.accepting = False  # what gateway.drain does on SIGTERM
    async with asyncio.timeout(5):  # a bound for a hung test
        while [r.draining for r, _ in await store.live_calls()] != [True]:
            await asyncio.sleep(0.01)
    await cluster.stop()
    assert await store.live_calls() == []  # it left the registry


async def test_a_replica_without_an_internal_listener_advertises_no_address():
    # In-process store: no internal listener, nothing for another replica to reach. It once advertised (and logged
    # at start-up) http://<host>:0.
    from structlog.testing import capture_logs

    cluster = Cluster(StateSettings(), InProcessStore(), token_secret=b"s", token_ttl_s=60, accepting=lambda: True)
    with capture_logs() as logs:
        await cluster.start(None)
    await cluster.stop()
    assert cluster.me.address == ""
    assert [e["address"] for e in logs if e["event"] == "cluster.joined"] == [None]


# ---- replicas sharing a real redis-server: the registry and the slots across a redirect, a replay, a death ----------
def _replica(redis: RedisServer, prefix: str, **kw: object) -> Cluster:
    op = float(kw.pop("op_timeout_s", 1.0))  # type: ignore[arg-type]
    settings = StateSettings(redis_url=redis.url, key_prefix=prefix, op_timeout_s=op, **kw)  # type: ignore[arg-type]
    store = RedisStore(redis.url, prefix=prefix, op_timeout_s=op)
    return Cluster(settings, store, token_secret=b"s", token_ttl_s=60, accepting=lambda: True)


def _now(sid: str, stream: str) -> LiveCall:
    return LiveCall(sid, stream, "twilio", "default", time.time())


async def test_a_refused_replay_of_an_old_token_leaves_the_live_call_in_its_replicas_registry(redis):
    """CA1's first stream ran on B (token T1); a redirect moved it to A (token T2), where it is live. A replay of T1
    lands on A (A's process never saw T1, so only the store refuses it): the live call stays in A's registry, and
    so in the store after A's next heartbeat (/calls/live, call control, its cluster slot)."""
    prefix = f"r{time.monotonic_ns()}:"
    a, b = _replica(redis, prefix), _replica(redis, prefix)
    await a.start(1)
    await b.start(2)
    try:
        assert await b.admit(_now("CA1", "MZ1"), "T1") == (None, None)
        refusal, previous = await a.admit(_now("CA1", "MZ2"), "T2")  # the re-attach lands on A
        assert refusal is None and previous is not None and previous.replica is not None
        assert previous.replica.id == b.me.id
        b.ended("CA1", "MZ1", call_over=False)  # B handed the session over
        await asyncio.sleep(0.2)
        owner = await a.owner_of("CA1")
        assert owner is not None and owner.call.stream_sid == "MZ2"

        refusal, _ = await a.admit(_now("CA1", "MZ3"), "T1")  # the replay: refused, as it should be
        assert refusal == "token_in_use"
        await a._beat()  # noqa: SLF001 - the next heartbeat, now
        owner = await a.owner_of("CA1")
        assert "CA1" in a.local and owner is not None and owner.call.stream_sid == "MZ2", (
            f"the live call CA1/MZ2 on A is gone: a.local={sorted(a.local)}, owner={owner}"
        )
    finally:
        await a.stop()
        await b.stop()


async def test_a_call_that_ends_while_a_replay_of_its_token_is_refused_stays_ended():
    """The refused admission must not bring back an entry whose stream ended while the store was being asked (a
    ghost the heartbeat would keep registered, with its slot, for ever)."""

    class SlowStore(InProcessStore):
        def __init__(self) -> None:
            super().__init__()
            self.asked = asyncio.Event()
            self.answer = asyncio.Event()

        async def admit_call(
            self, me: Replica, call: LiveCall, token_key: str, token_ttl_s: float, call_ttl_s: float
        ) -> Admitted:
            if call.stream_sid == "MZ9":
                self.asked.set()
                await self.answer.wait()
            return await super().admit_call(me, call, token_key, token_ttl_s, call_ttl_s)

    store = SlowStore()
    cluster = Cluster(StateSettings(), store, token_secret=b"s", token_ttl_s=60, accepting=lambda: True)
    assert await cluster.admit(call("CE1", "MZ1"), "tok-e1") == (None, None)
    replay = asyncio.get_running_loop().create_task(cluster.admit(call("CE1", "MZ9"), "tok-e1"))
    await store.asked.wait()
    assert cluster.local["CE1"].stream_sid == "MZ1", "the live entry is kept while the replay is asked about"
    cluster.ended("CE1", "MZ1")  # the live call hangs up meanwhile
    store.answer.set()
    assert await replay == ("token_in_use", None)
    assert "CE1" not in cluster.local
    await cluster.stop()
    assert await store.owner_of("CE1") is None


async def test_an_admission_cancelled_while_the_store_answers_leaves_no_ghost_and_its_end_goes_through():
    """A stream cancelled while the store is asked about it (its task ended: shutdown, a closed socket) is no longer
    being admitted: the heartbeat stops carrying it, and an end of the call waiting for that answer goes ahead."""

    class HungStore(InProcessStore):
        def __init__(self) -> None:
            super().__init__()
            self.asked = asyncio.Event()

        async def admit_call(
            self, me: Replica, call: LiveCall, token_key: str, token_ttl_s: float, call_ttl_s: float
        ) -> Admitted:
            if call.stream_sid == "MZ9":
                self.asked.set()
                await asyncio.Event().wait()  # never answers
            return await super().admit_call(me, call, token_key, token_ttl_s, call_ttl_s)

    store = HungStore()
    cluster = Cluster(StateSettings(), store, token_secret=b"s", token_ttl_s=60, accepting=lambda: True)
    assert await cluster.admit(call("CG1", "MZ1"), "tok-g1") == (None, None)
    again = asyncio.get_running_loop().create_task(cluster.admit(call("CG1", "MZ9"), "tok-g9"))
    await store.asked.wait()
    cluster.ended("CG1", "MZ1")  # the live stream ends; its end waits for the new stream's answer
    again.cancel()
    with pytest.raises(asyncio.CancelledError):
        await again
    await asyncio.sleep(0.05)  # the end's flush runs
    await cluster._beat()  # noqa: SLF001 - a heartbeat writes the exact set of calls this replica carries
    ghost = await store.owner_of("CG1")
    await cluster.stop()
    assert "CG1" not in cluster.local
    assert ghost is None, "the ended call is still registered (a ghost of the cancelled stream)"


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_call_control_finds_the_replica_where_the_call_is_live_not_a_stale_parked_entry(kind, redis):
    """A redirect moved a call from one replica (where its session parked) to another (live). Until the parked
    entry goes (the hand-over's round trip; or, when the hand-over missed because the old stream was still winding
    down, the whole reattach_window_s), both hold the call: the owner is the replica where it is live (the parked
    one's act() would answer 409 "the call's stream has stopped" to a hang-up of a call live elsewhere), whatever
    order the store lists the replicas in. Tried with both replicas in both roles, for several pairs of replica ids
    (SMEMBERS lists a small set in an order its hash seed decides: a pair that shares a bucket lists the last added
    first, whichever role it has)."""
    wrong = []
    pairs = [(f"replica-{k}a", f"replica-{k}b") for k in range(6)]
    for n, (parked_on, live_on) in enumerate([p for x, y in pairs for p in ((x, y), (y, x))]):
        prefix = f"o{n}-{time.monotonic_ns()}:"
        store: StateStore = InProcessStore() if kind == "memory" else RedisStore(redis.url, prefix=prefix)
        old = Replica(parked_on, "http://127.0.0.1:1")
        new = Replica(live_on, "http://127.0.0.1:2")
        try:
            await store.heartbeat(old, [_now("CA2", "MZ1")], 15)
            await store.heartbeat(new, [], 15)
            await store.update_call(old, dataclasses.replace(_now("CA2", "MZ1"), state="parked", session_id="s1"))
            admitted = await store.admit_call(new, _now("CA2", "MZ2"), f"T{n}", 60, 15)  # the new stream
            assert admitted.first_use and admitted.previous is not None
            owner = await store.owner_of("CA2")
            assert owner is not None and owner.replica is not None
            if (owner.replica.id, owner.call.state) != (new.id, "live"):
                wrong.append(f"{owner.replica.id} ({owner.call.state}) while live on {new.id}")
        finally:
            await store.close()
    assert not wrong, f"owner_of answered the stale parked entry: {wrong}"


async def test_the_owner_of_a_call_held_twice_is_a_live_replica_then_the_newest_stream(store):
    """Whatever order the store lists the replicas in (several pairs of ids, both registered first: see above)."""
    wrong, dead = [], []
    for k in range(6):
        old, new = Replica(f"replica-old-{k}", "http://127.0.0.1:1"), Replica(f"replica-new-{k}", "http://127.0.0.1:2")
        held = {old: LiveCall(f"CA6-{k}", "MZ1", "twilio", "default", 1700000001.0),
                new: LiveCall(f"CA6-{k}", "MZ2", "twilio", "default", 1700000002.0)}  # fmt: skip
        # Both live (a new stream started before the old one's stop came through): the newest stream.
        for order in ((old, new), (new, old)):
            for r in order:
                await store.heartbeat(r, [held[r]], 15)
            owner = await store.owner_of(f"CA6-{k}")
            assert owner is not None and owner.replica is not None
            if (owner.replica.id, owner.call.stream_sid) != (new.id, "MZ2"):
                wrong.append(f"{owner.replica.id} ({owner.call.stream_sid})")
            for r in order:
                await store.leave(r)
        # A replica that stopped beating still holds it live, a live one parked: the live replica answers
        # (forwarded, not 410: "held by another live replica").
        alive, gone = Replica(f"replica-alive-{k}", "http://127.0.0.1:1"), Replica(f"replica-dead-{k}", "")
        await store.heartbeat(alive, [call(f"CA7-{k}", "MZ1", state="parked")], 15)
        await store.heartbeat(gone, [call(f"CA7-{k}", "MZ2")], 0.2)
        dead.append(alive)
    await asyncio.sleep(0.3)
    for k, alive in enumerate(dead):
        owner = await store.owner_of(f"CA7-{k}")
        assert owner is not None
        if owner.replica is None or owner.replica.id != alive.id:
            wrong.append(f"CA7-{k}: {owner.replica} ({owner.call.state})")
        await store.leave(alive)
    assert not wrong, wrong


async def test_a_stale_parked_session_that_expires_leaves_the_slot_of_its_call_live_elsewhere(redis):
    """The redirect's hand-over missed (the old stream was still winding down): B keeps the parked session for the
    whole reattach window while the call goes on live on A. When that session expires, B's end of it must not free
    the cluster slot the call still holds on A; A's hang-up frees it."""
    prefix = f"p{time.monotonic_ns()}:"
    a = _replica(redis, prefix, max_cluster_calls=1)
    b = _replica(redis, prefix, max_cluster_calls=1)
    await a.start(1)
    await b.start(2)
    try:
        assert await b.reserve("CP1") is None
        assert await b.admit(_now("CP1", "MZ1"), "TP1") == (None, None)
        b.parked("CP1", "MZ1", "s1")
        refusal, previous = await a.admit(_now("CP1", "MZ2"), "TP2")  # the new stream lands on A
        assert refusal is None and previous is not None
        await a._beat()  # noqa: SLF001 - A's heartbeat keeps the call's slot
        b.ended("CP1", "MZ1")  # the stale parked session expired (ParkedAgents.on_gone: the call is over, it says)
        async with asyncio.timeout(5):
            while b._tasks:  # noqa: SLF001 - B's batched end written
                await asyncio.sleep(0.01)
        assert await b.reserve("CP2") == "at_capacity", "the call live on A still holds its slot"
        a.ended("CP1", "MZ2")  # the caller hangs up
        async with asyncio.timeout(5):
            while a._tasks:  # noqa: SLF001
                await asyncio.sleep(0.01)
        assert await b.reserve("CP2") is None
        await b.store.free_slots(["CP2"])
    finally:
        await a.stop()
        await b.stop()


async def test_a_new_stream_takes_over_from_the_replica_that_held_the_call_last(store):
    """Two other replicas still hold the call parked (an earlier hand-over missed: the older session waits out its
    reattach window): the new stream asks the one whose stream is the newest, whose session is the call's."""
    wrong = []
    for k in range(8):  # several pairs of ids, each registered first (see above)
        older = Replica(f"replica-older-{k}", "http://127.0.0.1:1")
        newer = Replica(f"replica-newer-{k}", "http://127.0.0.1:2")
        held = {newer: LiveCall("CA8", "MZ2", "twilio", "default", 1700000002.0, "parked", "s-MZ2"),
                older: LiveCall("CA8", "MZ1", "twilio", "default", 1700000001.0, "parked", "s-MZ1")}  # fmt: skip
        for n, order in enumerate([(newer, older), (older, newer)]):
            for r in order:
                await store.heartbeat(r, [held[r]], 15)
            new_stream = LiveCall("CA8", "MZ3", "twilio", "default", 1700000003.0)
            moved = await store.admit_call(A, new_stream, f"t8-{k}-{n}", 60, 15)
            assert moved.previous is not None and moved.previous.replica is not None
            if (moved.previous.replica.id, moved.previous.call.session_id) != (newer.id, "s-MZ2"):
                wrong.append(f"{moved.previous.replica.id} ({moved.previous.call.session_id})")
            await store.drop_calls(A, ["CA8"])
            for r in order:
                await store.leave(r)
    assert not wrong, wrong
    await store.leave(A)


async def test_a_dead_replicas_cluster_slots_free_once_it_is_known_dead_not_a_ttl_later(redis):
    """state.max_cluster_calls: a live call's slot is kept by its replica's heartbeat and freed at hang-up or, when
    the replica dies, once it is known dead: call_ttl_s after its last heartbeat, plus the margin of a beat's own
    two store calls (2 x op_timeout_s). They were kept for 2 x call_ttl_s, held a whole TTL after the replica was
    known dead. Both bounds are measured from the last heartbeat's start: the slot goes no sooner than the replica's
    record (its live calls keep their slots while it beats), and well before twice the TTL (slack for a loaded
    machine: the expected ~5 s against the old 8 s)."""
    prefix = f"s{time.monotonic_ns()}:"
    ttl, op = 4.0, 0.5
    a = _replica(redis, prefix, max_cluster_calls=1, call_ttl_s=ttl, op_timeout_s=op)
    b = _replica(redis, prefix, max_cluster_calls=1, call_ttl_s=ttl, op_timeout_s=op)
    await a.start(1)
    assert a._beat_task is not None  # noqa: SLF001
    a._beat_task.cancel()  # noqa: SLF001 - A will die after the beat below: no more heartbeats, no leave (SIGKILL)
    await asyncio.gather(a._beat_task, return_exceptions=True)  # noqa: SLF001
    try:
        assert await a.reserve("CS1") is None
        assert await a.admit(_now("CS1", "MZ1"), "TS1") == (None, None)
        kept = time.monotonic()
        await a._beat()  # noqa: SLF001 - its last heartbeat keeps the live call's slot
        died = time.monotonic()
        assert await b.reserve("CS2") == "at_capacity", "a live call's slot is held"
        await asyncio.sleep(ttl + 0.3)
        gone = await b.owner_of("CS1")
        assert gone is not None and gone.replica is None, "A is known dead after call_ttl_s"
        async with asyncio.timeout(2 * ttl + 5):  # a bound for a hung test
            while (refusal := await b.reserve("CS2")) is not None:
                await asyncio.sleep(0.05)
        waited = time.monotonic() - kept
        assert refusal is None
        assert waited >= ttl, f"the slot went {waited:.1f} s after the last heartbeat, before A was known dead"
        assert waited < 2 * ttl, (
            f"{waited:.1f} s after A's last heartbeat ({waited - (died - kept):.1f} s after it died; call_ttl_s = "
            f"{ttl} s, op_timeout_s = {op} s) its call's slot was still held"
        )
    finally:
        await b.store.free_slots(["CS1", "CS2"])
        await a.store.close()
        await b.stop()

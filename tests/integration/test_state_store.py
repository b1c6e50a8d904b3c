"""The state store contract (gateway/state/store.py), held by the in-process store and by the Redis store against a
real ``redis-server``; and what a replica does when Redis is gone or silent (gateway/cluster/node.py): every call
bounded by ``state.op_timeout_s``, calls go on (degrade) or new streams are refused (refuse)."""

from __future__ import annotations

import asyncio
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

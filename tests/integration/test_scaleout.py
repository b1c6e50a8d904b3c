"""Many replicas behave as one gateway (docs/architecture/scale-out.md): a real ``redis-server`` and three
``python -m gateway serve`` processes on loopback sharing it and ``GATEWAY_TOKEN_SECRET``, their agent the
spec-following fake served by this test. The processes start once for the module; the tests run in file order (the
last two kill a replica and stop Redis).

- a webhook on A, its stream on B, a REST hang-up sent to C ends the call on B; ``GET /calls/live`` on any replica
  lists it under B; ``say`` sent to A reaches the agent session on B;
- a stream token used on B is refused on A;
- a redirect whose new stream lands on C keeps the same agent session (``session.resume``, no ``session.end`` on B)
  and loses no caller audio after the new stream's ``start``;
- a forged or replayed internal forward is refused;
- SIGKILL of B clears its calls from ``GET /calls/live`` within the TTL, and call control for them answers 404/410;
- Redis stopped mid-call leaves the call running, and the next call still connects.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from gateway.cluster.forward import HEADER, forward_key, sign_forward
from tests.support.audio import ulaw_tone
from tests.support.fake_agent import FakeAgent
from tests.support.replicas import RedisServer, Replica, start_replica, wait_ready
from tests.support.twilio_peer import TwilioPeer

pytestmark = pytest.mark.asyncio(loop_scope="module")

SECRET = "scaleout-secret"
API_KEY = "scaleout-operator-key"
TTL_S = 1.5
AUTH = {"Authorization": f"Bearer {API_KEY}"}
CONFIG = f"""
[server]
reattach_window_s = 5.0
[state]
call_ttl_s = {TTL_S}
internal_host = "127.0.0.1"
internal_port = 0
"""


class Cluster:
    def __init__(self, redis: RedisServer, agent: FakeAgent, replicas: dict[str, Replica], http: Any) -> None:
        self.redis, self.agent, self.replicas, self.http = redis, agent, replicas, http

    def __getitem__(self, name: str) -> Replica:
        return self.replicas[name]

    async def live(self, name: str) -> dict[str, Any]:
        async with self.http.get(self[name].base_url + "/calls/live", headers=AUTH) as r:
            assert r.status == 200, await r.text()
            return dict(await r.json())

    async def control(self, name: str, call_sid: str, action: str, body: Any = None) -> tuple[int, dict[str, Any]]:
        url = f"{self[name].base_url}/calls/{call_sid}/{action}"
        async with self.http.post(url, json=body if body is not None else {}, headers=AUTH) as r:
            return r.status, dict(await r.json())

    async def call(self, webhook_on: str, stream_on: str, call_sid: str | None = None) -> TwilioPeer:
        """Twilio's side: the voice webhook on one replica, the media stream (as a load balancer would send it) on
        another."""
        peer = TwilioPeer(self[webhook_on].base_url, self.http, **({"call_sid": call_sid} if call_sid else {}))
        await peer.dial()
        peer.stream_url = peer.stream_url.replace(f":{self[webhook_on].port}/", f":{self[stream_on].port}/")
        await peer.connect()
        return peer


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def cluster() -> AsyncIterator[Cluster]:
    redis = RedisServer()
    await redis.start()
    agent = FakeAgent()
    runner = aiohttp.web.AppRunner(agent.app)
    await runner.setup()
    site = aiohttp.web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    agent_url = f"ws://127.0.0.1:{runner.addresses[0][1]}/v1/ws"
    env = {
        "AGENT_URL": agent_url,
        "ASSEMBLYAI_API_KEY": agent.api_key,
        "GATEWAY_TOKEN_SECRET": SECRET,
        "GATEWAY_API_KEY": API_KEY,
        "REDIS_URL": redis.url,
    }
    names = ("A", "B", "C")
    started = await asyncio.gather(*(start_replica(n, CONFIG, env) for n in names))
    replicas = dict(zip(names, started, strict=True))
    async with aiohttp.ClientSession() as http:
        try:
            await wait_ready(list(replicas.values()), http)
            yield Cluster(redis, agent, replicas, http)
        finally:
            await asyncio.gather(*(r.stop() for r in replicas.values()))
            await redis.stop()
            await runner.cleanup()


async def _until(pred: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not await pred():
            await asyncio.sleep(0.05)


async def test_webhook_on_a_stream_on_b_hangup_sent_to_c_ends_the_call_on_b(cluster):
    peer = await cluster.call("A", "B")
    sess = await cluster.agent.session()
    live = await cluster.live("C")
    (row,) = [c for c in live["calls"] if c["call_sid"] == peer.call_sid]
    assert row["replica"] == cluster["B"].replica_id and row["state"] == "live" and live["store"] == "redis"
    assert not live["partial"]

    # A body travels with the forward (and under its signature): the agent on B hears what was asked on A.
    status, answer = await cluster.control("A", peer.call_sid, "say", {"instructions": "Say the order shipped."})
    assert status == 202 and answer["replica"] == cluster["B"].replica_id, answer
    assert (await sess.next_message("reply.create"))["instructions"] == "Say the order shipped."

    status, answer = await cluster.control("C", peer.call_sid, "hangup")
    assert status == 202, answer
    assert answer["replica"] == cluster["B"].replica_id
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
    ended = await cluster["B"].wait_event("call.ended", call_sid=peer.call_sid)
    assert ended["outcome"] == "api_hangup"
    assert sess.ended_by_client, "the agent session ended with session.end"
    assert cluster["C"].events("call_control.hangup") == [] and cluster["A"].events("call.started") == []
    await _until(lambda: _absent(cluster, "A", peer.call_sid))


async def _absent(cluster: Cluster, name: str, call_sid: str) -> bool:
    return all(c["call_sid"] != call_sid for c in (await cluster.live(name))["calls"])


async def test_call_control_needs_the_operator_key_on_every_replica(cluster):
    async with cluster.http.post(cluster["A"].base_url + "/calls/CAnothing/hangup") as r:
        assert r.status == 401
    async with cluster.http.get(cluster["B"].base_url + "/calls/live", headers={"Authorization": "Bearer no"}) as r:
        assert r.status == 401
    status, _ = await cluster.control("C", "CA" + "0" * 32, "say", {"instructions": "hello"})
    assert status == 404


async def test_a_token_used_on_b_is_refused_on_a(cluster):
    first = await cluster.call("A", "B")
    await cluster.agent.session()
    # A replay of the same start (same call, same token) on replica A: refused before anything is spoken.
    replay = TwilioPeer(cluster["A"].base_url, cluster.http, call_sid=first.call_sid)
    replay.stream_url = first.stream_url.replace(f":{cluster['B'].port}/", f":{cluster['A'].port}/")
    replay.parameters = dict(first.parameters)
    await replay.connect()
    await replay.wait_for(lambda: replay.closed.is_set(), timeout=10)
    assert replay.close_code == 1008
    refused = await cluster["A"].wait_event("call.refused")
    assert "another replica" in refused["reason"]
    assert not first.closed.is_set(), "the first call goes on"
    await first.close()


async def test_a_redirect_landing_on_c_resumes_the_same_session_and_loses_no_caller_audio(cluster):
    first = await cluster.call("A", "B")
    sess = await cluster.agent.session()
    await first.send_media(ulaw_tone(300, 0.2))
    await first.wait_for(lambda: len(sess.audio) >= 0.18 * 48000)
    sessions_before = len(cluster.agent.sessions)
    # The call's TwiML is replaced (a REST redirect): Twilio stops this stream, and the new <Connect><Stream> goes
    # through the webhook again (on A) and its stream, through the load balancer, to C.
    await first.stop()
    await cluster["B"].wait_event("call.agent_parked", call_sid=first.call_sid)
    second = await cluster.call("A", "C", call_sid=first.call_sid)
    # Caller audio from the new stream's start on, while C takes the session over from B.
    frames = 50
    await second.send_media(ulaw_tone(500, frames * 0.02))
    reattached = await cluster["C"].wait_event("call.reattached", call_sid=first.call_sid)
    assert reattached["session_id"] == sess.session_id
    assert reattached["previous_stream_sid"] == first.stream_sid
    handed = await cluster["B"].wait_event("call.handed_over", call_sid=first.call_sid)
    assert handed["session_id"] == sess.session_id
    assert len(cluster.agent.sessions) == sessions_before, "no new agent session"
    assert sess.resumes == 1 and not sess.ended_by_client, "resumed, never ended by B"
    assert [m["type"] for m in sess.received].count("session.update") == 1
    # Every caller frame after the new start reached the agent.
    await second.stop()
    ended = await cluster["C"].wait_event("call.ended", call_sid=first.call_sid)
    assert ended["session_id"] == sess.session_id
    assert ended["frames_in"] == frames
    assert ended["frames_to_agent"] == frames
    assert ended["frames_dropped_to_agent"] == 0
    await second.close()


async def test_a_forged_or_replayed_internal_forward_is_refused(cluster):
    b = cluster["B"]
    path = "/internal/v1/calls/CA" + "1" * 32 + "/hangup"
    url = b.internal_url + path

    async def post(header: str | None) -> int:
        headers = {HEADER: header} if header is not None else {}
        async with cluster.http.post(url, data=b"{}", headers=headers) as r:
            return r.status

    assert await post(None) == 403
    forged = sign_forward(
        forward_key(b"another-secret"),
        target=b.replica_id,
        method="POST",
        path=path,
        body=b"{}",
        now=time.time(),
        nonce=secrets.token_hex(8),
    )
    assert await post(forged) == 403
    stale = sign_forward(
        forward_key(SECRET.encode()),
        target=b.replica_id,
        method="POST",
        path=path,
        body=b"{}",
        now=time.time() - 120,
        nonce=secrets.token_hex(8),
    )
    assert await post(stale) == 403
    for_a = sign_forward(
        forward_key(SECRET.encode()),
        target=cluster["A"].replica_id,
        method="POST",
        path=path,
        body=b"{}",
        now=time.time(),
        nonce=secrets.token_hex(8),
    )
    assert await post(for_a) == 403
    good = sign_forward(
        forward_key(SECRET.encode()),
        target=b.replica_id,
        method="POST",
        path=path,
        body=b"{}",
        now=time.time(),
        nonce=secrets.token_hex(8),
    )
    assert await post(good) == 404  # genuine: no such call on B
    assert await post(good) == 403  # the same forward again: a replay

    async def logged() -> bool:  # the replica's log lines arrive over a pipe
        return len(b.events("call_control.forward_refused")) == 5

    await _until(logged)


async def test_killing_b_clears_its_calls_within_the_ttl(cluster):
    peer = await cluster.call("A", "B")
    await cluster.agent.session()
    assert not await _absent(cluster, "A", peer.call_sid)
    cluster["B"].proc.send_signal(signal.SIGKILL)
    await cluster["B"].stop()
    # Gone from every replica's view within the TTL (+ a heartbeat's slack on a loaded machine).
    await _until(lambda: _absent(cluster, "A", peer.call_sid), timeout=TTL_S * 2 + 5)
    await _until(lambda: _absent(cluster, "C", peer.call_sid), timeout=2)
    status, answer = await cluster.control("C", peer.call_sid, "hangup")
    assert status in (404, 410), answer
    await peer.close()


async def test_redis_stopped_mid_call_leaves_the_call_running_and_the_next_call_connects(cluster):
    peer = await cluster.call("A", "A")
    sess = await cluster.agent.session()
    await cluster.redis.stop()
    n = len(sess.audio)
    await peer.send_media(ulaw_tone(300, 0.4))
    await peer.wait_for(lambda: len(sess.audio) >= n + 0.38 * 48000)
    assert not peer.closed.is_set()
    # A new call, on another replica, still connects (its token checked by HMAC; single use per process).
    second = await cluster.call("C", "C")
    sess2 = await cluster.agent.session(timeout=10)
    await second.send_media(ulaw_tone(300, 0.2))
    await second.wait_for(lambda: len(sess2.audio) >= 0.18 * 48000)
    warning = await cluster["C"].wait_event("state.unavailable")
    assert warning["op"] in ("admit", "heartbeat")
    # The operator still sees C's own calls, marked partial.
    live = await cluster.live("C")
    assert live["partial"] and second.call_sid in [c["call_sid"] for c in live["calls"]]
    assert {c["replica"] for c in live["calls"]} == {cluster["C"].replica_id}
    async with cluster.http.get(cluster["C"].base_url + "/metrics") as r:
        assert 'voice_gateway_state_unavailable_total{op="admit"}' in await r.text()
    await peer.close()
    await second.close()

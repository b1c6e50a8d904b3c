"""Call control over the API on one replica with the in-process store (gateway/cluster/control.py): the live calls,
``say`` reaching the agent as ``reply.create``, ``transfer`` refused off the allow-list or without carrier call
control, ``hangup`` ending the call with ``session.end``; all behind the operator key."""

from __future__ import annotations

import asyncio

import pytest

from tests.support.audio import ulaw_tone
from tests.support.faults import write_config
from tests.support.logcapture import capture_call_logs, wait_event

KEY = "operator-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture
async def gw(start_gateway):
    cfg = write_config('[profiles.default]\ntransfer_allow = ["+1555*"]\n')
    return await start_gateway(cfg, GATEWAY_API_KEY=KEY)


async def post(http, gw, call_sid, action, body, headers=AUTH):
    async with http.post(f"{gw.base_url}/calls/{call_sid}/{action}", json=body, headers=headers) as r:
        return r.status, await r.json()


async def test_live_calls_say_transfer_and_hangup_on_one_replica(gw, new_peer, fake_agent, http):
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    async with http.get(gw.base_url + "/calls/live", headers=AUTH) as r:
        live = await r.json()
    assert live["store"] == "memory" and not live["partial"]
    assert [(c["call_sid"], c["stream_sid"], c["state"]) for c in live["calls"]] == [
        (peer.call_sid, peer.stream_sid, "live")
    ]

    status, answer = await post(http, gw, peer.call_sid, "say", {"instructions": "Tell the caller the order shipped."})
    assert status == 202 and answer["status"] == "sent"
    msg = await sess.next_message("reply.create")
    assert msg["instructions"] == "Tell the caller the order shipped."

    assert (await post(http, gw, peer.call_sid, "say", {"instructions": ""}))[0] == 400
    assert (await post(http, gw, peer.call_sid, "say", ["not", "an", "object"]))[0] == 400
    status, answer = await post(http, gw, peer.call_sid, "transfer", {"to": "+4420000000"})
    assert status == 422 and "allow-list" in answer["error"]
    status, answer = await post(http, gw, peer.call_sid, "transfer", {"to": "+15550001234"})
    assert status == 409 and "no call control" in answer["error"]  # no Twilio REST credentials here
    assert (await post(http, gw, "CA" + "f" * 32, "hangup", {}))[0] == 404

    with capture_call_logs() as logs:
        status, answer = await post(http, gw, peer.call_sid, "hangup", {})
        assert status == 202 and answer["status"] == "ending"
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
        ended = await wait_event(logs, "call.ended")
    assert ended["outcome"] == "api_hangup" and ended["hung_up_by"] == "gateway"
    assert sess.ended_by_client
    async with http.get(gw.base_url + "/calls/live", headers=AUTH) as r:
        assert (await r.json())["calls"] == []


async def test_call_control_refuses_without_the_operator_key(gw, http):
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        assert (await post(http, gw, "CA1", "hangup", {}, headers=headers))[0] == 401
        async with http.get(gw.base_url + "/calls/live", headers=headers) as r:
            assert r.status == 401


async def test_without_an_operator_key_call_control_is_off(start_gateway, http):
    gw = await start_gateway()
    async with http.get(gw.base_url + "/calls/live", headers={"Authorization": "Bearer "}) as r:
        assert r.status == 401


async def test_the_cluster_wide_limit_answers_busy_and_a_hang_up_frees_the_slot(
    start_gateway, new_peer, fake_agent, http
):
    cfg = write_config("[state]\nmax_cluster_calls = 1\n")
    gw = await start_gateway(cfg)
    first = await new_peer(gw)
    await first.connect()
    await fake_agent.session()
    form = {"CallSid": "CA" + "2" * 32, "From": "+15550001111", "To": "+15550002222", "AccountSid": "AC" + "0" * 32}
    async with http.post(gw.base_url + "/twilio/voice", data=form) as r:
        busy = await r.text()
    assert "busy" in busy and "<Hangup" in busy and "<Stream" not in busy
    await first.stop()
    await first.wait_for(lambda: first.closed.is_set())

    async def answered() -> bool:
        async with http.post(gw.base_url + "/twilio/voice", data=form) as r:
            return "<Stream" in await r.text()

    async with asyncio.timeout(5):  # the slot is freed as the first call's end is written to the store
        while not await answered():
            await asyncio.sleep(0.05)


async def test_a_refused_replay_of_a_live_calls_start_leaves_its_registry_entry(gw, new_peer, fake_agent, http):
    first = await new_peer(gw)
    await first.connect()
    await fake_agent.session()
    # The very same 'start' (call, stream and token) replayed on a second socket: refused, and it must not take the
    # live call's entry with it.
    replay = await new_peer(gw, dial=False, call_sid=first.call_sid, stream_sid=first.stream_sid)
    replay.stream_url, replay.parameters = first.stream_url, dict(first.parameters)
    with capture_call_logs() as logs:
        await replay.connect()
        await replay.wait_for(lambda: replay.closed.is_set(), timeout=5)
        await wait_event(logs, "call.ended", outcome="refused")
    await asyncio.sleep(0.1)  # a registry write would be under way now
    async with http.get(gw.base_url + "/calls/live", headers=AUTH) as r:
        assert [c["call_sid"] for c in (await r.json())["calls"]] == [first.call_sid]


async def test_a_replica_whose_redis_is_down_at_start_up_still_serves_calls(start_gateway, new_peer, fake_agent, http):
    from tests.support.replicas import free_port

    cfg = write_config('[state]\ninternal_host = "127.0.0.1"\ninternal_port = 0\nop_timeout_s = 0.2\n')
    with capture_call_logs() as logs:
        gw = await start_gateway(cfg, REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", GATEWAY_API_KEY=KEY)
        peer = await new_peer(gw)
        await peer.connect()
        sess = await fake_agent.session()
        await peer.send_media(ulaw_tone(300, 0.2))
        await peer.wait_for(lambda: len(sess.audio) >= 0.18 * 48000)
        warning = await wait_event(logs, "state.unavailable")
    assert warning["op"] in ("heartbeat", "admit") and warning["on_unavailable"] == "degrade"
    async with http.get(gw.base_url + "/calls/live", headers=AUTH) as r:
        live = await r.json()
    assert live["partial"] and live["store"] == "redis" and [c["call_sid"] for c in live["calls"]] == [peer.call_sid]


async def test_a_call_sid_no_carrier_would_send_is_simply_not_found(gw, http):
    async with http.post(f"{gw.base_url}/calls/CA1%3Fx=1/hangup", headers=AUTH) as r:
        assert r.status == 404


async def test_live_calls_learn_the_agent_session_from_the_next_heartbeat(start_gateway, new_peer, fake_agent, http):
    gw = await start_gateway(write_config("[state]\ncall_ttl_s = 1.0\n"), GATEWAY_API_KEY=KEY)
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()

    async def session_ids() -> list[str | None]:
        async with http.get(gw.base_url + "/calls/live", headers=AUTH) as r:
            return [c["session_id"] for c in (await r.json())["calls"]]

    async with asyncio.timeout(5):  # a bound for a hung test; the heartbeat runs every third of a second here
        while await session_ids() != [sess.session_id]:
            await asyncio.sleep(0.05)

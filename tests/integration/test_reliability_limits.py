"""Limits (docs/architecture/failure-behaviour.md#limits, #backpressure; docs/security.md): message size, ``start``
deadline, no-media watchdog, maximum call duration, the bounded caller → agent queue, and the per-process call limit
with its reservation at the webhook → stream boundary."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import tempfile

import aiohttp
import pytest

from gateway.keys import CALLS
from gateway.prompts import GOODBYE, prompt_ulaw
from tests.conftest import call_tasks
from tests.support.audio import dominant_freq, tone, ulaw_tone
from tests.support.logcapture import capture_call_logs, events, wait_event
from tests.support.twilio_peer import TwilioPeer


def _config(text: str) -> str:
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    return f.name


async def test_oversized_message_ends_that_call_with_a_protocol_error_and_others_continue(
    start_gateway, new_peer, fake_agent
):
    gw = await start_gateway()
    good = await new_peer(gw)
    await good.connect()
    good_sess = await fake_agent.session()
    bad = await new_peer(gw)
    await bad.connect()
    bad_sess = await fake_agent.session()
    with capture_call_logs() as logs:
        # 70 KiB: a valid-looking media message, but above server.max_message_bytes (64 KiB)
        await bad.send(
            {"event": "media", "streamSid": bad.stream_sid, "media": {"track": "inbound", "payload": "A" * (70 * 1024)}}
        )
        await bad.wait_for(lambda: bad.closed.is_set(), timeout=5)
        await bad.wait_for(lambda: bad_sess.closed.is_set(), timeout=5)
        await wait_event(logs, "call.ended", call_sid=bad.call_sid)
    err = events(logs, "call.protocol_error", call_sid=bad.call_sid)
    assert err and err[0]["side"] == "carrier" and "65536 bytes" in err[0]["error"]
    assert events(logs, "call.ended", call_sid=bad.call_sid)[0]["outcome"] == "protocol_error"
    assert bad_sess.ended_by_client
    n = len(good_sess.audio)
    await good.send_media(ulaw_tone(440, 0.2))
    await good.wait_for(lambda: len(good_sess.audio) >= n + 0.2 * 48000 - 960, timeout=5)
    assert not good.closed.is_set()


async def test_stream_without_start_in_time_is_closed_without_an_agent_session(start_gateway, new_peer, fake_agent):
    gw = await start_gateway(_config("[server]\nstart_timeout_s = 0.3\n"))
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect(start=False)
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=3)
        await wait_event(logs, "call.ended")
        await asyncio.sleep(0.05)
    assert events(logs, "call.ended")[0]["outcome"] == "no_start"
    assert fake_agent.connections == 0
    assert len(gw.app[CALLS]) == 0 and gw.app[CALLS].admission.idle


async def test_line_without_media_is_ended_and_its_agent_session_too(start_gateway, new_peer, fake_agent):
    gw = await start_gateway(_config("[server]\nno_media_timeout_s = 0.5\n"))
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await peer.send_media(ulaw_tone(440, 0.2))  # media resets the watchdog ...
    t0 = asyncio.get_running_loop().time()
    with capture_call_logs() as logs:
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=3)  # ... then silence ends the call
        await wait_event(logs, "call.ended")
    waited = asyncio.get_running_loop().time() - t0
    assert 0.4 <= waited <= 1.5, waited
    assert events(logs, "call.ended")[0]["outcome"] == "no_media"
    await peer.wait_for(lambda: sess.closed.is_set())
    assert sess.ended_by_client
    await asyncio.sleep(0.05)
    assert call_tasks() == []


async def test_call_longer_than_max_call_s_hears_the_goodbye_and_is_hung_up(start_gateway, new_peer, fake_agent):
    gw = await start_gateway(_config("[server]\nmax_call_s = 1.0\n"))
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    feed = asyncio.create_task(peer.send_media(ulaw_tone(300, 8.0), realtime=True))  # the caller keeps talking
    with capture_call_logs() as logs:
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=1.0 + 3.0 + 4.0)
        await wait_event(logs, "call.ended")
    feed.cancel()
    ended = events(logs, "call.ended")[0]
    assert ended["outcome"] == "max_duration" and ended["hung_up_by"] == "gateway"
    assert events(logs, "call.prompt_played")[0] == {
        **events(logs, "call.prompt_played")[0],
        "prompt": GOODBYE,
        "heard": True,
    }
    goodbye = prompt_ulaw(GOODBYE)
    assert bytes(peer.played) == goodbye  # played to the end before the hang-up (the peer echoes marks at play)
    assert sess.ended_by_client
    assert peer.close_code == 1000


async def test_caller_audio_beyond_the_preready_buffer_drops_the_oldest_and_counts(start_gateway, new_peer, fake_agent):
    fake_agent.ready_delay = 0.8
    gw = await start_gateway(_config("[audio]\npreready_buffer_ms = 200\n"))  # 10 frames
    peer = await new_peer(gw)
    await peer.connect()
    # 0.3 s at 300 Hz then 0.2 s at 1000 Hz, all before the session is ready: the 300 Hz part must be dropped
    await peer.send_media(ulaw_tone(300, 0.3) + ulaw_tone(1000, 0.2))
    sess = await fake_agent.session()
    await peer.wait_for(lambda: len(sess.audio) >= 0.2 * 48000 - 960, timeout=5)
    await asyncio.sleep(0.2)
    assert abs(len(sess.audio) / 48000 - 0.2) <= 0.01
    assert abs(dominant_freq(bytes(sess.audio), 24000) - 1000) < 10
    with capture_call_logs() as logs:
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set())
        await wait_event(logs, "call.ended")
    ended = events(logs, "call.ended")[0]
    assert ended["frames_in"] == 25 and ended["frames_dropped_to_agent"] == 15 and ended["frames_to_agent"] == 10


# ---- the per-process call limit -----------------------------------------------------------------------------------
async def test_call_limit_refuses_politely_at_the_webhook_and_with_503_at_the_stream(
    start_gateway, new_peer, http, fake_agent
):
    gw = await start_gateway(_config("[server]\nmax_concurrent_calls = 2\n"))
    a = await new_peer(gw)
    b = await new_peer(gw)  # both reserved: the process is full before either stream exists
    async with http.get(gw.base_url + "/readyz") as r:
        assert r.status == 503 and (await r.json())["reserved"] == 2
    c = await new_peer(gw, dial=False)
    async with http.post(gw.base_url + "/twilio/voice", data={"CallSid": c.call_sid, "From": c.from_, "To": c.to}) as r:
        body = await r.text()
    assert r.status == 200 and "<Say>" in body and "<Hangup/>" in body and "<Connect>" not in body
    # Upgrades carry no CallSid: they wait for 'start' in a pool of their own that holds no call slot (any could
    # be a's or b's stream), so idle sockets cannot keep the reserved calls' streams out.
    idle = [await http.ws_connect(a.stream_url) for _ in range(3)]
    assert gw.app[CALLS].admission.pending == 3
    for p in (a, b):  # the reserved calls connect fine
        await p.connect()
        await fake_agent.session()
    for ws in idle:
        await ws.close()
    await a.wait_for(lambda: gw.app[CALLS].admission.pending == 0)
    # once a call ends, its slot is free again
    await a.stop()
    await a.wait_for(lambda: a.closed.is_set())
    await c.dial()
    await c.connect()
    await fake_agent.session()


async def test_concurrent_webhooks_cannot_race_past_the_limit(start_gateway, new_peer, http):
    gw = await start_gateway(_config("[server]\nmax_concurrent_calls = 3\n"))
    peers = [await new_peer(gw, dial=False) for _ in range(12)]

    async def webhook(p):
        async with http.post(gw.base_url + "/twilio/voice", data={"CallSid": p.call_sid, "To": p.to}) as r:
            return "<Connect>" in await r.text()

    answered = await asyncio.gather(*(webhook(p) for p in peers))
    assert sum(answered) == 3  # the rest heard "all our lines are busy"
    # and the three reserved calls can all start, while a fourth stream is refused
    ok = [p for p, a in zip(peers, answered, strict=True) if a]
    for p in ok:
        await p.dial()  # re-fetch their TwiML (Twilio retries keep the same slot)
        await p.connect()
    await ok[0].wait_for(lambda: gw.app[CALLS].admission.live == 3, timeout=5)
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(ok[0].stream_url)
    assert exc.value.status == 503


async def test_authorized_stream_without_a_reservation_when_full_hears_the_apology(start_gateway, new_peer, fake_agent):
    gw = await start_gateway(_config("[server]\nmax_concurrent_calls = 1\n"))
    a = await new_peer(gw)  # reserved: 1/1
    b = await new_peer(gw, dial=False)
    # b's token is genuine (as if another replica answered its webhook), but this process has no slot for it.
    import time

    from gateway.security import mint_call_token

    b.stream_url = a.stream_url
    b.parameters = dict(
        a.parameters, token=mint_call_token(b"test-secret", f"{b.call_sid}|default", time.time(), 300, scope="twilio")
    )
    await b.connect()  # admitted at the upgrade (it might be a's stream) ...
    with capture_call_logs() as logs:
        await b.wait_for(lambda: b.closed.is_set(), timeout=10)
        await wait_event(logs, "call.ended")
    # ... but refused at 'start' because it is not a's CallSid
    assert events(logs, "call.ended")[0]["outcome"] == "at_capacity"
    assert fake_agent.connections == 0
    assert len(b.played) > 8000  # the apology was played
    await a.connect()  # a's reservation still stands
    await fake_agent.session()


def _small_window(addr_info):
    """A caller socket with a 4 KB receive buffer, set before connecting (shrunk on a live socket, Linux drops the
    ACKs riding on the gateway's data and the caller's own sends stall too)."""
    family, type_, proto, _, _ = addr_info
    sock = socket.socket(family=family, type=type_, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    return sock


@contextlib.asynccontextmanager
async def _stalled_carrier(gw, fake_agent, http):
    """A call whose carrier stops reading its socket once the agent session is ready (the caller keeps sending
    media, so the line is alive): yields (session, peer, agent session, the carrier socket's transport)."""
    peer = TwilioPeer(str(gw.make_url("")).rstrip("/"), http)
    await peer.dial()
    await peer.connect()
    sess = await fake_agent.session()
    async with asyncio.timeout(5):
        while not (live := [s for s, _ in gw.app[CALLS].active.values() if s.summary.session_id]):
            await asyncio.sleep(0.01)
    session = live[0]
    transport = session.carrier.transport  # None if aiohttp moved it: backlog never seen
    assert transport is not None
    transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    # The caller's side stops reading its socket at once (stopping only its reader would buffer 256 KB first).
    assert peer._reader is not None and peer.ws is not None  # noqa: SLF001
    peer._reader.cancel()  # noqa: SLF001
    peer.ws._response.connection.protocol.pause_reading()  # noqa: SLF001
    caller = asyncio.create_task(peer.send_media(ulaw_tone(300, 30.0), realtime=True))
    try:
        yield session, peer, sess, transport
    finally:
        caller.cancel()
        await peer.close()


async def test_a_carrier_that_stops_reading_never_stalls_the_agent_side(start_gateway, fake_agent):
    # The fast path sends media from the agent reader itself. When the carrier stops reading, the socket backs up
    # and a send there waits for the drain (aiohttp waits once it has buffered 64 KB): made from the agent reader,
    # that wait would stop it reading agent events too (barge-in, tools, errors). Frames must go to the paced
    # queue instead, whose writer may wait, while the agent reader goes on.
    gw = await start_gateway()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_small_window)) as http:
        async with _stalled_carrier(gw, fake_agent, http) as (session, _peer, sess, transport):
            speaking = asyncio.create_task(sess.reply(tone(500, 30.0, 24000), realtime=True))
            try:
                with capture_call_logs() as logs:
                    # Until a send of media waits for the drain: no frame has gone out for a second, though the
                    # agent still speaks and the caller still sends.
                    async with asyncio.timeout(25):  # a bound for a hung test, not a timing assertion
                        sent, since = -1, 0.0
                        while since < 1.0:
                            await asyncio.sleep(0.1)
                            since = since + 0.1 if session.summary.frames_out == sent else 0.0
                            sent = session.summary.frames_out
                    assert transport.get_write_buffer_size() > 0
                    await sess.send(
                        "session.error", code="invalid_audio", message="x", param=None, session_id=sess.session_id
                    )
                    found = await wait_event(logs, "agent.session_error", timeout=3)  # read by a free agent reader
                assert found["code"] == "invalid_audio"
                assert session.core.outbound_queued_ms > 0  # the agent reader went on: later frames wait queued
            finally:
                speaking.cancel()


async def test_a_carrier_that_stops_reading_ends_the_call_as_carrier_stalled(start_gateway, fake_agent):
    # The agent speaks faster than real time into a carrier that reads nothing: the paced queue fills, and once it
    # has had no room for audio.outbound_buffer_s the call ends (carrier_stalled), its agent session with it, and
    # no task is left behind, rather than a billed line held open with a dead carrier.
    gw = await start_gateway(_config("[audio]\noutbound_buffer_s = 1.0\n"))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(socket_factory=_small_window)) as http:
        async with _stalled_carrier(gw, fake_agent, http) as (_session, _peer, sess, _transport):
            speaking = asyncio.create_task(sess.reply(tone(500, 60.0, 24000), realtime=False))
            try:
                with capture_call_logs() as logs:
                    ended = await wait_event(logs, "call.ended", timeout=40)  # a bound for a hung test
                    await asyncio.sleep(0.05)
            finally:
                speaking.cancel()
    assert ended["outcome"] == "carrier_stalled"
    assert sess.ended_by_client and call_tasks() == []

"""Agent faults (docs/architecture/failure-behaviour.md#agent-faults; docs/architecture/agent-api.md#resume,
#errors): an unreachable agent, connect errors, unclean drops mid-call (cut for real by a TCP proxy between the gateway
and the fake agent), session resume with its final and retryable codes, fatal vs recoverable ``session.error``s, and
an agent socket that stops draining (blackholed, or an agent that stopped reading): every send on it is bounded."""

from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.agent import client as client_mod
from gateway.agent.client import TRANSPORTS
from gateway.agent.protocol import FINAL_RESUME_CODES
from gateway.audio import g711
from gateway.audio.fir_design import FIR_DELAY
from gateway.call.core import CallCore
from gateway.call.shell import agent_link
from gateway.keys import CALLS
from gateway.prompts import AGENT_UNAVAILABLE, prompt_ulaw
from tests.conftest import call_tasks
from tests.support.audio import dominant_freq, tone, ulaw_tone
from tests.support.faults import blackhole, deep_stack, start_proxy, start_slow_tool, write_config
from tests.support.logcapture import capture_call_logs, events, wait_event
from tests.support.twilio_peer import media_bytes


@pytest.fixture(params=TRANSPORTS)
def agent_transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs on each agent transport: resume depends on how a transport reports the socket's end."""
    return request.param


#: Bytes of 24 kHz PCM the inbound resampler still holds at any moment: the FIR's look-ahead, 48 samples (2 ms).
HELD = 2 * FIR_DELAY
FAST_CONNECT = "[agent]\nconnect_attempts = 2\nconnect_timeout_s = 1.0\n"


@pytest.fixture
async def proxy(fake_agent):
    p = await start_proxy(fake_agent)
    yield p
    await p.close()


@pytest.fixture
async def slow_tool(aiohttp_server):
    return await start_slow_tool(aiohttp_server)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _call(gw, new_peer, fake_agent):
    """A call whose agent session is ready at the gateway too (a drop before that is a failed connect)."""
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await gateway_ready(gw, peer.call_sid)
    return peer, sess


async def gateway_ready(gw, call_sid: str) -> None:
    async with asyncio.timeout(5):
        while not any(
            s.summary.call_sid == call_sid and s.summary.session_id for s, _ in gw.app[CALLS].active.values()
        ):
            await asyncio.sleep(0.005)


def _assert_apology_heard(peer, logs) -> None:
    apology = prompt_ulaw(AGENT_UNAVAILABLE)
    assert bytes(peer.played).endswith(apology)  # all of it, played before the hang-up
    played = events(logs, "call.prompt_played")
    assert played and played[0]["prompt"] == AGENT_UNAVAILABLE and played[0]["heard"] is True
    assert peer.close_code == 1000


# ---- connecting ----------------------------------------------------------------------------------------------------
async def test_unreachable_agent_gets_a_paced_apology_then_a_clean_hangup(start_gateway, new_peer):
    gw = await start_gateway(write_config(FAST_CONNECT), AGENT_URL=f"ws://127.0.0.1:{_free_port()}/v1/ws")
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect()
        await peer.wait_for(lambda: peer.events("media"), timeout=5)
        first = peer.events("media")[0].t
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await wait_event(logs, "call.ended")
    assert len(events(logs, "agent.connect_failed")) == 2
    assert events(logs, "call.ended")[0]["outcome"] == "agent_unavailable"
    _assert_apology_heard(peer, logs)
    # paced, not dumped: in the first 0.5 s at most 0.5 s + the 200 ms playout lead (+ slack) was sent
    early = [r for r in peer.events("media") if r.t - first <= 0.5]
    assert len(early) * 20 <= 500 + 200 + 60, len(early)
    assert peer.closed.is_set() and peer.received[-1].t - first >= len(prompt_ulaw(AGENT_UNAVAILABLE)) / 8000 - 0.3


async def test_agent_refusing_our_key_is_not_retried_and_the_caller_hears_the_apology(
    start_gateway, new_peer, fake_agent
):
    gw = await start_gateway(ASSEMBLYAI_API_KEY="a-revoked-key")
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect()
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await wait_event(logs, "call.ended")
    assert events(logs, "call.ended")[0]["outcome"] == "agent_error"
    assert "unauthorized" in events(logs, "call.ended")[0]["error"]
    assert not events(logs, "agent.connect_failed")  # a final code: no retry
    _assert_apology_heard(peer, logs)


async def test_retryable_connect_error_is_retried_with_backoff(start_gateway, new_peer, fake_agent):
    fake_agent.connect_errors = ["at_capacity"]
    gw = await start_gateway()
    with capture_call_logs() as logs:
        peer, sess = await _call(gw, new_peer, fake_agent)
    assert [e["attempt"] for e in events(logs, "agent.connect_failed")] == [1]
    await peer.send_media(ulaw_tone(440, 0.2))
    await peer.wait_for(lambda: len(sess.audio) >= 0.2 * 48000 - 960)


# ---- resuming after an unclean drop ----------------------------------------------------------------------------
async def test_drop_mid_call_resumes_the_same_session_and_loses_no_caller_audio(
    start_gateway, new_peer, fake_agent, proxy
):
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    with capture_call_logs() as logs:
        feed = asyncio.create_task(peer.send_media(ulaw_tone(440, 2.0), realtime=True))
        await asyncio.sleep(0.7)
        await proxy.cut(proxy.live_links[0])
        await feed
        await peer.wait_for(lambda: len(sess.audio) >= 2.0 * 48000 - HELD, timeout=5)
    await asyncio.sleep(0.1)
    assert abs(len(sess.audio) / 48000 - 2.0) <= 0.005  # not one 20 ms frame lost (or doubled)
    assert sess.resumes == 1 and fake_agent.sessions == [sess]
    resumed = events(logs, "agent.resumed")
    assert resumed and resumed[0]["attempts"] == 1 and resumed[0]["session_id"] == sess.session_id
    assert resumed[0]["confirmed"] is True and resumed[0]["gap_ms"] < 1000
    # the call goes on: the agent speaks and is heard
    await sess.reply(tone(1000, 0.4, 24000), realtime=False)
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= 0.4 * 8000 - 160)
    assert abs(dominant_freq(g711.ulaw_to_pcm16(media_bytes(peer.received)), 8000) - 1000) < 10
    with capture_call_logs() as logs:
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set())
        await wait_event(logs, "call.ended")
        await asyncio.sleep(0.05)
    ended = events(logs, "call.ended")[0]
    assert ended["outcome"] == "caller_hangup" and ended["agent_resumes"] == 1 and ended["frames_dropped_to_agent"] == 0
    assert sess.ended_by_client and fake_agent.live_sessions == [] and call_tasks() == []


async def test_caller_audio_reaches_the_agent_in_order_across_a_drop(start_gateway, new_peer, fake_agent, proxy):
    # G.711 passthrough keeps each frame's bytes as sent, so every 20 ms frame carries its own number: whichever path
    # a frame takes (sent by the carrier reader itself, buffered during the gap, delivered by agent_sender after the
    # resume), the agent must get every frame once and in order; the drop test above only counts the audio.
    gw = await start_gateway(write_config('[audio]\nagent_format = "pcmu"\n'), AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    numbered = b"".join(bytes([40 + i]) * 160 for i in range(100))  # 2 s, frame i filled with 40 + i
    feed = asyncio.create_task(peer.send_media(numbered, realtime=True))
    await asyncio.sleep(0.7)
    await proxy.cut(proxy.live_links[0])
    await feed
    await peer.wait_for(lambda: len(sess.audio) >= len(numbered), timeout=5)
    await asyncio.sleep(0.1)
    assert sess.resumes == 1
    assert [sess.audio[i] for i in range(0, len(sess.audio), 160)] == list(range(40, 140))
    assert bytes(sess.audio) == numbered


async def test_frames_whose_send_fails_go_back_before_the_backlog_for_the_resumed_session(
    start_gateway, new_peer, fake_agent, monkeypatch
):
    # The test above never makes a send fail: the gateway notices each drop before its next send. This one forces
    # the requeue path. A mid-call drop, then a refused first resume attempt (retried after 250 ms, so a backlog of
    # numbered frames builds up); the next resume is accepted, but its session.ready arrives together with the
    # socket's FIN and with the caller's next frame. The gateway handles session.ready (the session is ready again,
    # the backlog waits), then the caller's frame (it must queue behind the backlog, not go out at once), then the
    # FIN (the transport is closing); agent_sender's first backlog send then fails with AgentClosed, and those frames
    # must go back to the FRONT of the backlog for the session resumed after this second drop. Nothing is lost: the
    # fake agent keeps reading after its FIN, so the agent must get every frame exactly once and in order.
    requeues: list[tuple[int, int]] = []  # (frames put back, frames already waiting behind them)
    requeue = CallCore.agent_audio_unsent

    def spy(self, frames):
        requeues.append((len(frames), self.to_agent_pending))
        requeue(self, frames)

    monkeypatch.setattr(CallCore, "agent_audio_unsent", spy)
    gw = await start_gateway(write_config('[audio]\nagent_format = "pcmu"\n'))
    peer, sess = await _call(gw, new_peer, fake_agent)
    frames = [bytes([40 + i]) * 160 for i in range(100)]  # passthrough: frame i arrives as 160 bytes of 40 + i
    sent = 0

    async def send_next() -> None:
        nonlocal sent
        if sent < len(frames):
            sent += 1  # before the send's await: the feed and the hook never send the same frame
            await peer.send_media(frames[sent - 1])

    async def feed() -> None:
        while sent < len(frames):
            await send_next()
            await asyncio.sleep(0.02)

    feeding = asyncio.create_task(feed())
    await peer.wait_for(lambda: len(sess.audio) >= 10 * 160, timeout=5)
    fake_agent.resume_errors = ["at_capacity"]  # retryable: the gateway retries after 250 ms
    fake_agent.fin_after_ready = 1
    fake_agent.before_drop = send_next
    sess.drop()
    await feeding
    await peer.wait_for(lambda: len(sess.audio) >= len(frames) * 160, timeout=10)
    await asyncio.sleep(0.1)
    assert sess.resumes == 2 and fake_agent.resume_attempts == 3
    assert any(waiting for _, waiting in requeues), requeues  # a failed send had a backlog behind it
    got = [sess.audio[i] - 40 for i in range(0, len(sess.audio), 160)]
    assert got == list(range(len(frames)))  # every frame, once, in order
    assert bytes(sess.audio) == b"".join(frames)


async def test_a_server_that_just_carries_on_after_resume_is_accepted(start_gateway, new_peer, fake_agent, proxy):
    fake_agent.resume_reply = "continue"  # no session.ready after session.resume
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0])
        await peer.send_media(ulaw_tone(440, 0.5))  # during the gap
        await peer.wait_for(lambda: len(sess.audio) >= 0.5 * 48000 - HELD, timeout=5)
    resumed = events(logs, "agent.resumed")
    assert resumed and resumed[0]["confirmed"] is False
    assert abs(len(sess.audio) / 48000 - 0.5) <= 0.005


async def test_final_resume_codes_end_the_call_with_the_apology(start_gateway, new_peer, fake_agent, proxy):
    # One call per final code (clients treat these as final: docs/architecture/agent-api.md#resume), all at once
    # to keep the suite fast.
    codes = sorted(FINAL_RESUME_CODES)
    fake_agent.resume_errors = list(codes)
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    calls = [await _call(gw, new_peer, fake_agent) for _ in codes]
    with capture_call_logs() as logs:
        await proxy.cut_all()
        for peer, _sess in calls:
            await peer.wait_for(peer.closed.is_set, timeout=10)
            await wait_event(logs, "call.ended", call_sid=peer.call_sid)
    assert fake_agent.resume_attempts == len(codes)  # each final: never retried
    failed = events(logs, "agent.resume_failed")
    assert sorted(e["error"].split(":")[0] for e in failed) == codes
    assert all(e["final_code"] is True and e["attempts"] == 1 for e in failed)
    for peer, _sess in calls:
        mine = [e for e in logs if e.get("call_sid") == peer.call_sid]
        assert events(mine, "call.ended")[0]["outcome"] == "agent_error"
        _assert_apology_heard(peer, mine)


async def test_retryable_resume_error_is_retried_with_backoff(start_gateway, new_peer, fake_agent, proxy):
    fake_agent.resume_errors = ["internal_error", "at_capacity"]
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0])
        await peer.wait_for(lambda: events(logs, "agent.resumed"), timeout=5)
    resumed = events(logs, "agent.resumed")[0]
    assert resumed["attempts"] == 3 and resumed["gap_ms"] >= 250  # 0 + 250 ms + 500 ms of backoff
    assert sess.resumes == 1


async def test_agent_unreachable_for_the_whole_resume_window_ends_the_call_with_the_apology(
    start_gateway, new_peer, fake_agent, proxy, monkeypatch
):
    monkeypatch.setattr(agent_link, "RESUME_WINDOW_S", 1.5)
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, _sess = await _call(gw, new_peer, fake_agent)
    proxy.refusing = True
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0])
        await peer.send_media(ulaw_tone(440, 0.3))
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=12)
        await wait_event(logs, "call.ended")
    failed = events(logs, "agent.resume_failed")[0]
    # attempts at ~0, 0.25, 0.75, 1.75 (> window): 3 or 4 depending on scheduling
    assert failed["final_code"] is False and failed["attempts"] >= 3 and 1400 <= failed["gap_ms"] <= 2500
    assert failed["buffered_frames"] == 15  # the caller audio of the gap was kept (until the end)
    assert proxy.refused == failed["attempts"]
    assert events(logs, "call.ended")[0]["outcome"] == "agent_unavailable"
    _assert_apology_heard(peer, logs)


async def test_a_call_ending_while_its_agent_is_being_resumed_still_ends_the_agent_session(
    start_gateway, new_peer, fake_agent, proxy
):
    # The caller hangs up between two resume attempts: the call has no agent socket at that moment. The dropped
    # session is still the server's (billed for its 30 s window), so the teardown resumes it on a new socket only to
    # end it (session.end), within agent.end_timeout_s; the carrier's hang-up is not held longer than before.
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    proxy.refusing = True
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0])
        async with asyncio.timeout(5):  # attempts at 0, 0.25, 0.75, 1.75 s refused: the next one is 2 s away
            while proxy.refused < 4:
                await asyncio.sleep(0.005)
        proxy.refusing = False  # the agent is back, but the call is over before the next attempt
        t0 = asyncio.get_running_loop().time()
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await wait_event(logs, "call.ended")
        took = asyncio.get_running_loop().time() - t0
    assert events(logs, "call.ended")[0]["outcome"] == "caller_hangup"
    assert not events(logs, "agent.resumed")
    assert sess.ended_by_client, "the call ended mid-resume, but its agent session was left to expire (billed)"
    assert fake_agent.live_sessions == [] and call_tasks() == []
    assert took < 2.0 + 2.5  # agent.end_timeout_s + the teardown's slack: the hang-up is never held longer


async def test_a_call_ending_while_a_resumed_socket_awaits_its_answer_ends_the_session_and_never_parks_it(
    start_gateway, new_peer, fake_agent, proxy
):
    # The caller hangs up while session.resume waits for its answer on a fresh socket: that socket must not be
    # parked for a new stream (its session is not known to be back), and its session must be ended.
    fake_agent.resume_reply = "continue"  # no answer: the gateway waits RESUME_QUIET_S for one
    gw = await start_gateway(write_config("[server]\nreattach_window_s = 5.0\n"), AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0])
        async with asyncio.timeout(5):
            while not sess.resumes:
                await asyncio.sleep(0.005)
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await wait_event(logs, "call.ended")
    assert not events(logs, "call.agent_parked")
    assert sess.ended_by_client and fake_agent.live_sessions == []


async def test_a_stored_agents_profile_update_lost_to_a_drop_reaches_the_resumed_session(
    start_gateway, new_peer, fake_agent, monkeypatch
):
    # A stored agent's session.update (the profile's fields on top of the agent) follows session.ready. If the socket
    # drops just as it is sent, the send fails: the update must go to the resumed session, before any caller audio
    # (it may set the input format), not be lost with the socket.
    send = agent_link.AgentLink.send
    cut = []

    async def dropping(self, text):
        if not cut and '"session.update"' in text and self.conn is not None:
            cut.append(text)
            self.conn.abort()  # the socket is gone at that moment: the send fails
        return await send(self, text)

    monkeypatch.setattr(agent_link.AgentLink, "send", dropping)
    gw = await start_gateway(
        write_config(
            '[audio]\nagent_format = "pcmu"\n[profiles.default]\ngreeting = ""\n'
            'agent_id = "agent_0123456789abcdef0123456789abcdef"\nkeyterms = ["Harbour Kitchen"]\n'
        )
    )
    with capture_call_logs() as logs:
        peer, sess = await _call(gw, new_peer, fake_agent)
        await peer.wait_for(lambda: events(logs, "agent.resumed"), timeout=5)
        await peer.send_media(ulaw_tone(440, 0.2))
        await peer.wait_for(lambda: len(sess.audio) >= 0.2 * 8000, timeout=5)
    assert cut and sess.resumes == 1
    kinds = [m["type"] for m in sess.received]
    updates = [i for i, m in enumerate(sess.received) if m["type"] == "session.update" and "input" in m["session"]]
    assert updates, f"the stored agent's profile update never reached the resumed session: {kinds}"
    resume_i = kinds.index("session.resume")
    audio_i = kinds.index("input.audio")
    assert resume_i < updates[0] < audio_i, kinds
    assert sess.received[updates[0]]["session"]["input"]["keyterms"] == ["Harbour Kitchen"]


async def test_reply_cut_by_the_drop_keeps_what_the_carrier_has_and_counts_as_ended(
    start_gateway, new_peer, fake_agent, proxy
):
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    speaking = asyncio.create_task(sess.reply(tone(700, 3.0, 24000), reply_id="resp_cut", realtime=True))
    await peer.wait_for(lambda: len(peer.events("media")) >= 25, timeout=5)
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0])
        speaking.cancel()  # the server's reply ended with the socket
        await peer.wait_for(lambda: events(logs, "agent.resumed"), timeout=5)
        await asyncio.sleep(0.5)
    assert events(logs, "agent.reply_cut")[0]["reply_id"] == "resp_cut"
    assert not peer.events("clear")  # nothing the caller already has is flushed
    heard_before = len(peer.played)
    assert peer.events("mark")  # the cut reply was closed with a mark, like any ended reply
    # the next reply plays normally
    await sess.reply(tone(1200, 0.5, 24000), realtime=False)
    await peer.wait_for(lambda: len(peer.played) >= heard_before + 0.5 * 8000 - 160, timeout=5)


async def test_tool_result_held_across_a_drop_is_sent_after_the_resume(
    start_gateway, new_peer, fake_agent, proxy, slow_tool
):
    gw = await start_gateway(write_config(slow_tool), AGENT_URL=proxy.agent_url)
    _peer, sess = await _call(gw, new_peer, fake_agent)
    await sess.send("reply.started", reply_id="resp_t", item_id="msg_t")
    await sess.send("tool.call", call_id="chatcmpl-tool-77", name="lookup", arguments={"q": "hours"})
    await asyncio.sleep(0.05)
    await proxy.cut(proxy.live_links[0])  # before reply.done, while the tool runs (300 ms)
    result = await sess.next_message("tool.result", timeout=5)
    assert result["call_id"] == "chatcmpl-tool-77" and result["is_error"] is False
    assert sess.resumes == 1
    resume_i = next(i for i, m in enumerate(sess.received) if m["type"] == "session.resume")
    result_i = next(i for i, m in enumerate(sess.received) if m["type"] == "tool.result")
    assert result_i > resume_i


async def test_hard_reset_of_the_agent_socket_also_resumes(start_gateway, new_peer, fake_agent, proxy):
    gw = await start_gateway(AGENT_URL=proxy.agent_url)
    peer, sess = await _call(gw, new_peer, fake_agent)
    feed = asyncio.create_task(peer.send_media(ulaw_tone(440, 1.5), realtime=True))
    await asyncio.sleep(0.5)
    with capture_call_logs() as logs:
        await proxy.cut(proxy.live_links[0], mode="reset")
        await feed
        await peer.wait_for(lambda: events(logs, "agent.resumed"), timeout=5)
        await peer.wait_for(lambda: len(sess.audio) >= 1.4 * 48000, timeout=5)
    # An RST loses what was in flight on the wire; nothing the gateway still held is lost.
    assert len(sess.audio) / 48000 >= 1.5 - 0.1
    assert sess.resumes == 1


# ---- session.error while live ------------------------------------------------------------------------------------
async def test_recoverable_session_errors_keep_the_call_and_fatal_ones_end_it_with_the_apology(
    start_gateway, new_peer, fake_agent
):
    gw = await start_gateway()
    peer, sess = await _call(gw, new_peer, fake_agent)
    with capture_call_logs() as logs:
        for code in ("invalid_audio", "server_error", "audio_rate_violation", "immutable_field", "INVALID_FORMAT"):
            await sess.send("session.error", code=code, message="x", param=None, session_id=sess.session_id)
        await asyncio.sleep(0.2)
        assert not peer.closed.is_set()
        await peer.send_media(ulaw_tone(440, 0.2))
        await peer.wait_for(lambda: len(sess.audio) >= 0.2 * 48000 - 960)
        await sess.send("session.error", code="session_expired", message="cap reached", session_id=sess.session_id)
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await wait_event(logs, "call.ended")
    kept = [e["code"] for e in events(logs, "agent.session_error") if e.get("fatal") is False]
    assert kept == ["invalid_audio", "server_error", "audio_rate_violation", "immutable_field", "invalid_format"]
    assert events(logs, "call.ended")[0]["outcome"] == "agent_error"
    _assert_apology_heard(peer, logs)


# ---- an agent that stops reading -----------------------------------------------------------------------------------
async def test_an_agent_that_stops_reading_never_stalls_the_carrier_side(start_gateway, new_peer, fake_agent):
    # The fast path sends input.audio from the carrier reader itself. When the agent stops reading, the socket's
    # send buffer fills and a send waits for the drain: made from the carrier reader, that wait would stop it
    # reading marks and `stop` too (until the keepalive dropped the agent socket, seconds later). Frames must
    # queue instead, where the drop-oldest policy bounds them, and the caller's hang-up must still be read.
    # The flood below is what fills the agent socket, so the inbound rate limit (docs/security.md#inbound-audio-rate)
    # is lifted here.
    gw = await start_gateway(
        write_config(
            "[audio]\npreready_buffer_ms = 1000\n[agent]\nend_timeout_s = 0.5\n"
            "[server]\ninbound_rate_limit = 1000.0\ninbound_burst_s = 600.0\n"
        )
    )
    peer, sess = await _call(gw, new_peer, fake_agent)
    sess.reading.clear()  # the agent stops reading: its socket's buffers fill and its receive window closes
    try:
        with capture_call_logs() as logs:
            # 6000 frames as fast as the socket takes them: ≈ 8 MB of input.audio, twice what the loopback socket
            # buffers hold before the gateway's writes back up (≈ 3.8 MB measured)
            await peer.send_media(ulaw_tone(440, 120.0))
            await peer.stop()
            await wait_event(logs, "call.ended", timeout=10)  # a bound for a hung test, not a timing assertion
            await asyncio.sleep(0.05)
    finally:
        sess.reading.set()
    ended = events(logs, "call.ended")[0]
    assert ended["outcome"] == "caller_hangup"
    assert ended["frames_dropped_to_agent"] > 0  # the policy applied: the reader went on while the agent did not read
    assert ended["agent_resumes"] == 0 and not events(logs, "agent.dropped")  # ended by the caller, not the keepalive
    assert peer.close_code is not None and call_tasks() == []


# ---- an agent socket that stops draining: every send on it is bounded ----------------------------------------------
#: Lets the caller fill the agent socket (as in the test above: the inbound rate limit lifted).
FLOOD_CONFIG = (
    "[audio]\npreready_buffer_ms = 1000\n[agent]\nend_timeout_s = 0.5\n"
    "[server]\ninbound_rate_limit = 1000.0\ninbound_burst_s = 600.0\n"
)


async def _blackholed_call(start_gateway, new_peer, fake_agent, proxy, logs):
    gw = await start_gateway(write_config(FLOOD_CONFIG), AGENT_URL=proxy.agent_url)
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await wait_event(logs, "agent.session_ready")
    blackhole(proxy.live_links[0])
    # the caller speaks fast enough to fill the dead socket's buffers (≈ 8 MB of input.audio, as above)
    await peer.send_media(ulaw_tone(440, 120.0))
    return gw, peer, sess


async def test_caller_audio_reaches_the_resumed_session_after_a_blackholed_socket(
    start_gateway, new_peer, fake_agent, proxy, monkeypatch
):
    # A send waiting for the dead socket's drain must not outlive the socket: once the session is resumed on a new
    # one, the caller's audio goes there (the old socket's abort releases the waiting send, which hands its frames
    # back).
    monkeypatch.setattr(client_mod, "AIOHTTP_HEARTBEAT_S", 4.0)  # 6 s by default: only to keep the test short
    with capture_call_logs() as logs:
        _gw, peer, sess = await _blackholed_call(start_gateway, new_peer, fake_agent, proxy, logs)
        await wait_event(logs, "agent.resumed", timeout=20)
        before = len(sess.audio)
        await peer.send_media(ulaw_tone(440, 1.0), realtime=True)
        await asyncio.sleep(1.0)
        got = (len(sess.audio) - before) / 48000
        where = [deep_stack(t) for t in asyncio.all_tasks() if t.get_name() == "agent_sender"]
        await peer.stop()
        await wait_event(logs, "call.ended", timeout=10)
    assert events(logs, "agent.dropped")
    assert got >= 0.5, (
        f"the resumed session got {got:.3f} s of the 1 s the caller said after the resume; agent_sender is at {where}"
    )


async def test_a_blackholed_agent_socket_is_noticed_as_dropped_within_the_keepalive_bound(
    start_gateway, new_peer, fake_agent, proxy, monkeypatch
):
    # websockets: ping every 1 s, give up 1 s after an unanswered one (5 s + 10 s by default). Its ping waits for the
    # same drain as the audio, so it is the bounded send (agent.send_timeout_s, 5 s) that notices here; 15 s is
    # generous for either.
    monkeypatch.setattr(client_mod, "WEBSOCKETS_PING_INTERVAL_S", 1.0)
    monkeypatch.setattr(client_mod, "WEBSOCKETS_PING_TIMEOUT_S", 1.0)
    with capture_call_logs() as logs:
        _gw, peer, _sess = await _blackholed_call(start_gateway, new_peer, fake_agent, proxy, logs)
        try:
            await wait_event(logs, "agent.dropped", timeout=15)
            noticed = True
        except TimeoutError:
            noticed = False
        keepalive = [
            deep_stack(t)
            for t in asyncio.all_tasks()
            if getattr(t.get_coro(), "__qualname__", "").endswith(".keepalive")
        ]
        await peer.stop()
        await wait_event(logs, "call.ended", timeout=10)
    assert noticed, f"no agent.dropped 15 s after the agent went silent; the keepalive task is at {keepalive}"


async def _backed_up_call(start_gateway, new_peer, fake_agent, config: str):
    """A live call whose agent stopped reading, and its agent socket's transport."""
    gw = await start_gateway(write_config(config))
    peer, sess = await _call(gw, new_peer, fake_agent)
    session = next(s for s, _ in gw.app[CALLS].active.values() if s.summary.call_sid == peer.call_sid)
    sess.reading.clear()  # the agent stops reading
    return peer, sess, session, session.agent.conn._transport  # noqa: SLF001 - its buffer and fd are what is checked


async def _fill(peer, transport) -> None:
    await peer.send_media(ulaw_tone(440, 120.0))  # fills the agent socket (as above)
    async with asyncio.timeout(10):
        while not transport.get_write_buffer_size():
            await asyncio.sleep(0.05)


async def test_agent_socket_is_released_when_the_call_ends_while_it_is_backed_up(start_gateway, new_peer, fake_agent):
    # The close at the end of the call is bounded (2 s), but a close that times out must not leave the connection
    # open with megabytes of unsent input.audio in user space: an fd and its buffer per such call, until TCP gives
    # up, or forever while the agent host is alive and not reading.
    peer, sess, _session, transport = await _backed_up_call(start_gateway, new_peer, fake_agent, FLOOD_CONFIG)
    try:
        with capture_call_logs() as logs:
            await _fill(peer, transport)
            backed_up = transport.get_write_buffer_size()
            await peer.stop()
            await wait_event(logs, "call.ended", timeout=15)
            await asyncio.sleep(3.0)  # more than the close's own bound
            left = transport.get_write_buffer_size()
            sock = transport.get_extra_info("socket")
            fd_open = sock is not None and sock.fileno() != -1
        assert events(logs, "call.ended")[0]["outcome"] == "caller_hangup"
        assert backed_up > 0
        assert not fd_open, (
            f"call ended 3 s ago, but its agent socket is still open with {left} bytes queued in user space"
        )
    finally:
        sess.reading.set()


async def test_api_hangup_ends_the_call_even_when_the_agent_socket_is_backed_up(start_gateway, new_peer, fake_agent):
    # The watchdog (the call's clock: max duration, no media, drain and API hang-ups) sends to the agent itself: here
    # a keypress run delivered as reply.create. Behind a backed-up socket that send waits for the drain; unbounded,
    # it held every deadline of the call with it, and an API hang-up never ended the call (the line stayed billed).
    config = FLOOD_CONFIG + '[profiles.default]\ndtmf_mode = "reply"\ndtmf_interdigit_ms = 100\n'
    peer, sess, session, transport = await _backed_up_call(start_gateway, new_peer, fake_agent, config)
    try:
        with capture_call_logs() as logs:
            await _fill(peer, transport)
            await peer.send({"event": "dtmf", "streamSid": peer.stream_sid, "sequenceNumber": "9",
                             "dtmf": {"track": "inbound_track", "digit": "1"}})  # fmt: skip
            async with asyncio.timeout(5):  # the run is due 100 ms after the key: the watchdog takes it
                while session.core._dtmf.pending:  # noqa: SLF001 - no public seam says a run was taken
                    await asyncio.sleep(0.01)
            await asyncio.sleep(0.3)
            session.request_end("api_hangup")  # POST /calls/{call_sid}/hangup: "hung up at once"
            try:
                await wait_event(logs, "call.ended", timeout=12)  # > the aiohttp heartbeat's 6 + 3 s too
            except TimeoutError:
                pass
            watchdog = [deep_stack(t) for t in asyncio.all_tasks() if t.get_name() == "watchdog"]
            ended = events(logs, "call.ended")
        assert ended, f"no call.ended 12 s after the API hang-up; the watchdog is stuck at {watchdog}"
        assert ended[0]["outcome"] == "api_hangup", ended[0]
    finally:
        sess.reading.set()
        if not peer.closed.is_set():
            await peer.stop()

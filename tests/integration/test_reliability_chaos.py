"""100 agent-socket cuts at random moments across 25 calls (docs/architecture/failure-behaviour.md#chaos;
docs/architecture/agent-api.md#resume): each call is cut once during the greeting, once while only the caller
speaks, once around a tool call and once during a reply, at a random offset inside that phase, by a real TCP proxy
between the gateway and the fake agent. Every call must resume every time, lose no caller audio (frames sent by the
caller vs. audio received by the agent, as durations), get every tool result, and go on (a last reply is heard). Against
the local agent: tests/e2e."""

from __future__ import annotations

import asyncio
import base64
import random
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from gateway.agent.client import TRANSPORTS
from gateway.audio import g711
from gateway.keys import CALLS
from tests.conftest import call_tasks
from tests.support.audio import dominant_freq, tone, ulaw_tone
from tests.support.chaos import PacedCaller, agent_quiet, cut_when_linked, gap_summary, received_caller_audio
from tests.support.fake_agent import FakeSession
from tests.support.faults import start_proxy, start_slow_tool, write_config
from tests.support.logcapture import capture_call_logs, events
from tests.support.tcp_proxy import TcpProxy
from tests.support.twilio_peer import TwilioPeer, media_bytes


@pytest.fixture(params=TRANSPORTS)
def agent_transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs on each agent transport: resume depends on how a transport reports the socket's end."""
    return request.param


CALLS_N = 25
PHASES = ("greeting", "caller_speech", "tool_call", "reply")
CONCURRENCY = 9
CHUNK = 1920  # 40 ms of 24 kHz PCM16 per reply.audio: fewer messages, same audio
SEED = 5  # the cut offsets are random but reproducible; change it to explore other moments


@pytest.fixture
async def proxy(fake_agent):
    p = await start_proxy(fake_agent)
    yield p
    await p.close()


@pytest.fixture
async def slow_tool(aiohttp_server):
    return await start_slow_tool(aiohttp_server)


@dataclass
class CallRun:
    peer: TwilioPeer
    sess: FakeSession
    cuts: list[str] = field(default_factory=list)
    tool_calls: list[str] = field(default_factory=list)
    tool_resends: int = 0


async def _send(sess: FakeSession, type_: str, **fields: Any) -> None:
    """Send on the session's current socket; if it is gone, wait for the resume and send there (a server that
    just carries on). Anything sent just before a cut may be lost on the wire, like in production."""
    for _ in range(100):
        ws = sess.ws
        if not ws.closed:
            try:
                await sess.send(type_, **fields)
                return
            except (ConnectionError, RuntimeError):
                pass
        await asyncio.sleep(0.01)
        async with asyncio.timeout(10):
            await sess.attached.wait()
    raise AssertionError(f"could not send {type_}")


async def _speak(sess: FakeSession, pcm: bytes, reply_id: str) -> None:
    await _send(sess, "reply.started", reply_id=reply_id, item_id="msg_" + secrets.token_hex(4))
    t0 = time.monotonic()
    for i in range(0, len(pcm), CHUNK):
        chunk = pcm[i : i + CHUNK]
        await _send(sess, "reply.audio", reply_id=reply_id, data=base64.b64encode(chunk).decode())
        await asyncio.sleep(max(0.0, t0 + (i + len(chunk)) / 48000 - time.monotonic()))
    await _send(sess, "reply.done", reply_id=reply_id, status="completed")


async def _cut_later(proxy: TcpProxy, run: CallRun, phase: str, delay: float) -> None:
    await asyncio.sleep(delay)
    await cut_when_linked(proxy, lambda: proxy.link_from(run.sess.peer))  # between sockets: cut the next one
    run.cuts.append(phase)


async def _wait_tool_result(sess: FakeSession, call_id: str, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while not any(m.get("type") == "tool.result" and m.get("call_id") == call_id for m in sess.received):
                await asyncio.sleep(0.01)
        return True
    except TimeoutError:
        return False


async def _resumed(run: CallRun) -> None:
    """Wait until the session is back on a new socket after every cut so far (the server's view)."""
    async with asyncio.timeout(10):
        while run.sess.resumes < len(run.cuts) or not run.sess.attached.is_set():
            await asyncio.sleep(0.005)


async def _agent_script(proxy: TcpProxy, run: CallRun, rng: random.Random) -> None:
    sess = run.sess
    # greeting (1.0 s of speech)
    cut = asyncio.create_task(_cut_later(proxy, run, "greeting", rng.uniform(0.02, 0.9)))
    await _speak(sess, tone(600, 1.0, 24000), "resp_greet")
    await cut
    await _resumed(run)
    # the caller speaks, the agent listens (0.8 s)
    await _cut_later(proxy, run, "caller_speech", rng.uniform(0.02, 0.8))
    await _resumed(run)
    # a tool call: the result comes 300 ms later (the HTTP tool), after reply.done
    call_id = "chatcmpl-tool-" + secrets.token_hex(8)
    run.tool_calls.append(call_id)
    cut = asyncio.create_task(_cut_later(proxy, run, "tool_call", rng.uniform(0.0, 0.5)))
    await _send(sess, "reply.started", reply_id="resp_tool", item_id="msg_tool")
    await _send(sess, "tool.call", call_id=call_id, name="lookup", arguments={"q": "hours"})
    await _send(sess, "reply.done", reply_id="resp_tool", status="completed")
    await cut
    await _resumed(run)
    while not await _wait_tool_result(sess, call_id, 1.5):
        # The cut swallowed the tool.call on its way to the gateway: ask again (same call_id).
        run.tool_resends += 1
        await _send(sess, "tool.call", call_id=call_id, name="lookup", arguments={"q": "hours"})
        await _send(sess, "reply.done", reply_id="resp_tool", status="completed")
        assert run.tool_resends < 4
    await _resumed(run)
    # the answer (1.0 s of speech)
    cut = asyncio.create_task(_cut_later(proxy, run, "reply", rng.uniform(0.02, 0.9)))
    await _speak(sess, tone(800, 1.0, 24000), "resp_answer")
    await cut
    await _resumed(run)


async def _one_call(gw: Any, new_peer: Any, fake_agent: Any, proxy: TcpProxy, rng: random.Random) -> CallRun:
    peer = await new_peer(gw)
    await peer.connect()
    # This call's agent session, once ready at the gateway too (a drop before that is a failed connect). Found by
    # id, not from the fake's queue of new sessions, which concurrent calls would race for.
    async with asyncio.timeout(10):
        while not (
            sid := next(
                (
                    s.summary.session_id
                    for s, _ in gw.app[CALLS].active.values()
                    if s.summary.call_sid == peer.call_sid and s.summary.session_id
                ),
                None,
            )
        ):
            await asyncio.sleep(0.005)
    sess = next(s for s in fake_agent.sessions if s.session_id == sid)
    run = CallRun(peer, sess)
    caller = PacedCaller(peer, filler=ulaw_tone(440, 0.02))  # Twilio: 20 ms of caller audio every 20 ms
    feeder = asyncio.create_task(caller.run())
    try:
        await _agent_script(proxy, run, rng)
        # the call goes on: a last reply reaches the caller
        before = len(media_bytes(peer.received))
        await _send(sess, "reply.started", reply_id="resp_last", item_id="msg_last")
        await _send(sess, "reply.audio", reply_id="resp_last", data=base64.b64encode(tone(1500, 0.3, 24000)).decode())
        await _send(sess, "reply.done", reply_id="resp_last", status="completed")
        await peer.wait_for(lambda: len(media_bytes(peer.received)) >= before + 0.3 * 8000 - 160, timeout=10)
        # The end of the previous reply may still be on its way (paced): the last reply is what comes last.
        await agent_quiet(peer, 0.3, timeout=10)
        last = media_bytes(peer.received)[-2400:]
        assert abs(dominant_freq(g711.ulaw_to_pcm16(last), 8000) - 1500) < 15
    finally:
        caller.stop.set()
        await feeder
    # every caller frame reached the agent (allow the resampler's 0.2 ms hold-back, not one 20 ms frame)
    expected = caller.sent_s
    got = await received_caller_audio(expected, lambda: len(sess.audio) / 48000)
    assert abs(got - expected) <= 0.005, (peer.call_sid, expected, got, run.cuts)
    await peer.stop()
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    return run


async def test_100_random_agent_socket_cuts_all_resume_without_losing_caller_audio(
    start_gateway, new_peer, fake_agent, proxy, slow_tool
):
    gw = await start_gateway(write_config(slow_tool), AGENT_URL=proxy.agent_url)
    rng = random.Random(SEED)
    sem = asyncio.Semaphore(CONCURRENCY)

    async def guarded(i: int) -> CallRun:
        async with sem:
            return await _one_call(gw, new_peer, fake_agent, proxy, random.Random(rng.random() + i))

    t0 = time.monotonic()
    with capture_call_logs() as logs:
        runs = await asyncio.gather(*(guarded(i) for i in range(CALLS_N)))
        async with asyncio.timeout(5):  # call.ended is logged just after the socket closes
            while len(events(logs, "call.ended")) < CALLS_N:
                await asyncio.sleep(0.01)
    wall = time.monotonic() - t0
    cuts = [c for r in runs for c in r.cuts]
    assert len(cuts) == 100 and all(cuts.count(p) == CALLS_N for p in PHASES)
    assert proxy.cuts == 100
    resumed = events(logs, "agent.resumed")
    assert len(resumed) == 100 and not events(logs, "agent.resume_failed")
    assert all(r.sess.resumes == 4 for r in runs)
    for r in runs:
        got = {m["call_id"] for m in r.sess.received if m.get("type") == "tool.result"}
        assert set(r.tool_calls) <= got
    ended = events(logs, "call.ended")
    assert len(ended) == CALLS_N
    assert all(
        e["outcome"] == "caller_hangup" and e["frames_dropped_to_agent"] == 0 and e["agent_resumes"] == 4 for e in ended
    )
    assert not events(logs, "call.internal_error") and not events(logs, "call.protocol_error")
    # nothing left behind
    assert call_tasks() == [] and len(gw.app[CALLS]) == 0 and gw.app[CALLS].admission.idle
    assert fake_agent.live_sessions == [] and not fake_agent.open_sockets
    print(
        f"\n[chaos/fake] {len(cuts)} cuts over {CALLS_N} calls in {wall:.1f} s; resume gap ms: "
        f"{gap_summary([e['gap_ms'] for e in resumed])}; "
        f"tool.call re-sent after a cut swallowed it: {sum(r.tool_resends for r in runs)}; "
        f"attempts>1: {sum(1 for e in resumed if e['attempts'] > 1)}"
    )

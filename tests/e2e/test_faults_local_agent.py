"""Agent-socket cuts against the real gateway and the real LOCAL agent (real speech models, real audio): two
concurrent calls, five cuts each (10 in all; the 100-cut run is against the fake agent in
tests/integration/test_reliability_chaos.py), at a random moment inside each phase: the greeting, the caller's
first question, the agent's answer, the caller's second question, and the tool call it triggers. Every cut must be
resumed, no caller frame lost (frames the caller sent vs. seconds of audio the local agent received), and the call
must go on (the tool's result reaches the agent, which speaks its follow-up).

The local agent is the one the gateway embeds with no AGENT_URL / ASSEMBLYAI_API_KEY (``build_embedded_agent``,
the same settings and models), served on its own loopback port so the cutting TCP proxy can sit between the two:
mounted inside the gateway app it is dialled on the gateway's own listening address, where no proxy can go."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from gateway.app import CALLS, create_app
from gateway.audio import g711
from gateway.config import REPO_CONFIG_DIR, load_settings
from gateway.local_agent.app import local_agent_runtime
from gateway.local_agent.bridge import build_embedded_agent
from gateway.local_agent.speech import SpeechModels
from tests.conftest import call_tasks
from tests.support.caller_voice import caller_ulaw8k
from tests.support.faults import write_config
from tests.support.local_gateway import shared_speech_models
from tests.support.logcapture import capture_call_logs, events
from tests.support.tcp_proxy import TcpProxy
from tests.support.twilio_peer import TwilioPeer

pytestmark = pytest.mark.speech

KEY = "local-agent-fault-key"
SEED = 11
Q1 = "What time do you open?"
Q2 = "I'd like to book a table for two tonight."


@pytest.fixture(scope="session")
def fault_speech_models() -> SpeechModels:
    return shared_speech_models()  # loaded once per test process, shared with the other e2e tests


class Caller:
    """Twilio's side of one call: 20 ms of audio every 20 ms for the whole call (line noise between phrases)."""

    def __init__(self, peer: TwilioPeer) -> None:
        self.peer = peer
        self.frames_sent = 0
        self._queue: list[bytes] = []
        self.stop = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self._silence = bytes([g711.ULAW_SILENCE]) * 160

    def say(self, ulaw: bytes) -> float:
        self._queue += [ulaw[i:i + 160].ljust(160, b"\xff") for i in range(0, len(ulaw), 160)]
        self.idle.clear()
        return len(ulaw) / 8000

    async def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            frame = self._queue.pop(0) if self._queue else self._silence
            if not self._queue:
                self.idle.set()
            await self.peer.send_media(frame)
            self.frames_sent += 1
            await asyncio.sleep(max(0.0, t0 + self.frames_sent * 0.02 - time.monotonic()))


async def _agent_quiet(peer: TwilioPeer, quiet_s: float = 1.0, timeout: float = 30) -> None:
    """Wait until the agent has sent no audio for ``quiet_s`` (its turn is over)."""
    async with asyncio.timeout(timeout):
        while True:
            media = peer.events("media")
            if media and time.monotonic() - media[-1].t >= quiet_s:
                return
            await asyncio.sleep(0.05)


async def test_cuts_at_random_moments_resume_the_local_agent_without_losing_caller_audio(
    aiohttp_server: Any, http: Any, fault_speech_models: SpeechModels
):
    # The tool the local agent's book_table intent calls (declared by the gateway profile).
    async def book(request: web.Request) -> web.Response:
        await asyncio.sleep(0.3)
        return web.Response(text="a table for two at eight")

    tool_app = web.Application()
    tool_app.router.add_post("/book", book)
    tool_server = await aiohttp_server(tool_app)
    cfg = write_config(
        f'[local_agent]\nintents = "{REPO_CONFIG_DIR / "local_agent" / "intents.toml"}"\n'
        '[profiles.default]\ngreeting = "Hello, thanks for calling. How can I help you today?"\n'
        'tools = ["end_call", "book_table"]\n'
        f'[tools.book_table]\nurl = "{tool_server.make_url("/book")}"\ndescription = "Book a table."\n'
    )
    # The embedded local agent, exactly as create_app builds it with no agent configured ...
    local_settings = load_settings(cfg, env={"GATEWAY_TOKEN_SECRET": "e2e"})
    assert local_settings.use_local_agent
    agent_app = build_embedded_agent(local_settings, KEY, fault_speech_models)
    agent_server = await aiohttp_server(agent_app)
    # ... behind the cutting proxy, which the gateway dials.
    u = urlsplit(str(agent_server.make_url("/")))
    proxy = TcpProxy(u.hostname or "127.0.0.1", u.port or 80)
    await proxy.start()
    settings = load_settings(cfg, env={"AGENT_URL": f"ws://127.0.0.1:{proxy.port}/v1/ws",
                                       "ASSEMBLYAI_API_KEY": KEY, "GATEWAY_TOKEN_SECRET": "e2e"})
    gw_app = create_app(settings)
    gw = await aiohttp_server(gw_app)
    base = str(gw.make_url("")).rstrip("/")
    runtime = local_agent_runtime(agent_app)
    q1 = caller_ulaw8k(fault_speech_models.tts, Q1)
    q2 = caller_ulaw8k(fault_speech_models.tts, Q2)
    feed: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    gw_app[CALLS].listeners.append(lambda sid, kind, f: feed.setdefault(sid, []).append((time.monotonic(), kind, f)))
    rng = random.Random(SEED)
    re_asked: list[str] = []

    async def wait_feed(call_sid: str, kind: str, after: float, timeout: float = 30) -> float:
        async with asyncio.timeout(timeout):
            while True:
                for t, k, _f in feed.get(call_sid, []):
                    if k == kind and t >= after:
                        return t
                await asyncio.sleep(0.02)

    async def ask(caller: Caller, phrase: bytes, expect: str, cut_phase: str, sid: str, cuts: list[str]) -> float:
        """Say ``phrase`` with a cut at a random moment inside it; wait for the agent's ``expect`` event. The
        local agent keeps its VAD and turn state per socket, so a question cut in two may go unanswered: then the
        caller asks again, as a person would (counted in ``re_asked``)."""
        t_ask = time.monotonic()
        dur = caller.say(phrase)
        await asyncio.sleep(rng.uniform(0.1, dur - 0.1))
        await cut(sid, cut_phase, cuts)
        await caller.idle.wait()
        for attempt in range(3):
            try:
                return await wait_feed(caller.peer.call_sid, expect, t_ask, timeout=8)
            except TimeoutError:
                assert attempt < 2, f"the agent never answered after {attempt + 1} re-asks"
                re_asked.append(cut_phase)
                t_ask = time.monotonic()
                caller.say(phrase)
                await caller.idle.wait()
        raise AssertionError("unreachable")

    async def cut(session_id: str, phase: str, cuts: list[str]) -> None:
        session = runtime.sessions[session_id]
        async with asyncio.timeout(10):
            while session.connection is None or (link := _link_of(proxy, session)) is None:
                await asyncio.sleep(0.01)
        await proxy.cut(link)
        cuts.append(phase)
        async with asyncio.timeout(10):  # back on a new socket before the next phase
            while session.connection is None or _link_of(proxy, session) is None:
                await asyncio.sleep(0.01)

    async def one_call(i: int) -> dict[str, Any]:
        peer = TwilioPeer(base, http)
        await peer.dial()
        await peer.connect()
        caller = Caller(peer)
        feeder = asyncio.create_task(caller.run())
        cuts: list[str] = []
        try:
            t_ready = await wait_feed(peer.call_sid, "agent.session_ready", 0)
            sid = next(f["session_id"] for _t, k, f in feed[peer.call_sid] if k == "agent.session_ready")
            # 1. during the greeting
            await wait_feed(peer.call_sid, "agent.first_audio", t_ready)
            await asyncio.sleep(rng.uniform(0.1, 1.5))
            await cut(sid, "greeting", cuts)
            await _agent_quiet(peer)
            # 2. while the caller asks the first question; 3. during the agent's answer
            await ask(caller, q1, "agent.first_audio", "caller_speech", sid, cuts)
            await asyncio.sleep(rng.uniform(0.1, 1.0))
            await cut(sid, "reply", cuts)
            await _agent_quiet(peer)
            # 4. while the caller asks for a booking, 5. around the tool call it triggers
            await ask(caller, q2, "tool.called", "caller_speech", sid, cuts)
            await asyncio.sleep(rng.uniform(0.0, 0.25))  # the tool answers after 300 ms
            t_tool = time.monotonic()
            await cut(sid, "tool_call", cuts)
            # the call goes on: the agent speaks its follow-up once the (deferred) tool result reached it
            await wait_feed(peer.call_sid, "agent.first_audio", t_tool)
            await _agent_quiet(peer)
            session = runtime.sessions[sid]
            assert all(c.resolved for c in session.calls.values())
        finally:
            caller.stop.set()
            await feeder
        # every frame the caller sent reached the local agent (24 kHz PCM16 seconds, ±5 ms resampler hold-back)
        expected = caller.frames_sent * 0.02
        session = runtime.sessions[sid]
        async with asyncio.timeout(5):
            while session.input_audio_s < expected - 0.005:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.1)
        got = session.input_audio_s
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await peer.close()
        return {"call_sid": peer.call_sid, "cuts": cuts, "expected": expected, "got": got, "session_id": sid}

    t0 = time.monotonic()
    with capture_call_logs() as logs:
        results = await asyncio.gather(one_call(0), one_call(1))
        async with asyncio.timeout(5):  # call.ended is logged just after the socket closes
            while len(events(logs, "call.ended")) < 2:
                await asyncio.sleep(0.01)
    wall = time.monotonic() - t0
    try:
        cuts = [c for r in results for c in r["cuts"]]
        assert len(cuts) == 10 and proxy.cuts == 10
        resumed = events(logs, "agent.resumed")
        assert len(resumed) == 10 and not events(logs, "agent.resume_failed")
        assert {e["session_id"] for e in resumed} == {r["session_id"] for r in results}  # same sessions resumed
        for r in results:
            assert abs(r["got"] - r["expected"]) <= 0.005, r
        ended = events(logs, "call.ended")
        assert [e["outcome"] for e in ended] == ["caller_hangup"] * 2
        assert all(e["agent_resumes"] == 5 and e["frames_dropped_to_agent"] == 0 for e in ended)
        assert not events(logs, "call.internal_error")
        # nothing left behind
        assert call_tasks() == [] and len(gw_app[CALLS]) == 0
        async with asyncio.timeout(5):
            while runtime.live_sessions:
                await asyncio.sleep(0.05)
        gaps = sorted(e["gap_ms"] for e in resumed)
        print(f"\n[chaos/local agent] 10 cuts over 2 calls in {wall:.1f} s; resume gap ms: median "
              f"{statistics.median(gaps):.1f}, max {gaps[-1]:.1f}; caller audio sent/received: "
              + ", ".join(f"{r['expected']:.2f}/{r['got']:.3f} s" for r in results)
              + f"; questions re-asked because the agent lost the cut utterance: {len(re_asked)}")
    finally:
        await proxy.close()


def _link_of(proxy: TcpProxy, session: Any) -> Any:
    """The proxy link carrying a local-agent session: matched on the agent-side socket's address."""
    conn = session.connection
    transport = conn.ws._req.transport if conn is not None and conn.ws._req is not None else None
    peer = transport.get_extra_info("peername") if transport is not None else None
    return proxy.link_from(peer)

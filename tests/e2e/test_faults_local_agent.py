"""100 agent-socket cuts against the real gateway and the real LOCAL agent (real speech models, real synthesized
caller audio, Twilio's side paced at real time), made by a cutting TCP proxy between the two (issue #5).

Ten concurrent calls (started ``STAGGER_S`` apart), ten cuts each, at random moments (seeded, printed) inside these
phases of each call::

    greeting  1 cut   while the agent speaks its greeting
    reply     2 cuts  while it answers "What time do you open?", then "Where are you located?" (one each: a cut
                      ends the reply it cuts, so a reply can only be cut once;
                      docs/reference/local-agent-api.md#implemented)
    speech    4 cuts  inside one long caller utterance of about 8 s (at least 0.5 s apart)
    tool call 3 cuts  while the booking tool runs (it answers after ``TOOL_S``), between the agent's tool.call
                      and the moment the gateway sends the result

Each cut is checked to have landed inside its phase (a cut that missed it fails the test). For every call:

- every cut resumed the same session (``agent.resumed``, same ``session_id``, 10 per call, none failed);
- no caller frame lost: the frames the caller sent (x 20 ms) equal the seconds of audio the local agent received
  for the session (``input_audio_s``), within 5 ms; ``frames_dropped_to_agent`` 0;
- the call goes on: after the last cut the tool's result reaches the agent (its pending call is answered) and it
  speaks its follow-up, the whole of it, with the tool's result in it; the caller then hangs up normally.

Specific answers are asserted only for utterances no cut split: "What time do you open?" must reach the intent
``opening_hours``, "Where are you located?" ``location`` and the booking request ``book_table`` (it must cause the
tool call). The long utterance is cut four times; the local agent's VAD and turn state are the session's
(``Hearing``) and survive each resume, so the cut utterance is answered before the booking request: at least one
turn of it is logged (``local_agent.turn``) before the request is asked, nothing of it is still held for merging
then, and no turn is held after it (no fragment leaks into the booking). How many turns the agent made of it (its
sentence pauses may end one) is only reported (``fragment turns``). The test waits for that through the session's
own signal (``Session.settled``: all audio received heard, no utterance in progress or held, no job queued or
running), because the agent, with ten calls on two cores, runs seconds behind real time: a caller's silence is not
yet the agent's.

Time: 45-60 s per call, almost all of it real time (the caller's speech, the agent's replies, the tool, the
end-of-turn silences); the calls overlap, so the test takes about a minute on 2 cores (55-72 s measured, about
70 s of CPU). A cut costs next to nothing (the resume takes milliseconds); what costs is reaching the moments worth
cutting, so each call is cut several times per stretch where it can be. Reproduce a run's moments with
``FAULTS_SEED=<seed>`` (printed with the schedule).

The local agent is the one the gateway embeds with no AGENT_URL / ASSEMBLYAI_API_KEY (``build_embedded_agent``,
the same settings and models), served on its own loopback port so the cutting TCP proxy can sit between the two:
mounted inside the gateway app it is dialled on the gateway's own listening address, where no proxy can go."""

from __future__ import annotations

import asyncio
import os
import random
import time
import tomllib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import REPO_CONFIG_DIR, load_settings
from gateway.keys import CALLS
from gateway.local_agent.app import local_agent_runtime
from gateway.local_agent.bridge import build_embedded_agent
from gateway.local_agent.session import Session
from gateway.local_agent.speech import SpeechModels
from tests.conftest import call_tasks
from tests.support.caller_voice import caller_ulaw8k
from tests.support.chaos import (
    PacedCaller,
    agent_quiet,
    cut_offsets,
    cut_when_linked,
    gap_summary,
    received_caller_audio,
)
from tests.support.faults import write_config
from tests.support.local_gateway import shared_speech_models
from tests.support.logcapture import capture_call_logs, events
from tests.support.tcp_proxy import Link, TcpProxy
from tests.support.twilio_peer import TwilioPeer

pytestmark = pytest.mark.speech

KEY = "local-agent-fault-key"
SEED = int(os.environ.get("FAULTS_SEED", "11"))
CALLS_N = 10
STAGGER_S = 1.0  # calls start this far apart, so their greetings and first turns do not all meet on 2 cores
CUTS = {"greeting": 1, "reply": 2, "caller_speech": 4, "tool_call": 3}  # per call
TOOL_S = 2.0  # the booking tool answers after this long: the tool-call phase
TOOL_RESULT = "a table for two at eight"
GREETING = "Hello, thanks for calling. How can I help you today?"
Q_HOURS = "What time do you open?"
Q_WHERE = "Where are you located?"
Q_BOOK = "I'd like to book a table for two tonight."
# Long (about 8 s), and nothing in it a booking: its fragments must not start a tool call.
MONOLOGUE = (
    "Hi, my name is Alex. I am calling from the office on behalf of a colleague of mine, "
    "who asked me to find out a couple of things for her before the weekend."
)


@pytest.fixture(scope="session")
def fault_speech_models() -> SpeechModels:
    return shared_speech_models()  # loaded once per test process, shared with the other e2e tests


@dataclass
class Plan:
    """One call's cut moments (s), drawn up front from the call's own seed, so a run can be replayed."""

    greeting: float
    replies: list[float]  # after the first audio of the answer to Q_HOURS, then of Q_WHERE
    speech: list[float]  # after the monologue's first frame
    tool: list[float]  # after the gateway saw tool.call

    @classmethod
    def draw(cls, rng: random.Random, greeting_s: float, reply_s: list[float], speech_s: float) -> Plan:
        return cls(
            greeting=round(rng.uniform(0.1, 0.8 * greeting_s), 3),
            replies=[round(rng.uniform(0.1, 0.8 * s), 3) for s in reply_s],
            # inside the speech itself, not the 0.3 s of line noise around it
            speech=cut_offsets(rng, CUTS["caller_speech"], 0.5, speech_s - 0.5, min_gap=0.5),
            tool=cut_offsets(rng, CUTS["tool_call"], 0.05, TOOL_S - 0.4, min_gap=0.3),
        )


@dataclass
class Run:
    index: int
    plan: Plan
    call_sid: str = ""
    session_id: str = ""
    cuts: list[tuple[str, bool]] = field(default_factory=list)  # (phase, landed inside it)
    sent_s: float = 0.0
    received_s: float = 0.0
    t_monologue: float = 0.0
    t_book: float = 0.0
    monologue_turns: int = 0  # local_agent.turn logged for the cut utterance before the booking request
    log_mark: int = 0  # len(logs) when the booking request was asked


def _speech_s(tts: Any, text: str) -> float:
    """How long the agent's voice takes to say ``text`` (the same TTS; used to bound the random cut moments)."""
    return sum(len(pcm) for _s, pcm in tts.synthesize(text)) / 2 / tts.SAMPLE_RATE


def _intent_replies() -> dict[str, str]:
    data = tomllib.loads((REPO_CONFIG_DIR / "local_agent" / "intents.toml").read_text())
    return {i["name"]: i["reply"] for i in data["intent"]}


async def test_100_cuts_at_random_moments_resume_the_local_agent_without_losing_caller_audio(
    aiohttp_server: Any, http: Any, fault_speech_models: SpeechModels
):
    # The tool the local agent's book_table intent calls (declared by the gateway profile).
    async def book(request: web.Request) -> web.Response:
        await asyncio.sleep(TOOL_S)
        return web.Response(text=TOOL_RESULT)

    tool_app = web.Application()
    tool_app.router.add_post("/book", book)
    tool_server = await aiohttp_server(tool_app)
    cfg = write_config(
        f'[local_agent]\nintents = "{REPO_CONFIG_DIR / "local_agent" / "intents.toml"}"\n'
        f'[profiles.default]\ngreeting = "{GREETING}"\n'
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
    settings = load_settings(
        cfg,
        env={
            "AGENT_URL": f"ws://127.0.0.1:{proxy.port}/v1/ws",
            "ASSEMBLYAI_API_KEY": KEY,
            "GATEWAY_TOKEN_SECRET": "e2e",
        },
    )
    gw_app = create_app(settings)
    gw = await aiohttp_server(gw_app)
    base = str(gw.make_url("")).rstrip("/")
    runtime = local_agent_runtime(agent_app)

    tts = fault_speech_models.tts
    phrases = {text: caller_ulaw8k(tts, text) for text in (Q_HOURS, Q_WHERE, Q_BOOK, MONOLOGUE)}
    replies = _intent_replies()
    greeting_s = _speech_s(tts, GREETING)
    reply_s = [_speech_s(tts, replies["opening_hours"]), _speech_s(tts, replies["location"])]
    monologue_s = len(phrases[MONOLOGUE]) / 8000
    plans = [Plan.draw(random.Random(f"{SEED}:{i}"), greeting_s, reply_s, monologue_s) for i in range(CALLS_N)]
    # Printed first, so a failing run shows how to replay it (pytest shows a failed test's output).
    print(f"\n[chaos/local agent] FAULTS_SEED={SEED}; cut moments (s) per call:")
    for i, p in enumerate(plans):
        print(f"  call {i}: greeting {p.greeting}, replies {p.replies}, speech {p.speech}, tool {p.tool}")

    feed: dict[str, list[tuple[float, str, dict[str, Any]]]] = {}
    gw_app[CALLS].listeners.append(
        lambda sid, e: feed.setdefault(sid, []).append((time.monotonic(), e.kind, e.fields()))
    )

    def seen(call_sid: str, kind: str, after: float) -> list[tuple[float, dict[str, Any]]]:
        return [(t, f) for t, k, f in feed.get(call_sid, []) if k == kind and t >= after]

    async def wait_feed(call_sid: str, kind: str, after: float, timeout: float = 30) -> tuple[float, dict[str, Any]]:
        async with asyncio.timeout(timeout):
            while not (hits := seen(call_sid, kind, after)):
                await asyncio.sleep(0.02)
        return hits[0]

    def replying(call_sid: str, reply_id: str) -> bool:
        """The agent is still sending this reply: it started and has not completed (no transcript.agent yet)."""
        return not any(f.get("reply_id") == reply_id for _t, f in seen(call_sid, "agent.transcript", 0))

    async def cut(run: Run, session: Session, phase: str, inside: Any) -> None:
        """Cut the link carrying the session now; ``inside()`` says whether this moment is still in ``phase``.
        Returns once the session is back on a new socket (so the next cut cuts a new link)."""

        def link() -> Link | None:
            return _link_of(proxy, session) if session.connection is not None else None

        await cut_when_linked(proxy, link, at_cut=lambda: run.cuts.append((phase, bool(inside()))))
        # Resumed, as both ends see it: the gateway has its session.ready back (a cut before that would only be
        # a second attempt of the same resume) and the agent serves the session on a new socket.
        async with asyncio.timeout(10):
            while len(seen(run.call_sid, "agent.resumed", 0)) < len(run.cuts) or link() is None:
                await asyncio.sleep(0.005)

    async def at(t0: float, offset: float) -> None:
        await asyncio.sleep(max(0.0, t0 + offset - time.monotonic()))

    async def ask(caller: PacedCaller, text: str) -> float:
        t = time.monotonic()
        caller.say(phrases[text])
        await caller.idle.wait()
        return t

    async def settled(caller: PacedCaller, session: Session, peer: TwilioPeer) -> None:
        """The caller stopped and the agent has dealt with everything it heard (``Session.settled``: the audio
        received so far heard, no utterance in progress or held, no job queued or running), then no audio for
        0.8 s. Turns end after at most 1 s of silence, hence the first wait: once the agent has heard it, the
        utterance's turn has ended."""
        await caller.idle.wait()
        await asyncio.sleep(1.2)
        async with asyncio.timeout(45):
            while True:
                if session.connection is not None and session.settled:
                    await agent_quiet(peer, 0.8)
                    if session.connection is not None and session.settled:
                        return
                await asyncio.sleep(0.05)

    async def one_call(run: Run) -> None:
        await asyncio.sleep(run.index * STAGGER_S)
        plan = run.plan
        peer = TwilioPeer(base, http)
        run.call_sid = peer.call_sid
        await peer.dial()
        await peer.connect()
        caller = PacedCaller(peer)
        feeder = asyncio.create_task(caller.run())
        try:
            t_ready, ready = await wait_feed(peer.call_sid, "agent.session_ready", 0)
            run.session_id = sid = ready["session_id"]
            session = runtime.sessions[sid]
            # 1. the greeting
            _t, started = await wait_feed(peer.call_sid, "agent.reply_started", t_ready)
            t_audio, _f = await wait_feed(peer.call_sid, "agent.first_audio", t_ready)
            await at(t_audio, plan.greeting)
            await cut(run, session, "greeting", lambda: replying(peer.call_sid, started["reply_id"]))
            await agent_quiet(peer, 0.6)
            # 2. two questions no cut splits; each answer is cut once
            for question, offset in zip((Q_HOURS, Q_WHERE), plan.replies, strict=True):
                t_ask = await ask(caller, question)
                _t, started = await wait_feed(peer.call_sid, "agent.reply_started", t_ask)
                t_audio, _f = await wait_feed(peer.call_sid, "agent.first_audio", t_ask)
                await at(t_audio, offset)
                await cut(run, session, "reply", lambda s=started: replying(peer.call_sid, s["reply_id"]))
                await agent_quiet(peer, 0.6)
            # 3. one long utterance, cut four times while the caller speaks
            run.t_monologue = time.monotonic()
            caller.say(phrases[MONOLOGUE])
            for offset in plan.speech:
                await at(run.t_monologue, offset)
                await cut(run, session, "caller_speech", lambda: caller.speaking)
            await settled(caller, session, peer)
            # The cut utterance has been answered, and nothing of it is left to merge into the next turn.
            run.monologue_turns = len(events(logs, "local_agent.turn", session_id=sid)) - 2
            assert session.hearing is not None and session.hearing.held_text is None, session.hearing.held_text
            run.log_mark = len(logs)
            # 4. the booking request (uncut) and the tool call it causes, cut three times while the tool runs
            run.t_book = await ask(caller, Q_BOOK)
            t_tool, _f = await wait_feed(peer.call_sid, "tool.called", run.t_book)
            for offset in plan.tool:
                await at(t_tool, offset)
                await cut(run, session, "tool_call", lambda: any(not c.resolved for c in session.calls.values()))
            # The call goes on: the tool result reaches the agent, which speaks all of its follow-up.
            _t, spoken = await wait_feed(peer.call_sid, "agent.transcript", t_tool, timeout=30)
            assert not spoken["interrupted"] and TOOL_RESULT in spoken["text"], (run.index, spoken)
            assert session.calls == {}, session.calls  # every call it made was answered
            await agent_quiet(peer, 0.5)
        except Exception:
            # What this call went through, for the report of a failure (pytest shows a failed test's output).
            _report(run, feed.get(peer.call_sid, []), logs)
            raise
        finally:
            caller.stop.set()
            await feeder
        run.sent_s = caller.sent_s
        run.received_s = await received_caller_audio(run.sent_s, lambda: runtime.sessions[sid].input_audio_s)
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
        await peer.close()

    runs = [Run(i, p) for i, p in enumerate(plans)]
    t0, cpu0 = time.monotonic(), time.process_time()
    try:
        with capture_call_logs() as logs:
            await asyncio.gather(*(one_call(r) for r in runs))
            async with asyncio.timeout(5):  # call.ended is logged just after the socket closes
                while len(events(logs, "call.ended")) < CALLS_N:
                    await asyncio.sleep(0.01)
        wall, cpu = time.monotonic() - t0, time.process_time() - cpu0

        # Every cut landed in its phase, and the phases got the planned number of cuts.
        cuts = [c for r in runs for c in r.cuts]
        assert len(cuts) == 100 == proxy.cuts
        missed = [(r.index, phase) for r in runs for phase, inside in r.cuts if not inside]
        assert not missed, f"cuts that missed their phase: {missed}"
        for r in runs:
            assert [p for p, _ in r.cuts] == (
                ["greeting"] + ["reply"] * 2 + ["caller_speech"] * 4 + ["tool_call"] * 3
            ), r
        # Every cut resumed, the same session each time.
        resumed = events(logs, "agent.resumed")
        for r in runs:
            mine = [e for e in resumed if e["session_id"] == r.session_id]
            if len(mine) != 10:
                _report(r, feed.get(r.call_sid, []), logs)
            assert len(mine) == 10, (r.index, r.cuts)
        assert len(resumed) == 100 and not events(logs, "agent.resume_failed")
        assert not [e for e in resumed if e.get("new_session_id")], "a resume opened a new session"
        # No caller frame lost.
        for r in runs:
            if abs(r.received_s - r.sent_s) > 0.005:
                _report(r, feed.get(r.call_sid, []), logs)
            assert abs(r.received_s - r.sent_s) <= 0.005, (r.index, r.sent_s, r.received_s, r.plan)
        ended = events(logs, "call.ended")
        assert [e["outcome"] for e in ended] == ["caller_hangup"] * CALLS_N
        assert all(e["agent_resumes"] == 10 and e["frames_dropped_to_agent"] == 0 for e in ended), ended
        assert not events(logs, "call.internal_error") and not events(logs, "local_agent.session_failed")
        # The uncut utterances were understood: the two questions, then the cut utterance (answered before the
        # booking request, at least one turn of it), then the booking, on its own: one turn, nothing held into it.
        fragment_turns = []
        for r in runs:
            intents = [e["intent"] for e in events(logs, "local_agent.turn", session_id=r.session_id)]
            assert intents[:2] == ["opening_hours", "location"], (r.index, intents)
            assert r.monologue_turns >= 1, (r.index, intents)
            assert len(intents) == 3 + r.monologue_turns and intents[-1] == "book_table", (r.index, intents)
            assert not events(logs[r.log_mark :], "local_agent.turn_held", session_id=r.session_id), r.index
            fragment_turns.append(r.monologue_turns)
        # Nothing left behind.
        assert call_tasks() == [] and len(gw_app[CALLS]) == 0
        async with asyncio.timeout(5):
            while runtime.live_sessions:
                await asyncio.sleep(0.05)
        gaps = [e["gap_ms"] for e in resumed]
        print(
            f"[chaos/local agent] 100 cuts over {CALLS_N} calls in {wall:.1f} s wall, {cpu:.1f} s CPU "
            f"({100 * cpu / wall / (os.cpu_count() or 1):.0f} % of {os.cpu_count()} cores); resume gap ms: "
            f"{gap_summary(gaps)} (resumes that took more than one attempt: "
            f"{sum(1 for e in resumed if e['attempts'] > 1)}); caller audio sent = received for every call "
            f"({sum(r.sent_s for r in runs):.1f} s in all); turns the agent made of the cut utterance, per call: "
            f"{fragment_turns}"
        )
    finally:
        await proxy.close()


def _link_of(proxy: TcpProxy, session: Any) -> Link | None:
    """The proxy link carrying a local-agent session: matched on the agent-side socket's address."""
    conn = session.connection
    # aiohttp has no public accessor for the request's live transport (None once the connection is lost)
    req = conn.ws._req if conn is not None else None  # noqa: SLF001
    transport = req.transport if req is not None else None
    peer = transport.get_extra_info("peername") if transport is not None else None
    return proxy.link_from(peer)


def _report(run: Run, feed: list[tuple[float, str, dict[str, Any]]], logs: list[dict[str, Any]]) -> None:
    """What one call went through, printed when it fails (pytest shows a failed test's output): the gateway's
    timeline of the call and every log event of its session, from both the gateway and the local agent."""
    t_start = feed[0][0] if feed else 0.0
    print(f"[chaos/local agent] call {run.index} ({run.call_sid}, {run.session_id}) failed; cuts {run.cuts}")
    for t, kind, f in feed:
        print(f"  feed {t - t_start:7.3f} {kind} {f}")
    for e in logs:
        if e.get("session_id") == run.session_id or e.get("call_sid") == run.call_sid:
            print("  log ", {k: v for k, v in e.items() if k not in ("session_id", "call_sid", "stream_sid")})

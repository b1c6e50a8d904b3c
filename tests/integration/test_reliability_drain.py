"""Drain on SIGTERM (docs/how-to/operations/drain.md), against ``python -m gateway serve`` run as a
real subprocess with AGENT_URL pointing at a fake agent served by this test: /readyz turns 503 at once, new
webhooks hear the polite refusal, new streams get 503, live calls go on until they end by themselves or the drain
budget (2 s here) runs out, the last one hears the goodbye and is hung up, and the process exits 0."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from gateway.prompts import GOODBYE, prompt_ulaw
from tests.support.audio import tone, ulaw_tone
from tests.support.faults import write_config
from tests.support.twilio_peer import TwilioPeer

ROOT = Path(__file__).resolve().parents[2]
BUDGET_S = 2.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _start_gateway(
    fake_agent: Any, port: int
) -> tuple[asyncio.subprocess.Process, list[dict[str, Any]], asyncio.Task[None]]:
    cfg = write_config(f"[server]\ndrain_budget_s = {BUDGET_S}\n")
    env = {
        **os.environ,
        "AGENT_URL": fake_agent.url,
        "ASSEMBLYAI_API_KEY": fake_agent.api_key,
        "GATEWAY_TOKEN_SECRET": "drain-secret",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--config",
        cfg,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[dict[str, Any]] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            try:
                lines.append(json.loads(raw))
            except ValueError:
                lines.append({"event": "<raw>", "text": raw.decode(errors="replace")})

    return proc, lines, asyncio.create_task(read())


async def test_sigterm_drains_live_calls_then_says_goodbye_and_exits_0(fake_agent, http):
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    proc, logs, reader = await _start_gateway(fake_agent, port)
    peers: list[TwilioPeer] = []
    feeds: list[asyncio.Task[None]] = []
    try:
        async with asyncio.timeout(20):
            while True:
                try:
                    async with http.get(base + "/readyz") as r:
                        if r.status == 200:
                            break
                except aiohttp.ClientConnectionError:
                    pass
                assert proc.returncode is None, logs
                await asyncio.sleep(0.1)
        # five live calls
        sessions = []
        for _ in range(5):
            p = TwilioPeer(base, http)
            await p.dial()
            await p.connect()
            peers.append(p)
            sessions.append(await fake_agent.session(timeout=10))
        feeds += [asyncio.create_task(p.send_media(ulaw_tone(440, 10.0), realtime=True)) for p in peers]
        await asyncio.sleep(0.3)

        t_term = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        # /readyz turns 503 at once
        async with asyncio.timeout(1.0):
            while True:
                async with http.get(base + "/readyz") as r:
                    if r.status == 503:
                        break
                await asyncio.sleep(0.02)
        assert time.monotonic() - t_term < 0.5
        # a new call is refused politely, and an unreserved stream with 503
        late = TwilioPeer(base, http)
        async with http.post(base + "/twilio/voice", data={"CallSid": late.call_sid, "To": late.to}) as r:
            body = await r.text()
        assert r.status == 200 and "<Say>" in body and "<Hangup/>" in body and "<Connect>" not in body
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(peers[0].stream_url)
        assert exc.value.status == 503
        # in-flight calls go on: the agent still speaks to caller 0 and still hears it
        heard = len(peers[0].played)
        await sessions[0].reply(tone(700, 0.4, 24000), realtime=False)
        await peers[0].wait_for(lambda: len(peers[0].played) >= heard + 0.4 * 8000 - 160, timeout=3)
        n_audio = len(sessions[1].audio)
        await peers[1].wait_for(lambda: len(sessions[1].audio) > n_audio + 0.2 * 48000, timeout=3)
        # calls 0-3 hang up by themselves before the budget; none may have been cut before that
        for i, p in enumerate(peers[:4]):
            await asyncio.sleep(max(0.0, t_term + 0.4 * (i + 1) - time.monotonic()))
            assert not p.closed.is_set(), f"call {i} was cut before its end"
            feeds[i].cancel()
            await p.stop()
            await p.wait_for(p.closed.is_set, timeout=3)
        last = peers[4]
        assert not last.closed.is_set()
        # call 4 outlasts the budget: it hears the whole goodbye, then the gateway hangs up
        await last.wait_for(lambda: last.closed.is_set(), timeout=BUDGET_S + 10)
        t_closed = time.monotonic() - t_term
        assert t_closed >= BUDGET_S
        goodbye = prompt_ulaw(GOODBYE)
        assert bytes(last.played) == goodbye
        assert last.close_code == 1000
        rc = await asyncio.wait_for(proc.wait(), 10)
        t_exit = time.monotonic() - t_term
        assert rc == 0, logs[-20:]
        assert all(s.ended_by_client for s in sessions)  # every agent session ended with session.end
        await asyncio.wait_for(reader, 5)
        names = [e.get("event") for e in logs]
        for name in (
            "gateway.signal",
            "gateway.drain_started",
            "gateway.drain_deadline",
            "gateway.drain_finished",
            "gateway.stopped",
        ):
            assert name in names, name
        deadline = next(e for e in logs if e.get("event") == "gateway.drain_deadline")
        assert deadline["ending_calls"] == 1
        outcomes = sorted(e["outcome"] for e in logs if e.get("event") == "call.ended")
        assert outcomes == ["caller_hangup"] * 4 + ["drained"]
        assert next(e for e in logs if e.get("event") == "gateway.drain_finished")["still_active"] == 0
        print(
            f"\n[drain] readyz 503 at once; goodbye call closed at +{t_closed:.2f} s; exit 0 at +{t_exit:.2f} s "
            f"(budget {BUDGET_S} s)"
        )
    finally:
        for f in feeds:
            f.cancel()
        await asyncio.gather(*feeds, return_exceptions=True)
        for p in peers:
            await p.close()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

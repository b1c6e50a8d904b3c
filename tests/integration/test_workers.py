"""``serve --workers 2``: two real worker processes share one port (SO_REUSEPORT) and both take calls.

The gateway runs as a subprocess (``python -m gateway serve``) against the fake agent served by this test; calls
are made over fresh TCP connections until each worker's own metrics port reports a finished call (bounded)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.support.twilio_peer import TwilioPeer
from tests.unit.test_log_schema import check_event

ROOT = Path(__file__).resolve().parents[2]
MAX_CALLS = 40  # P(one of two workers never chosen) = 2 * 0.5**40 if the kernel spreads connections at random


def _free_ports() -> tuple[int, int]:
    """A free port for the gateway and a free pair (M, M+1) for the two workers' metrics listeners."""
    for _ in range(50):
        socks = []
        try:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            socks.append(a)
            b = socket.socket()
            b.bind(("127.0.0.1", 0))
            socks.append(b)
            m = b.getsockname()[1]
            c = socket.socket()
            c.bind(("127.0.0.1", m + 1))
            socks.append(c)
            return a.getsockname()[1], m
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")


async def _calls_ended(http: aiohttp.ClientSession, port: int) -> float:
    async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    return sum(
        s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
        if s.name == "voice_gateway_calls_total"
    )


async def test_two_workers_share_the_port_and_each_takes_calls(fake_agent):
    port, metrics_port = _free_ports()
    env = {
        **os.environ,
        "AGENT_URL": fake_agent.url,
        "ASSEMBLYAI_API_KEY": fake_agent.api_key,
        "GATEWAY_TOKEN_SECRET": "test-secret",
        "LOG_FORMAT": "json",
        "PYTHONUNBUFFERED": "1",
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--workers",
        "2",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    lines: list[str] = []

    async def read() -> None:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            lines.append(raw.decode(errors="replace").rstrip("\n"))

    reader = asyncio.create_task(read())
    try:
        async with aiohttp.ClientSession() as http:
            async with asyncio.timeout(30):  # two interpreters start and import the gateway
                for m in (metrics_port, metrics_port + 1):
                    while True:
                        assert proc.returncode is None, "\n".join(lines)
                        try:
                            async with http.get(f"http://127.0.0.1:{m}/healthz") as r:
                                if r.status == 200:
                                    break
                        except aiohttp.ClientConnectionError:
                            pass
                        await asyncio.sleep(0.1)
            calls = 0
            per_worker = [0.0, 0.0]
            while min(per_worker) == 0 and calls < MAX_CALLS:
                # A new connection for every request, so the kernel picks a worker each time.
                async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as fresh:
                    peer = TwilioPeer(f"http://127.0.0.1:{port}", fresh)
                    await peer.dial()
                    await peer.connect()
                    await fake_agent.session()
                    await peer.stop()
                    await peer.wait_for(peer.closed.is_set, timeout=5)
                    await peer.close()
                calls += 1
                await asyncio.sleep(0.05)
                per_worker = [await _calls_ended(http, metrics_port + i) for i in (0, 1)]
            assert min(per_worker) >= 1, (per_worker, calls)
            assert sum(per_worker) == calls  # every call ended on exactly one worker, and each was counted
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            await reader
    assert proc.returncode == 0, "\n".join(lines[-30:])
    events = [json.loads(line) for line in lines if line.startswith("{")]
    for e in events:
        check_event(e)  # the real JSON output follows the committed log schema
    pids = {e["pid"] for e in events if e["event"] == "call.ended"}
    assert len(pids) == 2, pids  # call summaries carry the worker's pid: both workers served calls
    started = {e["worker"] for e in events if e["event"] == "gateway.worker_started"}
    assert started == {0, 1}
    assert sum(e["event"] == "gateway.stopped" for e in events) == 2  # both drained and stopped on SIGTERM

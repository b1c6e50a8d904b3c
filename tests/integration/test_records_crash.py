"""Nothing is lost when the gateway dies: ``python -m gateway serve`` as a real subprocess (AGENT_URL pointing at the
fake agent served by this test), three calls end while the webhook receiver is down, a fourth is live and recording,
the process is SIGKILLed, the receiver comes up, the gateway restarts on the same data directory, and every
``call.ended`` arrives at least once per ``webhook-id`` with a valid Standard Webhooks signature; the killed call's
recording is a readable WAV (docs/how-to/call-records.md#webhooks)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal
import socket
import sqlite3
import sys
import wave
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from standardwebhooks import Webhook

from tests.support.audio import ulaw_tone
from tests.support.faults import write_config
from tests.support.twilio_peer import TwilioPeer

ROOT = Path(__file__).resolve().parents[2]
SECRET = "whsec_" + base64.b64encode(b"crash-test-secret-0123456789").decode()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve(fake_agent: Any, port: int, config: str) -> asyncio.subprocess.Process:
    env = {
        **os.environ,
        "AGENT_URL": fake_agent.url,
        "ASSEMBLYAI_API_KEY": fake_agent.api_key,
        "GATEWAY_TOKEN_SECRET": "crash-secret",
        "GATEWAY_WEBHOOK_SECRET": SECRET,
        "LOG_FORMAT": "json",
    }
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--host", "127.0.0.1", "--port", str(port), "--config", config,
        cwd=ROOT, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip


async def _ready(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process) -> None:
    async with asyncio.timeout(30):
        while True:
            try:
                async with http.get(base + "/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            assert proc.returncode is None
            await asyncio.sleep(0.1)


def _pending(db: Path) -> int:
    if not db.exists():
        return 0
    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0])


async def test_sigkill_with_webhooks_pending_and_the_receiver_down_loses_no_record(fake_agent, http, tmp_path):
    port, hook_port = _free_port(), _free_port()
    base = f"http://127.0.0.1:{port}"
    data = tmp_path / "data"
    config = write_config(
        f'[storage]\nurl = "{(tmp_path / "calls").as_uri()}"\ndata_dir = "{data}"\n'
        f'[webhooks]\nurl = "http://127.0.0.1:{hook_port}/hook"\nbackoff_s = 0.5\n'
        "[profiles.default]\nrecord = true\n"
    )
    proc = await _serve(fake_agent, port, config)
    ended: list[str] = []
    try:
        await _ready(http, base, proc)
        for _ in range(3):  # three short calls end while nobody receives webhooks
            peer = TwilioPeer(base, http)
            await peer.dial()
            await peer.connect()
            await fake_agent.session(timeout=10)
            await peer.send_media(ulaw_tone(440, 0.2))
            await peer.stop()
            await asyncio.wait_for(peer.closed.wait(), 10)
            await peer.close()
            ended.append(peer.call_sid)
        async with asyncio.timeout(20):
            while _pending(data / "outbox.sqlite3") < 3:
                await asyncio.sleep(0.1)
        # a fourth call is live and recording when the process dies
        live = TwilioPeer(base, http)
        await live.dial()
        await live.connect()
        await fake_agent.session(timeout=10)
        await live.send_media(ulaw_tone(440, 2.5), realtime=True)
        proc.send_signal(signal.SIGKILL)
        async with asyncio.timeout(10):  # a hang here is a failure with a line number, not a stuck suite
            await proc.wait()
        async with asyncio.timeout(10):
            await live.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    # the killed call's recording holds what was flushed: a valid WAV of at least a second
    with wave.open(str(tmp_path / "calls" / f"{live.call_sid}.wav")) as w:
        assert (w.getnchannels(), w.getframerate()) == (2, 8000)
        assert w.getnframes() >= 8000 and len(w.readframes(w.getnframes())) == 4 * w.getnframes()

    # the receiver comes up, the gateway restarts on the same data directory
    got: list[tuple[dict[str, str], bytes]] = []
    arrived = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        got.append((dict(request.headers), await request.read()))
        arrived.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    runner = web.AppRunner(receiver)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", hook_port).start()
    proc = await _serve(fake_agent, port, config)
    try:
        verifier = Webhook(SECRET)
        async with asyncio.timeout(30):
            while True:
                events = [verifier.verify(body, headers) for headers, body in got]  # raises on a bad signature
                if {e["data"]["call_sid"] for e in events} >= set(ended):
                    break
                arrived.clear()
                await arrived.wait()
        ids = {h["webhook-id"] for h, _ in got}
        assert len(ids) >= 3 and all(e["type"] == "call.ended" for e in events)
        for e in events:
            assert json.loads(json.dumps(e))["data"]["outcome"] == "caller_hangup"
        async with asyncio.timeout(10):
            while _pending(data / "outbox.sqlite3"):
                await asyncio.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), 15)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        await runner.cleanup()

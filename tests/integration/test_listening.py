"""The gateway's server as :func:`gateway.drain.listening` builds it (what ``serve`` and each ``--workers`` process
run), on a loopback port, probed with raw sockets; one test runs ``python -m gateway serve``.

Slowloris (docs/security.md): a connection that does not finish its request head within ``server.header_timeout_s``
(0.5 s here) is closed, while normal requests, keep-alive within the deadline, a live call's WebSocket and long
responses all outlive it. A malformed request head is aiohttp's own 400 and logs no traceback; a bug in a handler
still does."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.app import create_app
from gateway.config import load_settings
from gateway.drain import listening
from tests.support.audio import ulaw_tone
from tests.support.twilio_peer import TwilioPeer

ROOT = Path(__file__).resolve().parents[2]
TIMEOUT_S = 0.5
STREAM_CHUNKS = 8  # the test route below streams one chunk every 0.2 s: 1.6 s, over three deadlines


async def _slow_stream(request: web.Request) -> web.StreamResponse:
    """A long streamed response (like the softphone's server-sent events)."""
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await resp.prepare(request)
    for i in range(STREAM_CHUNKS):
        await resp.write(f"data: {i}\n\n".encode())
        await asyncio.sleep(0.2)
    await resp.write_eof()
    return resp


BIG = 32 * 1024 * 1024  # more than loopback's socket buffers hold: the response waits on the reader


async def _big(request: web.Request) -> web.Response:
    """A plain (not streamed) response aiohttp writes after the handler returned."""
    return web.Response(body=b"x" * BIG)


async def _bug(request: web.Request) -> web.Response:
    raise RuntimeError("a bug of ours")


@pytest.fixture
async def gw(gateway_env: dict[str, str], tmp_path: Path) -> AsyncIterator[Any]:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[server]\nheader_timeout_s = {TIMEOUT_S}\n[profiles.default]\ngreeting = ""\n')
    app = create_app(load_settings(cfg, env=gateway_env))
    app.router.add_get("/test/stream", _slow_stream)  # before listening() freezes the app
    app.router.add_get("/test/big", _big)
    app.router.add_get("/test/bug", _bug)
    async with listening(app, "127.0.0.1", 0) as runner:
        host, port = runner.addresses[0][:2]
        yield type("Gateway", (), {"host": host, "port": port, "base_url": f"http://{host}:{port}"})


async def closed_after(reader: asyncio.StreamReader, limit_s: float) -> tuple[float, bytes]:
    """Read until the server closes the connection; (seconds it took, what arrived meanwhile)."""
    t0 = time.monotonic()
    data = b""
    async with asyncio.timeout(limit_s):
        while chunk := await reader.read(4096):
            data += chunk
    return time.monotonic() - t0, data


async def refusals(http: aiohttp.ClientSession, gw: Any) -> float:
    async with http.get(gw.base_url + "/metrics") as r:
        text = await r.text()
    line = 'voice_gateway_call_refusals_total{reason="header_timeout",stage="http"} '
    return next((float(x[len(line) :]) for x in text.splitlines() if x.startswith(line)), 0.0)


async def test_a_head_trickled_byte_by_byte_is_cut_off_at_the_deadline(gw, http):
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    head = b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: " + b"a" * 200  # never finished

    async def trickle() -> None:
        for byte in head:
            writer.write(bytes([byte]))
            await writer.drain()
            await asyncio.sleep(0.05)  # well inside any per-read timeout: only a head deadline stops this

    sender = asyncio.create_task(trickle())
    try:
        took, data = await closed_after(reader, limit_s=5 * TIMEOUT_S)
    finally:
        sender.cancel()
        writer.close()
    assert TIMEOUT_S * 0.9 <= took <= TIMEOUT_S + 1.0 and data == b""  # closed, silently, not answered
    assert not sender.done() or sender.cancelled()  # it was still trickling when the server hung up
    assert await refusals(http, gw) == 1


async def test_a_connection_that_sends_nothing_is_closed_too(gw, http):
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    took, data = await closed_after(reader, limit_s=5 * TIMEOUT_S)
    writer.close()
    assert TIMEOUT_S * 0.9 <= took <= TIMEOUT_S + 1.0 and data == b""
    assert await refusals(http, gw) == 1


async def test_a_normal_request_and_keep_alive_within_the_deadline_work(gw, http):
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    request = b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n"
    try:
        for _ in range(4):  # four requests on one connection, each well within a deadline of the last response
            writer.write(request)
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), 2)
            assert status.startswith(b"HTTP/1.1 200"), status
            headers = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 2)
            length = int(
                next(h.split(b":")[1] for h in headers.split(b"\r\n") if h.lower().startswith(b"content-length"))
            )
            await reader.readexactly(length)
            await asyncio.sleep(TIMEOUT_S * 0.4)  # 1.6 deadlines in all: the clock restarts after each response
        # Left idle, the keep-alive connection is closed after one deadline (like uvicorn's keep-alive timeout).
        took, data = await closed_after(reader, limit_s=5 * TIMEOUT_S)
        assert took <= TIMEOUT_S + 1.0 and data == b""
    finally:
        writer.close()
    assert await refusals(http, gw) == 0  # an idle keep-alive connection is not a refusal


async def test_a_streamed_response_longer_than_the_deadline_is_not_cut(gw, http):
    t0 = time.monotonic()
    async with http.get(gw.base_url + "/test/stream") as r:
        body = await r.read()
    assert time.monotonic() - t0 > 3 * TIMEOUT_S
    assert body == b"".join(f"data: {i}\n\n".encode() for i in range(STREAM_CHUNKS))


async def test_a_response_still_being_written_to_a_slow_reader_is_not_cut(gw):
    reader, writer = await asyncio.open_connection(gw.host, gw.port, limit=BIG)
    try:
        writer.write(b"GET /test/big HTTP/1.1\r\nHost: test\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(3 * TIMEOUT_S)  # not reading: the rest of the body waits in the server's buffer
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200"), head
        body = await asyncio.wait_for(reader.readexactly(BIG), 20)
        assert body == b"x" * BIG
    finally:
        writer.close()


async def test_a_call_websocket_outlives_the_deadline(gw, http, fake_agent):
    peer = TwilioPeer(gw.base_url, http)
    await peer.dial()
    try:
        await peer.connect()
        sess = await fake_agent.session()
        await asyncio.sleep(3 * TIMEOUT_S)
        assert not peer.closed.is_set()
        before = len(sess.audio)
        await peer.send_media(ulaw_tone(440, 0.2))
        async with asyncio.timeout(5):
            while len(sess.audio) <= before:  # the caller's audio still reaches the agent over the same socket
                await asyncio.sleep(0.01)
        assert not peer.closed.is_set()
    finally:
        await peer.close()


@pytest.mark.parametrize(
    "head",
    [
        b"POST /twilio/status HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"GET /healthz HTTP/1.1\r\nHo\x00st: test\r\n\r\n",  # NUL in a header name
        b"GET /healthz HTTP/1.1\r\nHost: test\r\nX: " + b"a" * 9000 + b"\r\n\r\n",  # a header over 8190 bytes
    ],
)
async def test_a_malformed_head_is_a_400_without_a_traceback(gw, caplog, head):
    caplog.set_level(logging.DEBUG)
    reader, writer = await asyncio.open_connection(gw.host, gw.port)
    writer.write(head)
    await writer.drain()
    _, answer = await closed_after(reader, limit_s=5)
    writer.close()
    assert answer.startswith((b"HTTP/1.0 400", b"HTTP/1.1 400")), answer[:100]
    assert [r for r in caplog.records if r.exc_info] == []


async def test_a_bug_in_a_handler_is_still_logged_with_its_traceback(gw, http, caplog):
    async with http.get(gw.base_url + "/test/bug") as r:
        assert r.status == 500
    (record,) = [r for r in caplog.records if r.exc_info]
    assert record.levelno == logging.ERROR and isinstance(record.exc_info[1], RuntimeError)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_python_m_gateway_serve_enforces_the_deadline(gateway_env, tmp_path):
    """The production entry point (``serve``; ``--workers`` runs the same ``serve`` in each worker)."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"[server]\nheader_timeout_s = {TIMEOUT_S}\n")
    port = _free_port()
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
        str(cfg),
        cwd=ROOT,
        env={**os.environ, **gateway_env, "PYTHONUNBUFFERED": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(30):
            while True:  # until it listens
                try:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    await asyncio.sleep(0.1)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: te")
        await writer.drain()
        took, data = await closed_after(reader, limit_s=5 * TIMEOUT_S)
        writer.close()
        assert took <= TIMEOUT_S + 1.0 and data == b""
    finally:
        proc.terminate()
        async with asyncio.timeout(20):
            assert await proc.wait() == 0

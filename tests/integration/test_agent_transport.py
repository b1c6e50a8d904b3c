"""gateway.agent.client on each transport, over real loopback sockets: how the end of an agent socket is reported
(the resume logic of gateway.session depends on it), connect failures, keepalive, size limit, the bound on a send
that waits for the drain, and the shared client session's lifetime."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.agent import client as client_mod
from gateway.agent.client import TRANSPORTS, AgentClosed, AgentConnection, AgentEndpoint, new_http_session
from gateway.agent.protocol import SessionReady
from gateway.app import create_app
from gateway.config import load_settings
from gateway.errors import AgentUnavailable
from gateway.keys import AGENT_HTTP

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
READY = json.dumps({"type": "session.ready", "session_id": "sess_1"})


@pytest.fixture(params=TRANSPORTS)
def transport(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    session = new_http_session()
    yield session
    await session.close()


@pytest.fixture
def serve(aiohttp_server: Any) -> Callable[[Handler], Awaitable[str]]:
    async def start(handler: Handler) -> str:
        app = web.Application()
        app.router.add_get("/v1/ws", handler)
        server = await aiohttp_server(app)
        return str(server.make_url("/v1/ws")).replace("http://", "ws://")

    return start


def endpoint(url: str, transport: str, http: aiohttp.ClientSession) -> AgentEndpoint:
    return AgentEndpoint(url, "key", "test", transport=transport, http=http)


def ready_then(then: Callable[[web.WebSocketResponse], Awaitable[None]], **ws_kw: Any) -> Handler:
    """An agent peer that sends session.ready, then does ``then``."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(**ws_kw)
        await ws.prepare(request)
        await ws.send_str(READY)
        await then(ws)
        return ws

    return handler


async def test_a_close_frame_is_reported_with_its_code_and_reason_and_send_refuses_afterwards(transport, http, serve):
    async def close_4000(ws: web.WebSocketResponse) -> None:
        await ws.close(code=4000, message=b"going away")

    url = await serve(ready_then(close_4000))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert isinstance(await agent.recv(), SessionReady)
    with pytest.raises(AgentClosed) as closed:
        await agent.recv()
    assert (closed.value.code, closed.value.reason) == (4000, "going away")
    with pytest.raises(AgentClosed) as again:
        await agent.send('{"type": "input.audio", "audio": ""}')
    assert again.value.code == 4000
    assert not agent.open_ and agent.close_code == 4000 and agent.close_reason == "going away"
    await agent.close()


@pytest.mark.parametrize("read_cancelled", [False, True], ids=["idle", "after_a_cancelled_read"])
async def test_a_clean_end_reports_the_agents_own_close_code(transport, http, serve, read_cancelled):
    # session.end → session.ended, then the agent closes with 1000 (docs/architecture/agent-api.md#close-codes). A
    # call's teardown cancels its agent reader first (read_cancelled): aiohttp then marks the socket 1006 and its
    # close() no longer reads the peer's close frame, so every normally ended call once logged agent.closed 1006.
    async def end_on_request(ws: web.WebSocketResponse) -> None:
        async for msg in ws:
            if json.loads(msg.data).get("type") == "session.end":
                await ws.send_str(json.dumps({"type": "session.ended", "session_duration_seconds": 1.0}))
                await ws.close(code=1000)

    url = await serve(ready_then(end_on_request))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert isinstance(await agent.recv(), SessionReady)
    if read_cancelled:
        reading = asyncio.ensure_future(agent.recv())
        await asyncio.sleep(0.05)
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reading
    assert await agent.end(2.0) is True
    assert agent.close_code == 1000 and not agent.open_


async def test_a_drop_without_a_close_frame_is_reported_as_code_none(transport, http, serve):
    async def drop(ws: web.WebSocketResponse) -> None:
        await asyncio.sleep(0.05)
        transport_ = ws._req.transport  # noqa: SLF001 - a TCP FIN with no WebSocket close frame
        assert transport_ is not None
        transport_.close()

    url = await serve(ready_then(drop))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert isinstance(await agent.recv(), SessionReady)
    with pytest.raises(AgentClosed) as closed:
        await agent.recv()
    assert (closed.value.code, closed.value.reason) == (None, "")
    with pytest.raises(AgentClosed) as again:
        await agent.send("{}")
    assert again.value.code is None
    assert not agent.open_ and agent.close_code == 1006
    await agent.close()


async def test_a_silent_peer_is_noticed_by_the_keepalive(transport, http, serve, monkeypatch):
    # A peer that stops answering (no pong, no close): the keepalive must end the socket on its own.
    monkeypatch.setattr(client_mod, "AIOHTTP_HEARTBEAT_S", 0.2)
    monkeypatch.setattr(client_mod, "WEBSOCKETS_PING_INTERVAL_S", 0.1)
    monkeypatch.setattr(client_mod, "WEBSOCKETS_PING_TIMEOUT_S", 0.2)
    gone = asyncio.Event()

    async def mute(ws: web.WebSocketResponse) -> None:
        await gone.wait()  # never reads: pings stay unanswered

    url = await serve(ready_then(mute, autoping=False))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert isinstance(await agent.recv(), SessionReady)
    try:
        with pytest.raises(AgentClosed) as closed:
            async with asyncio.timeout(10):  # a bound for a hung test, not a timing assertion
                await agent.recv()
        assert closed.value.code is None
    finally:
        gone.set()
        await agent.close()


async def test_a_message_over_max_size_drops_the_socket(transport, http, serve):
    async def big(ws: web.WebSocketResponse) -> None:
        await ws.send_str(json.dumps({"type": "transcript.agent", "text": "x" * 5000}))
        await asyncio.sleep(1)

    url = await serve(ready_then(big))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5, max_size=4096)
    assert isinstance(await agent.recv(), SessionReady)
    with pytest.raises(AgentClosed) as closed:
        await agent.recv()
    assert closed.value.code is None  # we ended it (1009), the peer sent no close frame
    await agent.close()


async def test_a_rejected_handshake_is_agent_unavailable_naming_the_status(transport, http, serve):
    async def forbid(request: web.Request) -> web.StreamResponse:
        return web.Response(status=403, text="bad key")

    url = await serve(forbid)
    with pytest.raises(AgentUnavailable) as info:
        await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert "403" in str(info.value)


async def test_refused_and_unanswered_connects_are_agent_unavailable(transport, http):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(AgentUnavailable):  # nothing listens
        await AgentConnection.open(endpoint(f"ws://127.0.0.1:{port}/v1/ws", transport, http), timeout=5)
    accepted: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        accepted.append(w)

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(AgentUnavailable):  # TCP accepted, no HTTP answer: the connect timeout ends it
            await AgentConnection.open(endpoint(f"ws://127.0.0.1:{port}/v1/ws", transport, http), timeout=0.3)
        assert accepted
    finally:
        for w in accepted:
            w.close()
        server.close()
        await server.wait_closed()


async def test_the_aiohttp_transport_needs_the_shared_session(serve):
    with pytest.raises(ValueError, match="ClientSession"):
        await AgentConnection.open(AgentEndpoint("ws://127.0.0.1:1/v1/ws", "k", transport="aiohttp"), timeout=1)


async def test_the_app_owns_one_agent_client_session_and_closes_it_at_cleanup(aiohttp_server, gateway_env):
    settings = load_settings(None, env=gateway_env)
    app = create_app(settings)
    server = await aiohttp_server(app)
    session = app[AGENT_HTTP]
    assert not session.closed and session.connector is not None and session.connector.limit == 0
    await server.close()
    assert session.closed


async def test_backlogged_turns_true_when_the_peer_stops_reading_and_false_once_it_drains(transport, http, serve):
    # gateway.session sends caller audio from the carrier reader only while this is False; it reads the transport
    # aiohttp keeps privately, so an aiohttp upgrade that moves it must fail here (it would read False for ever).
    reading = asyncio.Event()

    async def stall(ws: web.WebSocketResponse) -> None:
        async for _ in ws:
            await reading.wait()

    url = await serve(ready_then(stall))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert isinstance(await agent.recv(), SessionReady)
    frame = json.dumps({"type": "input.audio", "audio": "A" * 1280})
    assert not agent.backlogged()
    sent = 0
    with contextlib.suppress(TimeoutError):  # a blind backlogged() lets a send wait for the drain for ever
        async with asyncio.timeout(20):
            while not agent.backlogged() and sent < 40_000:  # ≈ 3.8 MB fill the loopback socket's buffers here
                await agent.send(frame)
                sent += 1
    assert agent.backlogged(), f"{sent} frames sent to a peer that reads nothing, and no backlog seen"
    reading.set()
    async with asyncio.timeout(10):  # a bound for a hung test, not a timing assertion
        while agent.backlogged():
            await asyncio.sleep(0.01)
    await agent.close()


async def _backed_up(transport, http, serve, send_timeout: float) -> tuple[AgentConnection, str, asyncio.Event]:
    """An agent socket whose peer stopped reading, filled until it is backed up; set the event to read again."""
    reading = asyncio.Event()

    async def stall(ws: web.WebSocketResponse) -> None:
        async for _ in ws:
            await reading.wait()

    url = await serve(ready_then(stall))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5, send_timeout=send_timeout)
    assert isinstance(await agent.recv(), SessionReady)
    frame = json.dumps({"type": "input.audio", "audio": "A" * 1280})
    async with asyncio.timeout(20):  # a bound for a hung test
        while not agent.backlogged():
            await agent.send(frame)
    return agent, frame, reading


async def test_a_send_on_a_socket_that_keeps_up_completes_without_suspending(transport, http, serve):
    # The steady caller frame (50 a second per call) must cost no timer and no trip through the event loop: only a
    # send that may have to wait for the drain runs under agent.send_timeout_s.
    url = await serve(ready_then(lambda ws: ws.receive()))
    agent = await AgentConnection.open(endpoint(url, transport, http), timeout=5)
    assert isinstance(await agent.recv(), SessionReady)
    step = agent.send(json.dumps({"type": "input.audio", "audio": "A" * 1280}))
    with pytest.raises(StopIteration):
        step.send(None)
    await agent.close()


async def test_a_send_that_cannot_drain_in_time_aborts_the_socket_as_a_drop(transport, http, serve):
    # A blackholed link or an agent that stopped reading: a send waiting for the drain gives up after send_timeout,
    # aborts the transport (its unsent bytes and fd released) and reports a drop, so the call resumes elsewhere.
    agent, frame, reading = await _backed_up(transport, http, serve, send_timeout=0.5)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    with pytest.raises(AgentClosed) as info:
        async with asyncio.timeout(10):  # a bound for a hung test
            while True:
                await agent.send(frame)
    assert (info.value.code, info.value.reason) == (None, "")
    assert loop.time() - t0 < 5
    assert not agent.open_ and not agent.backlogged()  # aborted: the queued bytes are gone with the socket
    with pytest.raises(AgentClosed):
        await agent.send(frame)  # at once: nothing more is written to it
    with pytest.raises(AgentClosed) as info:
        async with asyncio.timeout(5):
            await agent.recv()
    assert info.value.code is None
    assert agent.close_code == 1006
    reading.set()


async def test_an_abort_releases_a_send_waiting_for_the_drain_as_not_sent(transport, http, serve):
    # discard() aborts a socket the keepalive found dead while agent_sender still waits in a send on it: that send
    # must end at once and say its frames were not sent (both libraries let the released drain return normally).
    agent, frame, reading = await _backed_up(transport, http, serve, send_timeout=30)

    async def flood() -> None:
        while True:
            await agent.send(frame)

    sending = asyncio.create_task(flood())
    await asyncio.sleep(0.5)
    assert not sending.done()  # waiting for the drain
    agent.abort()
    with pytest.raises(AgentClosed):
        async with asyncio.timeout(2):
            await sending
    reading.set()

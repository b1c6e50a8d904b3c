"""The load generator's own WebSocket code (bench/wsproto.py) against aiohttp, on loopback: every length encoding
(7-bit, 16-bit, 64-bit), masked frames both ways, frames larger than one read, and text handed on as its exact UTF-8
bytes. The bench's latency figures are only as good as these two peers' framing."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import WSMsgType, web

from bench.wsproto import WsClient, WsServerConn

MESSAGES = ['{"event":"media"}', "x" * 126, "y" * 65535, "z" * 70000, "é ✓"]


async def test_the_generators_client_reads_an_aiohttp_servers_text_and_its_masked_frames_are_read_back(
    aiohttp_server: Any,
) -> None:
    received: list[str] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        async for msg in ws:
            assert msg.type is WSMsgType.TEXT
            received.append(msg.data)
            if msg.data == "go":
                for m in MESSAGES:
                    await ws.send_str(m)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    server = await aiohttp_server(app)
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: WsClient(f"127.0.0.1:{server.port}", "/ws"), "127.0.0.1", server.port
    )
    got: list[bytes] = []
    try:
        async with asyncio.timeout(5):
            await client.open
            client.on_text = got.append
            client.send_text("go")
            client.send_payload(MESSAGES[3].encode())  # a client frame with a 64-bit length, masked
            while len(got) < len(MESSAGES) or len(received) < 2:
                await asyncio.sleep(0.01)
    finally:
        client.close()
    assert got == [m.encode() for m in MESSAGES]
    assert received == ["go", MESSAGES[3]]


async def test_the_generators_server_reads_an_aiohttp_clients_masked_text_and_answers() -> None:
    got: list[bytes] = []
    paths: list[str] = []

    def on_open(conn: WsServerConn, path: str) -> None:
        paths.append(path)
        conn.on_text = lambda data: (got.append(data), conn.send_payload(b"ack:" + data[:8]))[0]

    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: WsServerConn(on_open), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/v1/ws") as ws:
            for m in MESSAGES:
                await ws.send_str(m)  # aiohttp masks every client frame with a random key
            acks = [(await ws.receive(timeout=5)).data for _ in MESSAGES]
        assert paths == ["/v1/ws"]
        assert got == [m.encode() for m in MESSAGES]
        assert acks == ["ack:" + m.encode()[:8].decode() for m in MESSAGES]
    finally:
        server.close()
        await server.wait_closed()

"""The cutting TCP proxy the fault tests rely on (tests/support/tcp_proxy.py), over real loopback sockets: a cut in
``fin`` mode must deliver to the agent every byte the gateway wrote before it closed its end, even when the agent
is slow to read them. The chaos tests' "no caller frame lost" is only as good as this."""

from __future__ import annotations

import asyncio

from tests.support.tcp_proxy import TcpProxy

PAYLOAD = bytes(range(256)) * (16 * 4096)  # 16 MiB: more than loopback socket buffers hold, so the relay blocks


async def test_fin_cut_relays_everything_the_gateway_sent_to_an_agent_that_reads_slowly():
    received = bytearray()
    agent_done = asyncio.Event()

    async def slow_agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(3.0)  # busy: reads nothing for longer than the proxy's idle bound (2 s)
        while data := await reader.read(65536):
            received.extend(data)
        writer.close()
        agent_done.set()

    agent = await asyncio.start_server(slow_agent, "127.0.0.1", 0)
    proxy = TcpProxy("127.0.0.1", agent.sockets[0].getsockname()[1])
    await proxy.start()
    try:
        gw_reader, gw_writer = await asyncio.open_connection("127.0.0.1", proxy.port)
        gw_writer.write(PAYLOAD)  # the gateway's sends: accepted by its transport, flushed as the path allows
        async with asyncio.timeout(5):
            while not proxy.live_links:
                await asyncio.sleep(0.01)
        cut = asyncio.create_task(proxy.cut(proxy.live_links[0]))
        async with asyncio.timeout(5):
            assert await gw_reader.read() == b""  # the gateway sees the FIN ...
        gw_writer.close()  # ... and closes its end (its transport still flushes what it holds)
        async with asyncio.timeout(40):
            await cut
            await agent_done.wait()
        assert len(received) == len(PAYLOAD) and received == PAYLOAD
    finally:
        await proxy.close()
        agent.close()

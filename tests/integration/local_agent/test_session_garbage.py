"""An ended local-agent session is freed by reference counting, the moment its socket's handler ends: none of its
objects wait for Python's cyclic collector. The embedded agent runs in the gateway's process, so a full collection
that walks its leftovers stops every live call's audio too (docs/architecture/performance.md#call-garbage)."""

from __future__ import annotations

import asyncio

from gateway.local_agent.connection import Connection
from gateway.local_agent.session import Session
from tests.support.gc_cycles import collector_off


async def _one_session(agent) -> None:
    client, _ready = await agent.session()
    await client.send("session.end")
    await client.expect("session.ended")
    await client.wait_closed()
    await client.close()


async def test_an_ended_session_leaves_no_reference_cycles(agent):
    await _one_session(agent)  # warm: first-use caches
    runtime = agent.runtime
    with collector_off(Connection, Session) as left:
        for _ in range(3):
            await _one_session(agent)
        async with asyncio.timeout(10):  # every connection's handler has run to its end (a bound for a hung test)
            while runtime.connections or runtime.sessions:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
    assert left.alive == (0, 0), (
        f"sessions alive only through cycles: {left.alive}; cyclic garbage: {left.garbage.most_common(15)}"
    )

"""An ended local-agent session is freed by reference counting, the moment its socket's handler ends: none of its
objects wait for Python's cyclic collector. The embedded agent runs in the gateway's process, so a full collection
that walks its leftovers stops every live call's audio too (docs/architecture/performance.md#call-garbage)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

from gateway.local_agent.connection import Connection
from gateway.local_agent.session import Session


def _alive(kind: type) -> int:
    # type(o), not isinstance: a weak proxy whose referent is gone raises on isinstance
    return sum(1 for o in gc.get_objects() if kind in type(o).__mro__)


async def _one_session(agent) -> None:
    client, _ready = await agent.session()
    await client.send("session.end")
    await client.expect("session.ended")
    await client.wait_closed()
    await client.close()


async def test_an_ended_session_leaves_no_reference_cycles(agent):
    await _one_session(agent)  # warm: first-use caches
    runtime = agent.runtime
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept in gc.garbage, to be named
    try:
        for _ in range(3):
            await _one_session(agent)
        async with asyncio.timeout(10):  # every connection's handler has run to its end (a bound for a hung test)
            while runtime.connections or runtime.sessions:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        alive = (_alive(Connection), _alive(Session))
        gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert alive == (0, 0), f"sessions alive only through cycles: {alive}; cyclic garbage: {kinds.most_common(15)}"

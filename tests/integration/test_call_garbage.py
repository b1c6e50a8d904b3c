"""An ended call is freed by reference counting, the moment its teardown ends: none of its objects wait for
Python's cyclic collector. A call left in reference cycles is freed only by a full (oldest-generation) collection,
which walks every object of every live call and stops the event loop while it does: 18–49 ms with 140 calls ended
at once on the bench machine, a stall that every live call hears and that alone breaks a 5 ms p99
(docs/architecture/performance.md#call-garbage)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.agent.client import TRANSPORTS
from gateway.call.core import CallCore
from gateway.call.shell.accepted import AcceptedCall
from gateway.keys import CALLS
from gateway.session import CallSession
from tests.support.audio import tone, ulaw_tone
from tests.support.gc_cycles import collector_off
from tests.support.short_call import short_call


@pytest.fixture(params=TRANSPORTS)
def agent_transport(request: pytest.FixtureRequest) -> str:
    """On each agent transport: how its socket ends (and what it keeps of a cancelled read) differs."""
    return str(request.param)


async def test_ended_calls_leave_no_reference_cycles(start_gateway, fake_agent, http):
    gw = await start_gateway()
    caller_audio, reply_pcm = ulaw_tone(440, 0.1), tone(500, 1.0, 24000)
    await short_call(gw, fake_agent, http, caller_audio, None)  # warm: first-use caches of every module
    with collector_off(AcceptedCall, CallCore, CallSession) as left:
        for i in range(4):  # every other call is hung up in the middle of the agent's reply
            await short_call(gw, fake_agent, http, caller_audio, reply_pcm if i % 2 == 0 else None)
        calls = gw.app[CALLS]
        async with asyncio.timeout(10):  # every teardown has run to its end (a bound for a hung test)
            while calls.active:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and the handlers' tasks with it
    # Before the collector ran, nothing of the four calls was alive: reference counting had freed them.
    assert left.alive == (0, 0, 0), (
        f"calls alive only through cycles: {left.alive}; cyclic garbage: {left.garbage.most_common(15)}"
    )

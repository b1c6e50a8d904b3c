"""An ended call is freed by reference counting, the moment its teardown ends: none of its objects wait for
Python's cyclic collector. A call left in reference cycles is freed only by a full (oldest-generation) collection,
which walks every object of every live call and stops the event loop while it does: 18–49 ms with 140 calls ended
at once on the bench machine, a stall that every live call hears and that alone breaks a 5 ms p99
(docs/architecture/performance.md#call-garbage)."""

from __future__ import annotations

import asyncio
import gc
from collections import Counter

import pytest

from gateway.agent.client import TRANSPORTS
from gateway.call.core import CallCore
from gateway.call.shell.accepted import AcceptedCall
from gateway.keys import CALLS
from gateway.session import CallSession
from tests.support.audio import tone, ulaw_tone
from tests.support.twilio_peer import TwilioPeer


@pytest.fixture(params=TRANSPORTS)
def agent_transport(request: pytest.FixtureRequest) -> str:
    """On each agent transport: how its socket ends (and what it keeps of a cancelled read) differs."""
    return str(request.param)


def _alive(kind: type) -> int:
    # type(o), not isinstance: a weak proxy whose referent is gone raises on isinstance
    return sum(1 for o in gc.get_objects() if kind in type(o).__mro__)


async def _one_call(gw, fake_agent, http, *, hang_up_mid_reply: bool) -> None:
    peer = TwilioPeer(gw.base_url, http)
    await peer.dial()
    await peer.connect()
    sess = await fake_agent.session()
    await peer.send_media(ulaw_tone(440, 0.1))
    reply = None
    if hang_up_mid_reply:
        reply = asyncio.create_task(sess.reply(tone(500, 1.0, 24000), realtime=False, chunk_bytes=4800))
        await peer.wait_for(lambda: peer.events("media"), timeout=5)
    else:
        await peer.wait_for(lambda: len(sess.audio) >= 0.1 * 48000 - 960, timeout=5)
    await peer.stop()
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    await peer.close()
    if reply is not None:
        try:
            await reply
        except (ConnectionError, RuntimeError):
            pass  # the fake was still speaking when the gateway ended its session
    await asyncio.wait_for(sess.closed.wait(), 5)


async def test_ended_calls_leave_no_reference_cycles(start_gateway, fake_agent, http):
    gw = await start_gateway()
    await _one_call(gw, fake_agent, http, hang_up_mid_reply=False)  # warm: first-use caches of every module
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept in gc.garbage, to be named
    try:
        for i in range(4):
            await _one_call(gw, fake_agent, http, hang_up_mid_reply=i % 2 == 0)
        calls = gw.app[CALLS]
        async with asyncio.timeout(10):  # every teardown has run to its end (a bound for a hung test)
            while calls.active:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)  # and the handlers' tasks with it
        alive = (_alive(AcceptedCall), _alive(CallCore), _alive(CallSession))
        gc.collect()
        kinds = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    # Before the collector ran, nothing of the four calls was alive: reference counting had freed them.
    assert alive == (0, 0, 0), f"calls alive only through cycles: {alive}; cyclic garbage: {kinds.most_common(15)}"

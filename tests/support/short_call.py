"""One short Twilio call against the real gateway and the fake agent, hung up by the caller: what the tests of what
a call leaves behind repeat many times (tests/integration/test_reliability_soak.py, test_call_garbage.py)."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.support.fake_agent import FakeAgent, FakeSession
from tests.support.twilio_peer import TwilioPeer

__all__ = ["short_call"]


async def short_call(
    gateway: Any, fake_agent: FakeAgent, http: aiohttp.ClientSession, caller_audio: bytes, reply_pcm: bytes | None
) -> FakeSession:
    """Dial, stream ``caller_audio`` (8 kHz μ-law), hang up, and wait until both sockets are closed. ``reply_pcm``
    (24 kHz PCM16): the agent answers with it and the caller hangs up as soon as it starts hearing it (mid-reply);
    None: the caller hangs up once the agent has its audio. Returns the agent's session."""
    peer = TwilioPeer(gateway.base_url, http)
    await peer.dial()
    await peer.connect()
    sess = await fake_agent.session()
    await peer.send_media(caller_audio)
    reply = None
    if reply_pcm is not None:
        reply = asyncio.create_task(sess.reply(reply_pcm, realtime=False, chunk_bytes=4800))
        await peer.wait_for(lambda: peer.events("media"), timeout=5)
    else:
        await peer.wait_for(lambda: len(sess.audio) >= len(caller_audio) * 6 - 960, timeout=5)
    await peer.stop()
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    await peer.close()
    if reply is not None:
        try:
            await reply
        except (ConnectionError, RuntimeError):
            pass  # the fake was still speaking when the gateway ended its session
    await asyncio.wait_for(sess.closed.wait(), 5)
    return sess

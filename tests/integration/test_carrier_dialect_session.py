"""CallSession behaviours that depend on the dialect (issue #9), over real loopback sockets with the fake agent:
a dialect without a checkpoint verb (``build_mark`` → None) has its marks resolved by the clock model, and the
session's outbound message sizes follow the dialect's bounds."""

from __future__ import annotations

import asyncio
import base64

import pytest

from gateway.carriers.registry import TwilioDialect
from gateway.keys import CALLS
from tests.support.audio import tone
from tests.support.twilio_peer import media_bytes


async def test_without_a_checkpoint_verb_marks_resolve_from_the_clock_model(start_gateway, new_peer, fake_agent,
                                                                          monkeypatch):
    monkeypatch.setattr(TwilioDialect, "build_mark", lambda self, name: None)
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(700, 1.0, 24000))
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= 8000, timeout=5)
    await asyncio.sleep(0.6)  # the reply's end mark resolves once the model says the last audio played
    await peer.stop()
    await peer.closed.wait()
    calls = gw.app[CALLS]
    await peer.wait_for(lambda: bool(calls.completed), timeout=5)
    summary = calls.completed[-1]
    assert peer.events("mark") == []  # nothing was sent for the marks
    assert summary.mark_round_trips_ms, summary  # … yet they resolved: from the clock, at the modelled lead
    assert all(0 <= rt <= 400 for rt in summary.mark_round_trips_ms), summary.mark_round_trips_ms


@pytest.mark.parametrize(("minimum_ms", "expect_frames"), [(100, 5), (20, 1)])
async def test_outbound_messages_hold_at_least_the_dialects_minimum(minimum_ms, expect_frames, start_gateway,
                                                                      new_peer, fake_agent, monkeypatch):
    monkeypatch.setattr(TwilioDialect, "min_message_ms", minimum_ms)
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(700, 0.5, 24000) + tone(700, 0.03, 24000))  # 530 ms: the tail is padded to a whole message
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= 4240, timeout=5)
    await asyncio.sleep(0.3)
    sizes = [len(base64.b64decode(r.msg["media"]["payload"])) for r in peer.events("media")]
    assert sizes and all(size == 160 * expect_frames for size in sizes), sizes

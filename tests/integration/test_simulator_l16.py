"""A Telnyx L16 call end to end through the real gateway (fake agent): the simulator plays a stream Call Control's
streaming_start opened with L16 at 16 kHz, in the byte order it assumes for Telnyx (its own, not the dialect's), and
both directions carry the voice; played in the opposite byte order, the simulator's tone check reports what the
caller heard as noise, and what the agent heard is noise too (docs/how-to/carriers/index.md#assumptions)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.audio import g711
from gateway.simulator.caller import CallerTurn, SimulatorConfig, simulate_call
from gateway.simulator.sides.common import FrameResampler
from gateway.simulator.timeline import build_timeline
from gateway.simulator.tone_check import tone_check
from tests.support.audio import voice_like


def _as_heard(pcm24k: bytes) -> bytes:
    return g711.pcm16_to_ulaw(FrameResampler(24000, 8000).process(pcm24k))


@pytest.mark.parametrize(("order", "noise"), [("assumed", False), ("little", True)])
async def test_a_telnyx_l16_call_carries_the_voice_in_the_assumed_byte_order_and_noise_in_the_other(
    start_gateway: Any, fake_agent: Any, order: str, noise: bool
) -> None:
    gw = await start_gateway()

    async def agent() -> Any:
        sess = await fake_agent.session(timeout=10)
        await sess.reply(voice_like(1.0, 24000))  # the greeting
        return sess

    task = asyncio.create_task(agent())
    caller = CallerTurn("wav", "voice", g711.pcm16_to_ulaw(voice_like(1.0, 8000)))
    record = await simulate_call(
        SimulatorConfig(
            url=gw.base_url,
            carrier="telnyx",
            telnyx_codec="L16@16000",
            l16_byte_order=order,
            turns=(caller,),
            pause_s=0.4,
            greeting_timeout_s=3.0,
            reply_timeout_s=0.3,
        )
    )
    sess = await asyncio.wait_for(task, 5)
    tl = build_timeline(record)
    assert record.outcome == "completed" and record.errors == [], tl.format_text()
    heard = tl.to_dict()["tone_check"]
    assert heard["loud_s"] > 0.5 and heard["noise"] is noise, heard
    assert any("byte order" in w for w in tl.warnings) is noise
    # The other direction: what the gateway decoded from the caller and gave the agent.
    said = tone_check(_as_heard(bytes(sess.audio)))
    assert said.loud_s > 0.5 and said.noise is noise, said

"""Every carrier beside Twilio, end to end: the call simulator speaks the carrier's own webhook, answer document,
stream dialect and audio format (gateway/simulator/carrier_side.py) against the real gateway and its embedded local
agent (real VAD, STT, intents, TTS), over loopback sockets. One call per carrier, short phrases:

- the greeting is heard (transcribed from what the caller heard);
- a barge-in 2.5 s into the menu flushes playback with the carrier's own verb (``clear`` / ``clearAudio`` /
  ``{"action": "clear"}``; the simulator refuses any other shape), and Plivo/Vonage acknowledge it;
- the next question is answered and heard;
- the caller's hang-up ends the call and the agent session (gone from the local agent's registry).

The audio is each carrier's: SignalWire L16 at 24 kHz (no resampling for the pcm24k agent), Telnyx PCMU with a few
frames delivered out of order, Plivo L16 16 kHz, Vonage binary L16 16 kHz, Exotel PCM 16 kHz in ≥ 100 ms chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
from aiohttp import web

from gateway.carriers.exotel import ExotelSettings
from gateway.carriers.plivo import PlivoSettings
from gateway.carriers.signalwire import SignalWireSettings
from gateway.carriers.telnyx import TelnyxSettings
from gateway.carriers.vonage import VonageSettings
from gateway.config import CarrierSettings
from gateway.keys import CALLS
from gateway.local_agent.app import local_agent_runtime
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.simulator.caller import SimulatorConfig, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import CallRecord, Span, build_timeline
from tests.support.answers import is_opening_hours_answer
from tests.support.local_gateway import local_agent_settings, serve_gateway, shared_speech_models

pytestmark = pytest.mark.speech

CARRIERS = ("signalwire", "telnyx", "plivo", "vonage", "exotel")


@pytest.fixture(scope="session")
def models() -> Any:
    return shared_speech_models()


@pytest.fixture(scope="session")
def voice() -> Any:
    return load_caller_voice(cpu_threads=2)


@pytest.fixture(scope="session")
def turns(voice: Any) -> tuple[Any, ...]:
    return (say_turn("Tell me about the menu.", voice), say_turn("What time do you open?", voice))


def heard_text(models: Any, record: CallRecord, span: Span) -> str:
    a = max(0, int((span.start_s - 0.1) * 8000))
    b = int((span.end_s + 0.1) * 8000)
    return re.sub(r"[^a-z0-9 ]", "", models.stt.transcribe(ulaw8k_to_pcm16_16k(bytes(record.heard[a:b]))).lower())


def _local_agent(app: web.Application) -> web.Application:
    (resource,) = [r for r in app.router.resources() if isinstance(r, web.PrefixedSubAppResource)]
    return resource._app  # noqa: SLF001 - aiohttp has no public accessor for a mounted sub-app


@pytest.mark.parametrize("carrier", CARRIERS)
async def test_a_call_over_each_carrier_greets_answers_barges_in_and_hangs_up(carrier, models, turns):
    settings = dataclasses.replace(
        local_agent_settings(),
        carriers=CarrierSettings(
            signalwire=SignalWireSettings(codec="L16@24000h"),
            telnyx=TelnyxSettings(codec="PCMU"),
            plivo=PlivoSettings(content_type="audio/x-l16;rate=16000"),
            vonage=VonageSettings(sample_rate=16000),
            exotel=ExotelSettings(sample_rate=16000),
        ),
    )
    feed: list[tuple[str, dict[str, Any]]] = []
    async with serve_gateway(settings, models) as (base, app):
        app[CALLS].listeners.append(lambda _sid, event: feed.append((event.kind, event.fields())))
        record = await simulate_call(
            SimulatorConfig(url=base, carrier=carrier, turns=turns, barge_in_after_s=2.5, greeting_timeout_s=6.0)
        )
        async with asyncio.timeout(10):  # the gateway notices the hang-up and ends the agent session
            while not app[CALLS].completed:
                await asyncio.sleep(0.02)
        summary = app[CALLS].completed[-1]
        runtime = local_agent_runtime(_local_agent(app))
        agent_sessions_left = dict(runtime.sessions)
    tl = build_timeline(record)
    d = tl.to_dict()
    assert d["outcome"] == "completed" and d["errors"] == [], tl.format_text()
    # the greeting
    assert tl.greeting is not None, tl.format_text()
    assert "thanks for calling" in heard_text(models, record, tl.greeting)
    # the barge-in: one clear, in the carrier's own verb (anything else is a protocol error in the simulator)
    menu, hours = tl.turns
    assert menu.reply is not None and hours.barge_in, tl.format_text()
    assert len(tl.clears) == 1, tl.format_text()
    assert hours.clear_after_ms is not None and 0 < hours.clear_after_ms < 3000
    assert menu.reply.end_s - menu.reply.start_s < 6.0  # cut short: the full menu is > 15 s
    if carrier in ("plivo", "vonage"):
        assert ("carrier.cleared", {}) in [(k, {x: v for x, v in f.items() if x != "t"}) for k, f in feed]
    # the next question is answered, and the menu did not go on
    assert hours.reply is not None and 0 < hours.response_latency_ms < 5000, tl.format_text()
    answer = heard_text(models, record, hours.reply)
    assert is_opening_hours_answer(answer) and "soup" not in answer, answer
    # the hang-up ends the call and the agent session
    assert d["hangup"]["by"] == "caller" and d["hangup"]["reason"] == "script_done"
    assert summary.outcome in ("caller_hangup", "carrier_closed"), summary
    assert summary.hung_up_by == "caller" and summary.interruptions == 1
    assert summary.session_id and summary.session_id not in agent_sessions_left
    assert summary.frames_in > 0 and summary.frames_out > 0 and summary.error == ""
    started = [f for k, f in feed if k == "call.started"]
    assert started and summary.call_sid, feed[:3]

"""Conversation features end to end (docs/how-to/conversation.md): the call simulator against the real gateway with
the embedded local agent (real VAD, STT, intents, TTS) over real loopback sockets. One gateway serves the module.

- a silent caller hears ``idle.max_prompts`` reprompts (one here: the counting is unit-tested), then the goodbye,
  then the gateway hangs up (``caller_idle``);
- a 3 s HTTP tool: the caller hears the bundled hold sound from ``hold_audio.after_ms`` until the agent's reply, and
  the caller speaking during it stops it at once;
- a profile with an ``agent_id`` the local agent does not know ends the call cleanly (``agent_error``, logged
  ``agent.agent_not_found``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
from aiohttp import web

from gateway.config import HttpTool
from gateway.hold_sound import BUNDLED_HOLD
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.profile_options import HoldAudioSettings, IdleSettings
from gateway.simulator.caller import SimulatorConfig, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import CallRecord
from tests.support.local_gateway import local_agent_settings, serve_gateway, shared_speech_models
from tests.support.logcapture import capture_call_logs, events, wait_event

pytestmark = [pytest.mark.speech, pytest.mark.asyncio(loop_scope="module")]

TOOL_S = 3.0
AFTER_MS = 300


@pytest.fixture(scope="module")
def models() -> Any:
    return shared_speech_models()


@pytest.fixture(scope="module")
def voice() -> Any:
    return load_caller_voice(cpu_threads=2)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def tool_url() -> AsyncIterator[str]:
    """``book_table``, an HTTP tool that takes TOOL_S to answer."""

    async def book(request: web.Request) -> web.Response:
        await asyncio.sleep(TOOL_S)
        return web.Response(text="a table for two at seven")

    app = web.Application()
    app.router.add_post("/book", book)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    yield f"http://{host}:{port}/book"
    await runner.cleanup()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(models, tool_url) -> AsyncIterator[str]:
    settings = local_agent_settings()
    base = dataclasses.replace(settings.profiles["default"], greeting="Hi.")
    profiles = {
        "default": base,
        "idle": dataclasses.replace(
            base,
            idle=IdleSettings(after_s=1.0, max_prompts=1, instructions="Are you still there?", goodbye="Goodbye."),
        ),
        "hold": dataclasses.replace(
            base,
            tools=("end_call", "book_table"),
            hold_audio=HoldAudioSettings(enabled=True, after_ms=AFTER_MS),
        ),
        "stored": dataclasses.replace(base, agent_id="agent_" + "0" * 32),
    }
    numbers = {"+15550100011": "idle", "+15550100012": "hold", "+15550100013": "stored"}
    tools = {"book_table": HttpTool(url=tool_url, description="Book a table.", timeout_s=10.0)}
    settings = dataclasses.replace(settings, profiles=profiles, numbers=numbers, tools=tools)
    async with serve_gateway(settings, models) as (url, _app):
        yield url


def heard_text(models: Any, audio: bytes) -> str:
    text = models.stt.transcribe(ulaw8k_to_pcm16_16k(bytes(audio)))
    return re.sub(r"[^a-z0-9 ]", "", text.lower())


def hold_positions(heard: bytes | bytearray) -> list[int]:
    """Where whole 100 ms pieces of the bundled hold sound occur in what the caller heard (bytes, 8000 a second)."""
    hold = BUNDLED_HOLD.read_bytes()
    pieces = [hold[i : i + 800] for i in range(0, len(hold), 800) if len(set(hold[i : i + 800])) > 20]
    found: list[int] = []
    for piece in pieces:
        start = 0
        while (i := bytes(heard).find(piece, start)) >= 0:
            found.append(i)
            start = i + 1
    return sorted(found)


def first_event(record: CallRecord, kind: str) -> float:
    return next(e.t for e in record.events if e.kind == kind)


async def test_a_silent_caller_hears_the_reprompts_then_the_goodbye_and_is_hung_up(gateway, models):
    with capture_call_logs() as logs:
        record = await simulate_call(
            SimulatorConfig(url=gateway, to="+15550100011", stay_on_line=True, hangup_after_s=40.0)
        )
        ended = await wait_event(logs, "call.ended")
    hangup = [e for e in record.events if e.kind == "hangup"]
    assert hangup and hangup[0].fields["by"] == "gateway", record.events
    assert ended["outcome"] == "caller_idle"
    prompts = events(logs, "call.idle_prompt")
    assert [(p["step"], p["count"]) for p in prompts] == [("reprompt", 1), ("goodbye", 1)]  # max_prompts = 1
    text = heard_text(models, record.heard)
    assert text.count("still there") == 1 and text.rstrip().endswith("goodbye"), text


async def test_a_slow_tool_plays_hold_audio_until_the_reply(gateway, models, voice):
    with capture_call_logs() as logs:
        record = await simulate_call(
            SimulatorConfig(
                url=gateway, to="+15550100012", turns=(say_turn("I'd like to book a table.", voice),), pause_s=0.8
            )
        )
        await wait_event(logs, "call.ended")
    started, stopped = events(logs, "call.hold_audio")
    assert started["started"] is True and stopped["cause"] == "agent_audio"
    assert stopped["ms"] >= (TOOL_S * 1000 - AFTER_MS) * 0.9  # from after_ms until the answer (the tool takes 3 s)
    found = hold_positions(record.heard)
    assert found, "the caller never heard the hold sound"
    turn_end = first_event(record, "turn_ended")
    first, last = found[0] / 8000, (found[-1] + 800) / 8000
    assert first > turn_end and last - first >= (TOOL_S * 1000 - AFTER_MS) / 1000 * 0.8
    after = heard_text(models, record.heard[found[-1] + 800 :])
    assert "all done" in after and "table for two" in after, after  # the reply follows the hold audio


async def test_the_caller_speaking_during_hold_audio_stops_it_at_once(gateway, voice):
    # "Goodbye" over the hold audio: the agent says goodbye and ends the call (end_call), which keeps the test short.
    turns = (say_turn("I'd like to book a table.", voice), say_turn("Goodbye.", voice))
    with capture_call_logs() as logs:
        record = await simulate_call(
            SimulatorConfig(url=gateway, to="+15550100012", turns=turns, barge_in_after_s=1.0, pause_s=0.8)
        )
        await wait_event(logs, "call.ended")
    stops = events(logs, "call.hold_audio", started=False)
    assert stops and stops[0]["cause"] == "barge_in", stops
    second = [e.t for e in record.events if e.kind == "turn_started" and e.fields["index"] == 1][0]
    clears = [e.t for e in record.events if e.kind == "clear" and e.t > second]
    assert clears, "no clear after the caller spoke over the hold audio"
    # nothing of the hold sound played after the clear
    assert all(p / 8000 < clears[0] for p in hold_positions(record.heard)), (clears, hold_positions(record.heard))


async def test_an_unknown_stored_agent_ends_the_call_cleanly(gateway):
    with capture_call_logs() as logs:
        record = await simulate_call(SimulatorConfig(url=gateway, to="+15550100013", hangup_after_s=15.0))
        ended = await wait_event(logs, "call.ended")
    (missing,) = events(logs, "agent.agent_not_found")
    assert missing["agent_id"] == "agent_" + "0" * 32
    assert ended["outcome"] == "agent_error" and "agent_not_found" in ended["error"]
    assert [e.fields["by"] for e in record.events if e.kind == "hangup"] == ["gateway"]

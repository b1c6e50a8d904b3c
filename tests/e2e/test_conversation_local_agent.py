"""Conversation features end to end (docs/how-to/conversation.md): the call simulator against the real gateway with
the embedded local agent (real VAD, STT, intents, TTS) over real loopback sockets. One gateway serves the module.

- a silent caller hears ``idle.max_prompts`` reprompts (one here: the counting is unit-tested), then the goodbye,
  then the gateway hangs up (``caller_idle``);
- a 3 s HTTP tool: the caller hears the bundled hold sound from ``hold_audio.after_ms`` until the agent's reply, and
  the caller speaking during it stops it at once;
- a profile with an ``agent_id`` the local agent does not know ends the call cleanly (``agent_error``, logged
  ``agent.agent_not_found``);
- an outbound call answered by a simulated answering machine (greeting, beep) gets the voicemail message after the
  beep, and nothing before it, then ends ``voicemail_left`` (Twilio's REST API: the fake in tests/support).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web

from gateway.config import HttpTool
from gateway.errors import ConfigError
from gateway.hold_sound import BUNDLED_HOLD
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.profile_options import HoldAudioSettings, IdleSettings, VoicemailSettings, WarmTransferSettings
from gateway.simulator.callee import AmdCallback, TransferTarget, answer_outbound_call, answering_machine_turn
from gateway.simulator.caller import SimulatorConfig, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import CallRecord, frame_levels
from tests.support.fake_twilio_rest import FakeCall, FakeTwilioRest, RestRequest
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


#: The committed intents, with shorter replies (this module's wall time is mostly audio) and a transfer that asks
#: for a warm transfer to a number the profiles allow (the committed one names "front desk").
INTENT_CHANGES = {
    'reply_after_tool = "All done: {result}. We look forward to seeing you."': (
        'reply_after_tool = "All done: {result}."'
    ),
    'reply_after_tool = "Please hold while I put you through to the front desk."': 'reply_after_tool = "One moment."',
    'arguments = { destination = "front desk" }': (
        'arguments = { destination = "+15550003333", mode = "warm", summary = "A caller asks for a person." }'
    ),
}


@pytest.fixture(scope="module")
def intents(tmp_path_factory) -> str:
    committed = local_agent_settings().local_agent_intents_path().read_text(encoding="utf-8")
    for old, new in INTENT_CHANGES.items():
        assert old in committed, old
        committed = committed.replace(old, new)
    path = tmp_path_factory.mktemp("intents") / "intents.toml"
    path.write_text(committed, encoding="utf-8")
    return str(path)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(models, tool_url, intents) -> AsyncIterator[str]:
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
    }
    numbers = {"+15550100011": "idle", "+15550100012": "hold"}
    tools = {"book_table": HttpTool(url=tool_url, description="Book a table.", timeout_s=10.0)}
    local = dataclasses.replace(settings.local_agent, intents=intents)
    settings = dataclasses.replace(settings, profiles=profiles, numbers=numbers, tools=tools, local_agent=local)
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


def hold_end(heard: bytes | bytearray) -> int:
    """Where the hold sound stops in what the caller heard: past the last whole 100 ms piece ``hold_positions``
    finds, byte by byte while the heard audio still follows the (looping) hold sound. The partial piece before the
    reply would otherwise sit in front of the reply's first word."""
    hold, heard = BUNDLED_HOLD.read_bytes(), bytes(heard)
    last = hold_positions(heard)[-1]
    offset = hold.find(heard[last : last + 800])
    end = last + 800
    while end < len(heard) and heard[end] == hold[(offset + end - last) % len(hold)]:
        end += 1
    return end


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
    end = hold_end(record.heard)
    assert end >= found[-1] + 800
    after = heard_text(models, record.heard[end:])
    # The reply ("All done: a table for two …") follows the hold audio. Whisper writes the number either way ("two"
    # or "2"), and the reply's first syllable sits at the cut where the hold sound ends: it once heard "ill done".
    assert re.search(r"\bdone\b", after) and re.search(r"table for (two|2)\b", after), after


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


async def test_a_profile_naming_an_agent_the_local_agent_does_not_store_stops_start_up(models, tmp_path):
    settings = local_agent_settings()
    local = dataclasses.replace(settings.local_agent, data_dir=str(tmp_path / "local-agent"))
    missing = dataclasses.replace(settings.profiles["default"], agent_id="agent_" + "0" * 32)
    settings = dataclasses.replace(settings, local_agent=local, profiles={**settings.profiles, "stored": missing})
    with pytest.raises(ConfigError, match=r"^profiles\.stored\.agent_id: .*agent_0{32}"):
        async with serve_gateway(settings, models):
            pass


# ---- outbound voicemail -------------------------------------------------------------------------------------------
AUTH = "e2e-twilio-token"
STORED_GREETING = "Hello, this is the Harbour Kitchen front desk."
API_KEY = "e2e-api-key"
VOICEMAIL = "Your table is ready."


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def twilio_gateway(models, intents) -> AsyncIterator[tuple[str, FakeTwilioRest]]:
    """A second gateway, placing calls through the fake of Twilio's REST API."""
    rest = FakeTwilioRest(auth_token=AUTH)
    runner = web.AppRunner(rest.app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    rest.url = f"http://{host}:{port}"
    env = {
        "TWILIO_ACCOUNT_SID": rest.account_sid,
        "TWILIO_AUTH_TOKEN": AUTH,
        "TWILIO_API_BASE_URL": rest.url,
        "GATEWAY_API_KEY": API_KEY,
        "GATEWAY_PUBLIC_URL": "https://voice.example.com",
    }
    settings = local_agent_settings(**env)
    profile = dataclasses.replace(
        settings.profiles["default"],
        greeting="Hi, this is the Harbour Kitchen.",
        voicemail=VoicemailSettings(VOICEMAIL),
    )
    warm = dataclasses.replace(
        settings.profiles["default"],
        greeting="Hi.",
        tools=("end_call", "transfer_call"),
        transfer_allow=("+1555*",),
        warm_transfer=WarmTransferSettings(timeout_s=10, whisper_prefix="Transfer from the voice agent."),
    )
    settings = dataclasses.replace(
        settings,
        profiles={"default": profile, "warm": warm},
        numbers={"+15550100021": "warm"},
        local_agent=dataclasses.replace(settings.local_agent, intents=intents),
    )
    try:
        async with serve_gateway(settings, models) as (url, _app):
            yield url, rest
    finally:
        await runner.cleanup()


async def test_an_answering_machine_gets_the_voicemail_after_the_beep(twilio_gateway, models, voice):
    url, rest = twilio_gateway
    machine = answering_machine_turn(voice, "Ada here. Leave a message.")
    answered: list[asyncio.Task[CallRecord]] = []

    async def pick_up(call: FakeCall, req: RestRequest) -> None:  # Twilio connects the call: the machine answers
        if "MachineDetection" not in req.form:
            return
        amd = AmdCallback(req.one("AsyncAmdStatusCallback"), AUTH)
        config = SimulatorConfig(url=url, turns=(machine,), auth_token=AUTH, max_call_s=40.0)
        answered.append(asyncio.create_task(answer_outbound_call(config, req.one("Twiml"), call.sid, amd=amd)))

    rest.on_create.append(pick_up)
    with capture_call_logs() as logs:
        async with aiohttp.ClientSession() as http:
            body = {"to": "+15550002222", "from": "+15550001111", "machine_detection": True}
            async with http.post(url + "/calls", json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
                assert r.status == 201, await r.text()
        record = await answered[0]
        ended = await wait_event(logs, "call.ended")
    assert ended["outcome"] == "voicemail_left", ended
    posted = next(e for e in record.events if e.kind == "amd_posted")
    assert posted.fields["status"] == 204
    beep_end = int(posted.t * 8000)
    # The agent did not talk over the machine's greeting: nothing audible reached the machine before the beep ended.
    assert max(frame_levels(bytes(record.heard[:beep_end])), default=0.0) < 200.0
    message = heard_text(models, record.heard[beep_end:])
    assert "table is ready" in message, message
    assert [e.fields["by"] for e in record.events if e.kind == "hangup"] == ["gateway"]


# ---- warm transfer ------------------------------------------------------------------------------------------------
async def test_a_warm_transfer_returns_an_unanswered_caller_to_the_agent_then_briefs_the_person_before_joining(
    twilio_gateway, models, voice
):
    """One call, two attempts: nobody answers the first (the caller is back with the agent, which says so), the
    second is answered (the whisper is heard before the caller is joined)."""
    url, rest = twilio_gateway
    target = TransferTarget()
    legs: list[str] = []
    reports: list[asyncio.Task[int]] = []

    async def ring(call: FakeCall, req: RestRequest) -> None:  # the person's phone (a warm transfer's leg)
        if "MachineDetection" in req.form:
            return
        legs.append(call.sid)
        # Twilio knows the caller's (inbound) call too: the one the room is named after (gateway.conference)
        caller_sid = req.one("Twiml").split(">warm-")[1].split("<")[0]
        rest.calls.setdefault(caller_sid, FakeCall(caller_sid))

        async def later() -> int:
            await asyncio.sleep(0.5)
            async with aiohttp.ClientSession() as http:
                if len(legs) == 1:
                    return await rest.post_call_status(http, call.sid, "no-answer", deliver_to=url)
                return await rest.answer_into_conference(http, call.sid, deliver_to=url, target=target)

        reports.append(asyncio.create_task(later()))

    rest.on_create.append(ring)
    ask = say_turn("Can I speak to a person?", voice)
    turns = (ask, ask)
    config = SimulatorConfig(
        url=url,
        to="+15550100021",
        turns=turns,
        auth_token=AUTH,
        public_url="https://voice.example.com",
        stay_on_line=True,
        hangup_after_s=60.0,
        pause_s=2.5,  # the agent's answer to the failed attempt follows the hold audio after its speech latency
    )
    try:
        with capture_call_logs() as logs:
            record = await simulate_call(config)
            ended = await wait_event(logs, "call.ended")
    finally:
        rest.on_create.remove(ring)
    assert [await r for r in reports] == [204, 204]
    results = [e["result"] for e in events(logs, "call.warm_transfer")]
    assert results == ["dialling", "no-answer", "dialling", "answered"], results
    # the person heard the whisper with the agent's summary, entered the room, and only then was the caller joined
    assert target.heard == ["Transfer from the voice agent. A caller asks for a person."]
    assert [sid for _, sid in rest.rooms[target.room]] == [legs[1], record.call_sid]
    assert ended["outcome"] == "transferred"
    assert [e.fields["by"] for e in record.events if e.kind == "hangup"] == ["gateway"]
    # after the unanswered attempt the caller was still with the agent, and heard why (before asking again)
    first_end = next(e.t for e in record.events if e.kind == "turn_ended")
    second = next(e.t for e in record.events if e.kind == "turn_started" and e.fields["index"] == 1)
    text = heard_text(models, record.heard[int(first_end * 8000) : int(second * 8000)])
    assert "nobody answered" in text, text
    assert hold_positions(record.heard), "the caller never heard the hold sound"


async def test_a_profile_naming_a_stored_agent_of_the_local_agent_gets_its_greeting(models, tmp_path):
    """A profile's ``agent_id`` against the embedded local agent that stores it (docs/how-to/conversation.md
    #stored-agents): the agent is created through the local agent's REST API, then a second gateway on the same data
    directory answers a number whose profile names it; the caller hears the stored agent's greeting, not the
    profile's, and the call ends as the caller hangs up."""
    key = "e2e-local-agent-key"
    settings = local_agent_settings(LOCAL_AGENT_API_KEY=key)
    local = dataclasses.replace(settings.local_agent, data_dir=str(tmp_path / "local-agent"))
    settings = dataclasses.replace(settings, local_agent=local)
    body = {
        "name": "Front desk",
        "system_prompt": "You answer for a small restaurant.",
        "voice": {"voice_id": "alba"},
        "greeting": STORED_GREETING,
    }
    async with serve_gateway(settings, models) as (url, _app), aiohttp.ClientSession() as http:
        async with http.post(f"{url}/agent/v1/agents", json=body, headers={"Authorization": key}) as r:
            assert r.status in (200, 201), await r.text()
            agent_id = (await r.json())["id"]
    base = dataclasses.replace(settings.profiles["default"], greeting="The profile's own greeting.")
    profiles = {"default": base, "stored": dataclasses.replace(base, agent_id=agent_id)}
    settings = dataclasses.replace(settings, profiles=profiles, numbers={"+15550100014": "stored"})
    async with serve_gateway(settings, models) as (url, _app):
        with capture_call_logs() as logs:
            record = await simulate_call(SimulatorConfig(url=url, to="+15550100014", hangup_after_s=6.0))
            ended = await wait_event(logs, "call.ended")
        assert ended["outcome"] == "caller_hangup", ended
        assert not events(logs, "agent.agent_not_found") and not events(logs, "agent.session_error")
        heard = heard_text(models, record.heard)
        assert "kitchen front desk" in heard and "own greeting" not in heard, heard

        # Deleted while the gateway runs: the next call ends cleanly, with the id in the log.
        async with aiohttp.ClientSession() as http:
            async with http.delete(f"{url}/agent/v1/agents/{agent_id}", headers={"Authorization": key}) as r:
                assert r.status == 204, await r.text()
        with capture_call_logs() as logs:
            record = await simulate_call(SimulatorConfig(url=url, to="+15550100014", hangup_after_s=15.0))
            ended = await wait_event(logs, "call.ended")
        (missing,) = events(logs, "agent.agent_not_found")
        assert missing["agent_id"] == agent_id
        assert ended["outcome"] == "agent_error" and "agent_not_found" in ended["error"]
        assert [e.fields["by"] for e in record.events if e.kind == "hangup"] == ["gateway"]

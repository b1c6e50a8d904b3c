"""Self-hosted PBXs, end to end: the call simulator plays the PBX's side (written from the PBX's own documentation,
gateway/simulator/sides/) against the real gateway and its embedded local agent (real VAD, STT, intents, TTS), over
loopback sockets. One gateway for the module.

Asterisk AudioSocket (the UUID from ``GET /audiosocket/calls``, then a TCP connection of 8 kHz slin frames):

- the greeting is heard; a barge-in 2.5 s into the menu stops the agent's audio within the bound Twilio's test uses
  for its clear (AudioSocket has no clear: the gateway drops its own paced queue); the next question is answered;
  the caller's hang-up (the connection closing) ends the call and the agent session;
- keys pressed (``0x03`` frames) reach the agent, which answers them; "goodbye" makes the agent hang up: the gateway
  sends ``00 00 00``, closes, and the agent session ends.

FreeSWITCH mod_audio_fork (the metadata from ``GET /freeswitch/calls``, then a WebSocket of 16 kHz L16, ``killAudio``
and marks answered ``playout`` / ``cleared``): greeting, barge-in by ``killAudio``, the next question answered, keys
(``send_text`` DTMF frames) answered, the caller's hang-up ends the session.

Asterisk chan_websocket (the v() parameters from ``GET /asterisk-ws/calls``, then the WebSocket Asterisk opens with
Basic auth, MEDIA_START, slin16, ``FLUSH_MEDIA``, ``MARK_MEDIA``/``MEDIA_MARK_PROCESSED``, ``DTMF_END``): the same
script as FreeSWITCH's.
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

from gateway.carriers.audiosocket import AudioSocketSettings
from gateway.carriers.freeswitch import FreeswitchSettings
from gateway.config import CarrierSettings
from gateway.keys import AUDIOSOCKET, CALLS
from gateway.local_agent.app import local_agent_runtime
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.simulator.caller import SimulatorConfig, dtmf_turn, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import CallRecord, Span, build_timeline
from tests.support.answers import is_opening_hours_answer
from tests.support.local_gateway import local_agent_settings, serve_gateway, shared_speech_models

pytestmark = [pytest.mark.speech, pytest.mark.asyncio(loop_scope="module")]


@pytest.fixture(scope="module")
def models() -> Any:
    return shared_speech_models()


@pytest.fixture(scope="module")
def voice() -> Any:
    return load_caller_voice(cpu_threads=2)


@dataclasses.dataclass
class Gateway:
    base: str
    app: web.Application
    audiosocket: str


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def gateway(models: Any) -> AsyncIterator[Gateway]:
    base_settings = local_agent_settings()
    default = dataclasses.replace(base_settings.profiles["default"], dtmf_mode="reply", dtmf_interdigit_ms=300)
    settings = dataclasses.replace(
        base_settings,
        profiles={**base_settings.profiles, "default": default},
        carriers=CarrierSettings(
            audiosocket=AudioSocketSettings(listen="127.0.0.1:0"), freeswitch=FreeswitchSettings(sample_rate=16000)
        ),
    )
    async with serve_gateway(settings, models) as (base, app):
        address = app[AUDIOSOCKET].address
        assert address is not None
        yield Gateway(base, app, f"{address[0]}:{address[1]}")


def heard_text(models: Any, record: CallRecord, span: Span) -> str:
    a = max(0, int((span.start_s - 0.1) * 8000))
    b = int((span.end_s + 0.1) * 8000)
    return re.sub(r"[^a-z0-9 ]", "", models.stt.transcribe(ulaw8k_to_pcm16_16k(bytes(record.heard[a:b]))).lower())


def _local_agent(app: web.Application) -> web.Application:
    (resource,) = [r for r in app.router.resources() if isinstance(r, web.PrefixedSubAppResource)]
    return resource._app  # noqa: SLF001 - aiohttp has no public accessor for a mounted sub-app


async def _call(gw: Gateway, pause_s: float = 2.0, **config: Any) -> tuple[CallRecord, Any, dict[str, Any]]:
    """One simulated call; returns its record, the gateway's summary of it and the agent sessions left after it."""
    calls = gw.app[CALLS]
    done = len(calls.completed)
    # pause_s: the agent's silence that ends a reply. Longer than the simulator's default, so a reply whose next
    # sentence is slow to synthesize on a loaded machine is not taken as over (the caller would then not barge in).
    record = await simulate_call(SimulatorConfig(url=gw.base, audiosocket=gw.audiosocket, pause_s=pause_s, **config))
    async with asyncio.timeout(10):  # the gateway notices the hang-up and ends the agent session
        while len(calls.completed) == done:
            await asyncio.sleep(0.02)
    summary = calls.completed[-1]
    return record, summary, dict(local_agent_runtime(_local_agent(gw.app)).sessions)


async def test_an_audiosocket_call_greets_answers_barges_in_and_hangs_up(gateway, models, voice):
    turns = (say_turn("Tell me about the menu.", voice), say_turn("What time do you open?", voice))
    record, summary, sessions_left = await _call(
        gateway, carrier="audiosocket", turns=turns, barge_in_after_s=2.5, greeting_timeout_s=6.0
    )
    tl = build_timeline(record)
    d = tl.to_dict()
    assert d["outcome"] == "completed" and d["errors"] == [], tl.format_text()
    assert tl.greeting is not None and "thanks for calling" in heard_text(models, record, tl.greeting)
    # The barge-in: no clear exists on AudioSocket, so the agent's audio stops because the gateway stops sending.
    menu, hours = tl.turns
    assert menu.reply is not None and hours.barge_in and tl.clears == (), tl.format_text()
    assert hours.agent_stopped_after_ms is not None and hours.agent_stopped_after_ms < 3000, tl.format_text()
    assert menu.reply.end_s - menu.reply.start_s < 6.0  # cut short: the full menu is > 15 s
    assert hours.reply is not None, tl.format_text()
    answer = heard_text(models, record, hours.reply)
    assert is_opening_hours_answer(answer) and "soup" not in answer, answer
    # The caller's hang-up (the TCP connection closing) ends the call and its agent session.
    assert d["hangup"]["by"] == "caller" and d["hangup"]["reason"] == "script_done"
    assert summary.outcome == "caller_hangup" and summary.interruptions == 1, summary
    assert summary.session_id and summary.session_id not in sessions_left
    assert summary.frames_in > 0 and summary.frames_out > 0 and summary.error == ""


async def test_audiosocket_keys_reach_the_agent_and_the_agent_hangs_up(gateway, models, voice):
    turns = (dtmf_turn("42"), say_turn("Goodbye.", voice))
    # A long pause after the goodbye: the gateway, not the caller, is to hang up. It does once the goodbye was heard
    # and the agent said nothing more (docs/how-to/call-control.md), a few seconds after the goodbye ends.
    record, summary, sessions_left = await _call(
        gateway, pause_s=6.0, carrier="audiosocket", turns=turns, greeting_timeout_s=6.0, reply_timeout_s=8.0
    )
    tl = build_timeline(record)
    d = tl.to_dict()
    assert d["outcome"] == "completed" and d["errors"] == [], tl.format_text()
    keys, bye = tl.turns
    # dtmf_mode "reply": the digits become a reply.create naming them, which the local agent speaks.
    assert keys.reply is not None, tl.format_text()
    said = heard_text(models, record, keys.reply)
    # "The caller pressed these keys on their phone keypad: 4 2. …", as the local STT hears it back.
    assert sum(word in said for word in ("press", "keys", "phone", "keypad")) >= 2, said
    # "Goodbye" → end_call: the gateway says goodbye, sends the hang-up frame and closes.
    assert d["hangup"]["by"] == "gateway", tl.format_text()
    assert summary.outcome == "agent_hangup" and summary.hung_up_by == "agent", summary
    assert summary.session_id and summary.session_id not in sessions_left
    assert bye.reply is not None and "goodbye" in heard_text(models, record, bye.reply)


@pytest.mark.parametrize("carrier", ["freeswitch", "asterisk-ws"])
async def test_a_websocket_pbx_call_answers_keys_barges_in_with_its_flush_and_hangs_up(carrier, gateway, models, voice):
    # Keys first: the caller speaks 2.5 s into every reply (barge_in_after_s), and keys do not interrupt.
    turns = (dtmf_turn("7"), say_turn("Tell me about the menu.", voice), say_turn("What time do you open?", voice))
    record, summary, sessions_left = await _call(
        gateway, carrier=carrier, turns=turns, barge_in_after_s=2.5, greeting_timeout_s=6.0
    )
    tl = build_timeline(record)
    d = tl.to_dict()
    assert d["outcome"] == "completed" and d["errors"] == [], tl.format_text()
    assert tl.greeting is not None and "thanks for calling" in heard_text(models, record, tl.greeting)
    keys, menu, hours = tl.turns
    # The keys reached the agent: it starts "The caller pressed these keys on their phone keypad: 7 …".
    assert keys.reply is not None, tl.format_text()
    said = heard_text(models, record, keys.reply)
    assert sum(word in said for word in ("caller", "press", "keys", "phone")) >= 2, said
    # Each barge-in flushes in the PBX's own verb (killAudio / FLUSH_MEDIA; the simulator refuses any other shape).
    assert menu.barge_in and hours.barge_in and len(tl.clears) == 2, tl.format_text()
    assert hours.clear_after_ms is not None and 0 < hours.clear_after_ms < 3000, tl.format_text()
    assert menu.reply is not None and menu.reply.end_s - menu.reply.start_s < 6.0  # the full menu is > 15 s
    assert hours.reply is not None and is_opening_hours_answer(heard_text(models, record, hours.reply))
    assert d["hangup"]["by"] == "caller" and summary.outcome == "carrier_closed", summary
    assert summary.interruptions == 2 and summary.session_id and summary.session_id not in sessions_left

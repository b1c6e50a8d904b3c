"""Self-hosted PBXs, end to end: the call simulator plays the PBX's side (written from the PBX's own documentation,
gateway/simulator/sides/) against the real gateway and its embedded local agent (real VAD, STT, intents, TTS), over
loopback sockets. One gateway for the module.

One call per PBX, each: the greeting is heard; keys pressed reach the agent, which answers them; the caller asks
for the opening hours over that answer, and the barge-in stops the agent's audio within the bound Twilio's test uses
for its clear; the hours are answered; the caller's hang-up ends the call and the agent session.

- Asterisk AudioSocket: the UUID from ``GET /audiosocket/calls``, then a TCP connection of 8 kHz slin frames and
  ``0x03`` keys. There is no clear: the gateway drops its own paced queue.
- FreeSWITCH mod_audio_fork: the metadata from ``GET /freeswitch/calls``, then a WebSocket of 16 kHz L16,
  ``killAudio``, marks answered ``playout`` / ``cleared``, keys as ``send_text`` frames.
- Asterisk chan_websocket: the v() parameters from ``GET /asterisk-ws/calls``, then the WebSocket Asterisk opens
  with Basic auth, MEDIA_START, slin16, ``FLUSH_MEDIA``, ``MARK_MEDIA``/``MEDIA_MARK_PROCESSED``, ``DTMF_END``.

The agent's own hang-up (end_call: AudioSocket's ``00 00 00``, a close) is pinned with the fake agent in
tests/integration/test_audiosocket.py, test_freeswitch.py and test_asterisk_ws.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

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
from gateway.simulator.timeline import CallRecord, Span, build_timeline, frame_levels
from gateway.simulator.turn_taking import AUDIBLE_RMS
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
    # A short greeting (the committed one is 3.5 s) and keypresses to the agent (dtmf_mode "reply").
    default = dataclasses.replace(
        base_settings.profiles["default"], greeting="Thanks for calling.", dtmf_mode="reply", dtmf_interdigit_ms=300
    )
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


def _agent_stops(record: CallRecord, t0: float) -> float:
    """When the agent's audio the caller heard stops after ``t0``: the start of the first 300 ms of silence."""
    levels = frame_levels(record.heard)
    quiet = 0
    for i in range(round(t0 / 0.02), len(levels)):
        quiet = quiet + 1 if levels[i] <= AUDIBLE_RMS else 0
        if quiet == 15:
            return (i - 14) * 0.02
    return len(levels) * 0.02


def _gateway_call_id(carrier: str, record: CallRecord) -> str:
    """The call's id at the gateway, as each PBX side chose it (gateway/simulator/sides/)."""
    if carrier == "audiosocket":
        return record.twiml_url.removeprefix("audiosocket:")  # the UUID the gateway issued
    if carrier == "freeswitch":
        return "fs-" + record.call_sid[2:].lower()  # the channel's uuid
    return dict(parse_qsl(urlsplit(record.connected_url).query))["call"]  # asterisk-ws: ${UNIQUEID}


@pytest.mark.parametrize("carrier", ["audiosocket", "freeswitch", "asterisk-ws"])
async def test_a_call_through_each_pbx_keys_a_barge_in_an_answer_and_the_hang_up(carrier, gateway, models, voice):
    # Keys first, then the question 2.5 s into the agent's answer to them (barge_in_after_s): it cuts that answer.
    turns = (dtmf_turn("7"), say_turn("What time do you open?", voice))
    calls = gateway.app[CALLS]
    done = len(calls.completed)
    # pause_s: the agent's silence that ends a reply; longer than the simulator's default, so a sentence slow to
    # synthesize on a loaded machine is not taken as the reply's end.
    record = await simulate_call(
        SimulatorConfig(
            url=gateway.base,
            audiosocket=gateway.audiosocket,
            carrier=carrier,
            turns=turns,
            barge_in_after_s=2.5,
            greeting_timeout_s=6.0,
            pause_s=2.0,
        )
    )
    async with asyncio.timeout(10):  # the gateway notices the hang-up and ends the agent session
        while len(calls.completed) == done:
            await asyncio.sleep(0.02)
    summary = calls.completed[-1]
    sessions_left = dict(local_agent_runtime(_local_agent(gateway.app)).sessions)
    tl = build_timeline(record)
    d = tl.to_dict()
    where = tl.format_text()
    assert d["outcome"] == "completed" and d["errors"] == [], where
    assert summary.call_sid == _gateway_call_id(carrier, record), summary
    assert tl.greeting is not None and "thanks for calling" in heard_text(models, record, tl.greeting), where
    keys_turn, hours_turn = tl.turns
    # The keys reached the agent: it starts "The caller pressed these keys on their phone keypad: 7 …".
    assert keys_turn.reply is not None, where
    said = heard_text(models, record, keys_turn.reply)
    assert sum(word in said for word in ("caller", "press", "keys", "phone")) >= 2, said
    # Barge-in stops the agent within the bound Twilio's test uses. AudioSocket has no flush (the gateway drops its
    # own paced queue); the WebSocket PBXs flush in their own verb (killAudio / FLUSH_MEDIA), and the simulator
    # refuses any other shape.
    assert hours_turn.barge_in, where
    if carrier == "audiosocket":
        # No clear to see: the agent's audio stops because the gateway stops sending it. The timeline cannot tell
        # the answer from the interrupted reply's tail without a clear when the answer follows closely (a fast
        # machine), so both are read from what the caller heard.
        assert tl.clears == (), where
        stopped = _agent_stops(record, hours_turn.start_s)
        assert stopped - hours_turn.start_s < 3.0, (stopped, where)
        assert hours_turn.end_s is not None
        answer_span = Span(max(stopped, hours_turn.end_s), tl.duration_s)
    else:
        assert len(tl.clears) == 1, where
        assert hours_turn.clear_after_ms is not None and 0 < hours_turn.clear_after_ms < 3000, where
        assert hours_turn.reply is not None, where
        answer_span = hours_turn.reply
    assert keys_turn.reply.end_s - keys_turn.reply.start_s < 5.0, where  # cut short: the full answer is ~7 s
    answer = heard_text(models, record, answer_span)
    assert is_opening_hours_answer(answer) and "soup" not in answer, answer
    # The caller's hang-up (the PBX closes the socket) ends the call and its agent session.
    assert d["hangup"]["by"] == "caller" and summary.hung_up_by == "caller", where
    assert summary.outcome in ("caller_hangup", "carrier_closed"), summary
    assert summary.session_id and summary.session_id not in sessions_left, summary
    assert summary.interruptions == 1 and summary.frames_in > 0 and summary.frames_out > 0, summary

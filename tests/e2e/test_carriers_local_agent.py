"""Every carrier beside Twilio, end to end: the call simulator speaks the carrier's own webhook, answer document,
stream dialect and audio format (gateway/simulator/carrier_side.py) against the real gateway and its embedded local
agent (real VAD, STT, intents, TTS), over loopback sockets. One call per carrier, short phrases:

- the greeting is heard (transcribed from what the caller heard);
- a barge-in 2.5 s into the menu flushes playback with the carrier's own verb (``clear`` / ``clearAudio`` /
  ``{"action": "clear"}``; the simulator refuses any other shape), and Plivo/Vonage acknowledge it;
- the next question is answered and heard;
- the caller's hang-up ends the call and the agent session (gone from the local agent's registry).

And each carrier's own call control: `end_call` and `transfer_call` on Telnyx and Plivo reach their own REST APIs
(local fakes, tests/support/fake_{telnyx,plivo}_rest.py) with the documented requests, never Twilio's (its fake runs
alongside and must see nothing); on Vonage and Exotel `end_call` closes the stream and nothing is sent anywhere.

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
from gateway.config import REPO_CONFIG_DIR, CarrierSettings
from gateway.keys import CALLS
from gateway.local_agent.app import local_agent_runtime
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.simulator.caller import SimulatorConfig, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import CallRecord, Span, build_timeline
from tests.support.answers import is_opening_hours_answer
from tests.support.fake_plivo_rest import FakePlivoRest
from tests.support.fake_telnyx_rest import FakeTelnyxRest
from tests.support.fake_twilio_rest import FakeTwilioRest
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


# ---- each carrier's own call control (docs/how-to/call-control.md#carriers) --------------------------------------
TRANSFER_TO = "+15550003333"


@pytest.fixture(scope="module")
def control_turns(voice: Any) -> dict[str, Any]:
    return {"person": say_turn("Can I speak to a person?", voice), "bye": say_turn("Goodbye.", voice)}


@pytest.fixture
async def rest_fakes(aiohttp_server: Any) -> tuple[FakeTwilioRest, FakeTelnyxRest, FakePlivoRest]:
    fakes = (FakeTwilioRest(), FakeTelnyxRest(), FakePlivoRest())
    for fake in fakes:
        server = await aiohttp_server(fake.app)
        fake.url = str(server.make_url("")).rstrip("/")
    return fakes


def _control_settings(tmp_path: Any, fakes: tuple[FakeTwilioRest, FakeTelnyxRest, FakePlivoRest]) -> Any:
    """Every carrier's REST API configured (each pointing at its fake), a profile with end_call and transfer_call
    that also hangs up over REST, and the local agent's person-please intent transferring to a real number."""
    twilio, telnyx, plivo = fakes
    intents = (REPO_CONFIG_DIR / "local_agent" / "intents.toml").read_text(encoding="utf-8")
    assert 'destination = "front desk"' in intents
    path = tmp_path / "intents.toml"
    # Short last words keep these calls short: the gateway waits until they were heard before it acts.
    for long, short in (
        ('destination = "front desk"', f'destination = "{TRANSFER_TO}"'),
        ('"Please hold while I put you through to the front desk."', '"Hold on."'),
        ('reply_after_tool = "Goodbye, and thanks for calling."', 'reply_after_tool = "Bye."'),
    ):
        assert long in intents, long
        intents = intents.replace(long, short)
    path.write_text(intents, encoding="utf-8")
    settings = local_agent_settings(
        TWILIO_ACCOUNT_SID=twilio.account_sid,
        TWILIO_AUTH_TOKEN=twilio.auth_token,
        TWILIO_API_BASE_URL=twilio.url,
        TELNYX_API_KEY=telnyx.api_key,
        PLIVO_AUTH_ID=plivo.auth_id,
        PLIVO_AUTH_TOKEN=plivo.auth_token,
    )
    profile = dataclasses.replace(
        settings.profiles["default"],
        greeting="Hello.",
        tools=("end_call", "transfer_call"),
        transfer_allow=("+1555*",),
        hangup_via_rest=True,
        end_call_timeout_s=8.0,
    )
    return dataclasses.replace(
        settings,
        profiles={"default": profile},
        local_agent=dataclasses.replace(settings.local_agent, intents=str(path)),
        carriers=CarrierSettings(
            telnyx=TelnyxSettings(api_base_url=telnyx.url),
            plivo=PlivoSettings(api_base_url=plivo.url),
            vonage=VonageSettings(sample_rate=16000),
            exotel=ExotelSettings(sample_rate=16000),
        ),
    )


async def _controlled_call(
    settings: Any, models: Any, carrier: str, turns: tuple[Any, ...], signing_secret: str = ""
) -> tuple[Any, Any, list[tuple[str, dict[str, Any]]]]:
    feed: list[tuple[str, dict[str, Any]]] = []
    async with serve_gateway(settings, models) as (base, app):
        app[CALLS].listeners.append(lambda _sid, event: feed.append((event.kind, event.fields())))
        config = SimulatorConfig(
            url=base, carrier=carrier, turns=turns, auth_token=signing_secret, greeting_timeout_s=6.0, pause_s=0.3
        )
        record = await simulate_call(config)
        async with asyncio.timeout(10):
            while not app[CALLS].completed:
                await asyncio.sleep(0.02)
        summary = app[CALLS].completed[-1]
    return record, summary, feed


def _controls(feed: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, str]]:
    return [(f["action"], f["result"]) for k, f in feed if k == "call.control"]


@pytest.mark.parametrize(
    ("carrier", "action"), [("telnyx", "bye"), ("telnyx", "person"), ("plivo", "bye"), ("plivo", "person")]
)
async def test_end_call_and_transfer_go_to_the_carriers_own_rest_api(
    carrier, action, models, control_turns, rest_fakes, tmp_path
):
    twilio, telnyx, plivo = rest_fakes
    settings = _control_settings(tmp_path, rest_fakes)
    # PLIVO_AUTH_TOKEN (set for the REST API) also checks Plivo's webhook signatures: the simulator signs.
    secret = plivo.auth_token if carrier == "plivo" else ""
    record, summary, feed = await _controlled_call(settings, models, carrier, (control_turns[action],), secret)
    tl = build_timeline(record)
    assert tl.to_dict()["errors"] == [], tl.format_text()
    assert tl.to_dict()["hangup"]["by"] == "gateway", tl.format_text()  # the stream was closed by the gateway
    call_id = summary.call_sid
    if carrier == "telnyx":
        assert call_id.startswith("v3:")  # the call_control_id, as Telnyx's start carries it
        (req,) = telnyx.requests
        assert req.path == f"/v2/calls/{call_id}/actions/{'hangup' if action == 'bye' else 'transfer'}"
        assert req.bearer == telnyx.api_key and req.status == 200
        assert req.body == ({} if action == "bye" else {"to": TRANSFER_TO})
        assert plivo.requests == []
    else:
        (req,) = plivo.requests
        assert req.path == f"/v1/Account/{plivo.auth_id}/Call/{call_id}/"
        assert req.auth == (plivo.auth_id, plivo.auth_token)
        if action == "bye":
            assert req.method == "DELETE" and req.status == 204
        else:
            assert req.method == "POST" and req.status == 202 and req.body["legs"] == "aleg"
            _url, xml = plivo.transfers[call_id]
            assert f"<Number>{TRANSFER_TO.lstrip('+')}</Number>" in xml
        assert telnyx.requests == []
    assert twilio.requests == []  # no non-Twilio call ever reaches Twilio's API
    if action == "bye":
        assert summary.outcome == "agent_hangup" and _controls(feed) == [("hangup", "ok")], (summary, feed)
    else:
        assert summary.outcome == "transferred" and _controls(feed) == [("transfer", "ok")], (summary, feed)


@pytest.mark.parametrize("carrier", ["vonage", "exotel"])
async def test_without_call_control_end_call_closes_the_stream(carrier, models, control_turns, rest_fakes, tmp_path):
    # (A transfer there is answered as not available while the call goes on:
    # tests/integration/test_carrier_dialect_session.py, with the fake agent.)
    settings = _control_settings(tmp_path, rest_fakes)
    record, summary, feed = await _controlled_call(settings, models, carrier, (control_turns["bye"],))
    tl = build_timeline(record)
    assert tl.to_dict()["errors"] == [] and tl.to_dict()["hangup"]["by"] == "gateway", tl.format_text()
    assert summary.outcome == "agent_hangup", summary
    # hangup_via_rest is set, but this carrier has no REST API: closing the stream is the hang-up, nothing is sent.
    assert _controls(feed) == [], feed
    assert all(fake.requests == [] for fake in rest_fakes)

"""The carriers' routes on the real gateway (loopback, spec-following fake agent): each carrier's webhook accepts a
request signed the carrier's way and refuses a forged one (the variables of docs/reference/environment.md#carriers), its
answer document carries the per-call token the way that carrier allows, and a stream without a valid token is refused.
The call simulator plays the carrier (gateway/simulator/carrier_side.py), so the dialect is exercised both ways too."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.simulator.caller import SimulatorConfig, simulate_call
from gateway.simulator.timeline import build_timeline
from tests.support.audio import tone

_SEED = bytes(range(32))
_PUBLIC = base64.b64encode(
    Ed25519PrivateKey.from_private_bytes(_SEED)
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()

# carrier: (gateway env, the simulator's secret, a forged secret)
SECRETS = {
    "signalwire": ({"SIGNALWIRE_SIGNING_KEY": "PSK-signing-key"}, "PSK-signing-key", "PSK-guessed"),
    "telnyx": ({"TELNYX_PUBLIC_KEY": _PUBLIC}, base64.b64encode(_SEED).decode(), base64.b64encode(bytes(32)).decode()),
    "plivo": ({"PLIVO_AUTH_TOKEN": "plivo-auth-token"}, "plivo-auth-token", "plivo-guess"),
    "vonage": (
        {"VONAGE_SIGNATURE_SECRET": "vonage-signature-secret-0123456789abcdef"},
        "vonage-signature-secret-0123456789abcdef",
        "forged-signature-secret-0123456789abcdef",
    ),
    "exotel": ({"EXOTEL_BASIC_AUTH": "apikey:apitoken"}, "apikey:apitoken", "apikey:guess"),
}


async def _greet(fake_agent: Any) -> None:
    sess = await fake_agent.session(timeout=10)
    await sess.reply(tone(800, 0.6, 24000))


@pytest.mark.parametrize("carrier", list(SECRETS))
async def test_a_signed_call_is_served_and_its_greeting_heard(carrier, start_gateway, fake_agent):
    env, secret, _ = SECRETS[carrier]
    gw = await start_gateway(**env)
    agent = asyncio.create_task(_greet(fake_agent))
    record = await simulate_call(
        SimulatorConfig(url=gw.base_url, carrier=carrier, auth_token=secret, pause_s=0.5, greeting_timeout_s=5)
    )
    await asyncio.wait_for(agent, 5)
    tl = build_timeline(record)
    assert record.outcome == "completed" and record.errors == [], (record.errors, tl.format_text())
    assert record.signed and tl.greeting is not None
    assert tl.greeting.end_s - tl.greeting.start_s == pytest.approx(0.6, abs=0.12)
    assert "token" in record.parameter_names or carrier == "plivo"  # Plivo: the token is in the URL path


@pytest.mark.parametrize("carrier", list(SECRETS))
async def test_a_forged_webhook_is_refused(carrier, start_gateway):
    env, _, forged = SECRETS[carrier]
    gw = await start_gateway(**env)
    record = await simulate_call(SimulatorConfig(url=gw.base_url, carrier=carrier, auth_token=forged))
    assert record.outcome == "refused" and record.webhook_status == 403, record.errors


async def test_exotel_stream_upgrade_needs_the_basic_auth_too(start_gateway, http):
    gw = await start_gateway(EXOTEL_BASIC_AUTH="apikey:apitoken")
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(gw.base_url.replace("http", "ws") + "/exotel/stream?token=x")
    assert exc.value.status == 403


@pytest.mark.parametrize(
    ("path", "first_messages"),
    [
        # Plivo: a token in the path that was never minted
        (
            "/plivo/stream/v2.9999999999.n0nce.forged",
            [
                {
                    "event": "start",
                    "sequenceNumber": 0,
                    "start": {
                        "callId": "call-1",
                        "streamId": "stream-1",
                        "accountId": "MA1",
                        "tracks": ["inbound"],
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
                    },
                }
            ],
        ),
        # Vonage: no token header at all
        ("/vonage/stream", [{"event": "websocket:connected", "content-type": "audio/l16;rate=16000", "uuid": "u-1"}]),
        # Telnyx: a token minted for another call
        (
            "/telnyx/stream",
            [
                {"event": "connected", "version": "1.0.0"},
                {
                    "event": "start",
                    "sequence_number": "1",
                    "stream_id": "s-1",
                    "start": {
                        "call_control_id": "v3:other",
                        "custom_parameters": {"token": "v2.9999999999.n0nce.abc"},
                        "media_format": {"encoding": "PCMU", "sample_rate": 8000, "channels": 1},
                    },
                },
            ],
        ),
    ],
)
async def test_a_stream_without_a_valid_call_token_is_refused(path, first_messages, start_gateway, http, fake_agent):
    gw = await start_gateway()
    ws = await http.ws_connect(gw.base_url.replace("http", "ws") + path)
    for msg in first_messages:
        await ws.send_str(json.dumps(msg))
    closed = await asyncio.wait_for(ws.receive(), 5)
    assert closed.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert ws.close_code == 1008  # policy violation: refused before any agent session
    assert fake_agent.live_sessions == []


async def test_answer_documents_carry_the_token_each_carriers_way(start_gateway, http):
    gw = await start_gateway()
    base = gw.base_url
    async with http.post(
        base + "/plivo/answer", data={"CallUUID": "c-1", "From": "15550001111", "To": "18005551212"}
    ) as r:
        body = await r.text()
    assert "/plivo/stream/v2." in body and 'extraHeaders="to=18005551212,from=15550001111"' in body
    async with http.get(base + "/vonage/answer", params={"uuid": "u-1", "from": "1555", "to": "1800"}) as r:
        (action,) = await r.json()
    assert action["endpoint"][0]["headers"]["token"].startswith("v2.")
    assert action["endpoint"][0]["headers"]["to"] == "+1800"
    async with http.get(base + "/exotel/answer", params={"CallSid": "x-1"}) as r:
        doc = await r.json()
    assert "sample-rate=8000&token=v2." in doc["url"]
    async with http.post(base + "/telnyx/voice", data={"CallSid": "v3:abc", "From": "+1", "To": "+2"}) as r:
        texml = await r.text()
    assert 'bidirectionalMode="rtp"' in texml and '<Parameter name="token" value="v2.' in texml
    async with http.post(base + "/signalwire/voice", data={"CallSid": "CA1", "From": "+1", "To": "+2"}) as r:
        cxml = await r.text()
    assert 'codec="PCMU"' in cxml and '<Parameter name="token" value="v2.' in cxml


@pytest.mark.parametrize("carrier", list(SECRETS))
async def test_a_called_number_mapped_to_another_profile_is_served_with_it(
    carrier, start_gateway, fake_agent, tmp_path
):
    # The stream token is bound to the profile the answer chose from the called number; every carrier's stream must
    # present the same number, or its own call would be refused as a token for another profile.
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[profiles.vip]\nsystem_prompt = "You serve VIP callers."\n[numbers]\n"+15550109999" = "vip"\n')
    env, secret, _ = SECRETS[carrier]
    gw = await start_gateway(str(cfg), **env)
    agent = asyncio.create_task(_greet(fake_agent))
    record = await simulate_call(
        SimulatorConfig(
            url=gw.base_url, carrier=carrier, auth_token=secret, pause_s=0.3, greeting_timeout_s=5, to="+15550109999"
        )
    )
    await asyncio.wait_for(agent, 5)
    assert record.outcome == "completed" and record.errors == [], record.errors
    (sess,) = fake_agent.sessions
    assert sess.config["system_prompt"] == "You serve VIP callers."

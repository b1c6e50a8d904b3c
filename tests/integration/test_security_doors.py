"""The open doors an attacker found (docs/security.md), tried again against the real gateway on loopback configured
for production: a public URL, TWILIO_AUTH_TOKEN, GATEWAY_API_KEY and GATEWAY_TOKEN_SECRET set, calls going to a
cloud agent (here the spec-following fake, which counts every session it is asked to open: each would be billed).

- A carrier without its secret has no doors (404), whatever token one could mint.
- A token minted at one door is refused at every other.
- Twilio's stream upgrade must be signed when its auth token is set.
- Floods of unauthenticated webhooks and of idle upgrades leave a signed Twilio call fully working.
- Bodies that cannot be decoded get a 400, never a 500; TwiML stays well-formed whatever the caller ID holds.
"""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from xml.etree import ElementTree

import aiohttp
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.carriers.registry import names
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.keys import CALLS
from gateway.security import mint_call_token, twilio_signature
from tests.support.logcapture import capture_call_logs, events, wait_event
from tests.support.twilio_peer import TwilioPeer

PUBLIC = "https://voice.example.com"
AUTH = "twilio-auth-token-under-test"
SECRET = b"test-secret"  # conftest: GATEWAY_TOKEN_SECRET
PRODUCTION = {"GATEWAY_PUBLIC_URL": PUBLIC, "TWILIO_AUTH_TOKEN": AUTH, "GATEWAY_API_KEY": "operator-key"}
_TELNYX_PUBLIC = base64.b64encode(
    Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    .public_key()
    .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
).decode()

# Every door of the carriers beside Twilio: (method, path).
OTHER_DOORS = [
    ("POST", "/signalwire/voice"),
    ("GET", "/signalwire/stream"),
    ("POST", "/telnyx/voice"),
    ("GET", "/telnyx/stream"),
    ("POST", "/plivo/answer"),
    ("GET", "/plivo/stream/v2.9999999999.x"),
    ("GET", "/vonage/answer"),
    ("POST", "/vonage/answer"),
    ("GET", "/vonage/stream"),
    ("GET", "/exotel/answer"),
    ("GET", "/exotel/stream"),
]


def _form(call_sid: str, to: str = "+15550002222") -> dict[str, str]:
    return {"CallSid": call_sid, "From": "+15550001111", "To": to, "AccountSid": "AC" + "0" * 32}


async def _signed_twilio_call(gw: Any, http: aiohttp.ClientSession) -> TwilioPeer:
    """A real Twilio call against a production gateway: signed webhook, signed upgrade (over the public URL)."""
    peer = TwilioPeer(gw.base_url, http, auth_token=AUTH)
    form = _form(peer.call_sid)
    await peer.dial(headers={"X-Twilio-Signature": twilio_signature(AUTH, PUBLIC + "/twilio/voice", form)})
    peer.signed_stream_url = peer.stream_url
    assert peer.stream_url == "wss://voice.example.com/twilio/stream"
    peer.stream_url = gw.base_url.replace("http://", "ws://") + "/twilio/stream"  # reached on loopback
    await peer.connect()
    return peer


async def test_in_production_no_carrier_door_without_its_secret_answers_and_no_agent_session_opens(
    start_gateway, http, fake_agent
):
    gw = await start_gateway(**PRODUCTION)
    for method, path in OTHER_DOORS:
        async with http.request(method, gw.base_url + path, data=_form("CAattacker")) as r:
            assert r.status == 404, (method, path, r.status)
    # Any token one could mint with the real secret, for any door, opens nothing: those streams do not exist.
    for carrier in names()[1:]:  # every carrier but Twilio
        token = mint_call_token(SECRET, "CAattacker|default", time.time(), 300, scope=carrier)
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await http.ws_connect(f"{gw.base_url.replace('http', 'ws')}/{carrier}/stream?token={token}")
        assert exc.value.status == 404
    # Twilio's own doors are there, and refuse the unsigned: the webhook, the upgrade, the status callback.
    async with http.post(gw.base_url + "/twilio/voice", data=_form("CAattacker")) as r:
        assert r.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
        await http.ws_connect(gw.base_url.replace("http", "ws") + "/twilio/stream")
    assert exc.value.status == 403
    async with http.post(gw.base_url + "/twilio/status", data={"CallSid": "CAx", "CallStatus": "completed"}) as r:
        assert r.status == 403
    assert fake_agent.connections == 0 and fake_agent.sessions == []


async def test_an_unsigned_upgrade_is_refused_when_the_auth_token_is_set_even_with_a_good_token(
    start_gateway, http, fake_agent
):
    gw = await start_gateway(TWILIO_AUTH_TOKEN=AUTH)
    peer = TwilioPeer(gw.base_url, http)  # no auth_token: it does not sign its upgrade
    form = _form(peer.call_sid)
    await peer.dial(headers={"X-Twilio-Signature": twilio_signature(AUTH, gw.base_url + "/twilio/voice", form)})
    with capture_call_logs() as logs:
        with pytest.raises(aiohttp.WSServerHandshakeError) as exc:
            await peer.connect()
        assert exc.value.status == 403
    assert events(logs, "stream.refused")[0]["reason"] == "missing_signature"
    assert fake_agent.connections == 0


async def test_a_token_minted_at_one_door_is_refused_at_every_other(start_gateway, http, fake_agent):
    gw = await start_gateway()  # development: every door open without secrets
    async with http.post(gw.base_url + "/signalwire/voice", data=_form("CAsw")) as r:
        cxml = await r.text()
    stream = ElementTree.fromstring(cxml).find("./Connect/Stream")
    assert stream is not None
    params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    peer = TwilioPeer(gw.base_url, http, call_sid="CAsw")
    peer.stream_url = gw.base_url.replace("http://", "ws://") + "/twilio/stream"
    with capture_call_logs() as logs:
        await peer.connect(parameters=params)  # the signalwire token, presented at Twilio's door
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
        await wait_event(logs, "call.ended")
    assert peer.close_code == 1008
    assert "another call, profile or carrier" in events(logs, "call.refused")[0]["reason"]
    assert fake_agent.connections == 0


async def test_a_stream_that_asks_for_another_profile_than_its_webhook_answered_is_refused(
    start_gateway, http, fake_agent, tmp_path
):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[profiles.vip]\nsystem_prompt = "VIP"\n[numbers]\n"+15550009999" = "vip"\n')
    gw = await start_gateway(str(cfg))
    peer = TwilioPeer(gw.base_url, http)
    await peer.dial()  # to +15550002222: the default profile
    with capture_call_logs() as logs:
        await peer.connect(parameters={**peer.parameters, "to": "+15550009999"})
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
        await wait_event(logs, "call.ended")
    assert peer.close_code == 1008 and fake_agent.connections == 0


async def test_floods_of_unauthenticated_webhooks_and_idle_upgrades_leave_a_signed_call_working(
    start_gateway, http, fake_agent
):
    # Telnyx is configured too: its upgrades carry no credential (the token comes in 'start'), so anyone may open
    # one; they wait in the pending pool, which holds no call slot.
    gw = await start_gateway(**PRODUCTION, TELNYX_PUBLIC_KEY=_TELNYX_PUBLIC)
    ws_base = gw.base_url.replace("http", "ws")

    async def webhook(i: int) -> int:
        path = ("/twilio/voice", "/signalwire/voice", "/telnyx/voice")[i % 3]
        async with http.post(gw.base_url + path, data=_form(f"CAflood{i}")) as r:
            return r.status

    statuses = await asyncio.gather(*(webhook(i) for i in range(100)))
    assert set(statuses) <= {403, 404} and gw.app[CALLS].admission.reservations == 0
    # The flood on a client of its own (aiohttp's client pools at most 100 connections per session).
    flood = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    idle = [await flood.ws_connect(ws_base + "/telnyx/stream") for _ in range(100)]
    try:
        assert gw.app[CALLS].admission.pending <= load_settings(env={}).server.max_pending_streams
        assert fake_agent.connections == 0
        peer = await _signed_twilio_call(gw, http)
        sess = await fake_agent.session(timeout=10)
        assert fake_agent.connections == 1  # the signed call's, and only it
        await sess.reply(b"\x00\x00" * 4800)  # the agent speaks; the caller hears it
        await peer.wait_for(lambda: len(peer.played) >= 800, timeout=5)
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    finally:
        for ws in idle:
            await ws.close()
        await flood.close()


async def test_many_idle_upgrades_are_evicted_oldest_first_and_counted(start_gateway, http, tmp_path):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text("[server]\nmax_pending_streams = 4\n")
    gw = await start_gateway(str(cfg))
    ws_base = gw.base_url.replace("http", "ws")
    idle = [await http.ws_connect(ws_base + "/twilio/stream") for _ in range(6)]
    try:
        for ws in idle[:2]:  # the two oldest were closed to make room
            msg = await asyncio.wait_for(ws.receive(), 5)
            assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert gw.app[CALLS].admission.pending == 4
        async with http.get(gw.base_url + "/metrics") as r:
            text = await r.text()
        assert 'call_refusals_total{reason="evicted_waiting_for_start",stage="stream"} 2.0' in text
    finally:
        for ws in idle:
            await ws.close()


# ---- malformed input -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/twilio/voice", "/signalwire/voice", "/telnyx/voice", "/plivo/answer"])
async def test_invalid_utf8_in_a_webhook_form_is_a_400_not_a_500(path, start_gateway, http):
    gw = await start_gateway()
    async with http.post(
        gw.base_url + path,
        data=b"CallSid=CA1&From=\xff\xfe\xfd",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ) as r:
        assert r.status == 400, await r.text()


@pytest.mark.parametrize("body", [b"[" * 30_000, b'{"uuid": "\xff"}', b"[1, 2]", b"{"])
async def test_a_vonage_answer_body_that_is_not_a_json_object_is_a_400(body, start_gateway, http):
    gw = await start_gateway()
    async with http.post(gw.base_url + "/vonage/answer", data=body, headers={"Content-Type": "application/json"}) as r:
        assert r.status == 400


@pytest.mark.parametrize("nasty", ["\x00", "\x1b[31m", "\ufffe", "\uffff", "a\x08b", "\x7f"])
async def test_control_characters_in_caller_id_never_break_the_twiml(nasty, start_gateway, http):
    gw = await start_gateway()
    form = {"CallSid": "CAxml", "From": f"+1555{nasty}0001111", "To": f"+1555{nasty}0002222"}
    async with http.post(gw.base_url + "/twilio/voice", data=form) as r:
        body = await r.text()
        assert r.status == 200
    stream = ElementTree.fromstring(body).find("./Connect/Stream")  # raises if not well-formed
    assert stream is not None


# ---- configuration ---------------------------------------------------------------------------------------------
def _toml(tmp_path: Any, text: str) -> str:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_enabling_a_door_without_its_secret_is_refused_with_a_public_url(tmp_path):
    with pytest.raises(ConfigError, match="carriers.telnyx.enabled.*TELNYX_PUBLIC_KEY"):
        load_settings(_toml(tmp_path, "[carriers.telnyx]\nenabled = true\n"), env={"GATEWAY_PUBLIC_URL": PUBLIC})


def test_doors_open_with_their_secret_and_close_when_disabled(tmp_path):
    s = load_settings(
        _toml(tmp_path, "[carriers.twilio]\nenabled = false\n"),
        env={"GATEWAY_PUBLIC_URL": PUBLIC, "TWILIO_AUTH_TOKEN": AUTH, "PLIVO_AUTH_TOKEN": "p"},
    )
    assert s.open_doors() == {"plivo": True}
    dev = load_settings(_toml(tmp_path, "[carriers.vonage]\nenabled = false\n"), env={})
    assert dev.open_doors() == {c: False for c in names() if c != "vonage"}  # development: open, unauthenticated
    with pytest.raises(ConfigError, match="carriers.exotel.enabled"):
        load_settings(_toml(tmp_path, '[carriers.exotel]\nenabled = "yes"\n'), env={})

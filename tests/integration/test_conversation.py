"""Conversation features over loopback (docs/how-to/conversation.md): Twilio peer ⇄ real gateway ⇄ the
spec-following fake agent (and the fake of Twilio's REST API). A stored agent is named alone in the first
``session.update`` and the profile's fields follow once it is ready; an outbound call placed with answering-machine
detection holds both ways until Twilio's signed verdict, then leaves the voicemail after the beep."""

from __future__ import annotations

import dataclasses
from typing import Any
from xml.etree import ElementTree

import pytest

from gateway.audio import g711
from tests.support.audio import dominant_freq, tone, ulaw_tone
from tests.support.fake_twilio_rest import FakeTwilioRest
from tests.support.logcapture import capture_call_logs, events, wait_event
from tests.support.twilio_peer import TwilioPeer, media_bytes
from tests.unit.test_log_schema import check_event


async def start(start_gateway: Any, tmp_path: Any, profile: str) -> Any:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f'[profiles.default]\ngreeting = ""\n{profile}\n', encoding="utf-8")
    return await start_gateway(str(cfg))


async def test_a_stored_agent_is_named_alone_then_the_profile_follows_once_ready(
    start_gateway, new_peer, fake_agent, tmp_path
):
    gw = await start(
        start_gateway,
        tmp_path,
        'agent_id = "agent_0123456789abcdef0123456789abcdef"\nkeyterms = ["Harbour Kitchen"]\n'
        'tools = ["end_call"]\n[profiles.default.turn_detection]\nmin_silence = 700',
    )
    with capture_call_logs() as logs:
        peer = await new_peer(gw)
        await peer.connect()
        sess = await fake_agent.session()
        follow = await sess.next_message("session.update")  # the first one, then the one on top
        if "agent_id" in follow["session"]:
            follow = await sess.next_message("session.update")
        await peer.stop()
        await peer.wait_for(lambda: peer.closed.is_set())
    first = sess.received[0]
    assert first == {"type": "session.update", "session": {"agent_id": "agent_0123456789abcdef0123456789abcdef"}}
    on_top = follow["session"]
    assert on_top["input"]["keyterms"] == ["Harbour Kitchen"]
    assert on_top["input"]["turn_detection"] == {"min_silence": 700}
    assert [t["name"] for t in on_top["tools"]] == ["end_call"]
    assert "greeting" not in on_top and "voice" not in on_top.get("output", {})  # immutable: the agent's own
    assert events(logs, "agent.session_ready")
    for line in logs:
        check_event(line)


# ---- answering-machine detection ------------------------------------------------------------------------------------
AUTH = "tw-auth-token"
API_KEY = "gw-api-key"
PUBLIC = "https://voice.example.com"


@pytest.fixture
async def fake_rest(aiohttp_server) -> FakeTwilioRest:
    rest = FakeTwilioRest(auth_token=AUTH)
    server = await aiohttp_server(rest.app)
    rest.url = str(server.make_url("")).rstrip("/")
    return rest


async def outbound_gateway(start_gateway: Any, tmp_path: Any, fake_rest: FakeTwilioRest, public: str = PUBLIC) -> Any:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[profiles.default]\ngreeting = "Hello!"\n[profiles.default.voicemail]\n'
        'message = "Leave this: Acme called, please call back."\n',
        encoding="utf-8",
    )
    env = {"TWILIO_ACCOUNT_SID": fake_rest.account_sid, "TWILIO_AUTH_TOKEN": AUTH, "GATEWAY_API_KEY": API_KEY}
    return await start_gateway(
        str(cfg), TWILIO_API_BASE_URL=fake_rest.url, **env, **({"GATEWAY_PUBLIC_URL": public} if public else {})
    )


async def dial_out(http: Any, gw: Any, fake_rest: FakeTwilioRest) -> tuple[str, TwilioPeer]:
    """POST /calls with machine_detection, then the callee's side connects the stream as Twilio would."""
    body = {"to": "+15550002222", "from": "+15550001111", "machine_detection": True}
    async with http.post(gw.base_url + "/calls", json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status == 201, await r.text()
        sid = (await r.json())["call_sid"]
    (req,) = fake_rest.creates()
    stream = ElementTree.fromstring(req.one("Twiml")).find("./Connect/Stream")
    assert stream is not None
    peer = TwilioPeer(gw.base_url, http, call_sid=sid, auth_token=AUTH, signed_stream_url=stream.attrib["url"])
    peer.stream_url = gw.base_url.replace("http://", "ws://") + "/twilio/stream"
    peer.parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    await peer.connect()
    return sid, peer


async def test_machine_detection_is_asked_of_twilio_and_the_voicemail_follows_the_beep(
    start_gateway, fake_rest, fake_agent, http, tmp_path
):
    gw = await outbound_gateway(start_gateway, tmp_path, fake_rest)
    with capture_call_logs() as logs:
        sid, peer = await dial_out(http, gw, fake_rest)
        try:
            (req,) = fake_rest.creates()
            assert req.one("MachineDetection") == "DetectMessageEnd" and req.one("AsyncAmd") == "true"
            assert req.one("AsyncAmdStatusCallback") == PUBLIC + "/twilio/amd"
            assert peer.parameters["amd"] == "1"  # bound to the stream's token like every other parameter
            sess = await fake_agent.session()
            await sess.reply(tone(440, 1.0, 24000), realtime=False)  # the greeting: held, not over the machine
            await peer.send_media(ulaw_tone(300, 1.0))  # the machine's greeting: held, not to the agent
            # forged, and for an unknown call: refused, nothing changes
            forged = {"CallSid": sid, "AnsweredBy": "machine_end_beep"}
            async with http.post(gw.base_url + "/twilio/amd", data=forged) as r:
                assert r.status == 403
            fake_rest.calls["CA" + "9" * 32] = dataclasses.replace(fake_rest.calls[sid], sid="CA" + "9" * 32)
            assert await fake_rest.post_amd(http, "CA" + "9" * 32, "human", deliver_to=gw.base_url) == 404
            assert media_bytes(peer.received) == b"" and sess.audio == b""
            assert await fake_rest.post_amd(http, sid, "machine_end_beep", deliver_to=gw.base_url) == 204
            create = await sess.next_message("reply.create")
            assert create["instructions"] == "Leave this: Acme called, please call back."
            await sess.reply(tone(660, 0.5, 24000), realtime=False, text="Acme called")
            await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
            ended = await wait_event(logs, "call.ended")
        finally:
            await peer.close()
    heard = media_bytes(peer.received)
    assert 0.5 * 8000 <= len(heard) <= 0.6 * 8000  # the message only: none of the held greeting
    assert abs(dominant_freq(g711.ulaw_to_pcm16(heard), 8000) - 660) < 10
    assert ended["outcome"] == "voicemail_left"
    assert sess.audio == b""  # the machine's greeting never reached the agent
    assert [e["action"] for e in events(logs, "call.amd")] == ["leave_message"]
    assert events(logs, "amd.refused", reason="bad_signature")
    for line in logs:
        check_event(line)


async def test_machine_detection_without_a_public_url_is_refused_clearly(start_gateway, fake_rest, http, tmp_path):
    gw = await outbound_gateway(start_gateway, tmp_path, fake_rest, public="")
    body = {"to": "+15550002222", "from": "+15550001111", "machine_detection": True}
    async with http.post(gw.base_url + "/calls", json=body, headers={"Authorization": f"Bearer {API_KEY}"}) as r:
        assert r.status == 422 and "public URL" in (await r.json())["error"]
    async with http.post(
        gw.base_url + "/calls",
        json={**body, "machine_detection": "yes"},
        headers={"Authorization": f"Bearer {API_KEY}"},
    ) as r:
        assert r.status == 400
    assert fake_rest.creates() == []

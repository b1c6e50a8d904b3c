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
from gateway.security import twilio_signature
from tests.support.audio import dominant_freq, tone, ulaw_tone
from tests.support.fake_twilio_rest import FakeCall, FakeTwilioRest
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


# ---- warm transfer --------------------------------------------------------------------------------------------------
WARM_PROFILE = (
    'greeting = ""\ntools = ["transfer_call"]\ntransfer_allow = ["+1555*"]\n'
    '[profiles.default.warm_transfer]\ntimeout_s = 15\nwhisper_prefix = "Transfer from the voice agent."\n'
)


async def warm_call(start_gateway: Any, tmp_path: Any, fake_rest: FakeTwilioRest, http: Any) -> tuple[Any, TwilioPeer]:
    """A gateway with Twilio REST and a public URL, and an inbound call on it (signed as Twilio signs)."""
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(f"[profiles.default]\n{WARM_PROFILE}", encoding="utf-8")
    gw = await start_gateway(
        str(cfg),
        TWILIO_ACCOUNT_SID=fake_rest.account_sid,
        TWILIO_AUTH_TOKEN=AUTH,
        TWILIO_API_BASE_URL=fake_rest.url,
        GATEWAY_PUBLIC_URL=PUBLIC,
    )
    peer = TwilioPeer(gw.base_url, http, auth_token=AUTH, to="+15550001000")
    form = {"CallSid": peer.call_sid, "From": peer.from_, "To": peer.to, "AccountSid": "AC" + "0" * 32}
    await peer.dial(headers={"X-Twilio-Signature": twilio_signature(AUTH, PUBLIC + "/twilio/voice", form)})
    peer.signed_stream_url = peer.stream_url
    peer.stream_url = gw.base_url.replace("http://", "ws://") + "/twilio/stream"
    fake_rest.add_call(peer.call_sid, to=peer.to, from_=peer.from_)

    async def stop_on_redirect(call: FakeCall, req: Any) -> None:  # Twilio: a redirect ends <Connect><Stream>
        if call.sid == peer.call_sid and not peer.closed.is_set():
            await peer.stop()

    fake_rest.on_update.append(stop_on_redirect)
    await peer.connect()
    return gw, peer


async def start_warm_transfer(sess: Any, peer: TwilioPeer, fake_rest: FakeTwilioRest) -> FakeCall:
    await sess.send("reply.started", reply_id="resp_t", item_id="msg_a")
    args = {"destination": "+1 555 000 3333", "mode": "warm", "summary": "Ada wants a table for two tonight."}
    await sess.send("tool.call", call_id="call_t", name="transfer_call", arguments=args)
    await sess.send("reply.done", reply_id="resp_t", status="completed")
    result = await sess.next_message("tool.result", timeout=10)
    assert result["is_error"] is False, result
    await sess.reply(tone(500, 0.4, 24000), realtime=False, text="Please hold while I connect you.")
    await fake_rest.wait_for(lambda: len(fake_rest.creates()) == 1)  # dialled once the announcement was heard
    (req,) = fake_rest.creates()
    assert req.one("To") == "+15550003333" and req.one("From") == "+15550001000"
    assert req.one("StatusCallback") == PUBLIC + "/twilio/transfer" and req.one("Timeout") == "15"
    return fake_rest.calls[json_sid(req, fake_rest)]


def json_sid(req: Any, fake_rest: FakeTwilioRest) -> str:
    return next(c.sid for c in fake_rest.calls.values() if c.direction == "outbound-api" and c.to == req.one("To"))


async def test_a_warm_transfer_briefs_the_human_before_the_caller_is_joined(
    start_gateway, fake_rest, fake_agent, http, tmp_path
):
    with capture_call_logs() as logs:
        gw, peer = await warm_call(start_gateway, tmp_path, fake_rest, http)
        try:
            sess = await fake_agent.session()
            human = await start_warm_transfer(sess, peer, fake_rest)
            # forged and unknown reports change nothing
            async with http.post(
                gw.base_url + "/twilio/transfer", data={"CallSid": human.sid, "CallStatus": "busy"}
            ) as r:
                assert r.status == 403
            fake_rest.calls["CA" + "8" * 32] = dataclasses.replace(human, sid="CA" + "8" * 32)
            assert await fake_rest.post_call_status(http, "CA" + "8" * 32, "busy", deliver_to=gw.base_url) == 404
            await peer.wait_for(lambda: len(media_bytes(peer.received)) > 0.4 * 8000 + 1600)  # announcement, then hold
            assert fake_rest.rooms == {}
            assert await fake_rest.post_call_status(http, human.sid, "ringing", deliver_to=gw.base_url) == 204
            assert await fake_rest.answer_into_conference(http, human.sid, deliver_to=gw.base_url) == 204
            await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
            ended = await wait_event(logs, "call.ended")
        finally:
            await peer.close()
    assert human.heard == ["Transfer from the voice agent. Ada wants a table for two tonight."]
    (room,) = fake_rest.rooms.values()
    assert [sid for _, sid in room] == [human.sid, peer.call_sid]  # the human (whisper heard) first, then the caller
    assert ended["outcome"] == "transferred"
    assert [e["result"] for e in events(logs, "call.warm_transfer")] == ["dialling", "answered"]
    assert events(logs, "call.hold_audio", started=True)  # the caller waited with hold audio
    for line in logs:
        check_event(line)


async def test_a_warm_transfer_nobody_answers_returns_the_caller_to_the_agent_which_is_told(
    start_gateway, fake_rest, fake_agent, http, tmp_path
):
    with capture_call_logs() as logs:
        gw, peer = await warm_call(start_gateway, tmp_path, fake_rest, http)
        try:
            sess = await fake_agent.session()
            human = await start_warm_transfer(sess, peer, fake_rest)
            assert await fake_rest.post_call_status(http, human.sid, "no-answer", deliver_to=gw.base_url) == 204
            told = await sess.next_message("reply.create")
            assert "nobody answered" in told["instructions"] and "Tell the caller" in told["instructions"]
            await sess.reply(tone(700, 0.3, 24000), realtime=False, text="Sorry, nobody is free.")
            heard = len(media_bytes(peer.received))
            await peer.wait_for(lambda: len(media_bytes(peer.received)) >= heard + 0.3 * 8000)  # the agent's words
            assert not peer.closed.is_set()  # the caller is still with the agent
            await peer.stop()
            ended = await wait_event(logs, "call.ended")
        finally:
            await peer.close()
    assert ended["outcome"] == "caller_hangup" and fake_rest.rooms == {}
    assert [e["result"] for e in events(logs, "call.warm_transfer")] == ["dialling", "no-answer"]
    for line in logs:
        check_event(line)

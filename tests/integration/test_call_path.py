"""The core call path over real loopback WebSockets: Twilio peer ⇄ real gateway ⇄ spec-following fake agent."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
import structlog

from gateway.agent.client import TRANSPORTS
from gateway.audio import g711
from gateway.security import twilio_signature
from tests.conftest import call_tasks
from tests.support.audio import dominant_freq, tone, ulaw_tone
from tests.support.faults import write_config
from tests.support.logcapture import capture_call_logs, events
from tests.support.media_corpus import caller_ulaw8k
from tests.support.twilio_peer import media_bytes


@pytest.fixture(params=TRANSPORTS)
def agent_transport(request: pytest.FixtureRequest) -> str:
    """Every test here runs on each agent transport: resume depends on how a transport reports the socket's end."""
    return request.param


async def test_webhook_returns_connect_stream_with_call_token(start_gateway, new_peer):
    # A public URL is production: Twilio's doors exist only with its auth token, and the webhook must be signed.
    gw = await start_gateway(GATEWAY_PUBLIC_URL="https://voice.example.com", TWILIO_AUTH_TOKEN="tw-secret")
    peer = await new_peer(gw, dial=False)
    form = {"CallSid": peer.call_sid, "From": peer.from_, "To": peer.to, "AccountSid": "AC" + "0" * 32}
    await peer.dial(
        headers={"X-Twilio-Signature": twilio_signature("tw-secret", "https://voice.example.com/twilio/voice", form)}
    )
    assert peer.stream_url == "wss://voice.example.com/twilio/stream"
    assert peer.parameters["from"] == peer.from_ and peer.parameters["to"] == peer.to
    assert peer.parameters["token"].startswith("v2.")


async def test_caller_audio_reaches_agent_as_24k_pcm_with_pitch_and_duration(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    assert sess.config["input"]["format"] == {"encoding": "audio/pcm", "sample_rate": 24000}
    await peer.send_media(ulaw_tone(440, 1.0))
    # 1 s of caller audio must arrive as 1 s of 24 kHz PCM16 (± one 20 ms frame)
    await peer.wait_for(lambda: len(sess.audio) >= 48000 - 960, timeout=5)
    await asyncio.sleep(0.2)
    seconds = len(sess.audio) / 48000
    assert abs(seconds - 1.0) <= 0.02, seconds
    assert abs(dominant_freq(bytes(sess.audio), 24000) - 440) < 3


async def test_agent_audio_reaches_caller_as_160_byte_ulaw_frames_with_same_content(
    start_gateway, new_peer, fake_agent
):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(1000, 1.0, 24000), realtime=False)
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= 8000, timeout=5)
    frames = [base64.b64decode(r.msg["media"]["payload"]) for r in peer.events("media")]
    assert all(len(f) == 160 for f in frames)
    assert all(r.msg["streamSid"] == peer.stream_sid for r in peer.received)
    pcm = g711.ulaw_to_pcm16(b"".join(frames))
    assert abs(len(pcm) / 16000 - 1.0) <= 0.02
    assert abs(dominant_freq(pcm, 8000) - 1000) < 5


async def test_g711_passthrough_carries_both_directions_byte_for_byte(start_gateway, new_peer, fake_agent):
    # agent_format = "pcmu": no transcoding either way. The agent hears the caller's μ-law exactly as sent, and the
    # caller hears the agent's exactly as sent, cut into 160 B frames from the live service's μ-law chunking
    # (37.5 ms / 300 B, which does not divide a frame), the reply's last partial frame padded with μ-law silence.
    gw = await start_gateway(write_config('[audio]\nagent_format = "pcmu"\n'))
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    assert sess.config["input"]["format"] == {"encoding": "audio/pcmu"}
    assert sess.config["output"]["format"] == {"encoding": "audio/pcmu"}
    caller = caller_ulaw8k(1.0)
    await peer.send_media(caller)
    await peer.wait_for(lambda: len(sess.audio) >= len(caller), timeout=5)
    assert bytes(sess.audio) == caller
    agent = caller_ulaw8k(1.1, seed=11)[:8100]  # 27 chunks of 300 B; 50 frames of 160 B and 100 B over
    await sess.reply(agent, chunk_bytes=300, realtime=False)
    expected = agent + bytes([g711.ULAW_SILENCE]) * 60
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= len(expected), timeout=5)
    await asyncio.sleep(0.1)  # nothing more may follow
    frames = [base64.b64decode(r.msg["media"]["payload"]) for r in peer.events("media")]
    assert all(len(f) == 160 for f in frames)
    assert b"".join(frames) == expected


async def test_output_is_paced_to_a_bounded_lead(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    # 3 s of audio sent by the agent all at once must not be dumped on the carrier at once.
    await sess.reply(tone(500, 3.0, 24000), realtime=False)
    await asyncio.sleep(1.0)
    sent_ms = len(peer.events("media")) * 20
    assert 900 <= sent_ms <= 1000 + 200 + 100, sent_ms  # ~elapsed + lead (200 ms) + scheduling slack


async def test_audio_sent_before_session_ready_is_delivered(start_gateway, new_peer, fake_agent):
    fake_agent.ready_delay = 0.6
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    await peer.send_media(ulaw_tone(300, 0.4))  # all of it before ready
    sess = await fake_agent.session()
    await peer.wait_for(lambda: len(sess.audio) >= 0.4 * 48000 - 960, timeout=5)
    assert abs(len(sess.audio) / 48000 - 0.4) <= 0.02


async def test_interruption_sends_clear_before_any_further_media(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    # The old reply arrives as a burst, so most of it is still queued in the gateway when the caller interrupts.
    await sess.reply(tone(700, 4.0, 24000), reply_id="resp_old", realtime=False, done=False)
    await peer.wait_for(lambda: len(peer.events("media")) >= 25, timeout=5)
    await sess.send("input.speech.started")
    await sess.send("transcript.agent", reply_id="resp_old", item_id="msg_1", text="cut", interrupted=True)
    await sess.send("reply.done", reply_id="resp_old", status="interrupted")
    # late audio of the interrupted reply (the server "does not recall" what it already sent) must be dropped
    await sess.send("reply.audio", reply_id="resp_old", data=base64.b64encode(tone(700, 0.2, 24000)).decode())
    await sess.reply(tone(1200, 0.5, 24000), reply_id="resp_new", realtime=False)
    await peer.wait_for(lambda: len(peer.events("clear")) == 1, timeout=5)
    await asyncio.sleep(1.0)
    i = _index_of_clear(peer)
    before = peer.received[:i]
    after = [r for r in peer.received[i + 1 :] if r.msg.get("event") == "media"]
    assert len([r for r in before if r.msg.get("event") == "media"]) < 60, "old reply must not have been dumped"
    assert len(after) >= 24, "the new reply must be heard in full (0.5 s = 25 frames)"
    for r in after:  # every single frame after the clear belongs to the new reply
        pcm = g711.ulaw_to_pcm16(base64.b64decode(r.msg["media"]["payload"]))
        assert _power(pcm, 700) < 0.1 * _power(pcm, 1200) + 1e3, "a frame of the interrupted reply after clear"
    assert len(peer.events("clear")) == 1


async def test_an_interrupted_reply_leaves_no_tail_for_the_next_one_even_when_all_it_sent_has_played(
    start_gateway, new_peer, fake_agent
):
    # The agent's audio of the old reply stalls: everything the gateway could frame has been sent and has played,
    # but the outbound converter still holds its tail (a half frame in the framer, the resampler's block).
    # reply.done{interrupted} then finds nothing queued or unplayed: no clear is needed, yet that tail must
    # still be dropped, or it would open the next reply.
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(700, 0.31, 24000), reply_id="resp_old", realtime=False, done=False)
    await peer.wait_for(lambda: len(peer.events("media")) >= 5, timeout=5)
    n_old = -1
    while n_old != len(peer.events("media")):  # the gateway has sent all it will of the old reply ...
        n_old = len(peer.events("media"))
        await asyncio.sleep(0.3)
    await asyncio.sleep(0.5)  # ... and it has played at the carrier (the lead is ≤ 0.2 s)
    await sess.send("transcript.agent", reply_id="resp_old", item_id="msg_1", text="cut", interrupted=True)
    await sess.send("reply.done", reply_id="resp_old", status="interrupted")
    await sess.reply(tone(1200, 0.5, 24000), reply_id="resp_new", realtime=False)
    await peer.wait_for(lambda: len(peer.events("media")) >= n_old + 24, timeout=5)
    await asyncio.sleep(0.3)
    new = peer.events("media")[n_old:]
    assert len(new) >= 24, "the new reply must be heard in full (0.5 s = 25 frames)"
    for r in new:  # every frame sent after the interruption belongs to the new reply
        pcm = g711.ulaw_to_pcm16(base64.b64decode(r.msg["media"]["payload"]))
        assert _power(pcm, 700) < 0.1 * _power(pcm, 1200) + 1e3, "a tail of the interrupted reply was sent"


def _power(pcm: bytes, freq: float) -> float:
    import numpy as np

    x = np.frombuffer(pcm, dtype="<i2").astype(float)
    n = np.arange(len(x))
    return float(abs(np.sum(x * np.exp(-2j * np.pi * freq * n / 8000))) ** 2 / len(x))


def _index_of_clear(peer) -> int:
    return next(i for i, r in enumerate(peer.received) if r.msg.get("event") == "clear")


async def test_speech_started_while_audio_is_unplayed_at_the_carrier_clears_it(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(700, 0.5, 24000), realtime=False)  # completed reply, still playing at the carrier
    await peer.wait_for(lambda: len(peer.events("media")) >= 5)
    await sess.send("input.speech.started")
    await peer.wait_for(lambda: len(peer.events("clear")) == 1, timeout=3)
    n_media = len(peer.events("media"))
    await asyncio.sleep(0.4)
    assert len(peer.events("media")) == n_media


async def test_tool_result_waits_for_reply_done(start_gateway, new_peer, fake_agent, aiohttp_server):
    from aiohttp import web

    seen = []

    async def tool(request):
        seen.append(await request.json())
        return web.Response(text='{"open": true}')

    app = web.Application()
    app.router.add_post("/hours", tool)
    tool_server = await aiohttp_server(app)
    cfg = _write_config(
        f"""
[profiles.default]
tools = ["end_call", "opening_hours"]
[tools.opening_hours]
url = "{tool_server.make_url("/hours")}"
description = "Is the shop open?"
parameters = {{ type = "object", properties = {{ day = {{ type = "string" }} }} }}
"""
    )
    gw = await start_gateway(cfg)
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    assert [t["name"] for t in sess.config["tools"]] == ["end_call", "opening_hours"]
    await sess.send("reply.started", reply_id="resp_a", item_id="msg_a")
    await sess.send("tool.call", call_id="chatcmpl-tool-1", name="opening_hours", arguments={"day": "monday"})
    await asyncio.sleep(0.5)  # the tool has finished by now, but reply A is still open
    assert seen == [{"day": "monday"}]
    assert not [m for m in sess.received if m["type"] == "tool.result"]
    await sess.send("reply.done", reply_id="resp_a", status="completed")
    result = await sess.next_message("tool.result")
    assert result == {
        "type": "tool.result",
        "call_id": "chatcmpl-tool-1",
        "result": '{"open": true}',
        "is_error": False,
    }
    # an unknown tool still gets an answer, as an error
    await sess.send("tool.call", call_id="chatcmpl-tool-2", name="no_such_tool", arguments={})
    err = await sess.next_message("tool.result")
    assert err["call_id"] == "chatcmpl-tool-2" and err["is_error"] is True


async def test_a_tool_answer_that_is_not_valid_text_is_a_tool_error_and_the_call_goes_on(
    start_gateway, new_peer, fake_agent, aiohttp_server
):
    """An HTTP tool whose answer does not decode in its charset (Latin-1 bytes labelled JSON, so UTF-8) failed as a
    tool: the agent gets an is_error tool.result and the call goes on (it once ended the call as internal_error)."""
    from aiohttp import web

    async def tool(request: web.Request) -> web.Response:
        return web.Response(body=b'{"name": "M\xfcller"}', content_type="application/json")  # Latin-1, not UTF-8

    app = web.Application()
    app.router.add_post("/lookup", tool)
    tool_server = await aiohttp_server(app)
    gw = await start_gateway(
        write_config(
            '[profiles.default]\ntools = ["end_call", "lookup"]\n'
            f'[tools.lookup]\nurl = "{tool_server.make_url("/lookup")}"\ndescription = "Look up a customer."\n'
            'parameters = { type = "object", properties = { q = { type = "string" } } }\n'
        )
    )
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect()
        sess = await fake_agent.session()
        await sess.send("reply.started", reply_id="resp_a", item_id="msg_a")
        await sess.send("tool.call", call_id="call_1", name="lookup", arguments={"q": "x"})
        await sess.send("reply.done", reply_id="resp_a", status="completed")
        try:
            result = await sess.next_message("tool.result", timeout=3)
        except TimeoutError:
            result = None
        await asyncio.sleep(0.2)
        ended = events(logs, "call.ended")
    assert not ended, f"the call ended: {ended[0]['outcome']} {ended[0].get('error')}"
    assert result is not None and result["is_error"] is True
    assert "M\ufffdller" in json.loads(result["result"])["body"]  # what did decode reaches the agent
    assert not peer.closed.is_set()


async def test_a_tool_that_raises_is_a_tool_error_logged_once_and_the_call_goes_on(
    start_gateway, new_peer, fake_agent, monkeypatch
):
    """Whatever a tool raises (here: a bug injected into the HTTP tool runner) ends that tool, never the call: the
    agent gets an is_error tool.result, tool.internal_error logs it once, and the next tool call still runs."""
    from gateway.tools.registry import ToolRegistry
    from tests.unit.test_log_schema import check_event

    async def broken(self: ToolRegistry, name: str, tool: Any, arguments: Any) -> Any:
        raise RuntimeError("injected")

    monkeypatch.setattr(ToolRegistry, "_run_http", broken)
    gw = await start_gateway(
        write_config(
            '[profiles.default]\ntools = ["end_call", "lookup"]\n'
            '[tools.lookup]\nurl = "http://127.0.0.1:9/lookup"\ndescription = "Look up a customer."\n'
        )
    )
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect()
        sess = await fake_agent.session()
        await sess.send("reply.started", reply_id="resp_a", item_id="msg_a")
        await sess.send("tool.call", call_id="call_1", name="lookup", arguments={"q": "x"})
        await sess.send("reply.done", reply_id="resp_a", status="completed")
        result = await sess.next_message("tool.result", timeout=3)
        await sess.send("tool.call", call_id="call_2", name="no_such_tool", arguments={})
        second = await sess.next_message("tool.result", timeout=3)
        await asyncio.sleep(0.2)
        ended = events(logs, "call.ended")
        failed = events(logs, "tool.internal_error")
    assert not ended, f"the call ended: {ended[0]['outcome']} {ended[0].get('error')}"
    assert result["call_id"] == "call_1" and result["is_error"] is True
    assert json.loads(result["result"]) == {"ok": False, "error": "the tool failed: RuntimeError"}
    assert second["call_id"] == "call_2" and second["is_error"] is True
    assert [(e["tool"], e["call_id"], e["error"]) for e in failed] == [("lookup", "call_1", "RuntimeError('injected')")]
    check_event({k: v for k, v in failed[0].items() if k != "exc_info"})  # the renderer makes it `exception`
    assert not peer.closed.is_set()


async def test_tool_results_of_an_interrupted_reply_are_discarded(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.send("reply.started", reply_id="resp_a", item_id="msg_a")
    await sess.send("tool.call", call_id="chatcmpl-tool-9", name="no_such_tool", arguments={})
    await asyncio.sleep(0.2)
    await sess.send("reply.done", reply_id="resp_a", status="interrupted")
    await asyncio.sleep(0.3)
    assert not [m for m in sess.received if m["type"] == "tool.result"]


async def test_end_call_hangs_up_only_after_the_goodbye_has_played(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.send("reply.started", reply_id="resp_a", item_id="msg_a")
    await sess.send("tool.call", call_id="chatcmpl-tool-3", name="end_call", arguments={"reason": "bye"})
    await sess.send("reply.done", reply_id="resp_a", status="completed")
    await sess.next_message("tool.result")
    goodbye = tone(600, 1.5, 24000)
    await sess.reply(goodbye, realtime=False, text="Goodbye!")
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
    # Everything of the goodbye was played (in the peer's real-time playout) before the socket closed.
    assert len(peer.played) >= 1.5 * 8000
    marks = peer.events("mark")
    assert marks, "a mark must follow the goodbye"
    assert sess.ended_by_client
    await asyncio.sleep(0.05)
    assert call_tasks() == []


async def test_carrier_hangup_ends_agent_session_and_leaves_no_task(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await peer.send_media(ulaw_tone(300, 0.2))
    with structlog.testing.capture_logs() as logs:
        await peer.stop()
        await peer.wait_for(lambda: sess.closed.is_set(), timeout=5)
        await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
        await asyncio.sleep(0.05)
    assert sess.ended_by_client  # session.end sent, so billing stops at once
    assert call_tasks() == []
    ended = [e for e in logs if e["event"] == "call.ended"]
    assert ended and ended[0]["outcome"] == "caller_hangup" and ended[0]["hung_up_by"] == "caller"
    # A clean end is reported as one: the agent's own close code (1000 after session.ended), not 1006, a drop.
    closed = [e for e in logs if e["event"] == "agent.closed"]
    assert [e["close_code"] for e in closed] == [1000] and ended[0]["agent_close_code"] == 1000


async def test_malformed_carrier_json_ends_that_call_only(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    good = await new_peer(gw)
    await good.connect()
    good_sess = await fake_agent.session()
    bad = await new_peer(gw)
    await bad.connect()
    await fake_agent.session()
    with structlog.testing.capture_logs() as logs:
        await bad.ws.send_str('{"event": "media", "streamSid": ')  # truncated JSON
        await bad.wait_for(lambda: bad.closed.is_set(), timeout=5)
    errors = [e for e in logs if e["event"] == "call.protocol_error"]
    assert errors and "invalid JSON" in errors[0]["error"] and errors[0]["side"] == "carrier"
    # the other call is unaffected
    n = len(good_sess.audio)
    await good.send_media(ulaw_tone(440, 0.2))
    await good.wait_for(lambda: len(good_sess.audio) > n + 9000, timeout=5)
    assert not good.closed.is_set()


async def test_stream_with_forged_token_is_refused_without_an_agent_session(start_gateway, new_peer, fake_agent):
    gw = await start_gateway()
    peer = await new_peer(gw)
    params = dict(peer.parameters, token="v2.9999999999.n0nce.forged")
    await peer.connect(parameters=params)
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    assert peer.close_code == 1008
    assert fake_agent.sessions == []


async def test_healthz_and_readyz(start_gateway, http):
    gw = await start_gateway()
    async with http.get(gw.base_url + "/healthz") as r:
        assert r.status == 200
    async with http.get(gw.base_url + "/readyz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ready"


def _write_config(text: str) -> str:
    import tempfile

    f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    f.write(text)
    f.close()
    return f.name

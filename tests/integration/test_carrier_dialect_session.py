"""CallSession behaviours that depend on the dialect (issue #9), over real loopback sockets with the fake agent:
a dialect without a checkpoint verb (``build_mark`` → None) has its marks resolved by the clock model, and the
session's outbound message sizes follow the dialect's bounds."""

from __future__ import annotations

import asyncio
import base64

import pytest

from gateway.carriers.registry import TwilioDialect
from gateway.keys import CALLS
from tests.support.audio import tone
from tests.support.twilio_peer import media_bytes


async def test_without_a_checkpoint_verb_marks_resolve_from_the_clock_model(
    start_gateway, new_peer, fake_agent, monkeypatch
):
    monkeypatch.setattr(TwilioDialect, "build_mark", lambda self, name: None)
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(700, 1.0, 24000))
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= 8000, timeout=5)
    await asyncio.sleep(0.6)  # the reply's end mark resolves once the model says the last audio played
    await peer.stop()
    await peer.closed.wait()
    calls = gw.app[CALLS]
    await peer.wait_for(lambda: bool(calls.completed), timeout=5)
    summary = calls.completed[-1]
    assert peer.events("mark") == []  # nothing was sent for the marks
    assert summary.mark_round_trips_ms, summary  # … yet they resolved: from the clock, at the modelled lead
    assert all(0 <= rt <= 400 for rt in summary.mark_round_trips_ms), summary.mark_round_trips_ms


@pytest.mark.parametrize(("minimum_ms", "expect_frames"), [(100, 5), (20, 1)])
async def test_outbound_messages_hold_at_least_the_dialects_minimum(
    minimum_ms, expect_frames, start_gateway, new_peer, fake_agent, monkeypatch
):
    monkeypatch.setattr(TwilioDialect, "min_message_ms", minimum_ms)
    gw = await start_gateway()
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(700, 0.5, 24000) + tone(700, 0.03, 24000))  # 530 ms: the tail is padded to a whole message
    await peer.wait_for(lambda: len(media_bytes(peer.received)) >= 4240, timeout=5)
    await asyncio.sleep(0.3)
    sizes = [len(base64.b64decode(r.msg["media"]["payload"])) for r in peer.events("media")]
    assert sizes and all(size == 160 * expect_frames for size in sizes), sizes


# ---- call control belongs to the carrier that carries the call -----------------------------------------------------
@pytest.fixture
async def fake_rest(aiohttp_server):
    from tests.support.fake_twilio_rest import FakeTwilioRest

    rest = FakeTwilioRest(auth_token="tw-auth-token")
    server = await aiohttp_server(rest.app)
    rest.url = str(server.make_url("")).rstrip("/")
    return rest


async def _telnyx_stream(gw, http, call_id: str):
    """A Telnyx media stream (the golden fixtures' shapes) carrying ``call_id``, its token minted for the Telnyx
    door."""
    import time

    from gateway.outbound import token_subject
    from gateway.security import mint_call_token
    from tests.support.carrier_fixtures import fixture, text

    token = mint_call_token(b"test-secret", token_subject({}, call_id, "default"), time.time(), 300, scope="telnyx")
    start = fixture("telnyx", "start")
    start["start"]["call_control_id"] = call_id
    start["start"]["custom_parameters"] = {"token": token}
    ws = await http.ws_connect(gw.base_url.replace("http", "ws") + "/telnyx/stream")
    await ws.send_str(text(fixture("telnyx", "connected")))
    await ws.send_str(text(start))
    return ws, start["stream_id"]


async def test_a_telnyx_call_is_never_transferred_over_twilio_rest(
    start_gateway, fake_agent, fake_rest, http, tmp_path
):
    # Twilio REST configured (TWILIO_ACCOUNT_SID + TWILIO_AUTH_TOKEN) must not make it every carrier's call control:
    # a Telnyx call's transfer_call is answered cleanly as not available on this carrier, the call goes on, and
    # nothing reaches Twilio's API (a ``v3:…`` id there was a ValueError that ended the call as internal_error).
    import json

    from tests.support.carrier_fixtures import fixture, text
    from tests.support.logcapture import capture_call_logs, wait_event

    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        '[profiles.default]\ngreeting = ""\ntools = ["end_call", "transfer_call"]\n'
        'transfer_allow = ["+1555*"]\nend_call_timeout_s = 0.3\n'
    )
    gw = await start_gateway(
        str(cfg),
        TWILIO_ACCOUNT_SID=fake_rest.account_sid,
        TWILIO_AUTH_TOKEN="tw-auth-token",
        TWILIO_API_BASE_URL=fake_rest.url,
    )
    with capture_call_logs() as logs:
        ws, stream_id = await _telnyx_stream(gw, http, "v3:telnyx-call-control-id")
        sess = await fake_agent.session()
        await sess.send("reply.started", reply_id="resp_t", item_id="msg_t")
        await sess.send(
            "tool.call",
            call_id="call_t",
            name="transfer_call",
            arguments={"destination": "+15550003333", "announcement": "One moment."},
        )
        await sess.send("reply.done", reply_id="resp_t", status="completed")
        result = await sess.next_message("tool.result", timeout=10)
        await asyncio.sleep(0.8)  # longer than end_call_timeout_s: a pending transfer would have gone out by now
        still_up = not ws.closed  # the call goes on
        if still_up:
            stop = fixture("telnyx", "stop")
            stop["stop"]["call_control_id"] = "v3:telnyx-call-control-id"
            await ws.send_str(text(stop))
        ended = await wait_event(logs, "call.ended", timeout=10)
    await ws.close()
    assert ended["outcome"] != "internal_error", ended
    assert fake_rest.requests == []
    assert still_up and ended["outcome"] == "caller_hangup", ended
    assert result["is_error"] is True
    assert "not available" in json.loads(result["result"])["error"]

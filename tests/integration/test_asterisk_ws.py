"""Asterisk chan_websocket (Asterisk connecting out to the gateway) through the real gateway and the fake cloud
agent, over loopback sockets. Asterisk's side is written here from its WebSocket channel driver documentation
(docs/how-to/pbx/asterisk-websocket.md): the dialplan's CURL() for the v() parameters, the upgrade with Basic auth
and subprotocol ``media``, MEDIA_START, binary frames without a header, DTMF_END, MEDIA_MARK_PROCESSED.

- the /calls endpoint needs the secret and answers v() parameters; the upgrade needs the connection's credentials;
- a call: audio both ways in whole frames, FLUSH_MEDIA on barge-in, MARK_MEDIA answered, DTMF_END reaches the agent,
  plain-text control messages get plain-text commands, the close ends the agent session;
- malformed input ends that call only, with a protocol error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any
from urllib.parse import parse_qsl

import aiohttp
import pytest

from tests.support.logcapture import capture_call_logs, events, wait_event

SECRET = "ast-secret"
AUTH = {"Authorization": aiohttp.encode_basic_auth("asterisk", SECRET)}


def media_start(fmt: str = "slin16", size: int = 640, json_format: bool = True) -> str:
    if json_format:
        return json.dumps({"event": "MEDIA_START", "connection_id": "conn-1", "channel": "WebSocket/gw-1",
                           "channel_id": "1733.1", "format": fmt, "optimal_frame_size": size, "ptime": 20})  # fmt: skip
    return f"MEDIA_START connection_id:conn-1 channel:WebSocket/gw-1 format:{fmt} optimal_frame_size:{size}"


async def gateway(start_gateway: Any, tmp_path: Any) -> Any:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[audio]\nmark_interval_ms = 200\n[profiles.default]\ngreeting = ""\ndtmf_mode = "reply"\n'
                   "dtmf_interdigit_ms = 100\n")  # fmt: skip
    return await start_gateway(str(cfg), ASTERISK_WS_SECRET=SECRET)


async def dial(gw: Any, http: Any, call: str, start: str | None = None, headers: Any = AUTH) -> Any:
    query = {"call": call, "from": "+15550001111", "to": "+15550002222"}
    async with http.get(gw.base_url + "/asterisk-ws/calls", params=query, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        v = await r.text()
    url = gw.base_url.replace("http", "ws") + "/asterisk-ws/stream?" + v.replace(",", "&")
    ws = await http.ws_connect(url, protocols=["media"], headers=headers)
    assert ws.protocol == "media"
    await ws.send_str(start or media_start())
    return ws


async def test_the_calls_endpoint_and_the_upgrade_need_the_secret(start_gateway, http, tmp_path):
    gw = await gateway(start_gateway, tmp_path)
    async with http.get(gw.base_url + "/asterisk-ws/calls", params={"call": "1733.9"}) as r:
        assert r.status == 403
    async with http.get(
        gw.base_url + "/asterisk-ws/calls", params={"call": "1733.9", "to": "+1 555"}, headers=AUTH
    ) as r:
        v = await r.text()
    params = dict(parse_qsl(v.replace(",", "&")))
    assert params["call"] == "1733.9" and params["token"] and params["to"] == "+1 555" and " " not in v
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await dial(gw, http, "1733.10", headers={})
    assert refused.value.status == 403


@pytest.mark.parametrize("json_format", [True, False])
async def test_a_call_carries_audio_flushes_on_barge_in_marks_dtmf_and_the_hang_up(
    json_format, start_gateway, http, fake_agent, tmp_path
):
    gw = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        ws = await http_ws(gw, http, json_format)
        sess = await fake_agent.session()
        for _ in range(10):
            await ws.send_bytes(b"\x10\x00" * 320)
        speaking = asyncio.create_task(sess.reply(b"\x00\x08" * 48000, done=False))
        sizes, texts = [], []

        async def read_until(done: Any) -> None:
            async with asyncio.timeout(5):
                while not done():
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        sizes.append(len(msg.data))
                    else:
                        texts.append(msg.data)

        flush = '{"command":"FLUSH_MEDIA"}' if json_format else "FLUSH_MEDIA"
        await read_until(lambda: sum(sizes) >= 640 * 25 and (texts or not json_format))
        if json_format:
            mark = json.loads(texts[0])
            await ws.send_str(json.dumps({"event": "MEDIA_MARK_PROCESSED", "correlation_id": mark["correlation_id"]}))
        await sess.send("input.speech.started")
        await read_until(lambda: flush in texts)
        speaking.cancel()
        dtmf = json.dumps({"event": "DTMF_END", "digit": "9"}) if json_format else "DTMF_END digit:9"
        await ws.send_str(dtmf)
        keys = await sess.next_message("reply.create", timeout=5)
        await ws.close()
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert all(size % 640 == 0 for size in sizes), sizes  # whole frames: Asterisk drops a shorter tail
    if json_format:
        assert mark["command"] == "MARK_MEDIA" and set(mark) == {"command", "correlation_id"}
    else:
        assert texts == [flush]  # no marks in plain text: they resolve from the clock
    assert "9" in str(keys) and events(logs, "call.barge_in")
    assert ended["outcome"] == "carrier_closed" and ended["call_sid"] == "1733.42", ended
    async with asyncio.timeout(5):
        await sess.closed.wait()


async def http_ws(gw: Any, http: Any, json_format: bool) -> Any:
    return await dial(gw, http, "1733.42", media_start(json_format=json_format))


@pytest.mark.parametrize(
    ("start", "then", "error"),
    [
        (media_start("opus", 80), None, "format 'opus'"),
        (None, b"\x00" * 641, "odd length 641"),
        (None, "{broken", "invalid JSON"),
        (None, "lowercase words", "neither JSON"),
        (None, media_start(), "second MEDIA_START"),
    ],
)
async def test_malformed_input_ends_that_call_only(start, then, error, start_gateway, http, fake_agent, tmp_path):
    gw = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        good = await dial(gw, http, "1733.1")
        good_session = await fake_agent.session()
        bad = await dial(gw, http, "1733.2", start)
        if then is not None:
            await fake_agent.session()
            await (bad.send_bytes(then) if isinstance(then, bytes) else bad.send_str(then))
        logged = await wait_event(logs, "call.protocol_error")
        async with asyncio.timeout(5):
            while not bad.closed:
                await bad.receive()
        before = len(good_session.audio)
        await good.send_bytes(b"\x20\x00" * 320)
        async with asyncio.timeout(5):
            while len(good_session.audio) == before:
                await asyncio.sleep(0.01)
        assert not events(logs, "call.ended", call_sid="1733.1")
        await good.close()
    assert error in logged["error"], logged


async def test_the_agents_hang_up_closes_the_socket(start_gateway, http, fake_agent, tmp_path):
    # A close from the app hangs up the WebSocket channel; Dial() returns.
    gw = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        ws = await dial(gw, http, "1733.77")
        sess = await fake_agent.session()
        await sess.send("session.ended", reason="agent_hangup")
        async with asyncio.timeout(10):
            while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert ended["outcome"] == "agent_ended" and ws.close_code == 1000, (ended, ws.close_code)

"""FreeSWITCH mod_audio_fork through the real gateway and the fake cloud agent, over loopback sockets. FreeSWITCH's
side is written here from the module's documentation (docs/how-to/pbx/freeswitch.md): the dialplan's ``curl`` for
the metadata, the WebSocket with subprotocol ``audio.drachtio.org``, the metadata as the first text frame, then
binary L16; from the gateway binary L16, ``killAudio`` and ``mark``.

- the metadata endpoint needs the secret and answers one space-free JSON object;
- the server selects the subprotocol; audio flows both ways; a barge-in sends ``killAudio`` and the pending marks
  come back ``cleared``; a DTMF text frame reaches the agent; FreeSWITCH's hang-up (the close) ends the session;
- malformed input (binary before the metadata, odd PCM, bad JSON) ends that call only, with a protocol error.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest

from tests.support.logcapture import capture_call_logs, events, wait_event

SECRET = "fs-secret"
AUTH = {"Authorization": aiohttp.encode_basic_auth("freeswitch", SECRET)}


async def gateway(start_gateway: Any, tmp_path: Any) -> Any:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        "[carriers.freeswitch]\nsample_rate = 16000\n"
        '[profiles.default]\ngreeting = ""\ndtmf_mode = "reply"\ndtmf_interdigit_ms = 100\n'
    )
    return await start_gateway(str(cfg), FREESWITCH_SECRET=SECRET)


async def metadata(gw: Any, http: Any, call_uuid: str) -> str:
    query = {"uuid": call_uuid, "from": "+15550001111", "to": "+15550002222"}
    async with http.get(gw.base_url + "/freeswitch/calls", params=query, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return await r.text()


async def fork(gw: Any, http: Any, call_uuid: str) -> aiohttp.ClientWebSocketResponse:
    meta = await metadata(gw, http, call_uuid)
    ws = await http.ws_connect(
        gw.base_url.replace("http", "ws") + "/freeswitch/stream", protocols=["audio.drachtio.org"]
    )
    assert ws.protocol == "audio.drachtio.org"  # libwebsockets wants the offered subprotocol echoed
    await ws.send_str(meta)
    return ws


async def test_the_metadata_endpoint_needs_the_secret_and_answers_space_free_json(start_gateway, http, tmp_path):
    gw = await gateway(start_gateway, tmp_path)
    async with http.get(gw.base_url + "/freeswitch/calls", params={"uuid": "abc"}) as r:
        assert r.status == 403
    async with http.get(gw.base_url + "/freeswitch/calls", headers=AUTH) as r:
        assert r.status == 400  # no uuid
    text = await metadata(gw, http, "5a1b2c3d-0000-4000-8000-000000000001")
    meta = json.loads(text)
    assert " " not in text and meta["uuid"] == "5a1b2c3d-0000-4000-8000-000000000001" and meta["rate"] == 16000
    assert meta["token"] and meta["to"] == "+15550002222"


async def test_a_forked_call_carries_audio_both_ways_barge_in_dtmf_and_the_hang_up(
    start_gateway, http, fake_agent, tmp_path
):
    gw = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        ws = await fork(gw, http, "fs-call-1")
        sess = await fake_agent.session()
        for _ in range(10):
            await ws.send_bytes(b"\x10\x00" * 320)  # 20 ms of 16 kHz L16
        speaking = asyncio.create_task(sess.reply(b"\x00\x08" * 48000, done=False))  # 2 s, in real time
        received, texts = bytearray(), []

        async def read_until(done: Any) -> None:
            async with asyncio.timeout(5):
                while not done():
                    msg = await ws.receive()
                    if msg.type is aiohttp.WSMsgType.BINARY:
                        received.extend(msg.data)
                    else:
                        texts.append(json.loads(msg.data))

        await read_until(lambda: len(received) >= 640 * 25 and any(t["type"] == "mark" for t in texts))
        await sess.send("input.speech.started")  # the caller talks over it: barge-in
        await read_until(lambda: any(t["type"] == "killAudio" for t in texts))
        speaking.cancel()
        await ws.send_str(json.dumps({"type": "dtmf", "digit": "7"}))
        keys = await sess.next_message("reply.create", timeout=5)
        await ws.close()  # the channel ends
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert {"type": "killAudio"} in texts
    marks = [t for t in texts if t["type"] == "mark"]
    assert marks and all(set(m) == {"type", "data"} and set(m["data"]) == {"name"} for m in marks), marks
    assert len(received) % 2 == 0 and len(sess.audio) > 0
    assert "7" in str(keys)
    assert events(logs, "call.barge_in")
    assert ended["outcome"] == "carrier_closed" and ended["call_sid"] == "fs-call-1", ended
    async with asyncio.timeout(5):
        await sess.closed.wait()
    assert sess.ended_by_client


@pytest.mark.parametrize(
    ("first", "then", "error"),
    [
        (b"\x00\x00" * 320, None, "binary audio before the metadata"),
        (None, b"\x00" * 321, "binary frame of 321 bytes"),
        (None, "{not json", "invalid JSON"),
        (None, '{"type":"mark","data":{"name":"m1"}}', "playout or cleared"),
    ],
)
async def test_malformed_input_ends_that_call_only(first, then, error, start_gateway, http, fake_agent, tmp_path):
    gw = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        good = await fork(gw, http, "fs-good")
        good_session = await fake_agent.session()
        if first is not None:
            bad = await http.ws_connect(gw.base_url.replace("http", "ws") + "/freeswitch/stream")
            await bad.send_bytes(first)
        else:
            bad = await fork(gw, http, "fs-bad")
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
        assert not events(logs, "call.ended", call_sid="fs-good")
        await good.close()
    assert error in logged["error"], logged


async def test_the_agents_hang_up_closes_the_socket(start_gateway, http, fake_agent, tmp_path):
    # mod_audio_fork fires mod_audio_fork::disconnect on the close; the dialplan's script hangs up on it.
    gw = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        ws = await fork(gw, http, "fs-bye")
        sess = await fake_agent.session()
        await sess.send("session.ended", reason="agent_hangup")
        async with asyncio.timeout(10):
            while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert ended["outcome"] == "agent_ended" and ws.close_code == 1000, (ended, ws.close_code)

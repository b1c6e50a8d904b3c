"""Asterisk AudioSocket through the real gateway (its TCP listener and UUID endpoint) and the fake cloud agent, over
loopback sockets. The PBX side is written here from the protocol's description (docs/how-to/pbx/asterisk-audiosocket.md:
kind, 16-bit big-endian length, payload), not with the gateway's dialect.

- the dialplan's UUID: issued by ``GET /audiosocket/calls`` with the secret, single use; without the secret 401;
- a call: caller audio reaches the agent, the agent's audio comes back as 20 ms slin frames, DTMF reaches the
  agent, the caller's hang-up (TCP close) ends the agent session, the agent's hang-up sends ``00 00 00``;
- a UUID never issued is refused; from an allowed network it is admitted;
- malformed frames (unknown kind, a frame cut short by the close, an oversized payload, a UUID of the wrong length)
  end that call with a logged protocol error, while another call on the same listener goes on.
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
from typing import Any

import pytest

from gateway.keys import AUDIOSOCKET
from tests.support.logcapture import capture_call_logs, events, wait_event

SECRET = "pbx-secret"
SLIN_20MS = 320  # 8 kHz, 16-bit, 20 ms
AUTH = {"Authorization": "Basic " + base64.b64encode(f"asterisk:{SECRET}".encode()).decode()}


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


class Pbx:
    """Asterisk's side of one AudioSocket connection: frames out, frames in."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.audio = bytearray()
        self.frames: list[tuple[int, int]] = []  # (kind, length) of every frame received

    @classmethod
    async def connect(cls, address: tuple[str, int]) -> Pbx:
        reader, writer = await asyncio.open_connection(*address)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def read_frame(self, timeout: float = 5.0) -> tuple[int, bytes] | None:
        """The next frame, or None at the end of the stream."""
        async with asyncio.timeout(timeout):
            try:
                kind, length = struct.unpack(">BH", await self.reader.readexactly(3))
                payload = await self.reader.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                assert exc.partial == b"", f"the gateway cut a frame short: {exc.partial!r}"
                return None
        self.frames.append((kind, length))
        if kind == 0x10:
            self.audio += payload
        return kind, payload

    async def read_until_closed(self, timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while await self.read_frame(timeout) is not None:
                pass

    def close(self) -> None:
        self.writer.close()


async def gateway(
    start_gateway: Any, tmp_path: Any, extra: str = "", end_call_timeout_s: float = 15.0, **env: str
) -> tuple[Any, tuple[str, int]]:
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(
        f'[carriers.audiosocket]\nlisten = "127.0.0.1:0"\n{extra}\n'
        '[profiles.default]\ngreeting = ""\ndtmf_mode = "reply"\ndtmf_interdigit_ms = 100\ntools = ["end_call"]\n'
        f"end_call_timeout_s = {end_call_timeout_s}\n"
    )
    gw = await start_gateway(str(cfg), AUDIOSOCKET_SECRET=SECRET, **env)
    address = gw.app[AUDIOSOCKET].address
    assert address is not None
    return gw, address


async def issue(gw: Any, http: Any, **query: str) -> str:
    async with http.get(gw.base_url + "/audiosocket/calls", params=query, headers=AUTH) as r:
        assert r.status == 200, await r.text()
        return await r.text()


async def start_call(gw: Any, http: Any, address: tuple[str, int]) -> tuple[Pbx, str]:
    call_uuid = await issue(gw, http, to="+15550002222", **{"from": "+15550001111"})
    pbx = await Pbx.connect(address)
    await pbx.send(frame(0x01, uuid.UUID(call_uuid).bytes))
    return pbx, call_uuid


async def test_the_uuid_endpoint_needs_the_secret_and_issues_a_fresh_uuid(start_gateway, http, tmp_path):
    gw, _ = await gateway(start_gateway, tmp_path)
    async with http.get(gw.base_url + "/audiosocket/calls") as r:
        assert r.status == 403
    bearer = {"Authorization": f"Bearer {SECRET}"}
    async with http.get(gw.base_url + "/audiosocket/calls", headers=bearer) as r:
        first = await r.text()
        assert r.status == 200 and r.content_type == "text/plain"
    second = await issue(gw, http)
    assert str(uuid.UUID(first)) == first and first != second


async def test_a_call_carries_audio_both_ways_dtmf_and_the_callers_hang_up(start_gateway, http, fake_agent, tmp_path):
    gw, address = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        pbx, call_uuid = await start_call(gw, http, address)
        sess = await fake_agent.session()
        for _ in range(10):
            await pbx.send(frame(0x10, b"\x10\x00" * (SLIN_20MS // 2)))
        await pbx.send(frame(0x03, b"5") + frame(0x03, b"#"))  # two frames in one segment
        # The agent speaks 200 ms (24 kHz PCM in the agent protocol): it comes back as 8 kHz slin, 20 ms a frame.
        await sess.reply(b"\x00\x08" * 4800, realtime=False)
        async with asyncio.timeout(10):
            while len(pbx.audio) < 10 * SLIN_20MS:
                assert await pbx.read_frame() is not None
        started = await wait_event(logs, "call.started")
        dtmf = await wait_event(logs, "call.dtmf")
        keys = await sess.next_message("reply.create", timeout=5)
        pbx.close()  # Asterisk's hang-up: the connection closes
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert started["call_sid"] == call_uuid and started["carrier"] == "audiosocket"
    assert dtmf["call_sid"] == call_uuid and "5 #" in str(keys), keys
    assert {kind for kind, _ in pbx.frames} == {0x10}
    assert {length for _, length in pbx.frames} == {SLIN_20MS}  # one 20 ms frame per write
    assert len(sess.audio) > 0  # caller audio reached the agent
    assert ended["outcome"] == "caller_hangup", ended
    async with asyncio.timeout(5):
        await sess.closed.wait()
    assert sess.ended_by_client


async def test_a_uuid_is_good_for_one_connection_and_an_unknown_one_is_refused(
    start_gateway, http, fake_agent, tmp_path
):
    gw, address = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        pbx, call_uuid = await start_call(gw, http, address)
        await fake_agent.session()
        again = await Pbx.connect(address)
        await again.send(frame(0x01, uuid.UUID(call_uuid).bytes))
        await again.read_until_closed()
        stranger = await Pbx.connect(address)
        await stranger.send(frame(0x01, uuid.uuid4().bytes))
        await stranger.read_until_closed()
        refused = [e for e in logs if e["event"] == "call.refused"]
        assert len(refused) == 2, refused
        assert not pbx.writer.is_closing()  # the first call goes on
        pbx.close()
        await wait_event(logs, "call.ended", outcome="caller_hangup", timeout=10)
    assert len(fake_agent.sessions) == 1


async def test_an_allowed_network_needs_no_issued_uuid(start_gateway, http, fake_agent, tmp_path):
    gw, address = await gateway(start_gateway, tmp_path, 'allowed_networks = ["127.0.0.0/8"]')
    with capture_call_logs() as logs:
        pbx = await Pbx.connect(address)
        await pbx.send(frame(0x01, uuid.uuid4().bytes))
        await fake_agent.session()
        await wait_event(logs, "call.started")
        await pbx.send(frame(0x00))  # a hang-up frame from the PBX side ends it too
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert ended["outcome"] == "caller_hangup"


MALFORMED = {
    "bad_kind": frame(0x42, b"xx"),
    "truncated": struct.pack(">BH", 0x10, SLIN_20MS) + b"\x00" * 100,  # then the close
    "oversized": struct.pack(">BH", 0x10, 60000),
    "odd_audio": frame(0x10, b"\x00" * 321),
    "wrong_rate": frame(0x12, b"\x00" * 640),
    "second_uuid": frame(0x01, uuid.uuid4().bytes),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
async def test_a_malformed_frame_ends_that_call_only(case, start_gateway, http, fake_agent, tmp_path):
    gw, address = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        good, good_uuid = await start_call(gw, http, address)
        good_session = await fake_agent.session()
        bad, bad_uuid = await start_call(gw, http, address)
        await fake_agent.session()
        await bad.send(MALFORMED[case])
        if case == "truncated":
            bad.writer.write_eof()
        await bad.read_until_closed()
        error = await wait_event(logs, "call.protocol_error", call_sid=bad_uuid)
        ended = await wait_event(logs, "call.ended", call_sid=bad_uuid, timeout=10)
        # The other call goes on: its audio still reaches its agent session.
        before = len(good_session.audio)
        for _ in range(5):
            await good.send(frame(0x10, b"\x20\x00" * (SLIN_20MS // 2)))
        async with asyncio.timeout(5):
            while len(good_session.audio) == before:
                await asyncio.sleep(0.01)
        assert not events(logs, "call.ended", call_sid=good_uuid)
        good.close()
        await wait_event(logs, "call.ended", call_sid=good_uuid, timeout=10)
    assert ended["outcome"] == "protocol_error" and error["side"] == "carrier", (error, ended)


async def test_a_uuid_frame_of_the_wrong_length_is_a_protocol_error(start_gateway, http, fake_agent, tmp_path):
    gw, address = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        pbx = await Pbx.connect(address)
        await pbx.send(frame(0x01, b"\x01" * 15))
        await pbx.read_until_closed()
        error = await wait_event(logs, "call.protocol_error")
    assert "16" in error["error"] and fake_agent.sessions == []


async def test_the_agents_hang_up_sends_the_hang_up_frame_then_closes(start_gateway, http, fake_agent, tmp_path):
    gw, address = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        pbx, _ = await start_call(gw, http, address)
        sess = await fake_agent.session()
        await sess.send("session.ended", reason="agent_hangup")
        kinds = []
        async with asyncio.timeout(10):
            while (got := await pbx.read_frame()) is not None:
                kinds.append(got[0])
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert kinds[-1] == 0x00 and set(kinds[:-1]) <= {0x10}, kinds
    assert ended["outcome"] == "agent_ended", ended


async def test_end_call_hangs_up_once_the_goodbye_has_played_by_the_clock(start_gateway, http, fake_agent, tmp_path):
    # AudioSocket echoes no marks: the goodbye's mark resolves from the pacing clock, then the hang-up frame goes.
    gw, address = await gateway(start_gateway, tmp_path)
    with capture_call_logs() as logs:
        pbx, _ = await start_call(gw, http, address)
        sess = await fake_agent.session()
        await sess.send("reply.started", reply_id="resp_bye", item_id="msg_a")
        await sess.send("tool.call", call_id="call_1", name="end_call", arguments={"reason": "bye"})
        await sess.send("reply.done", reply_id="resp_bye", status="completed")
        await sess.next_message("tool.result", timeout=10)
        await sess.reply(b"\x00\x08" * 12000, realtime=False)  # the goodbye: 500 ms
        kinds = []
        async with asyncio.timeout(10):
            while (got := await pbx.read_frame()) is not None:
                kinds.append(got[0])
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert ended["outcome"] == "agent_hangup", ended
    assert kinds[-1] == 0x00 and kinds.count(0x10) >= 25, kinds  # the goodbye played in full, then the hang-up


async def test_a_goodbye_said_with_end_call_in_one_reply_hangs_up_without_waiting_for_the_timeout(
    start_gateway, http, fake_agent, tmp_path
):
    # The local agent's way: the goodbye and end_call in one reply, nothing after it. The hang-up mark is then queued
    # alone, after every frame went out, and resolves from the clock: the call's clock must be re-armed for it
    # (it waited for end_call_timeout_s instead, 15 s by default).
    gw, address = await gateway(start_gateway, tmp_path, end_call_timeout_s=30.0)
    with capture_call_logs() as logs:
        pbx, _ = await start_call(gw, http, address)
        sess = await fake_agent.session()
        await sess.reply(b"\x00\x08" * 12000, reply_id="resp_bye", realtime=False, done=False)  # "Goodbye!"
        await sess.send("tool.call", call_id="call_1", name="end_call", arguments={"reason": "bye"})
        await sess.send("reply.done", reply_id="resp_bye", status="completed")
        async with asyncio.timeout(10):  # LAST_REPLY_START_S (3 s), then the mark: well inside end_call_timeout_s
            while await pbx.read_frame(timeout=10) is not None:
                pass
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert ended["outcome"] == "agent_hangup" and not events(logs, "call.end_call_timeout"), ended

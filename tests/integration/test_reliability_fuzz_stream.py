"""Property-based fuzzing of the media-stream endpoint (the real app over loopback, with the fake agent): sequences
of malformed, truncated, oversized, binary, out-of-order and wrong-streamSid messages, mixed with valid ones. For
every sequence: no crash (never ``internal_error``), the call ends the way the pure dialect predicts, with a clear
log event (``call.protocol_error`` / ``call.refused`` / ``call.ended``), the server closes a bad call's socket,
and a good call running alongside is unaffected."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
from aiohttp.test_utils import TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.app import create_app
from gateway.carriers.events import StreamStarted, StreamStopped
from gateway.carriers.twilio import TwilioStream
from gateway.config import load_settings
from gateway.errors import CarrierProtocolError
from gateway.keys import CALLS
from gateway.security import TokenError, verify_call_token
from tests.support.audio import ulaw_tone
from tests.support.fake_agent import FakeAgent
from tests.support.logcapture import capture_call_logs, events
from tests.support.twilio_peer import TwilioPeer

SECRET = "fuzz-secret"
OVERSIZE = 70 * 1024  # above server.max_message_bytes (64 KiB)


def _frames(peer: TwilioPeer, kinds: list[tuple[str, Any]]) -> list[str | bytes]:
    """Turn abstract message kinds into what goes on the wire for this peer's call."""
    sid, good_token = peer.stream_sid, peer.parameters["token"]
    fmt = {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}

    def start(token: str | None, stream_sid: str = sid) -> dict[str, Any]:
        params = dict(peer.parameters)
        params.pop("token")
        if token is not None:
            params["token"] = token
        return {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": stream_sid,
            "start": {
                "streamSid": stream_sid,
                "callSid": peer.call_sid,
                "accountSid": "AC" + "0" * 32,
                "tracks": ["inbound"],
                "customParameters": params,
                "mediaFormat": fmt,
            },
        }

    media = {
        "event": "media",
        "streamSid": sid,
        "media": {
            "track": "inbound",
            "chunk": "1",
            "timestamp": "20",
            "payload": base64.b64encode(b"\xff" * 160).decode(),
        },
    }
    out: list[str | bytes] = []
    for kind, arg in kinds:
        msg: Any
        if kind == "connected":
            msg = {"event": "connected", "protocol": "Call", "version": "1.0.0"}
        elif kind == "start":
            msg = start(good_token)
        elif kind == "start_bad_token":
            msg = start(arg or None)
        elif kind == "start_bad_format":
            msg = start(good_token)
            msg["start"]["mediaFormat"] = {"encoding": "audio/l16", "sampleRate": 16000, "channels": 1}
        elif kind == "media":
            msg = media
        elif kind == "media_other_sid":
            msg = {**media, "streamSid": arg}
        elif kind == "media_bad_payload":
            msg = {**media, "media": {**media["media"], "payload": arg}}
        elif kind == "mark":
            msg = {"event": "mark", "streamSid": sid, "mark": {"name": arg}}
        elif kind == "dtmf":
            msg = {"event": "dtmf", "streamSid": sid, "dtmf": {"track": "inbound_track", "digit": arg}}
        elif kind == "stop":
            msg = {"event": "stop", "streamSid": sid, "stop": {"accountSid": "AC", "callSid": peer.call_sid}}
        elif kind == "unknown":
            msg = {"event": arg, "streamSid": sid}
        elif kind == "json":
            msg = arg
        elif kind == "truncated":
            text = json.dumps(media)
            out.append(text[: max(1, arg % len(text))])
            continue
        elif kind == "text":
            out.append(arg)
            continue
        elif kind == "oversized":
            out.append(json.dumps({**media, "media": {"payload": "A" * OVERSIZE}}))
            continue
        elif kind == "binary":
            out.append(arg)
            continue
        else:  # pragma: no cover
            raise AssertionError(kind)
        out.append(json.dumps(msg))
    return out


def _predict(peer: TwilioPeer, frames: list[str | bytes]) -> str:
    """The outcome the pure dialect + token check predict for this sequence (the first ending wins)."""
    d = TwilioStream()
    for frame in frames:
        if isinstance(frame, bytes) or len(frame.encode()) > 65536:
            return "protocol_error"
        try:
            ev = d.parse(frame)
        except CarrierProtocolError:
            return "protocol_error"
        if isinstance(ev, StreamStarted):
            try:
                verify_call_token(
                    SECRET.encode(),
                    ev.custom_parameters.get("token"),
                    f"{ev.call_id}|default",
                    time.time(),
                    scope="twilio",
                )
            except TokenError:
                return "refused"
        elif isinstance(ev, StreamStopped):
            return "caller_hangup"
    return "carrier_closed"  # nothing ended it: the test hangs up


ok_kinds = st.sampled_from(["connected", "start", "media", "stop"]).map(lambda k: (k, None))
bad_kinds = st.one_of(
    st.tuples(st.just("start_bad_token"), st.sampled_from(["", "v1.1.x", "v2.9999999999.n0nce." + "A" * 43])),
    st.tuples(st.just("start_bad_format"), st.none()),
    st.tuples(st.just("media_other_sid"), st.text(max_size=40)),
    st.tuples(st.just("media_bad_payload"), st.text(max_size=12) | st.integers()),
    st.tuples(st.just("mark"), st.text(max_size=10) | st.none()),
    st.tuples(st.just("dtmf"), st.text(max_size=3)),
    st.tuples(st.just("unknown"), st.text(max_size=10)),
    st.tuples(
        st.just("json"),
        st.recursive(
            st.none() | st.integers() | st.text(max_size=8),
            lambda i: (
                st.lists(i, max_size=3)
                | st.dictionaries(st.sampled_from(["event", "streamSid", "media", "start"]), i, max_size=3)
            ),
            max_leaves=6,
        ),
    ),
    st.tuples(st.just("truncated"), st.integers(1, 500)),
    st.tuples(st.just("text"), st.text(max_size=30)),
    st.tuples(st.just("oversized"), st.none()),
    st.tuples(st.just("binary"), st.binary(min_size=1, max_size=20)),
)
sequences = st.lists(st.one_of(ok_kinds, ok_kinds, bad_kinds), min_size=1, max_size=8)


async def _scenario(kinds: list[tuple[str, Any]]) -> None:
    agent = FakeAgent()
    agent_server = TestServer(agent.app)
    await agent_server.start_server()
    settings_ = load_settings(
        env={
            "AGENT_URL": str(agent_server.make_url("/v1/ws")).replace("http://", "ws://"),
            "ASSEMBLYAI_API_KEY": agent.api_key,
            "GATEWAY_TOKEN_SECRET": SECRET,
        }
    )
    app = create_app(settings_)
    server = TestServer(app)
    await server.start_server()
    base = str(server.make_url("")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        good = TwilioPeer(base, http)
        bad = TwilioPeer(base, http)
        try:
            await good.dial()
            await good.connect()
            good_sess = await agent.session()
            await bad.dial()
            frames = _frames(bad, kinds)
            expected = _predict(bad, frames)
            with capture_call_logs() as logs:
                bad.ws = await http.ws_connect(bad.stream_url, max_msg_size=1 << 20)
                bad.run(play=False)
                for frame in frames:
                    if bad.ws.closed:
                        break
                    try:
                        if isinstance(frame, bytes):
                            await bad.ws.send_bytes(frame)
                        else:
                            await bad.ws.send_str(frame)
                    except ConnectionError:
                        break
                if expected == "carrier_closed":
                    await asyncio.sleep(0.05)
                    await bad.ws.close()
                await bad.wait_for(lambda: bad.closed.is_set(), timeout=5)  # the server ended a bad call
                async with asyncio.timeout(5):
                    while len(app[CALLS]) > 1:
                        await asyncio.sleep(0.005)
            mine = [e for e in logs if e.get("call_sid") in (bad.call_sid, None)]
            ended = events(logs, "call.ended")
            assert len(ended) == 1, ended
            assert ended[0]["outcome"] == expected, (kinds, ended[0])
            assert not events(logs, "call.internal_error")
            if expected == "protocol_error":
                err = events(mine, "call.protocol_error")
                assert err and err[0]["side"] == "carrier" and err[0]["error"]
            if expected == "refused":
                assert events(mine, "call.refused")
            # the good call is unaffected
            n = len(good_sess.audio)
            await good.send_media(ulaw_tone(440, 0.1))
            await good.wait_for(lambda: len(good_sess.audio) >= n + 0.1 * 48000 - 960, timeout=5)
            assert not good.closed.is_set()
        finally:
            await good.close()
            await bad.close()
    await server.close()
    await agent_server.close()


@settings(max_examples=45, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequences)
def test_fuzzed_stream_messages_end_only_that_call_with_a_clear_log_event(kinds):
    asyncio.run(_scenario(kinds))

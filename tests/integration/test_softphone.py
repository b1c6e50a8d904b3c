"""The softphone's server side on the real gateway (loopback, fake agent): page and assets, the dial endpoint
(answered by the gateway's own webhook), and the per-call event feed (server-sent events)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import pytest

from gateway import softphone
from gateway.app import CALLS
from gateway.call.events import CallerSpeechStarted
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.security import verify_call_token
from gateway.simulator.twilio_side import parse_twiml
from gateway.softphone import FEED_QUEUE, SOFTPHONE, _Feed, softphone_enabled
from tests.support.twilio_peer import TwilioPeer


async def _softphone_gateway(start_gateway: Any, tmp_path: Any, mode: str = "on", **env: str) -> Any:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[softphone]\nenabled = "{mode}"\n')
    return await start_gateway(str(cfg), **env)


async def _dial(http: aiohttp.ClientSession, gw: Any, **body: str) -> dict[str, Any]:
    async with http.post(gw.base_url + "/softphone/dial", json=body) as r:
        assert r.status == 200, await r.text()
        return await r.json()


class Feed:
    """A minimal EventSource: reads ``data:`` events off the SSE response."""

    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self.resp = resp
        self.events: list[dict[str, Any]] = []

    async def next(self, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            lines: list[str] = []
            while True:
                raw = await self.resp.content.readline()
                if not raw:
                    raise EOFError("feed closed")
                line = raw.decode().rstrip("\n")
                if line:
                    lines.append(line)
                    continue
                data = [ln[5:].strip() for ln in lines if ln.startswith("data:")]
                lines = []
                if data:
                    ev = json.loads("\n".join(data))
                    self.events.append(ev)
                    return ev

    async def until(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                ev = await self.next(timeout)
                if ev["kind"] == kind:
                    return ev


def test_auto_enables_the_softphone_only_with_the_local_agent():
    local = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x"})
    cloud = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x", "ASSEMBLYAI_API_KEY": "k"})
    assert softphone_enabled(local) and not softphone_enabled(cloud)


def test_softphone_mode_is_validated_by_name(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[softphone]\nenabled = "maybe"\n')
    with pytest.raises(ConfigError, match=r"^softphone\.enabled: must be auto, on or off"):
        load_settings(str(cfg), env={})


async def test_softphone_is_off_for_a_cloud_agent_by_default(start_gateway, http):
    gw = await start_gateway()  # fake *cloud* agent configured: auto means off
    async with http.get(gw.base_url + "/softphone") as r:
        assert r.status == 404
    async with http.post(gw.base_url + "/softphone/dial", json={}) as r:
        assert r.status == 404


async def test_page_and_scripts_are_served(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    async with http.get(gw.base_url + "/softphone") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert 'id="call"' in page and "/softphone/softphone.js" in page
    for name in ("softphone.js", "worklet.js"):
        async with http.get(gw.base_url + "/softphone/" + name) as r:
            assert r.status == 200 and r.content_type == "text/javascript"
    async with http.get(gw.base_url + "/softphone/index.py") as r:
        assert r.status == 404


async def test_dial_returns_the_webhooks_twiml_with_a_token_for_the_new_call(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw, to="+15550100002")
    assert dial["call_sid"].startswith("CA") and len(dial["call_sid"]) == 34
    assert dial["account_sid"].startswith("AC") and len(dial["account_sid"]) == 34
    stream = parse_twiml(dial["twiml"])
    assert stream.url == gw.base_url.replace("http://", "ws://") + "/twilio/stream"
    assert stream.parameters["from"] == "client:softphone" and stream.parameters["to"] == "+15550100002"
    verify_call_token(b"test-secret", stream.parameters["token"], dial["call_sid"] + "|default", time.time(),
                      scope="twilio")
    async with http.post(gw.base_url + "/softphone/dial", json={"to": "<script>"}) as r:
        assert r.status == 400


async def test_dial_signs_its_webhook_request_when_twilio_signatures_are_checked(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path, TWILIO_AUTH_TOKEN="tw-secret")
    async with http.post(gw.base_url + "/twilio/voice", data={"CallSid": "CA1"}) as r:
        assert r.status == 403  # the webhook really checks
    dial = await _dial(http, gw)
    assert parse_twiml(dial["twiml"]).parameters["token"].startswith("v2.")


async def _open_feed(http: aiohttp.ClientSession, gw: Any, call_sid: str) -> Feed:
    resp = await http.get(gw.base_url + "/softphone/events", params={"call_sid": call_sid})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/event-stream"
    return Feed(resp)


async def test_event_feed_streams_the_calls_timeline_and_ends_with_it(start_gateway, http, fake_agent, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    feed = await _open_feed(http, gw, dial["call_sid"])
    stream = parse_twiml(dial["twiml"])
    peer = TwilioPeer(gw.base_url, http, call_sid=dial["call_sid"], stream_url=stream.url,
                      parameters=stream.parameters)
    try:
        await peer.connect()
        sess = await fake_agent.session()
        assert (await feed.until("call.started"))["call_sid"] == dial["call_sid"]
        await feed.until("agent.session_ready")
        await sess.send("transcript.user", item_id="u1", text="what time do you open")
        assert (await feed.until("caller.transcript"))["text"] == "what time do you open"
        await sess.send("transcript.agent", reply_id="r1", item_id="a1", text="Nine to ten.", interrupted=False)
        ev = await feed.until("agent.transcript")
        assert ev["text"] == "Nine to ten." and ev["interrupted"] is False and isinstance(ev["t"], float)
        await peer.stop()
        ended = await feed.until("call.ended")
        assert ended["outcome"] == "caller_hangup"
        with pytest.raises(EOFError):
            await feed.next(2)
    finally:
        feed.resp.close()
        await peer.close()
    state = gw.app[SOFTPHONE]
    assert not state.feeds
    assert all(getattr(listener, "__self__", None).__class__ is not _Feed for listener in gw.app[CALLS].listeners)


async def test_feed_only_serves_calls_dialled_from_the_softphone(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    async with http.get(gw.base_url + "/softphone/events", params={"call_sid": "CA" + "0" * 32}) as r:
        assert r.status == 404


async def test_feed_unsubscribes_when_the_browser_goes_away(start_gateway, http, tmp_path, monkeypatch):
    monkeypatch.setattr(softphone, "KEEPALIVE_S", 0.1)
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    listeners_before = len(gw.app[CALLS].listeners)
    feed = await _open_feed(http, gw, dial["call_sid"])
    assert len(gw.app[CALLS].listeners) == listeners_before + 1
    feed.resp.close()  # the browser tab is closed
    async with asyncio.timeout(3):
        while gw.app[SOFTPHONE].feeds or len(gw.app[CALLS].listeners) != listeners_before:
            await asyncio.sleep(0.05)


async def test_open_feeds_end_promptly_at_shutdown(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    feed = await _open_feed(http, gw, dial["call_sid"])
    t0 = time.monotonic()
    await asyncio.wait_for(gw.close(), 5)
    assert time.monotonic() - t0 < 2.0
    with pytest.raises((EOFError, aiohttp.ClientError)):
        await feed.next(2)
    feed.resp.close()


def test_feed_queue_is_bounded_and_counts_what_it_drops():
    feed = _Feed("CA1")
    for i in range(FEED_QUEUE + 10):
        feed.offer("CA1", CallerSpeechStarted(t=float(i)))
    feed.offer("CA2", CallerSpeechStarted())  # another call: ignored
    assert feed.queue.qsize() == FEED_QUEUE and feed.dropped == 10
    feed.close()  # even full, the end marker gets in
    items = [feed.queue.get_nowait() for _ in range(feed.queue.qsize())]
    assert items[-1] is None and len(items) == FEED_QUEUE

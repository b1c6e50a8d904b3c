"""The softphone's server side on the real gateway (loopback, fake agent): when it is served and to whom (the
operator key on a public gateway, same-origin JSON dials), its own stream door and token scope, the dial's slot
reservation, and the per-call event feed (server-sent events) with its lifetime bounds."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import softphone
from gateway.call.events import CallerSpeechStarted
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.keys import CALLS, SOFTPHONE
from gateway.security import TokenError, twilio_signature, verify_call_token
from gateway.simulator.twilio_side import parse_twiml
from gateway.softphone import FEED_QUEUE, _Feed, softphone_enabled
from tests.support.logcapture import capture_call_logs, events
from tests.support.twilio_peer import TwilioPeer

SECRET = b"test-secret"  # conftest: GATEWAY_TOKEN_SECRET
API_KEY = "operator-key-under-test"
PUBLIC = "https://voice.example.test"
JSON = {"Content-Type": "application/json"}


async def _softphone_gateway(start_gateway: Any, tmp_path: Any, mode: str = "on", extra: str = "", **env: str) -> Any:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(f'[softphone]\nenabled = "{mode}"\n{extra}')
    return await start_gateway(str(cfg), **env)


async def _public_gateway(start_gateway: Any, tmp_path: Any) -> Any:
    return await _softphone_gateway(start_gateway, tmp_path, GATEWAY_PUBLIC_URL=PUBLIC, GATEWAY_API_KEY=API_KEY)


async def _dial(
    http: aiohttp.ClientSession, gw: Any, headers: dict[str, str] | None = None, **body: str
) -> dict[str, Any]:
    async with http.post(gw.base_url + "/softphone/dial", json=body, headers=headers or {}) as r:
        assert r.status == 200, await r.text()
        return await r.json()


def _basic(user: str, password: str) -> str:
    """What a browser sends once its login prompt was answered (RFC 7617)."""
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _door(gw: Any, path: str) -> str:
    return gw.base_url.replace("http://", "ws://") + path


async def _refusals(http: aiohttp.ClientSession, gw: Any, reason: str) -> float:
    async with http.get(gw.base_url + "/metrics") as r:
        text = await r.text()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "voice_gateway_call_refusals_total" and s.labels == {"stage": "softphone", "reason": reason}:
                return s.value
    return 0.0


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


async def _open_feed(http: aiohttp.ClientSession, gw: Any, call_sid: str) -> Feed:
    resp = await http.get(gw.base_url + "/softphone/events", params={"call_sid": call_sid})
    assert resp.status == 200, await resp.text()
    assert resp.content_type == "text/event-stream"
    return Feed(resp)


# ---- when it is served ---------------------------------------------------------------------------------------------
def test_auto_serves_the_softphone_only_for_development():
    local = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x"})
    public_local = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x", "GATEWAY_PUBLIC_URL": PUBLIC})
    cloud = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x", "ASSEMBLYAI_API_KEY": "k"})
    assert public_local.use_local_agent and public_local.softphone.enabled == "auto"
    # Development is the embedded agent *and* no public URL: a gateway carriers can reach is not a dev box.
    assert softphone_enabled(local)
    assert not softphone_enabled(public_local)
    assert not softphone_enabled(cloud)


def test_softphone_mode_is_validated_by_name(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[softphone]\nenabled = "maybe"\n')
    with pytest.raises(ConfigError, match=r"^softphone\.enabled: must be auto, on or off"):
        load_settings(str(cfg), env={})


def test_on_with_a_public_url_and_no_operator_key_is_refused_at_start_up(tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[softphone]\nenabled = "on"\n')
    with pytest.raises(ConfigError, match=r'^softphone\.enabled: "on" with a public URL needs GATEWAY_API_KEY'):
        load_settings(str(cfg), env={"GATEWAY_PUBLIC_URL": PUBLIC})
    # with the key it starts; without a public URL (development) no key is needed
    assert softphone_enabled(load_settings(str(cfg), env={"GATEWAY_PUBLIC_URL": PUBLIC, "GATEWAY_API_KEY": "k"}))
    assert softphone_enabled(load_settings(str(cfg), env={}))


async def test_softphone_is_off_for_a_cloud_agent_by_default(start_gateway, http):
    gw = await start_gateway()  # fake *cloud* agent configured: auto means off
    for path in ("/softphone", "/softphone/stream", "/softphone/events"):
        async with http.get(gw.base_url + path) as r:
            assert r.status == 404, path
    async with http.post(gw.base_url + "/softphone/dial", json={}) as r:
        assert r.status == 404


# ---- the operator key on a public gateway ----------------------------------------------------------------------
async def test_a_public_softphone_refuses_every_route_without_the_operator_key(
    start_gateway, http, tmp_path, fake_agent
):
    gw = await _public_gateway(start_gateway, tmp_path)
    wrong = [
        {},
        {"Authorization": _basic("operator", "not-the-key")},
        {"Authorization": "Bearer not-the-key"},
        {"Authorization": "Basic !!!"},
        {"Authorization": _basic(API_KEY, "")},
    ]  # the key as user name is no password
    with capture_call_logs() as logs:
        for headers in wrong:
            for method, path in (
                ("GET", "/softphone"),
                ("GET", "/softphone/softphone.js"),
                ("GET", "/softphone/worklet.js"),
                ("POST", "/softphone/dial"),
                ("GET", "/softphone/events?call_sid=CA" + "0" * 32),
            ):
                async with http.request(method, gw.base_url + path, json={}, headers=headers) as r:
                    assert r.status == 401, (method, path, headers)
                    assert r.headers["WWW-Authenticate"] == 'Basic realm="softphone"'
                    assert "Softphone" not in await r.text()
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await http.ws_connect(_door(gw, "/softphone/stream"), headers=headers)
            assert refused.value.status == 401
            assert refused.value.headers is not None
            assert refused.value.headers["WWW-Authenticate"] == 'Basic realm="softphone"'
    assert gw.app[CALLS].admission.reservations == 0 and fake_agent.connections == 0
    reasons = [e["reason"] for e in events(logs, "softphone.refused")]
    assert reasons.count("no_credential") == 6 and reasons.count("bad_credential") == 4 * 6
    assert await _refusals(http, gw, "no_credential") == 6
    assert await _refusals(http, gw, "bad_credential") == 24


async def test_a_public_softphone_takes_the_key_as_a_basic_password_or_a_bearer_token(
    start_gateway, http, tmp_path, fake_agent
):
    gw = await _public_gateway(start_gateway, tmp_path)
    for auth in ({"Authorization": _basic("anyone", API_KEY)}, {"Authorization": f"Bearer {API_KEY}"}):
        async with http.get(gw.base_url + "/softphone", headers=auth) as r:
            assert r.status == 200 and "/softphone/softphone.js" in await r.text()
    # the whole call as the page makes it, credential on every request (a browser sends the cached Basic answer)
    async with aiohttp.ClientSession(headers={"Authorization": _basic("operator", API_KEY)}) as browser:
        dial = await _dial(browser, gw, headers={"Origin": PUBLIC})
        stream = parse_twiml(dial["twiml"])
        assert stream.url == "wss://voice.example.test/softphone/stream"  # from the public URL, not a header
        feed = await _open_feed(browser, gw, dial["call_sid"])
        peer = TwilioPeer(
            gw.base_url,
            browser,
            call_sid=dial["call_sid"],
            stream_url=_door(gw, "/softphone/stream"),
            parameters=stream.parameters,
        )
        try:
            await peer.connect()
            await fake_agent.session()
            assert (await feed.until("call.started"))["call_sid"] == dial["call_sid"]
            await peer.stop()
            assert (await feed.until("call.ended"))["outcome"] == "caller_hangup"
        finally:
            feed.resp.close()
            await peer.close()


# ---- dial: same origin, JSON only, a slot of its own --------------------------------------------------------------
async def test_dial_accepts_only_json(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    url = gw.base_url + "/softphone/dial"
    # text/plain and forms are what another site can POST without a CORS preflight
    for kw in (
        {"data": '{"to": ""}', "headers": {"Content-Type": "text/plain"}},
        {"data": {"to": ""}},
        {"data": b'{"to": ""}', "headers": {"Content-Type": "application/octet-stream"}},
        {"data": b""},
    ):
        async with http.post(url, **kw) as r:
            assert r.status == 415, kw
    assert gw.app[CALLS].admission.reservations == 0 and not gw.app[SOFTPHONE].dialled
    assert await _refusals(http, gw, "unsupported_media_type") == 4
    async with http.post(url, data=b'{"to": ""}', headers={"Content-Type": "application/json; charset=utf-8"}) as r:
        assert r.status == 200
    async with http.post(url, json={"to": "<script>"}) as r:
        assert r.status == 400


async def test_a_dns_rebinding_page_cannot_dial_a_development_gateway(start_gateway, http, tmp_path):
    # A page on evil.example whose name was rebound to 127.0.0.1: to the browser it is same-origin, so its Origin
    # matches its Host. In development (no public URL) only an address or localhost is the gateway's own name.
    gw = await _softphone_gateway(start_gateway, tmp_path)
    port = gw.base_url.rsplit(":", 1)[1]
    rebound = f"evil.example:{port}"
    async with http.post(
        gw.base_url + "/softphone/dial", json={}, headers={"Host": rebound, "Origin": f"http://{rebound}"}
    ) as r:
        assert r.status == 403
    assert gw.app[CALLS].admission.reservations == 0
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):  # how a developer reaches it
        await _dial(http, gw, headers={"Host": host, "Origin": f"http://{host}"})


async def test_dial_refuses_cross_origin_requests(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    url = gw.base_url + "/softphone/dial"
    with capture_call_logs() as logs:
        for headers in (
            {"Origin": "https://evil.example"},
            {"Origin": "null"},
            {"Origin": gw.base_url.replace("http://", "https://")},  # same host, other scheme
            {"Origin": gw.base_url[:-1]},  # other port
            {"Sec-Fetch-Site": "cross-site"},
            {"Origin": gw.base_url, "Sec-Fetch-Site": "cross-site"},
        ):
            async with http.post(url, json={}, headers=headers) as r:
                assert r.status == 403, headers
    assert [e["reason"] for e in events(logs, "softphone.refused")] == ["cross_origin"] * 6
    assert await _refusals(http, gw, "cross_origin") == 6
    assert gw.app[CALLS].admission.reservations == 0
    # the page itself (its own origin), and clients that send no Origin at all (curl, scripts)
    await _dial(http, gw, headers={"Origin": gw.base_url, "Sec-Fetch-Site": "same-origin"})
    await _dial(http, gw, headers={"Origin": gw.base_url.upper().replace("HTTP://", "http://")})
    await _dial(http, gw)


async def test_with_a_public_url_the_own_origin_is_the_public_one(start_gateway, http, tmp_path):
    gw = await _public_gateway(start_gateway, tmp_path)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    # The Host the request came in on does not count: behind the proxy the browser's origin is the public URL.
    async with http.post(gw.base_url + "/softphone/dial", json={}, headers={**auth, "Origin": gw.base_url}) as r:
        assert r.status == 403
    await _dial(http, gw, headers={**auth, "Origin": PUBLIC + ":443"})


async def test_dial_mints_a_softphone_token_for_its_own_door_without_any_webhook(start_gateway, http, tmp_path):
    extra = '[profiles.sales]\ngreeting = "Sales."\n[numbers]\n"+15550100002" = "sales"\n'
    gw = await _softphone_gateway(start_gateway, tmp_path, extra=extra)
    with capture_call_logs() as logs:
        dial = await _dial(http, gw, to="+15550100002")
    assert not events(logs, "webhook.answered")  # answered here, not by a loopback request to /twilio/voice
    assert dial["call_sid"].startswith("CA") and len(dial["call_sid"]) == 34
    assert dial["account_sid"].startswith("AC") and len(dial["account_sid"]) == 34
    stream = parse_twiml(dial["twiml"])
    assert stream.url == _door(gw, "/softphone/stream")
    assert stream.parameters["from"] == "client:softphone" and stream.parameters["to"] == "+15550100002"
    token = stream.parameters["token"]
    # bound to the softphone's door and to the profile the called number picks
    verify_call_token(SECRET, token, dial["call_sid"] + "|sales", time.time(), scope="softphone")
    for scope, subject in (("twilio", "|sales"), ("softphone", "|default")):
        with pytest.raises(TokenError):
            verify_call_token(SECRET, token, dial["call_sid"] + subject, time.time(), scope=scope)
    assert gw.app[CALLS].admission.reservations == 1  # the dial holds a slot until its stream starts


async def test_dial_answers_503_when_no_slot_is_free(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path, extra="[server]\nmax_concurrent_calls = 1\n")
    await _dial(http, gw)
    with capture_call_logs() as logs:
        async with http.post(gw.base_url + "/softphone/dial", json={}) as r:
            assert r.status == 503
        gw.app[CALLS].accepting = False  # draining
        async with http.post(gw.base_url + "/softphone/dial", json={}) as r:
            assert r.status == 503
    assert [e["reason"] for e in events(logs, "softphone.refused")] == ["at_capacity", "draining"]
    assert await _refusals(http, gw, "at_capacity") == 1 and await _refusals(http, gw, "draining") == 1
    assert len(gw.app[SOFTPHONE].dialled) == 1


# ---- the stream door -----------------------------------------------------------------------------------------------
async def test_a_softphone_token_is_refused_at_twilios_door_and_a_webhook_token_at_the_softphones(
    start_gateway, http, tmp_path, fake_agent
):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    ours = parse_twiml(dial["twiml"])
    theirs = TwilioPeer(gw.base_url, http)
    await theirs.dial()  # Twilio's webhook: a token for /twilio/stream
    crossed = [
        TwilioPeer(
            gw.base_url,
            http,
            call_sid=dial["call_sid"],
            stream_url=_door(gw, "/twilio/stream"),
            parameters=ours.parameters,
        ),
        TwilioPeer(
            gw.base_url,
            http,
            call_sid=theirs.call_sid,
            stream_url=_door(gw, "/softphone/stream"),
            parameters=theirs.parameters,
        ),
    ]
    try:
        for peer in crossed:
            await peer.connect()
            await peer.wait_for(lambda p=peer: p.closed.is_set(), timeout=5)
            assert peer.close_code == 1008, peer.stream_url
        assert fake_agent.connections == 0 and fake_agent.sessions == []
        # each token at its own door is let in
        right = TwilioPeer(
            gw.base_url, http, call_sid=dial["call_sid"], stream_url=ours.url, parameters=ours.parameters
        )
        crossed.append(right)
        await right.connect()
        await fake_agent.session()
        assert fake_agent.connections == 1
    finally:
        for peer in crossed:
            await peer.close()


async def test_the_softphone_door_asks_no_twilio_signature(start_gateway, http, tmp_path, fake_agent):
    # With TWILIO_AUTH_TOKEN set Twilio's door checks upgrade signatures; a browser cannot sign, and its own door
    # lets it in on the dial's token alone. A signature made up by the page would change nothing either.
    gw = await _softphone_gateway(start_gateway, tmp_path, TWILIO_AUTH_TOKEN="tw-secret")
    dial = await _dial(http, gw)
    stream = parse_twiml(dial["twiml"])
    peer = TwilioPeer(gw.base_url, http, call_sid=dial["call_sid"], stream_url=stream.url, parameters=stream.parameters)
    try:
        await peer.connect()
        await fake_agent.session()
    finally:
        await peer.close()
    async with http.ws_connect(stream.url, headers={"X-Twilio-Signature": twilio_signature("x", stream.url, {})}) as ws:
        assert not ws.closed  # upgraded: this door does not look at Twilio signatures (the token decides)


async def test_a_cross_origin_page_cannot_open_the_softphone_door(start_gateway, http, tmp_path, fake_agent):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(_door(gw, "/softphone/stream"), origin="https://evil.example")
    assert refused.value.status == 403


# ---- the event feed ------------------------------------------------------------------------------------------------
async def test_event_feed_streams_the_calls_timeline_and_ends_with_it(start_gateway, http, fake_agent, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    feed = await _open_feed(http, gw, dial["call_sid"])
    stream = parse_twiml(dial["twiml"])
    peer = TwilioPeer(gw.base_url, http, call_sid=dial["call_sid"], stream_url=stream.url, parameters=stream.parameters)
    try:
        await peer.connect()
        sess = await fake_agent.session()
        assert (await feed.until("call.started"))["call_sid"] == dial["call_sid"]
        assert gw.app[CALLS].admission.reservations == 0  # the stream claimed the dial's reservation
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
    # an ended call is no longer watchable (an EventSource reconnecting after call.ended gets a 404 and stops)
    async with http.get(gw.base_url + "/softphone/events", params={"call_sid": dial["call_sid"]}) as r:
        assert r.status == 404


async def test_feed_only_serves_calls_dialled_from_the_softphone(start_gateway, http, tmp_path):
    gw = await _softphone_gateway(start_gateway, tmp_path)
    async with http.get(gw.base_url + "/softphone/events", params={"call_sid": "CA" + "0" * 32}) as r:
        assert r.status == 404


async def test_feed_of_a_call_that_never_streams_ends_with_the_start_window(start_gateway, http, tmp_path, monkeypatch):
    monkeypatch.setattr(softphone, "START_WINDOW_S", 0.5, raising=False)  # absent before the bound
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    feeds = [await _open_feed(http, gw, dial["call_sid"]) for _ in range(3)]
    t0 = time.monotonic()
    try:
        for feed in feeds:
            with pytest.raises(EOFError):
                await feed.next(3)
    finally:
        for feed in feeds:
            feed.resp.close()
    assert time.monotonic() - t0 < 1.5  # the window, not server.max_call_s + 2 min
    assert not gw.app[SOFTPHONE].feeds
    # pruned with its window: it cannot be watched later
    async with http.get(gw.base_url + "/softphone/events", params={"call_sid": dial["call_sid"]}) as r:
        assert r.status == 404
    assert dial["call_sid"] not in gw.app[SOFTPHONE].dialled


async def test_feed_of_a_started_call_is_bounded_by_the_calls_own_maximum(
    start_gateway, http, fake_agent, tmp_path, monkeypatch
):
    monkeypatch.setattr(softphone, "START_WINDOW_S", 0.5, raising=False)  # absent before the bound
    monkeypatch.setattr(softphone, "KEEPALIVE_S", 0.1)
    gw = await _softphone_gateway(start_gateway, tmp_path, extra="[server]\nmax_call_s = 600\n")
    dial = await _dial(http, gw)
    feed = await _open_feed(http, gw, dial["call_sid"])
    stream = parse_twiml(dial["twiml"])
    peer = TwilioPeer(gw.base_url, http, call_sid=dial["call_sid"], stream_url=stream.url, parameters=stream.parameters)
    try:
        await peer.connect()
        sess = await fake_agent.session()
        await feed.until("call.started")
        entry = gw.app[SOFTPHONE].dialled[dial["call_sid"]]
        assert 600 < entry.until - time.monotonic() <= 600 + softphone.ENDING_GRACE_S
        await asyncio.sleep(1.0)  # well past the start window: the feed of the live call stays open
        await sess.send("transcript.user", item_id="u1", text="still there")
        assert (await feed.until("caller.transcript"))["text"] == "still there"
    finally:
        feed.resp.close()
        await peer.close()


async def test_feeds_beyond_the_limit_are_refused_and_counted(start_gateway, http, tmp_path, monkeypatch):
    monkeypatch.setattr(softphone, "MAX_SUBSCRIBERS", 2)
    gw = await _softphone_gateway(start_gateway, tmp_path)
    dial = await _dial(http, gw)
    feeds = [await _open_feed(http, gw, dial["call_sid"]) for _ in range(2)]
    try:
        async with http.get(gw.base_url + "/softphone/events", params={"call_sid": dial["call_sid"]}) as r:
            assert r.status == 503
        assert await _refusals(http, gw, "too_many_feeds") == 1
    finally:
        for feed in feeds:
            feed.resp.close()


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

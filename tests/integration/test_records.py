"""Call records over real loopback sockets: a modelled Twilio peer ⇄ the real gateway ⇄ the spec-following fake
agent, with recording on, the file backend, the SQLite outbox and a real webhook receiver whose signatures the
``standardwebhooks`` package verifies (docs/how-to/call-records.md)."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import wave
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiohttp import web
from standardwebhooks import Webhook

from gateway.audio import g711
from tests.support.audio import tone, ulaw_tone
from tests.support.faults import write_config
from tests.support.logcapture import capture_call_logs, events

SECRET = "whsec_" + base64.b64encode(b"r" * 32).decode()


class Receiver:
    """A webhook receiver: keeps every delivery (headers, body); answers ``status``."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes]] = []
        self.status = 204
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)
        self.got = asyncio.Event()

    async def _hook(self, request: web.Request) -> web.Response:
        self.deliveries.append((dict(request.headers), await request.read()))
        self.got.set()
        return web.Response(status=self.status)


def records_config(tmp: Path, hook: str, extra: str = "") -> str:
    return write_config(
        f'[storage]\nurl = "{(tmp / "calls").as_uri()}"\ndata_dir = "{tmp / "data"}"\n'
        f'[webhooks]\nurl = "{hook}"\nbackoff_s = 0.2\ncall_started = true\n'
        f"[profiles.default]\nrecord = true\n{extra}"
    )


def object_store_down(monkeypatch: Any) -> None:
    """Point the S3 client at a port nobody listens on: the object store is down."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{dead}")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "k")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s")
    monkeypatch.setenv("AWS_REGION", "us-east-1")


def channel_rms(samples: np.ndarray, a_s: float, b_s: float) -> float:
    seg = samples[int(a_s * 8000) : int(b_s * 8000)].astype(np.float64)
    return float(np.sqrt(np.mean(seg**2))) if len(seg) else 0.0


def dominant(samples: np.ndarray, a_s: float, b_s: float) -> float:
    seg = samples[int(a_s * 8000) : int(b_s * 8000)].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg))))
    return float(np.fft.rfftfreq(len(seg), 1 / 8000)[int(np.argmax(spectrum))])


def read_stereo(data: bytes) -> tuple[np.ndarray, np.ndarray, wave._wave_params]:
    with wave.open(io.BytesIO(data)) as w:
        params = w.getparams()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    return pcm[:, 0], pcm[:, 1], params


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Any:
    r = Receiver()
    server = await aiohttp_server(r.app)
    r.url = str(server.make_url("/hook"))  # type: ignore[attr-defined]
    return r


async def test_a_recorded_call_leaves_a_record_a_two_channel_wav_and_a_signed_webhook(
    start_gateway, new_peer, fake_agent, receiver, http, tmp_path
):
    gw = await start_gateway(
        records_config(tmp_path, receiver.url), GATEWAY_WEBHOOK_SECRET=SECRET, GATEWAY_API_KEY="key"
    )
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    # The caller speaks 1 s of 440 Hz; the agent answers 1 s of 1000 Hz; then a long 1500 Hz reply is barged in.
    await sess.send("input.speech.started")
    await peer.send_media(ulaw_tone(440, 1.0), realtime=True)
    await sess.send("input.speech.stopped")
    await sess.send("transcript.user", item_id="i1", text="what time do you open")
    await sess.reply(tone(1000, 1.0, 24000), text="nine to five")
    silence = bytes([0xFF]) * 160
    for _ in range(40):  # the caller stays on the line (silence) while the answer plays
        await peer.send_media(silence, realtime=True)
    long_reply = asyncio.create_task(sess.reply(tone(1500, 4.0, 24000), done=False))
    await peer.wait_for(lambda: len(peer.played) > 8000 * 1.0 + 8000 * 1.2, timeout=10)
    await sess.send("input.speech.started")  # barge-in: the gateway clears the carrier
    await peer.wait_for(lambda: bool(peer.events("clear")), timeout=5)
    long_reply.cancel()
    for _ in range(40):
        await peer.send_media(silence, realtime=True)
    await peer.stop()
    async with asyncio.timeout(15):
        while len(receiver.deliveries) < 2:
            await receiver.got.wait()
            receiver.got.clear()

    # the webhooks: call.started then call.ended, each signed per Standard Webhooks
    hook = Webhook(SECRET)
    events = [hook.verify(body, headers) for headers, body in receiver.deliveries]
    assert [e["type"] for e in events] == ["call.started", "call.ended"]
    assert len({h["webhook-id"] for h, _ in receiver.deliveries}) == 2
    record = events[1]["data"]
    assert record["call_sid"] == peer.call_sid and record["outcome"] == "caller_hangup"
    assert record["from"] == "+*******1111" and record["to"] == "+*******2222"
    texts = [(u["speaker"], u["text"]) for u in record["utterances"]]
    assert ("caller", "what time do you open") in texts and ("agent", "nine to five") in texts
    (barge,) = record["barge_ins"]
    assert barge["cause"] == "speech_started" and barge["reaction_ms"] is not None
    answer = next(t for t in record["turns"] if not t["greeting"])
    assert answer["latency_sent_ms"] is not None and answer["latency_heard_ms"] >= answer["latency_sent_ms"]
    assert record["recording"]["url"].endswith(f"/calls/{peer.call_sid}/recording")

    # the stored record and the recording, through the read API
    auth = {"Authorization": "Bearer key"}
    async with http.get(f"{gw.base_url}/calls/{peer.call_sid}", headers=auth) as r:
        assert r.status == 200
        stored = await r.json()
    assert stored["utterances"] == record["utterances"]
    async with http.get(f"{gw.base_url}/calls/{peer.call_sid}/recording", headers=auth) as r:
        assert r.status == 200
        wav_bytes = await r.read()
    assert wav_bytes == (tmp_path / "calls" / f"{peer.call_sid}.wav").read_bytes()
    async with http.get(f"{gw.base_url}/calls?since=2000-01-01T00:00:00Z", headers=auth) as r:
        listed = await r.json()
    assert [c["call_sid"] for c in listed["calls"]] == [peer.call_sid]
    async with http.get(f"{gw.base_url}/calls/{peer.call_sid}") as r:
        assert r.status == 401

    caller, agent, params = read_stereo(wav_bytes)
    assert (params.nchannels, params.framerate, params.sampwidth) == (2, 8000, 2)
    assert abs(params.nframes / 8000 - record["duration_s"]) <= 0.1
    said = next(u for u in record["utterances"] if u["speaker"] == "agent" and u["text"] == "nine to five")
    assert abs(dominant(agent, said["start_s"] + 0.1, said["end_s"] - 0.1) - 1000) < 20
    assert channel_rms(caller, said["start_s"] + 0.1, said["end_s"] - 0.1) < 200  # the caller was silent
    # the caller's 440 Hz is on the left, before the answer
    assert abs(dominant(caller, max(0.0, said["start_s"] - 0.9), said["start_s"] - 0.2) - 440) < 20
    # after the clear the right channel is silent (nothing flushed at the carrier was heard)
    cut = barge["t"]
    assert channel_rms(agent, cut - 0.5, cut - 0.05) > 1000
    assert channel_rms(agent, cut + 0.02, params.nframes / 8000) < 50


async def test_a_malformed_storage_url_or_webhook_url_fails_start_up_naming_the_key(tmp_path):
    from gateway.config import load_settings
    from gateway.errors import ConfigError

    base = {"GATEWAY_TOKEN_SECRET": "x", "GATEWAY_WEBHOOK_SECRET": SECRET}
    for text, key in (
        ('[storage]\nurl = "ftp://x/y"\n', "storage.url"),
        ('[storage]\nurl = "file://relative/dir"\n', "storage.url"),
        ('[webhooks]\nurl = "not a url"\n', "webhooks.url"),
        ('[profiles.default]\nwebhook_url = "mailto:a@b"\n', "profiles.default.webhook_url"),
    ):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            load_settings(write_config(text), env=base)
    with pytest.raises(ConfigError, match="GATEWAY_WEBHOOK_SECRET"):
        load_settings(write_config('[webhooks]\nurl = "https://example.com/h"\n'), env={"GATEWAY_TOKEN_SECRET": "x"})


async def test_storage_unreachable_never_touches_the_call_it_is_logged_counted_and_retried(
    start_gateway, new_peer, fake_agent, receiver, http, tmp_path, monkeypatch
):
    from gateway.keys import METRICS, RECORDS
    from gateway.records import service

    monkeypatch.setattr(service, "STORE_ATTEMPTS", 2)  # 1 s apart
    object_store_down(monkeypatch)
    config = write_config(
        f'[storage]\nurl = "s3://down/calls"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[webhooks]\nurl = "{receiver.url}"\n[profiles.default]\nrecord = true\n'
    )
    gw = await start_gateway(config, GATEWAY_WEBHOOK_SECRET=SECRET)
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(1000, 0.5, 24000), text="hello")
    await peer.wait_for(lambda: len(peer.played) >= 3600, timeout=10)  # the call went on as ever
    await peer.send_media(ulaw_tone(440, 0.2))
    await peer.stop()
    await asyncio.wait_for(receiver.got.wait(), 20)  # the webhook still goes out, with the record in it
    records = gw.app[RECORDS]
    await records.drain(timeout_s=10)
    metrics = gw.app[METRICS]
    sample = metrics.registry.get_sample_value
    assert sample("voice_gateway_call_records_total", {"result": "written"}) is None
    assert sample("voice_gateway_record_storage_errors_total", {"what": "recording"}) == 2  # both attempts
    (event,) = [Webhook(SECRET).verify(body, headers) for headers, body in receiver.deliveries]
    assert event["data"]["call_sid"] == peer.call_sid and event["data"]["recording"]["complete"] is False
    # the recording is kept where it was written, for an operator to upload
    assert Path(event["data"]["recording"]["location"]).is_file()


async def test_the_consent_announcement_plays_before_the_greeting_and_is_on_the_recording(
    start_gateway, new_peer, fake_agent, receiver, tmp_path
):
    notice = tmp_path / "notice.wav"
    with wave.open(str(notice), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        t = np.arange(4000) / 8000
        w.writeframes((np.sin(2 * np.pi * 700 * t) * 8000).astype("<i2").tobytes())
    gw = await start_gateway(
        records_config(tmp_path, receiver.url, f'record_announcement = "{notice}"\n'), GATEWAY_WEBHOOK_SECRET=SECRET
    )
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(1000, 0.5, 24000), text="hello")  # the greeting, queued behind the announcement
    await peer.wait_for(lambda: len(peer.played) >= 8000, timeout=10)
    await peer.stop()
    heard = np.frombuffer(g711.ulaw_to_pcm16(bytes(peer.played)), "<i2")
    assert abs(dominant(heard, 0.0, 0.45) - 700) < 20 and abs(dominant(heard, 0.55, 0.95) - 1000) < 20
    async with asyncio.timeout(15):
        while len(receiver.deliveries) < 2:
            await receiver.got.wait()
            receiver.got.clear()
    sid = peer.call_sid
    _caller, agent, _ = read_stereo((tmp_path / "calls" / f"{sid}.wav").read_bytes())
    start = np.flatnonzero(np.abs(agent) > 1000)[0] / 8000
    assert abs(dominant(agent, start, start + 0.45) - 700) < 20


async def test_the_retention_sweep_deletes_what_is_older_than_retention_days(tmp_path):
    import os
    import time

    from gateway.config import load_settings
    from gateway.metrics import GatewayMetrics
    from gateway.records.service import Records

    settings = load_settings(
        write_config(
            f'[storage]\nurl = "{(tmp_path / "calls").as_uri()}"\ndata_dir = "{tmp_path}"\nretention_days = 2\n'
        ),
        env={"GATEWAY_TOKEN_SECRET": "x"},
    )
    records = Records(settings, GatewayMetrics(active_calls=lambda: 0, accepting=lambda: True, max_concurrent_calls=1))
    calls = tmp_path / "calls"
    calls.mkdir()
    now = time.time()
    for name, age_days in (("old.json", 3), ("old.wav", 3), ("new.json", 1), ("new.wav", 0)):
        (calls / name).write_bytes(b"x")
        os.utime(calls / name, (now - age_days * 86400, now - age_days * 86400))
    await records.outbox.open(now)
    try:
        assert await records.sweep(now) == 2
    finally:
        await records.outbox.close()
    assert sorted(p.name for p in calls.iterdir()) == ["new.json", "new.wav"]


async def test_a_receiver_that_refuses_is_dead_lettered_and_one_that_fails_is_retried_until_it_takes_it(
    receiver, http, tmp_path
):
    import time

    from gateway.records.outbox import PERMANENT_ATTEMPTS, Outbox, WebhookSender

    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open(time.time())
    results: list[tuple[str, str]] = []
    sender = WebhookSender(
        outbox, b"r" * 32, http, base_backoff_s=0.05, retry_for_s=3600, timeout_s=5,
        on_result=lambda event, result: results.append((event, result)),
    )  # fmt: skip
    task = asyncio.create_task(sender.run())
    try:
        receiver.status = 400  # "your event is wrong": not retried for hours
        await outbox.add(receiver.url, "call.ended", "CA1", {"call_sid": "CA1"}, time.time())
        sender.wake.set()
        async with asyncio.timeout(10):
            while (await outbox.counts()).get("dead") != 1:
                await asyncio.sleep(0.05)
        assert results == [("call.ended", "failed")] * (PERMANENT_ATTEMPTS - 1) + [("call.ended", "dead")]
        results.clear()
        receiver.deliveries.clear()
        receiver.status = 503  # down for a while: retried with backoff, then delivered once it answers 2xx
        await outbox.add(receiver.url, "call.ended", "CA2", {"call_sid": "CA2"}, time.time())
        sender.wake.set()
        async with asyncio.timeout(10):
            while len(receiver.deliveries) < 2:
                await asyncio.sleep(0.02)
        receiver.status = 204
        async with asyncio.timeout(10):
            while (await outbox.counts()).get("delivered") != 1:
                await asyncio.sleep(0.05)
        assert results[-1] == ("call.ended", "delivered") and set(results[:-1]) == {("call.ended", "failed")}
        assert len({h["webhook-id"] for h, _ in receiver.deliveries}) == 1  # one id across every retry
        for headers, body in receiver.deliveries:
            assert Webhook(SECRET).verify(body, headers)["data"] == {"call_sid": "CA2"}
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await outbox.close()


class SlowReceiver:
    """Answers 204 after ``delay_s``; notes, per webhook-id, how many deliveries of it were in flight at once."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.delay_s = delay_s
        self.in_flight: dict[str, int] = {}
        self.max_in_flight: dict[str, int] = {}
        self.got: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        wid = request.headers["webhook-id"]
        await request.read()
        self.in_flight[wid] = self.in_flight.get(wid, 0) + 1
        self.max_in_flight[wid] = max(self.max_in_flight.get(wid, 0), self.in_flight[wid])
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.in_flight[wid] -= 1
        self.got.append(wid)
        return web.Response(status=204)


def outbox_sender(outbox: Any, http: aiohttp.ClientSession, timeout_s: float, base_backoff_s: float = 0.2) -> Any:
    from gateway.records.outbox import WebhookSender

    return WebhookSender(
        outbox, b"k" * 32, http, base_backoff_s=base_backoff_s, retry_for_s=3600, timeout_s=timeout_s,
        on_result=lambda event, result: None,
    )  # fmt: skip


class HungReceiver:
    """Accepts the connection and the request, never answers (a receiver stuck on its database)."""

    def __init__(self) -> None:
        self.got: list[str] = []
        self.app = web.Application()
        self.app.router.add_post("/hook", self._hook)

    async def _hook(self, request: web.Request) -> web.Response:
        self.got.append(request.headers["webhook-id"])
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_hung_receivers_backlog_never_holds_up_another_receivers_events(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """Profiles may have webhook URLs of their own, one outbox for all. 20 events queued for a receiver that never
    answers must not make another receiver's event wait 20 timeouts (10 s here, 200 s at the default timeout): the
    healthy one gets its event within about one timeout."""
    import time

    from gateway.records.outbox import Outbox

    hung, healthy = HungReceiver(), SlowReceiver()
    hung_url = str((await aiohttp_server(hung.app)).make_url("/hook"))
    healthy_url = str((await aiohttp_server(healthy.app)).make_url("/hook"))
    assert hung_url != healthy_url  # another port: another host:port
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open(time.time())
    for i in range(20):
        await outbox.add(hung_url, "call.ended", f"CA{i}", {"n": i}, time.time())
    await outbox.add(healthy_url, "call.ended", "CAok", {"n": 99}, time.time())
    async with aiohttp.ClientSession() as http:
        sender = outbox_sender(outbox, http, timeout_s=0.5)
        started = time.monotonic()
        task = asyncio.create_task(sender.run(), name="webhook_sender")
        try:
            async with asyncio.timeout(15):
                while not healthy.got:
                    await asyncio.sleep(0.02)
            took = time.monotonic() - started
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    await outbox.close()
    # One timeout (0.5 s) is the most it may wait behind the hung receiver; 3 s leaves room for a loaded machine, and
    # is far below the 10 s of sending the backlog first.
    assert took < 3.0, f"the healthy receiver waited {took:.1f} s behind the hung one's backlog"


async def test_a_receiver_that_stopped_answering_costs_one_attempt_per_backoff_not_one_per_event(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """A timeout (or a refused connection) from a receiver backs off that receiver, not only that event: its other
    events wait for the next try instead of each timing out in turn and burning its retry window."""
    import time

    from gateway.records.outbox import Outbox

    hung = HungReceiver()
    hung_url = str((await aiohttp_server(hung.app)).make_url("/hook"))
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open(time.time())
    for i in range(20):
        await outbox.add(hung_url, "call.ended", f"CA{i}", {"n": i}, time.time())
    async with aiohttp.ClientSession() as http:
        # Attempts time out after 0.5 s; the receiver is then left alone for 2 s (±20 %).
        sender = outbox_sender(outbox, http, timeout_s=0.5, base_backoff_s=2.0)
        task = asyncio.create_task(sender.run(), name="webhook_sender")
        await asyncio.sleep(3.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await outbox.close()
    # One event after another: 6 attempts in 3 s. Backing the receiver off: 2 (at 0 s and at 2.1-2.9 s).
    assert 1 <= len(hung.got) <= 3, f"{len(hung.got)} attempts at a receiver that never answers, in 3 s"


async def test_cancelling_the_sender_ends_its_attempts_in_flight_and_leaves_no_task(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """The gateway's shutdown cancels the sender: attempts in flight (to several receivers) are cancelled and awaited
    with it, none is left running, and their events stay pending on disk (sent again by the next start)."""
    import time

    from gateway.records.outbox import Outbox

    receivers = [HungReceiver() for _ in range(3)]
    urls = [str((await aiohttp_server(r.app)).make_url("/hook")) for r in receivers]
    outbox = Outbox(tmp_path / "outbox.sqlite3")
    await outbox.open(time.time())
    for i, url in enumerate(urls * 2):
        await outbox.add(url, "call.ended", f"CA{i}", {"n": i}, time.time())
    before = asyncio.all_tasks()
    async with aiohttp.ClientSession() as http:
        sender = outbox_sender(outbox, http, timeout_s=30.0)
        task = asyncio.create_task(sender.run(), name="webhook_sender")
        async with asyncio.timeout(5):
            while sum(len(r.got) for r in receivers) < 3:
                await asyncio.sleep(0.02)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        left = [t for t in asyncio.all_tasks() - before if not t.done() and t is not asyncio.current_task()]
        left = [t for t in left if "webhook" in t.get_name() or "_attempt" in repr(t.get_coro())]
        assert not left, f"tasks left running after the sender was cancelled: {left}"
    assert await outbox.counts() == {"pending": 6}
    await outbox.close()


async def test_a_locked_outbox_never_ends_the_webhook_sender_it_delivers_once_the_lock_is_gone(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """'database is locked' (another worker on the same data_dir holding the write lock past SQLite's busy wait, a
    slow disk) is logged and retried: the sender task goes on, and delivers everything once the lock is gone."""
    import sqlite3
    import time

    from gateway.records.outbox import Outbox

    receiver = SlowReceiver()
    server = await aiohttp_server(receiver.app)
    url = str(server.make_url("/hook"))
    db = tmp_path / "outbox.sqlite3"
    outbox = Outbox(db, busy_timeout_s=0.5)  # 5 s in the gateway: the same story, 10 times slower
    await outbox.open(time.time())
    async with aiohttp.ClientSession() as http:
        sender = outbox_sender(outbox, http, timeout_s=2.0)
        await outbox.add(url, "call.ended", "CA1", {"n": 1}, time.time())
        # Another process on the same data directory holds the write lock (longer than the outbox's busy wait).
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        with capture_call_logs() as logs:
            task = asyncio.create_task(sender.run(), name="webhook_sender")
            await asyncio.sleep(1.5)
        other.execute("ROLLBACK")
        other.close()
        # The lock is gone; a new event comes; the sender should deliver both within a few seconds.
        await outbox.add(url, "call.ended", "CA2", {"n": 2}, time.time())
        sender.wake.set()
        async with asyncio.timeout(10):
            while len(receiver.got) < 2 and not task.done():
                await asyncio.sleep(0.05)
        died = task.done() and task.exception()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    await outbox.close()
    assert not died, f"the webhook sender task died: {died!r}"
    assert len(receiver.got) == 2
    locked = events(logs, "webhook.outbox_error")  # said, once a failed pass, with what the outbox answered
    assert locked and all("database is locked" in e["error"] and e["log_level"] == "error" for e in locked)


async def test_two_workers_sharing_an_outbox_never_send_one_event_at_once_nor_again_once_delivered(
    aiohttp_server: Any, tmp_path: Path
) -> None:
    """``serve --workers N``: each worker's sender claims events from the one outbox file. A claim must cover the
    whole attempt of its event, however many other events the worker has to send first."""
    import time

    from gateway.records.outbox import Outbox

    receiver = SlowReceiver(delay_s=0.8)  # slow but within the timeout: every attempt succeeds
    server = await aiohttp_server(receiver.app)
    url = str(server.make_url("/hook"))
    db = tmp_path / "outbox.sqlite3"
    a, b = Outbox(db), Outbox(db)
    await a.open(time.time())
    await b.open(time.time())
    for i in range(12):
        await a.add(url, "call.ended", f"CA{i}", {"n": i}, time.time())
    async with aiohttp.ClientSession() as http:
        tasks = [asyncio.create_task(outbox_sender(o, http, timeout_s=1.0).run()) for o in (a, b)]
        async with asyncio.timeout(40):
            while len(set(receiver.got)) < 12:
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    await a.close()
    await b.close()
    twice_at_once = sorted(w for w, n in receiver.max_in_flight.items() if n > 1)
    sent_twice = sorted(w for w in set(receiver.got) if receiver.got.count(w) > 1)
    assert not twice_at_once, f"{len(twice_at_once)} events were being sent by both workers at once: {twice_at_once}"
    assert not sent_twice, f"{len(sent_twice)} delivered events were sent again"


async def test_an_attempt_whose_claim_ran_out_never_overwrites_the_outcome_of_the_newer_one(tmp_path: Path) -> None:
    """A worker whose attempt outlived its lease (a stalled process, a write that waited on the lock) finds the event
    claimed again by another: its outcome is not written, so a delivered event is not turned back to pending."""
    from gateway.records.outbox import Outbox

    a, b = Outbox(tmp_path / "outbox.sqlite3"), Outbox(tmp_path / "outbox.sqlite3")
    await a.open(0.0)
    await b.open(0.0)
    try:
        await a.add("http://127.0.0.1:9/hook", "call.ended", "CA1", {}, 0.0)
        first = await a.claim(0.0, lease_s=10.0)
        assert first is not None
        assert await b.claim(5.0, lease_s=10.0) is None  # held: nobody else sends it meanwhile
        second = await b.claim(11.0, lease_s=10.0)  # the first claim's lease is over
        assert second is not None and second.id == first.id and second.claim != first.claim
        assert await b.delivered(second, 12.0)
        assert not await a.failed(first, "HTTP 503", permanent=False, next_at=20.0)  # too late: not written
        assert not await a.delivered(first, 12.5)
        assert await a.counts() == {"delivered": 1}
        assert await a.claim(100.0, lease_s=10.0) is None
    finally:
        await a.close()
        await b.close()


async def test_a_restarting_worker_leaves_the_events_another_worker_is_sending_to_it(tmp_path: Path) -> None:
    """A start-up makes every pending event due at once, but not one a live worker has claimed and is sending."""
    from gateway.records.outbox import Outbox

    a, b = Outbox(tmp_path / "outbox.sqlite3"), Outbox(tmp_path / "outbox.sqlite3")
    await a.open(0.0)
    try:
        await a.add("http://127.0.0.1:9/hook", "call.ended", "CA1", {}, 0.0)
        await a.add("http://127.0.0.1:9/hook", "call.ended", "CA2", {}, 0.0)
        sending = await a.claim(0.0, lease_s=15.0)
        waiting = await a.claim(0.0, lease_s=15.0)
        assert sending is not None and waiting is not None
        assert await a.failed(waiting, "HTTP 503", permanent=False, next_at=600.0)  # backing off till 600
        await b.open(1.0)  # another worker starts
        again = await b.claim(1.0, lease_s=15.0)
        assert again is not None and again.id == waiting.id  # the restart retries the one backing off at once...
        assert await b.claim(1.0, lease_s=15.0) is None  # ...not the one being sent
        assert await a.delivered(sending, 2.0)
    finally:
        await a.close()
        await b.close()


async def test_an_outbox_file_from_before_claims_is_upgraded_in_place_and_keeps_its_events(tmp_path: Path) -> None:
    import sqlite3

    from gateway.records.outbox import Outbox

    path = tmp_path / "outbox.sqlite3"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(
        """CREATE TABLE outbox (id TEXT PRIMARY KEY, url TEXT NOT NULL, event TEXT NOT NULL, call_sid TEXT NOT NULL,
        body BLOB NOT NULL, created REAL NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
        refusals INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL, state TEXT NOT NULL DEFAULT 'pending',
        last_error TEXT NOT NULL DEFAULT '');
        CREATE INDEX outbox_due ON outbox (state, next_at);
        INSERT INTO outbox (id, url, event, call_sid, body, created, attempts, next_at, state) VALUES
            ('msg_old', 'http://127.0.0.1:9/hook', 'call.ended', 'CA1', X'7B7D', 0, 2, 500, 'pending'),
            ('msg_done', 'http://127.0.0.1:9/hook', 'call.ended', 'CA2', X'7B7D', 0, 1, 10, 'delivered');"""
    )
    old.close()
    outbox = Outbox(path)
    await outbox.open(100.0)
    try:
        d = await outbox.claim(100.0, lease_s=15.0)  # the restart made it due now
        assert d is not None and (d.id, d.attempts, d.body) == ("msg_old", 2, b"{}")
        assert await outbox.delivered(d, 101.0)
        assert await outbox.counts() == {"delivered": 2}
    finally:
        await outbox.close()
    again = Outbox(path)  # and opens again, already upgraded
    await again.open(200.0)
    await again.close()


async def test_the_softphone_is_told_where_a_recorded_calls_recording_will_be(start_gateway, http, receiver, tmp_path):
    config = Path(records_config(tmp_path, receiver.url))
    config.write_text('[softphone]\nenabled = "on"\n' + config.read_text())
    gw = await start_gateway(str(config), GATEWAY_WEBHOOK_SECRET=SECRET)
    async with http.post(gw.base_url + "/softphone/dial", json={"to": "+15550002222"}) as r:
        assert r.status == 200, await r.text()
        dial = await r.json()
    assert dial["recording"] == f"/calls/{dial['call_sid']}/recording"


async def test_a_second_stream_of_the_same_call_keeps_a_record_of_its_own(
    start_gateway, new_peer, fake_agent, receiver, tmp_path
):
    gw = await start_gateway(records_config(tmp_path, receiver.url), GATEWAY_WEBHOOK_SECRET=SECRET)
    first = await new_peer(gw)
    await first.connect()
    await fake_agent.session()
    await first.send_media(ulaw_tone(440, 0.2))
    await first.stop()
    await asyncio.wait_for(first.closed.wait(), 10)
    second = await new_peer(gw, call_sid=first.call_sid)  # the call comes back on a new stream (a redirect)
    await second.connect()
    await fake_agent.session()
    await second.send_media(ulaw_tone(440, 0.2))
    await second.stop()
    async with asyncio.timeout(15):
        while sum(1 for h, b in receiver.deliveries if b"call.ended" in b) < 2:
            await receiver.got.wait()
            receiver.got.clear()
    sid = first.call_sid
    want = sorted([f"{sid}.json", f"{sid}.wav", f"{sid}-{second.stream_sid}.json", f"{sid}-{second.stream_sid}.wav"])
    # The webhook is queued before the record's own store (docs/how-to/call-records.md): the record may still be
    # being written (``.json.part``) when its webhook arrives.
    async with asyncio.timeout(5):
        while (names := sorted(p.name for p in (tmp_path / "calls").iterdir())) != want:
            await asyncio.sleep(0.05)
    assert names == want


async def test_a_storage_directory_that_cannot_be_written_never_touches_the_call(
    start_gateway, new_peer, fake_agent, receiver, tmp_path, monkeypatch
):
    from gateway.keys import METRICS
    from gateway.records import service

    monkeypatch.setattr(service, "STORE_ATTEMPTS", 1)

    blocked = tmp_path / "calls"
    blocked.write_text("a file where the directory should be: every write fails, as on a full or broken disk")
    config = write_config(
        f'[storage]\nurl = "{blocked.as_uri()}"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[webhooks]\nurl = "{receiver.url}"\n[profiles.default]\nrecord = true\n'
    )
    gw = await start_gateway(config, GATEWAY_WEBHOOK_SECRET=SECRET)
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(1000, 0.5, 24000), text="hello")
    await peer.wait_for(lambda: len(peer.played) >= 3600, timeout=10)  # the caller hears the agent as ever
    await peer.stop()
    await asyncio.wait_for(receiver.got.wait(), 20)
    (event,) = [Webhook(SECRET).verify(body, headers) for headers, body in receiver.deliveries]
    assert event["data"]["recording"]["complete"] is False and event["data"]["outcome"] == "caller_hangup"
    sample = gw.app[METRICS].registry.get_sample_value
    assert sample("voice_gateway_recordings_total", {"result": "failed"}) == 1


async def test_a_bug_in_call_records_never_ends_the_call(
    start_gateway, new_peer, fake_agent, receiver, tmp_path, monkeypatch
):
    from gateway.keys import CALLS, METRICS
    from gateway.records.record import RecordBuilder

    def broken(self: Any, event: Any) -> None:
        raise RuntimeError("a bug in the record builder")

    monkeypatch.setattr(RecordBuilder, "event", broken)
    gw = await start_gateway(records_config(tmp_path, receiver.url), GATEWAY_WEBHOOK_SECRET=SECRET)
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(1000, 0.5, 24000), text="hello")
    await peer.wait_for(lambda: len(peer.played) >= 3600, timeout=10)
    await peer.stop()
    await asyncio.wait_for(peer.closed.wait(), 10)
    async with asyncio.timeout(10):
        while not gw.app[CALLS].completed:
            await asyncio.sleep(0.05)
    assert gw.app[CALLS].completed[-1].outcome == "caller_hangup"  # not internal_error
    sample = gw.app[METRICS].registry.get_sample_value
    assert sample("voice_gateway_record_storage_errors_total", {"what": "internal"}) >= 1


async def test_a_failing_sweep_step_is_logged_and_counted_and_neither_ends_the_sweep_nor_skips_the_other_steps(
    start_gateway, receiver, tmp_path
):
    """The sweep's first step is an outbox DELETE: a 'database is locked' there (another worker on the data directory
    writing for > 5 s) must not escape (it would end the records_sweep task, its only caller, for the life of the
    process) nor skip the retention that follows."""
    import os
    import sqlite3
    import time

    from gateway.keys import METRICS, RECORDS

    gw = await start_gateway(records_config(tmp_path, receiver.url), GATEWAY_WEBHOOK_SECRET=SECRET)
    records = gw.app[RECORDS]
    calls = tmp_path / "calls"
    calls.mkdir(exist_ok=True)
    old = calls / "CAold.json"
    old.write_bytes(b"{}")
    os.utime(old, (time.time() - 31 * 86400, time.time() - 31 * 86400))  # past retention_days (30)
    other = sqlite3.connect(tmp_path / "data" / "outbox.sqlite3", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        error = None
        try:
            await records.sweep(time.time())
        except Exception as exc:  # noqa: BLE001
            error = exc
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert error is None, f"Records.sweep raised {error!r}: the records_sweep task (its only caller) would end"
    assert not old.exists()  # the retention step still ran (this sweep's, or the start-up one's, locked out too)
    sample = gw.app[METRICS].registry.get_sample_value
    assert sample("voice_gateway_record_storage_errors_total", {"what": "sweep"}) >= 1


def _outbox_events(db: Path) -> list[tuple[str, str, str]]:
    import sqlite3

    with sqlite3.connect(db) as c:
        return [tuple(r) for r in c.execute("SELECT event, call_sid, state FROM outbox ORDER BY created")]


async def _one_call(gw: Any, new_peer: Any, fake_agent: Any) -> str:
    from gateway.keys import CALLS

    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(1000, 0.5, 24000), text="hello")
    await peer.wait_for(lambda: len(peer.played) >= 3600, timeout=10)
    await peer.send_media(ulaw_tone(440, 0.2))
    await peer.stop()
    async with asyncio.timeout(10):
        while not gw.app[CALLS].completed:
            await asyncio.sleep(0.05)
    return str(peer.call_sid)


@pytest.mark.parametrize("attempts", [4, 6], ids=["upload_given_up_in_the_drain", "cancelled_mid_upload"])
async def test_a_graceful_shutdown_while_the_object_store_is_down_keeps_the_call_ended_webhook_and_leaves_no_task(
    start_gateway, new_peer, fake_agent, receiver, tmp_path, monkeypatch, attempts
):
    """The recording upload and the record store are retried 1+2+4 s each (plus the client's own retries) while
    shutdown drains for 10 s: the call.ended event must still be in the outbox when the gateway is gone ("a restart
    ... loses no event"), and no record task may be left pending. With 6 attempts (1+2+4+8+16 s) the drain ends in
    the middle of the recording's upload: the cancelled task still queues the event."""
    import json
    import sqlite3
    import time

    from gateway.keys import RECORDS
    from gateway.records import service

    monkeypatch.setattr(service, "STORE_ATTEMPTS", attempts)

    object_store_down(monkeypatch)
    data = tmp_path / "data"
    config = write_config(
        f'[storage]\nurl = "s3://down/calls"\ndata_dir = "{data}"\n'
        f'[webhooks]\nurl = "{receiver.url}"\n[profiles.default]\nrecord = true\n'
    )
    gw = await start_gateway(config, GATEWAY_WEBHOOK_SECRET=SECRET)
    assert gw.app[RECORDS] is not None
    sid = await _one_call(gw, new_peer, fake_agent)
    t0 = time.monotonic()
    await gw.close()  # SIGTERM's end: on_shutdown, then every cleanup_ctx (the records' drain among them)
    shutdown_s = time.monotonic() - t0
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("record:")]
    events = _outbox_events(data / "outbox.sqlite3")
    assert ("call.ended", sid, "pending") in events or any(e[:2] == ("call.ended", sid) for e in events), (
        f"shutdown took {shutdown_s:.1f} s; outbox after shutdown: {events}; record tasks still pending: {left}"
    )
    assert left == [], f"record tasks still pending after shutdown: {left}"
    with sqlite3.connect(data / "outbox.sqlite3") as c:
        (body,) = c.execute("SELECT body FROM outbox WHERE event = 'call.ended'").fetchone()
    recording = json.loads(body)["data"]["recording"]
    assert recording["complete"] is False and recording["url"]  # not uploaded (yet): the sweep uploads the spool
    assert recording["location"] == str(data / "spool" / f"{sid}.wav")


async def test_a_record_whose_store_failed_in_an_outage_is_spooled_and_stored_once_by_the_sweep(
    start_gateway, new_peer, fake_agent, receiver, tmp_path
):
    """Storage down for ~10 s when a call ends: the record JSON is given up after 1+2+4 s of retries; it must be
    kept (the spool) and stored by the sweep when storage is back, then removed from the spool and not stored
    again by the next sweep."""
    import json
    import time

    from gateway.keys import RECORDS

    calls = tmp_path / "calls"
    calls.write_text("a file where the directory should be: the storage is down")
    data = tmp_path / "data"
    config = write_config(
        f'[storage]\nurl = "{calls.as_uri()}"\ndata_dir = "{data}"\n'
        f'[webhooks]\nurl = "{receiver.url}"\n[profiles.default]\nrecord = false\n'
    )
    gw = await start_gateway(config, GATEWAY_WEBHOOK_SECRET=SECRET)
    records = gw.app[RECORDS]
    sid = await _one_call(gw, new_peer, fake_agent)
    await records.drain(timeout_s=20)  # gave up: record.failed
    assert (data / "spool" / f"{sid}.json").is_file()
    calls.unlink()  # the storage is back
    calls.mkdir()
    await records.sweep(time.time())
    await asyncio.sleep(1.0)
    assert (calls / f"{sid}.json").is_file(), f"the record of {sid} was lost: storage holds {sorted(calls.iterdir())}"
    assert json.loads((calls / f"{sid}.json").read_bytes())["call_sid"] == sid
    assert list((data / "spool").iterdir()) == []  # removed once stored
    stored_at = (calls / f"{sid}.json").stat().st_mtime_ns
    await records.sweep(time.time())
    assert (calls / f"{sid}.json").stat().st_mtime_ns == stored_at  # not stored twice


def test_the_spool_keeps_at_most_spool_records_records(tmp_path, monkeypatch):
    from gateway.records import service
    from gateway.records.service import _spool_write as spool_write

    monkeypatch.setattr(service, "SPOOL_RECORDS", 2)
    spool = tmp_path / "spool"
    assert spool_write(spool, "CA1.json", b"{}") == str(spool / "CA1.json")
    assert spool_write(spool, "CA2.json", b"{}") == str(spool / "CA2.json")
    assert spool_write(spool, "CA3.json", b"{}") is None  # full: lost, and record.failed says so
    assert sorted(p.name for p in spool.iterdir()) == ["CA1.json", "CA2.json"]  # no half-written file left

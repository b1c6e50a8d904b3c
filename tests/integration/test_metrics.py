"""``GET /metrics`` over a real call: Twilio peer ⇄ real gateway ⇄ fake agent, scraped while the call runs."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.call import events as ev
from gateway.keys import CALLS, METRICS
from gateway.metrics import GatewayMetrics
from gateway.session import CallSummary
from tests.support.audio import tone, ulaw_tone

P = "voice_gateway_"


class Scrape:
    def __init__(self, text: str) -> None:
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for fam in text_string_to_metric_families(text):
            for s in fam.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def __call__(self, name: str, **labels: str) -> float:
        return self.samples.get((name, frozenset(labels.items())), 0.0)


async def scrape(http, gw) -> Scrape:
    async with http.get(gw.base_url + "/metrics") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return Scrape(await r.text())


async def test_a_call_moves_gauges_counters_and_histograms(start_gateway, new_peer, fake_agent, http):
    gw = await start_gateway()
    m = await scrape(http, gw)
    assert m(P + "active_calls") == 0 and m(P + "accepting_calls") == 1 and m(P + "max_concurrent_calls") == 100
    assert m(P + "calls_total", outcome="caller_hangup") == 0
    assert m(P + "time_to_first_agent_audio_seconds_count") == 0

    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    m = await scrape(http, gw)
    assert m(P + "active_calls") == 1
    assert m(P + "agent_session_ready_seconds_count") == 1

    # The greeting: first agent audio of the call.
    await sess.reply(tone(500, 0.3, 24000), realtime=False)
    await peer.wait_for(lambda: len(peer.events("media")) >= 5)
    m = await scrape(http, gw)
    assert m(P + "time_to_first_agent_audio_seconds_count") == 1
    assert m(P + "response_latency_seconds_count") == 0  # the greeting answers nobody

    # A turn: the caller speaks once the greeting has played (no barge-in), stops, and the agent answers.
    await peer.wait_for(lambda: len(peer.played) >= 0.3 * 8000, timeout=3)
    await asyncio.sleep(0.1)
    await sess.send("input.speech.started")
    await sess.send("input.speech.stopped")
    await asyncio.sleep(0.05)
    await sess.reply(tone(600, 0.3, 24000), realtime=False)
    await peer.wait_for(lambda: len(peer.events("media")) >= 20)
    m = await scrape(http, gw)
    assert m(P + "response_latency_seconds_count") == 1
    assert m(P + "time_to_first_agent_audio_seconds_count") == 1

    # An interruption: the caller talks over a long reply still playing at the carrier.
    reply = asyncio.create_task(sess.reply(tone(700, 3.0, 24000), reply_id="resp_long", realtime=True, done=False))
    n = len(peer.events("media"))
    await peer.wait_for(lambda: len(peer.events("media")) >= n + 15)
    await sess.send("input.speech.started")
    await peer.wait_for(lambda: len(peer.events("clear")) == 1, timeout=3)
    reply.cancel()
    m = await scrape(http, gw)
    assert m(P + "barge_ins_total", cause="speech_started") == 1
    assert m(P + "barge_in_unplayed_audio_seconds_count") == 1
    assert m(P + "barge_in_unplayed_audio_seconds_sum") > 0.02  # audio was queued at the carrier

    await sess.send("session.error", code="invalid_value", message="bad param", param="x")
    await sess.send("tool.call", call_id="t1", name="end_call_not", arguments={})
    await asyncio.sleep(0.1)
    m = await scrape(http, gw)
    assert m(P + "agent_session_errors_total", code="invalid_value", fatal="false") == 1
    assert m(P + "tool_calls_total", tool="end_call_not") == 1

    await peer.stop()
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)
    await asyncio.sleep(0.05)
    m = await scrape(http, gw)
    assert m(P + "active_calls") == 0
    assert m(P + "calls_total", outcome="caller_hangup") == 1
    assert m(P + "call_duration_seconds_count") == 1
    assert m(P + "barge_in_clear_latency_seconds_count") == 1
    assert m(P + "carrier_mark_round_trip_seconds_count") >= 1  # the peer echoed the marks after played audio
    assert m(P + "event_loop_lag_seconds_count") >= 1
    assert m("process_resident_memory_bytes") > 0
    assert gw.app[METRICS].tracked_calls == 0  # no per-call state outlives the call


async def test_errors_refusals_and_dropped_frames_are_counted(start_gateway, new_peer, fake_agent, http):
    fake_agent.ready_delay = 0.5
    gw = await start_gateway(_config("[audio]\npreready_buffer_ms = 100\n"))
    peer = await new_peer(gw)
    await peer.connect()
    await peer.send_media(ulaw_tone(300, 0.4))  # 20 frames before ready; the queue holds 5
    sess = await fake_agent.session()
    n = len(peer.events("media"))
    await sess.send("session.error", code="agent_timeout", message="gone")  # fatal: the apology prompt plays
    await peer.wait_for(lambda: len(peer.events("media")) > n, timeout=5)
    await peer.stop()  # the caller hangs up during the apology
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=5)

    bad = await new_peer(gw)
    await bad.connect()
    await fake_agent.session()
    await bad.ws.send_str('{"event": "media", ')
    await bad.wait_for(lambda: bad.closed.is_set(), timeout=5)

    gw.app[CALLS].accepting = False
    async with http.post(gw.base_url + "/twilio/voice", data={"CallSid": "CA" + "1" * 32}) as r:
        assert r.status == 200 and "<Hangup" in await r.text()
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(gw.base_url + "/twilio/stream")
    assert refused.value.status == 503
    await asyncio.sleep(0.05)
    m = await scrape(http, gw)
    assert m(P + "accepting_calls") == 0
    assert m(P + "calls_total", outcome="agent_error") == 1
    assert m(P + "agent_session_errors_total", code="agent_timeout", fatal="true") == 1
    assert m(P + "frames_dropped_total", queue="caller_to_agent") == 15
    assert m(P + "calls_total", outcome="protocol_error") == 1
    assert m(P + "protocol_errors_total", side="carrier") == 1
    assert m(P + "protocol_errors_total", side="agent") == 0
    assert m(P + "call_refusals_total", stage="webhook", reason="draining") == 1
    assert m(P + "call_refusals_total", stage="stream", reason="draining") == 1


def _metrics() -> GatewayMetrics:
    return GatewayMetrics(active_calls=lambda: 0, accepting=lambda: True, max_concurrent_calls=1, process_metrics=False)


def _value(m: GatewayMetrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels)
    return 0.0 if v is None else v


def test_agent_resumed_events_are_counted_without_a_log_line():
    m = _metrics()
    m.on_event("CA1", ev.CallStarted("CA1", "default", t=0.0))
    m.on_event("CA1", ev.AgentResume(1, 250.0, t=5.0))
    m.on_event("CA1", ev.AgentResume(1, 250.0, t=9.0))
    assert _value(m, P + "agent_resumes_total") == 2


def test_peer_supplied_label_values_cannot_mint_unbounded_series():
    m = _metrics()
    for i in range(200):
        m.on_event("CA1", ev.SessionErrorReport(f"code_{i}", False))
    m.on_event("CA1", ev.SessionErrorReport("Bad Code!\n", False))
    codes = {
        s.labels["code"]
        for fam in m.registry.collect()
        for s in fam.samples
        if s.name == P + "agent_session_errors_total"
    }
    assert len(codes) <= 65 and "other" in codes
    assert _value(m, P + "agent_session_errors_total", code="other", fatal="false") == 200 - 64 + 1


def test_per_call_state_is_dropped_when_the_call_ends():
    m = _metrics()
    m.on_event("CA1", ev.CallStarted("CA1", "default", t=0.0))
    m.on_event("CA1", ev.AgentFirstAudio("r1", 700.0, t=1.2))  # the greeting
    m.on_event("CA1", ev.CallerSpeechStopped(t=3.0))
    m.on_event("CA1", ev.AgentFirstAudio("r2", 600.0, t=3.6))
    assert _value(m, P + "time_to_first_agent_audio_seconds_sum") == 1.2
    assert _value(m, P + "response_latency_seconds_sum") == 0.6
    m.on_summary(
        CallSummary(
            call_sid="CA1",
            outcome="caller_hangup",
            duration_s=4.0,
            clear_latencies_ms=[0.5],
            mark_round_trips_ms=[210.0, 230.0],
        )
    )
    assert m.tracked_calls == 0
    assert _value(m, P + "carrier_mark_round_trip_seconds_count") == 2
    assert _value(m, P + "calls_total", outcome="caller_hangup") == 1


async def test_loop_lag_probe_records_a_blocked_loop():
    import time

    from gateway.metrics import loop_lag_probe

    m = _metrics()
    task = asyncio.create_task(loop_lag_probe(m, interval_s=0.02))
    await asyncio.sleep(0.03)
    time.sleep(0.15)  # noqa: ASYNC251 - on purpose: block the loop, the probe must wake ~150 ms late
    await asyncio.sleep(0.05)
    task.cancel()
    assert _value(m, P + "event_loop_lag_seconds_sum") >= 0.1


def _config(text: str) -> str:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(text)
    return f.name

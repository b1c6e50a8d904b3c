"""The per-call inbound audio rate limit on the real app over loopback (Twilio peer ⇄ gateway ⇄ fake agent;
docs/security.md#inbound-audio-rate): a caller flooding audio faster than real time gets at most ``inbound_burst_s +
inbound_rate_limit × elapsed`` of it to the agent, the rest is dropped before conversion and counted (``call.ended``,
``/metrics``, one ``call.inbound_rate_limited`` line); a caller at real time, with or without a stall delivered as one
late bunch, loses nothing; and the budget counts audio *duration* in the stream's negotiated format (L16 at 16 kHz: 640
B per 20 ms), not messages or μ-law bytes."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any
from xml.etree import ElementTree

from prometheus_client.parser import text_string_to_metric_families

from gateway.audio.fir_jit import FusedFirDecoder
from gateway.audio.transcode import InboundAudio
from tests.support.audio import tone, ulaw_tone
from tests.support.faults import write_config
from tests.support.logcapture import capture_call_logs, events, wait_event
from tests.support.twilio_peer import TwilioPeer

PCM24K_BYTES_PER_S = 48000  # what the fake agent receives: 24 kHz PCM16
DROPPED = "voice_gateway_inbound_audio_dropped_total"


async def _metric(http: Any, gw: Any, name: str, **labels: str) -> float:
    async with http.get(gw.base_url + "/metrics") as r:
        assert r.status == 200
        text = await r.text()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name}{labels} is not exported")


async def _settle(peer: TwilioPeer, pred: Any) -> None:
    """Let the frames in flight reach the agent (up to 5 s); if they never do, the assertions after say what is
    missing instead of a bare timeout."""
    try:
        await peer.wait_for(pred, timeout=5)
    except TimeoutError:
        pass


async def _hang_up(peer: TwilioPeer, logs: list[dict[str, Any]]) -> dict[str, Any]:
    await peer.stop()
    await peer.wait_for(lambda: peer.closed.is_set(), timeout=10)
    return await wait_event(logs, "call.ended", timeout=10)


async def test_a_flooding_caller_gets_at_most_burst_plus_rate_times_elapsed_to_the_agent(
    start_gateway, new_peer, fake_agent, http, monkeypatch
):
    # Count conversions where they happen: InboundAudio.convert, or for the default pair the fused compiled step
    # that InboundAudio hands the frame to directly (gateway/audio/fir_jit.py).
    converted = 0
    for cls in (InboundAudio, FusedFirDecoder):
        convert = cls.convert

        def counting_convert(self: Any, payload: bytes, convert: Any = convert) -> bytes:
            nonlocal converted
            converted += 1
            return convert(self, payload)  # type: ignore[no-any-return]

        monkeypatch.setattr(cls, "convert", counting_convert)
    gw = await start_gateway()
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        t0 = time.monotonic()  # before the call's budget exists: the bound below only gets looser
        await peer.connect()
        sess = await fake_agent.session()
        await peer.send_media(ulaw_tone(440, 10.0))  # 500 frames of 20 ms, as fast as the socket takes them
        ended = await _hang_up(peer, logs)
        elapsed = time.monotonic() - t0
    await asyncio.sleep(0.05)
    forwarded_s = len(sess.audio) / PCM24K_BYTES_PER_S
    # At most the burst plus 1.2 × the call's whole life so far (plus the resampler's rounding): not the 10 s sent.
    assert forwarded_s <= 1.0 + 1.2 * elapsed + 0.005, (forwarded_s, elapsed)
    assert forwarded_s < 9.0, (forwarded_s, elapsed)
    # Every frame is accounted for: forwarded, or dropped by the limit (no queue drop here: the agent was ready).
    dropped = ended["frames_dropped_rate_limit"]
    assert ended["frames_in"] == 500 and ended["frames_dropped_to_agent"] == 0
    assert ended["frames_to_agent"] + dropped == 500 and dropped >= 500 - (1.0 + 1.2 * elapsed) / 0.02 - 1
    assert abs(forwarded_s - ended["frames_to_agent"] * 0.02) <= 0.005  # what was counted as sent was received
    assert converted == ended["frames_to_agent"]  # a refused frame is not even converted
    assert await _metric(http, gw, DROPPED, reason="rate_limit") == dropped
    # One line per call when dropping starts, with the call's context; never one per frame.
    limited = events(logs, "call.inbound_rate_limited")
    assert len(limited) == 1, limited
    assert limited[0]["call_sid"] == peer.call_sid and limited[0]["stream_sid"] == peer.stream_sid
    assert (limited[0]["rate_limit"], limited[0]["burst_s"]) == (1.2, 1.0) and limited[0]["after_s"] >= 0
    assert limited[0]["log_level"] == "warning"


async def test_a_caller_at_real_time_loses_nothing_even_after_a_stall(start_gateway, new_peer, fake_agent, http):
    gw = await start_gateway()
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect()
        sess = await fake_agent.session()
        await peer.send_media(ulaw_tone(440, 1.0), realtime=True)
        # Network jitter: nothing for 0.8 s, then the 0.8 s of frames that were due meanwhile arrive together.
        await asyncio.sleep(0.8)
        await peer.send_media(ulaw_tone(440, 0.8))
        await peer.send_media(ulaw_tone(440, 1.0), realtime=True)
        await _settle(peer, lambda: len(sess.audio) >= 2.8 * PCM24K_BYTES_PER_S - 960)
        ended = await _hang_up(peer, logs)
    assert ended["frames_in"] == 140 and ended["frames_dropped_rate_limit"] == 0 and ended["frames_to_agent"] == 140
    assert abs(len(sess.audio) / PCM24K_BYTES_PER_S - 2.8) <= 0.005
    assert events(logs, "call.inbound_rate_limited") == []
    assert await _metric(http, gw, DROPPED, reason="rate_limit") == 0


async def test_the_budget_counts_duration_in_the_streams_own_format(start_gateway, new_peer, fake_agent, http):
    # SignalWire L16 at 16 kHz: 640 B per 20 ms. Counted as μ-law bytes (or as Twilio frames of 160 B) each frame
    # would weigh 80 ms, and a caller at real time would lose most of its audio after the first second.
    gw = await start_gateway(write_config('[carriers.signalwire]\ncodec = "L16@16000h"\n'))
    peer = await new_peer(gw, dial=False)
    form = {"CallSid": peer.call_sid, "From": peer.from_, "To": peer.to, "AccountSid": "AC" + "0" * 32}
    async with http.post(gw.base_url + "/signalwire/voice", data=form) as r:
        body = await r.text()
        assert r.status == 200, body
    stream = ElementTree.fromstring(body).find("./Connect/Stream")
    assert stream is not None and stream.attrib["codec"] == "L16@16000h", body
    peer.stream_url = stream.attrib["url"]
    peer.parameters = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
    with capture_call_logs() as logs:
        await peer.connect(start=False)
        await peer.send(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": peer.stream_sid,
                "start": {
                    "accountSid": "AC" + "0" * 32,
                    "streamSid": peer.stream_sid,
                    "callSid": peer.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": peer.parameters,
                    "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1},
                },
            }
        )
        sess = await fake_agent.session()
        pcm_be = bytearray(tone(440, 2.0, 16000))
        pcm_be[0::2], pcm_be[1::2] = pcm_be[1::2], pcm_be[0::2]  # L16 travels in network byte order
        t0 = time.monotonic()
        for i in range(0, len(pcm_be), 640):  # real time: frame i leaves once the audio before it was spoken
            await peer.send(
                {
                    "event": "media",
                    "sequenceNumber": str(2 + i // 640),
                    "streamSid": peer.stream_sid,
                    "media": {
                        "track": "inbound",
                        "chunk": str(1 + i // 640),
                        "timestamp": str(i // 32),
                        "payload": base64.b64encode(pcm_be[i : i + 640]).decode(),
                    },
                }
            )
            await asyncio.sleep(max(0.0, t0 + (i + 640) / 32000 - time.monotonic()))
        await _settle(peer, lambda: len(sess.audio) >= 2.0 * PCM24K_BYTES_PER_S - 960)
        ended = await _hang_up(peer, logs)
    assert ended["frames_in"] == 100 and ended["frames_dropped_rate_limit"] == 0
    assert abs(len(sess.audio) / PCM24K_BYTES_PER_S - 2.0) <= 0.005
    assert events(logs, "call.inbound_rate_limited") == []

"""Media faults on the real app over loopback (Twilio peer ⇄ gateway ⇄ fake agent; docs/how-to/carriers/index.md
#media-faults): empty payloads never reach the agent, a mis-sized one does; each reason is logged once per call
(``carrier.media_fault``), counted in ``call.ended`` and in ``voice_gateway_carrier_media_faults_total``."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from gateway.audio.fir_design import FIR_DELAY
from tests.support.audio import ulaw_tone
from tests.support.logcapture import capture_call_logs, events, wait_event

PCM24K_BYTES_PER_20MS = 960


async def _metric(http: Any, gw: Any, reason: str) -> float:
    async with http.get(gw.base_url + "/metrics") as r:
        text = await r.text()
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "voice_gateway_carrier_media_faults_total" and s.labels == {"reason": reason}:
                return float(s.value)
    return 0.0


async def test_empty_payloads_are_dropped_mis_sized_passed_and_each_reason_logged_once(
    start_gateway: Any, new_peer: Any, fake_agent: Any, http: Any
) -> None:
    gw = await start_gateway()
    peer = await new_peer(gw)
    with capture_call_logs() as logs:
        await peer.connect()
        sess = await fake_agent.session()
        await peer.send_media(ulaw_tone(440, 0.2))  # 10 whole frames
        empty = {"track": "inbound", "chunk": "99", "timestamp": "300", "payload": ""}
        for _ in range(3):
            await peer.send({"event": "media", "sequenceNumber": "99", "streamSid": peer.stream_sid, "media": empty})
        # (send_media slices in 160-byte frames: 25 ms ends in a 40-byte one; twice)
        await peer.send_media(ulaw_tone(440, 0.025))
        await peer.send_media(ulaw_tone(440, 0.025))
        await peer.wait_for(lambda: len(sess.audio) >= (10 + 2) * PCM24K_BYTES_PER_20MS, timeout=5)
        await peer.stop()
        ended = await wait_event(logs, "call.ended", timeout=10)
    assert ended["media_faults"] == {"empty": 3, "mis_sized": 2}, ended
    assert ended["frames_in"] == 10 + 2 + 2  # the empty ones never reached the call core
    faults = events(logs, "carrier.media_fault")
    assert [(f["reason"], f["refused"], f["bytes"]) for f in faults] == [("empty", True, 0), ("mis_sized", False, 40)]
    # Everything but the empty payloads reached the agent (40 B are 5 ms), less what the inbound FIR still holds for its
    # 2 ms look-ahead (48 samples of 24 kHz PCM).
    expected = (10 + 2) * PCM24K_BYTES_PER_20MS + 2 * PCM24K_BYTES_PER_20MS // 4
    assert expected - 2 * FIR_DELAY <= len(sess.audio) <= expected
    assert all(f["call_sid"] == peer.call_sid and f["log_level"] == "warning" for f in faults)
    await asyncio.sleep(0.05)
    assert await _metric(http, gw, "empty") == 3 and await _metric(http, gw, "mis_sized") == 2

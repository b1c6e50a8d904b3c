"""A session recorder's queue to the store's thread is bounded: a thread stuck on a hung disk costs a bounded amount
of memory, and what is dropped is counted and logged once (gateway/local_agent/store/recorder.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from structlog.testing import capture_logs

from gateway.local_agent import protocol as proto
from gateway.local_agent.session import Session
from gateway.local_agent.store import recorder as rec


def test_hooks_drop_and_count_past_the_bound_and_log_once(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(rec, "_PENDING_MAX", 5)
    loop = asyncio.new_event_loop()
    try:
        session = Session("sess_1", proto.SessionConfig(voice="ivy"), now=0.0, expires_at=1e9, resume_token="t")
        r = rec.Recorder(session, tmp_path, loop=loop, record_audio=True)
        with capture_logs() as logs:
            for i in range(8):  # nobody flushes: the store's thread is stuck
                r.agent_audio("r1", bytes(960), plays_at=float(i))
        assert r.queued == 5 and r.dropped == 3
        assert [e["event"] for e in logs] == ["local_agent.recording_behind"]
        r.flush()  # the thread catches up: queueing works again
        r.agent_audio("r1", bytes(960), plays_at=9.0)
        assert r.queued == 1 and r.dropped == 3
        r.flush(final=True)
    finally:
        loop.close()

"""Call records end to end: the call simulator against the real gateway and its embedded local agent (real VAD,
STT, intents, TTS) with recording on, one barge-in per call, on the file backend and on the S3 backend (a real
S3-compatible server on loopback). The WAV is checked against what the simulated caller actually said and heard,
on the same clock (docs/how-to/call-records.md#recording)."""

from __future__ import annotations

import dataclasses
import io
import os
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.audio import g711
from gateway.keys import RECORDS
from gateway.records.settings import StorageSettings
from gateway.records.storage import S3Storage
from gateway.simulator.caller import SimulatorConfig, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import build_timeline
from tests.support.local_gateway import local_agent_settings, serve_gateway, shared_speech_models
from tests.support.s3_server import S3Server, s3_server

pytestmark = pytest.mark.speech

KEY = "records-e2e-key"
FRAME = 160  # samples per 20 ms


@pytest.fixture(scope="module")
def models() -> Any:
    return shared_speech_models()


@pytest.fixture(scope="module")
def voice() -> Any:
    return load_caller_voice(cpu_threads=2)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with s3_server() as server:
        server.create_bucket("voice-calls")
        yield server


def recording_settings(storage_url: str, data_dir: Path) -> Any:
    settings = local_agent_settings(GATEWAY_API_KEY=KEY)
    profiles = {n: dataclasses.replace(p, record=True) for n, p in settings.profiles.items()}
    return dataclasses.replace(
        settings, profiles=profiles, storage=StorageSettings(url=storage_url, data_dir=str(data_dir))
    )


def levels(pcm: np.ndarray) -> np.ndarray:
    """RMS per 20 ms frame."""
    n = len(pcm) // FRAME
    frames = pcm[: n * FRAME].astype(np.float64).reshape(n, FRAME)
    return np.sqrt(np.mean(frames**2, axis=1))


def lag_frames(a: np.ndarray, b: np.ndarray, max_lag: int = 25) -> int:
    """The shift (in frames) of ``b`` that best matches ``a``'s loudness envelope (log, so quiet speech counts)."""
    n = min(len(a), len(b))
    x, y = np.log1p(a[:n]), np.log1p(b[:n])
    x, y = x - x.mean(), y - y.mean()
    scores = {
        lag: float(np.dot(x[max(0, lag) : n + min(0, lag)], y[max(0, -lag) : n - max(0, lag)]))
        for lag in range(-max_lag, max_lag + 1)
    }
    return max(scores, key=lambda k: scores[k])


async def place_recorded_call(settings: Any, models: Any, voice: Any) -> tuple[Any, Any, dict[str, Any], bytes]:
    """One call: the greeting, 'What time do you open?', a barge-in 1.5 s into the answer (one long sentence, so
    it is playing even on a loaded machine) with 'That's all, thank you. Goodbye.', and the agent's goodbye (end_call:
    the agent hangs up). Returns the simulator's record and timeline, and the gateway's record and recording as the
    read API serves them."""
    turns = (say_turn("What time do you open?", voice), say_turn("That's all, thank you. Goodbye.", voice))
    async with serve_gateway(settings, models) as (base, app):
        call = await simulate_call(SimulatorConfig(url=base, turns=turns, barge_in_after_s=1.5, api_key=KEY))
        await app[RECORDS].drain(timeout_s=30)
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {KEY}"}) as http:
            async with http.get(f"{base}/calls/{call.call_sid}") as r:
                assert r.status == 200, await r.text()
                record = await r.json()
            async with http.get(f"{base}/calls/{call.call_sid}/recording") as r:
                assert r.status == 200
                wav_bytes = await r.read()
    return call, build_timeline(call), record, wav_bytes


def check_call(call: Any, tl: Any, record: dict[str, Any], wav_bytes: bytes) -> None:
    assert call.outcome == "completed" and len(tl.clears) == 1, tl.format_text()
    assert call.stored is not None and call.stored["recording"] == record["recording"]["location"]
    # -- the WAV: two channels at 8 kHz, as long as the call
    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (2, 8000, 2)
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    seconds = len(pcm) / 8000
    assert abs(seconds - record["duration_s"]) <= 0.1, (seconds, record["duration_s"])
    assert abs(seconds - tl.duration_s) <= 0.1, (seconds, tl.duration_s)
    left, right = levels(pcm[:, 0]), levels(pcm[:, 1])
    said = levels(np.frombuffer(g711.ulaw_to_pcm16(bytes(call.said)), dtype="<i2"))
    heard = levels(np.frombuffer(g711.ulaw_to_pcm16(bytes(call.heard)), dtype="<i2"))
    # caller speech on the left, where the caller said it; agent speech on the right, where the caller heard it
    assert abs(lag_frames(said, left)) <= 2, lag_frames(said, left)
    assert abs(lag_frames(heard, right)) <= 2, lag_frames(heard, right)
    for t in tl.turns:
        a, b = int(t.start_s / 0.02) + 5, int(t.end_s / 0.02) - 5
        assert np.median(left[a:b]) > 300, (t.label, np.median(left[a:b]))  # the caller's words, on the left
    reply = tl.turns[0].reply
    assert reply is not None
    a, b = int(reply.start_s / 0.02) + 5, int(reply.end_s / 0.02) - 5
    assert np.median(right[a:b]) > 300 and np.median(left[a:b]) < 100  # the answer on the right only
    # after the clear, silence on the right until the next reply (the goodbye)
    (barge,) = record["barge_ins"]
    after = [u for u in record["utterances"] if u["speaker"] == "agent" and u["start_s"] > barge["t"]]
    assert after, record["utterances"]
    quiet = right[int(barge["t"] / 0.02) + 2 : int(after[0]["start_s"] / 0.02) - 1]
    assert len(quiet) > 10 and quiet.max() < 30, quiet.max()
    # -- the record: both sides' words, the barge-in, the latencies
    caller = " ".join(u["text"].lower() for u in record["utterances"] if u["speaker"] == "caller")
    agent = " ".join(u["text"].lower() for u in record["utterances"] if u["speaker"] == "agent")
    assert "open" in caller and "bye" in caller, record["utterances"]
    assert "harbour kitchen" in agent and "we are open" in agent and "goodbye" in agent, record["utterances"]
    interrupted = [u for u in record["utterances"] if u.get("interrupted")]
    assert [u["reply_id"] for u in interrupted] == [barge["reply_id"]]
    assert barge["cause"] in ("speech_started", "reply_interrupted") and barge["reaction_ms"] is not None
    answers = [t for t in record["turns"] if not t["greeting"]]
    assert answers and all(t["latency_heard_ms"] >= t["latency_sent_ms"] > 0 for t in answers), record["turns"]
    assert record["turns"][0]["greeting"] and record["outcome"] == "agent_hangup"
    assert [t["tool"] for t in record["tool_calls"]] == ["end_call"] and record["tool_calls"][0]["result"]


async def test_recorded_call_on_the_file_backend(models, voice, tmp_path):
    settings = recording_settings((tmp_path / "calls").as_uri(), tmp_path / "data")
    call, tl, record, wav_bytes = await place_recorded_call(settings, models, voice)
    check_call(call, tl, record, wav_bytes)
    assert wav_bytes == (tmp_path / "calls" / f"{call.call_sid}.wav").read_bytes()


async def test_recorded_call_on_the_s3_backend(models, voice, s3, tmp_path, monkeypatch):
    for name, value in s3.env().items():
        monkeypatch.setenv(name, value)
    settings = recording_settings("s3://voice-calls/recorded", tmp_path / "data")
    # a recording a killed process left in the spool: the start-up sweep uploads it
    orphan = tmp_path / "data" / "spool" / "CAorphan.wav"
    orphan.parent.mkdir(parents=True)
    orphan.write_bytes(b"RIFF-left-by-a-killed-process")
    os.utime(orphan, (time.time() - 600, time.time() - 600))
    call, tl, record, wav_bytes = await place_recorded_call(settings, models, voice)
    check_call(call, tl, record, wav_bytes)
    assert record["recording"]["location"] == f"s3://voice-calls/recorded/{call.call_sid}.wav"
    assert not list((tmp_path / "data" / "spool").glob("*.wav"))  # uploaded, then forgotten locally
    stored = await S3Storage("s3://voice-calls/recorded").get("CAorphan.wav")
    assert stored == b"RIFF-left-by-a-killed-process"

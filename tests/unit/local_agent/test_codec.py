"""The local agent's audio edges (gateway/local_agent/codec.py): client input to 16 kHz, TTS output to live-sized
``reply.audio`` chunks (10 ms / 480 B of PCM, 37.5 ms / 300 B of G.711), volume, and the audibility test behind
the first-audio latency figure."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio.g711 import pcm16_to_ulaw
from gateway.local_agent import protocol as proto
from gateway.local_agent.codec import InputDecoder, OutputEncoder, apply_volume, audible


def tone(rate: int, seconds: float, amplitude: int = 8000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * np.pi * 440 * t) * amplitude).astype("<i2").tobytes()


@pytest.mark.parametrize("encoding,bytes_per_s", [("audio/pcmu", 8000), ("audio/pcma", 8000), ("audio/pcm", 48000)])
def test_input_of_any_format_comes_out_as_16_khz_pcm16(encoding: str, bytes_per_s: int) -> None:
    dec = InputDecoder(proto.AudioFormat(encoding))
    out = b"".join(dec.decode(bytes(bytes_per_s // 50)) for _ in range(150))  # 3 s in 20 ms frames
    # The resampler's filter holds back up to ~0.1 s, released as more audio comes.
    assert 3 * 16000 - 1600 <= len(out) // 2 <= 3 * 16000


@pytest.mark.parametrize(
    "encoding,chunk_bytes,chunk_s",
    [("audio/pcm", 480, 0.010), ("audio/pcmu", 300, 0.0375), ("audio/pcma", 300, 0.0375)],
)
def test_reply_audio_comes_in_live_sized_chunks_and_the_tail_is_padded(
    encoding: str, chunk_bytes: int, chunk_s: float
) -> None:
    enc = OutputEncoder(proto.AudioFormat(encoding), None)
    assert enc.chunk_s == pytest.approx(chunk_s)
    frames, duration = enc.push(tone(24000, 0.1))
    frames += enc.flush()
    assert 0 < duration <= 0.1 + 1e-9  # what the resampler let through so far (all of it for PCM)
    assert frames and all(len(f) == chunk_bytes for f in frames)
    assert len(frames) * chunk_s == pytest.approx(0.1, abs=chunk_s)


def test_a_chunk_duration_setting_overrides_the_live_sizes() -> None:
    enc = OutputEncoder(proto.AudioFormat("audio/pcmu"), 20.0)
    assert enc.chunk_s == pytest.approx(0.020)
    frames, _ = enc.push(tone(24000, 0.1))
    assert all(len(f) == 160 for f in frames + enc.flush())


def test_volume_scales_the_samples_and_100_or_none_leaves_them_alone() -> None:
    pcm = tone(24000, 0.01)
    assert apply_volume(pcm, None) == pcm and apply_volume(pcm, 100) == pcm
    half = np.frombuffer(apply_volume(pcm, 50), dtype="<i2").astype(np.int32)
    full = np.frombuffer(pcm, dtype="<i2").astype(np.int32)
    assert np.abs(half - full // 2).max() <= 1


def test_audible_means_any_sample_above_about_minus_40_dbfs() -> None:
    quiet, loud = tone(8000, 0.01, amplitude=200), tone(8000, 0.01, amplitude=2000)
    assert not audible(quiet, "audio/pcm") and audible(loud, "audio/pcm")
    assert not audible(pcm16_to_ulaw(quiet), "audio/pcmu") and audible(pcm16_to_ulaw(loud), "audio/pcmu")
    assert not audible(b"", "audio/pcm")

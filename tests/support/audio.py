"""Audio measurement helpers for tests (pure numpy)."""

from __future__ import annotations

import numpy as np

from gateway.audio import g711


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.3) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


def ulaw_tone(freq: float, seconds: float) -> bytes:
    return g711.pcm16_to_ulaw(tone(freq, seconds, 8000))


def dominant_freq(pcm: bytes, rate: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    x = x - x.mean()
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * rate / len(x))


def rms(pcm: bytes) -> float:
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x))) if len(x) else 0.0


def voice_like(seconds: float, rate: int, amplitude: float = 6000.0) -> bytes:
    """A voice-like PCM16 signal with no fixed period (a tone that repeats every few samples stays periodic when its
    bytes are swapped, so it cannot show a byte-order mistake): a 100-140 Hz buzz with two formants (700, 1200 Hz)
    and syllable-rate loudness."""
    t = np.arange(int(seconds * rate)) / rate
    phase = 2 * np.pi * np.cumsum(120 + 20 * np.sin(2 * np.pi * 3 * t)) / rate
    x = sum(
        np.sin(k * phase) / k * (1.0 if abs(k * 120 - 700) < 300 or abs(k * 120 - 1200) < 300 else 0.2)
        for k in range(1, 30)
    )
    x = x / np.max(np.abs(x)) * amplitude * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    return np.asarray(x).astype("<i2").tobytes()

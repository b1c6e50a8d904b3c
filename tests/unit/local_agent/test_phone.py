"""The simulated phone line: telephone band, 8 kHz μ-law, and back to 16 kHz PCM16.

Marked ``speech`` only because phone.py uses scipy, which comes with the speech extra; no model is loaded.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio.g711 import ulaw_to_pcm16
from gateway.local_agent.speech.phone import phone_path, ulaw8k_to_pcm16_16k

pytestmark = pytest.mark.speech


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 8000.0) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype("<i2").tobytes()


def rms_after_settling(pcm16: bytes) -> float:
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    x = x[x.size // 4 :]  # skip the filters' start-up transient
    return float(np.sqrt(np.mean(x**2)))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 24000, 48000])
def test_output_is_one_mulaw_byte_per_8khz_sample(rate: int) -> None:
    ulaw = phone_path(tone(1000, rate), rate)
    assert abs(len(ulaw) - 8000) <= 2


@pytest.mark.parametrize(
    ("freq", "passes"),
    [(100.0, False), (1000.0, True), (3000.0, True), (6000.0, False), (9000.0, False)],
)
def test_only_the_telephone_band_gets_through(freq: float, passes: bool) -> None:
    sent = tone(freq, 24000)
    received = ulaw_to_pcm16(phone_path(sent, 24000))
    gain = rms_after_settling(received) / rms_after_settling(sent)
    if passes:
        assert 0.7 < gain < 1.3, gain
    else:
        assert gain < 0.1, gain  # below 300 Hz cut by the band-pass, above 4 kHz by it and by the resampler


def test_decoding_to_16k_keeps_length_and_pitch() -> None:
    pcm16k = ulaw8k_to_pcm16_16k(phone_path(tone(1000, 16000), 16000))
    x = np.frombuffer(pcm16k, dtype="<i2").astype(np.float64)
    assert abs(x.size - 16000) <= 4
    spectrum = np.abs(np.fft.rfft(x[4000:12000] * np.hanning(8000)))
    assert np.argmax(spectrum) * 16000 / 8000 == pytest.approx(1000, abs=4)


def test_empty_input_and_bad_arguments() -> None:
    assert phone_path(b"", 16000) == b""
    assert ulaw8k_to_pcm16_16k(b"") == b""
    with pytest.raises(ValueError):
        phone_path(b"\x00\x00\x00", 16000)
    with pytest.raises(ValueError):
        phone_path(b"\x00\x00", 4000)

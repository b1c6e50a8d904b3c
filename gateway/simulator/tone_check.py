"""Is what the caller heard tonal (a voice, a test tone) or noise? Pure: μ-law in, a verdict out.

The check behind the simulator report's ``tone_check`` (docs/how-to/carriers/index.md#assumptions): 16-bit PCM read in
the wrong byte order turns any voice into loud broadband noise, because each sample's low byte, which is close to
random, becomes its high byte. Over every loud 32 ms window of the heard audio it measures the spectral flatness
(geometric over arithmetic mean of the power spectrum: near 0 for a tone, about 0.01-0.1 for a voice, 0.5 or more
for white noise) and calls the audio noise when the median window is flatter than :data:`NOISE_FLATNESS`.

A test tone for a byte-order check must not repeat every few samples (1 kHz at 8 or 16 kHz does: swapped, it is a
periodic signal again, not noise); a voice, or a tone such as 1,013 Hz, does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import g711

__all__ = ["NOISE_FLATNESS", "ToneCheck", "tone_check"]

#: Median spectral flatness above which the heard audio is called noise (voice ≈ 0.03, swapped voice ≈ 0.5).
NOISE_FLATNESS = 0.25
#: Windows quieter than this RMS (16-bit) are silence and not judged.
LOUD_RMS = 300.0
_WINDOW = 256  # 32 ms at 8 kHz


@dataclass(frozen=True)
class ToneCheck:
    loud_s: float  # how much of the heard audio was loud enough to judge
    flatness: float | None  # median spectral flatness of the loud windows (None: nothing loud)
    noise: bool

    def to_dict(self) -> dict[str, object]:
        flat = None if self.flatness is None else round(self.flatness, 3)
        return {"loud_s": round(self.loud_s, 2), "flatness": flat, "noise": self.noise}


def tone_check(ulaw: bytes | bytearray) -> ToneCheck:
    x = np.frombuffer(g711.ulaw_to_pcm16(bytes(ulaw)), dtype="<i2").astype(np.float64)
    n = len(x) // _WINDOW
    if n == 0:
        return ToneCheck(0.0, None, False)
    frames = x[: n * _WINDOW].reshape(n, _WINDOW)
    loud = frames[np.sqrt(np.mean(frames**2, axis=1)) >= LOUD_RMS]
    if len(loud) == 0:
        return ToneCheck(0.0, None, False)
    power = np.abs(np.fft.rfft(loud * np.hanning(_WINDOW), axis=1))[:, 1:] ** 2 + 1e-9
    flatness = np.exp(np.mean(np.log(power), axis=1)) / np.mean(power, axis=1)
    median = float(np.median(flatness))
    return ToneCheck(len(loud) * _WINDOW / 8000, median, median > NOISE_FLATNESS)

"""A simulated telephone line, for tests and the call simulator. Pure (no I/O, no clock, no randomness).

:func:`phone_path` does what a PSTN leg does to a caller's voice before Twilio hands it to us: band-limit it to the
300–3400 Hz telephone band, sample it at 8 kHz and G.711 μ-law encode it. :func:`ulaw8k_to_pcm16_16k` is the
gateway's side: decode and upsample to the 16 kHz that Silero and Whisper take.
"""

from __future__ import annotations

import numpy as np
from scipy import signal

from gateway.audio.g711 import pcm16_to_ulaw, ulaw_to_pcm16
from gateway.audio.resample import StreamResampler

__all__ = ["PHONE_RATE", "BAND_HZ", "phone_path", "ulaw8k_to_pcm16_16k"]

PHONE_RATE = 8000
#: The ITU-T G.712 voice band.
BAND_HZ = (300.0, 3400.0)


def phone_path(pcm16: bytes, rate: int) -> bytes:
    """Little-endian mono PCM16 at ``rate`` Hz → 8 kHz μ-law bytes, band-passed to 300–3400 Hz."""
    if rate < PHONE_RATE:
        raise ValueError(f"rate must be at least {PHONE_RATE} Hz, got {rate}")
    if len(pcm16) % 2:
        raise ValueError("PCM16 input has an odd number of bytes")
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    if x.size == 0:
        return b""
    # 4th-order Butterworth band-pass, run causally (sosfilt, not filtfilt) as a real line would.
    sos = signal.butter(4, BAND_HZ, btype="bandpass", fs=rate, output="sos")
    y = signal.sosfilt(sos, x)
    band = np.clip(np.round(y), -32768, 32767).astype("<i2").tobytes()
    pcm8k = StreamResampler(rate, PHONE_RATE, "HQ").process(band, last=True)
    return pcm16_to_ulaw(pcm8k)


def ulaw8k_to_pcm16_16k(ulaw: bytes) -> bytes:
    """8 kHz μ-law → 16 kHz little-endian PCM16 (what the local agent's VAD and STT consume)."""
    if not ulaw:
        return b""
    return StreamResampler(PHONE_RATE, 16000, "HQ").process(ulaw_to_pcm16(ulaw), last=True)

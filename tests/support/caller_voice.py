"""A simulated caller: speech for a phrase as it reaches the gateway over a phone line (8 kHz μ-law).

Deterministic, so tests built on it do not flake: the voice is Piper joe (the only English Piper voice shipped in a
wheel) made distinguishable from the agent by speaking slower (``length_scale`` 1.2) with Piper's generator noise
switched off (``noise_scale``/``noise_w_scale`` 0, where the agent uses the voice's 0.667/0.8); and the line
noise is white noise at 25 dB SNR from a seed derived from the phrase. The result goes through
:func:`gateway.local_agent.speech.phone.phone_path`. Results are cached per process because synthesis is the
slow part of most tests that use this.

Note the caller and the agent are still the same speaker; tests that must tell the two apart acoustically (echo)
need another voice.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from gateway.local_agent.speech import Synthesizer
from gateway.local_agent.speech.phone import phone_path, ulaw8k_to_pcm16_16k

__all__ = [
    "CALLER_LENGTH_SCALE",
    "CALLER_NOISE_SCALE",
    "LINE_SNR_DB",
    "caller_ulaw8k",
    "caller_pcm16_16k",
    "add_white_noise",
]

CALLER_LENGTH_SCALE = 1.2
CALLER_NOISE_SCALE = 0.0
LINE_SNR_DB = 25.0
_SEED = 20_250_611


def add_white_noise(pcm16: bytes, snr_db: float, seed: int, *, reference: bytes | None = None) -> bytes:
    """Add Gaussian white noise ``snr_db`` below the power of ``reference`` (default: the signal itself)."""
    x = np.frombuffer(pcm16, dtype="<i2").astype(np.float64)
    ref = np.frombuffer(reference, dtype="<i2").astype(np.float64) if reference is not None else x
    power = float(np.mean(ref**2)) if ref.size else 0.0
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(x.size) * np.sqrt(power / (10.0 ** (snr_db / 10.0)))
    return np.clip(np.round(x + noise), -32768, 32767).astype("<i2").tobytes()


@functools.lru_cache(maxsize=256)
def caller_ulaw8k(tts: Synthesizer, text: str, *, lead_s: float = 0.3, trail_s: float = 0.3) -> bytes:
    """``text`` spoken by the simulated caller, with ``lead_s``/``trail_s`` of line noise around it, as 8 kHz μ-law."""
    speech = b"".join(
        pcm
        for _sentence, pcm in tts.synthesize(
            text,
            length_scale=CALLER_LENGTH_SCALE,
            noise_scale=CALLER_NOISE_SCALE,
            noise_w_scale=CALLER_NOISE_SCALE,
        )
    )
    if not speech:
        raise ValueError(f"the synthesizer produced no audio for {text!r}")
    rate = tts.SAMPLE_RATE
    padded = bytes(2 * round(lead_s * rate)) + speech + bytes(2 * round(trail_s * rate))
    # SNR against the speech only, so the silence padding does not make the noise quieter.
    noisy = add_white_noise(padded, LINE_SNR_DB, seed=_SEED ^ zlib.crc32(text.encode()), reference=speech)
    return phone_path(noisy, rate)


def caller_pcm16_16k(tts: Synthesizer, text: str, *, lead_s: float = 0.3, trail_s: float = 0.3) -> bytes:
    """The caller's phrase as the local agent hears it: μ-law decoded and upsampled to 16 kHz PCM16."""
    return ulaw8k_to_pcm16_16k(caller_ulaw8k(tts, text, lead_s=lead_s, trail_s=trail_s))

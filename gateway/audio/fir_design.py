"""The block-free FIR's design, shared by the numpy (:class:`~gateway.audio.resample.FirResampler`) and the compiled
(:class:`~gateway.audio.fir_jit.JitFirResampler`) implementations, which give the same bytes. Pure.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FIR_BETA",
    "FIR_DELAY",
    "FIR_RATES",
    "FIR_SCALE_BITS",
    "FIR_TAPS",
    "ONE",
    "interpolator_phases",
    "prototype",
    "quantize",
    "whole_samples",
]


def whole_samples(odd: bytes, pcm: bytes) -> tuple[bytes, bytes]:
    """A carrier may split a 16-bit sample across messages: prepend the byte held from the last chunk, hold back a
    trailing odd one. Returns (whole samples, the byte to hold)."""
    if odd:
        pcm = odd + pcm
    if len(pcm) & 1:
        return pcm[:-1], pcm[-1:]
    return pcm, b""


# ---- block-free polyphase FIR ("FIR") ------------------------------------------------------------------------------
#: Factor-3 filter: 97-tap Kaiser-windowed sinc (beta 7.5), cut-off 4 kHz at 24 kHz. Odd length, symmetric: linear
#: phase with a group delay of 48 samples at 24 kHz = 2.0 ms (16 samples at 8 kHz). Measured (tests/unit/
#: test_fir_resampler.py, bench/resampling.py): ≥ 76 dB rejection from 4.6 kHz up, flat to 3.4 kHz (|gain| < 0.01 dB).
#: The rate pairs the filter is designed for (the telephone band at 24 kHz): 24 kHz <-> 8 kHz, factor 3.
FIR_RATES = ((24000, 8000), (8000, 24000))
FIR_TAPS = 97
FIR_BETA = 7.5
FIR_DELAY = (FIR_TAPS - 1) // 2  # samples at the high rate
#: Taps are integers / 2**FIR_SCALE_BITS (FirResampler's docstring says why the sums are then exact).
FIR_SCALE_BITS = 20
ONE = 1 << FIR_SCALE_BITS


def prototype(taps: int = FIR_TAPS, beta: float = FIR_BETA, factor: int = 3) -> np.ndarray:
    """The low-pass at the high rate, cut-off halfway through 3.4..4.6 kHz (the telephone band's transition)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(n / factor) / factor * np.kaiser(taps, beta)
    out: np.ndarray = h / h.sum()
    return out


def quantize(h: np.ndarray) -> np.ndarray:
    """Integer taps summing exactly to 2**FIR_SCALE_BITS (unit DC gain, exactly), returned as float64 of the integers.
    The rounding residue goes to the largest tap, which keeps the filter symmetric when ``h`` is."""
    q: np.ndarray = np.rint(h * ONE)
    q[int(np.argmax(q))] += ONE - q.sum()
    return q


def interpolator_phases(h: np.ndarray) -> list[np.ndarray]:
    """The three polyphase branches of 3·h, each quantized to an exact unit DC gain. Branch 2 is branch 1 reversed
    (h is symmetric), so the quantized filter stays exactly linear-phase."""
    p0 = quantize(3 * h[0::3])
    p1 = quantize(3 * h[1::3])
    return [p0, p1, p1[::-1].copy()]

"""Streaming PCM16 resampling: soxr, or a block-free polyphase FIR for 8 kHz <-> 24 kHz. Pure (no I/O, no clock) and
deterministic. :func:`make_resampler` picks the class from a config quality name (``RESAMPLE_QUALITIES``).

One :class:`StreamResampler` per call per direction keeps the filter state between 20 ms frames, so frame
boundaries do not click. soxr's streaming mode holds back samples (its filter delay, released in blocks for every
quality but QQ) until more input or ``flush()`` arrives; ``scripts/bench`` measures that holdback per quality and
direction (docs/architecture/audio.md#resampling, docs/architecture/performance.md).

Why 32-bit samples inside: soxr's 16-bit output path adds TPDF dither seeded from the clock, so the same input gave
different bytes on every run and for every chunking. Fed 16-bit samples widened to 32 bits (``audioop.lin2lin``,
a shift by 16) soxr neither dithers nor clips below 32 bits; narrowing back keeps the top 16 bits. The output is
then a pure function of the input samples, whatever the chunk sizes: a test can pin it byte for byte, and a
caller may coalesce chunks without changing the audio. Costs the same as the 16-bit path (measured by
``scripts/bench``); the dither it drops was 1 LSB of noise, far below what μ-law keeps.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np
import soxr

from .fir_design import (
    FIR_BETA,
    FIR_DELAY,
    FIR_RATES,
    FIR_SCALE_BITS,
    FIR_TAPS,
    ONE,
    interpolator_phases,
    prototype,
    quantize,
    whole_samples,
)

if TYPE_CHECKING:
    from .fir_jit import JitFirResampler

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "FIR",
    "FIR_BETA",
    "FIR_DELAY",
    "FIR_RATES",
    "FIR_SCALE_BITS",
    "FIR_TAPS",
    "QUALITIES",
    "RESAMPLE_QUALITIES",
    "FirResampler",
    "StreamResampler",
    "fir_fallback",
    "make_resampler",
]

#: soxr quality names accepted in config, as soxr spells them.
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")
#: The block-free polyphase FIR (:class:`FirResampler`): factor 3 only (8 kHz <-> 24 kHz).
FIR = "FIR"
#: Every value ``audio.inbound_resample_quality`` / ``audio.outbound_resample_quality`` accepts.
RESAMPLE_QUALITIES = QUALITIES + (FIR,)

# audioop and np.int32 use native byte order; like g711.py this assumes a little-endian machine (PCM16 on the wire).
_EMPTY = np.zeros(0, dtype=np.int32)

try:  # the clip ufunc itself: np.clip's Python wrapper costs ~2 µs a call, more than the whole filter's gemm
    from numpy._core.umath import clip as _clip  # type: ignore[attr-defined]  # numpy's stubs omit the ufunc
except ImportError:  # pragma: no cover - numpy < 2 keeps it under numpy.core
    from numpy.core.umath import clip as _clip  # type: ignore[no-redef]  # the same ufunc, older home


class StreamResampler:
    """Resample a stream of little-endian mono PCM16 chunks from ``in_rate`` to ``out_rate``."""

    __slots__ = ("in_rate", "out_rate", "quality", "_stream", "_odd")

    def __init__(self, in_rate: int, out_rate: int, quality: str = "HQ") -> None:
        if quality not in QUALITIES:
            raise ValueError(f"unknown soxr quality {quality!r}; expected one of {', '.join(QUALITIES)}")
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._odd = b""
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int32", quality=quality)

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Feed a chunk, get back whatever output is ready. ``last=True`` drains the filter."""
        pcm, self._odd = whole_samples(self._odd, pcm)
        if self.in_rate == self.out_rate:
            return pcm
        wide = np.frombuffer(audioop.lin2lin(pcm, 2, 4), dtype=np.int32) if pcm else _EMPTY
        return audioop.lin2lin(self._stream.resample_chunk(wide, last).tobytes(), 4, 2)

    def flush(self) -> bytes:
        """Drain the samples the filter still holds (end of an utterance or a reply)."""
        out = self.process(b"", last=True)
        self.reset()
        return out

    def reset(self) -> None:
        """Drop all state, e.g. after a barge-in so no tail of the old reply replays."""
        self._odd = b""
        self._stream.clear()  # same output afterwards as a new stream (pinned by test_fastpath_equivalence)


def _decimator_matrix(q: np.ndarray, block: int) -> np.ndarray:
    """(6·block × block): output ``j`` of a block is its input window ``[3j, 3j + taps)`` times the taps."""
    a = np.zeros((6 * block, block))
    for j in range(block):
        a[3 * j : 3 * j + len(q), j] = q[::-1]
    return a


def _interpolator_matrix(h: np.ndarray, block: int) -> np.ndarray:
    """(2·block × 3·block): outputs ``3j + p`` of a block come from input window ``[j, j + 2·lead + 1)``, where
    ``lead`` is the group delay in input samples (16 for 97 taps)."""
    lead = FIR_DELAY // 3
    a = np.zeros((2 * block, 3 * block))
    for p, branch in enumerate(interpolator_phases(h)):
        for t, tap in enumerate(branch):
            # y[3j + p] = sum_t branch[t] * x[j + lead - t]  (D is a multiple of 3, so branch p holds taps p, p+3, …)
            for j in range(block):
                a[j + 2 * lead - t, 3 * j + p] = tap
    return a


_FIR_BLOCK = 32  # groups per gemm row: the smallest block whose two rows cover a window (97 taps ≤ 6·32 − 3·31)


def _shared(a: np.ndarray) -> np.ndarray:
    a.setflags(write=False)  # one copy for every call's resamplers: gemm only reads it
    return a


# Designed once, at import: the interpolator's matrix takes ~3,000 Python steps to fill, not something to redo per call.
_DOWN_MATRIX = _shared(_decimator_matrix(quantize(prototype()) / ONE, _FIR_BLOCK))
_UP_MATRIX = _shared(_interpolator_matrix(prototype(), _FIR_BLOCK) / ONE)


class FirResampler:
    """Block-free streaming resampler by an integer factor of 3 (24 kHz → 8 kHz or 8 kHz → 24 kHz) with the same
    interface as :class:`StreamResampler`: ``process(pcm, last=False) -> bytes``, ``flush()``, ``reset()``, odd bytes
    carried to the next call.

    Every output sample leaves as soon as the input it needs is in: the filter's look-ahead, 48 samples at 24 kHz
    (2.0 ms) each way, is the only holdback. soxr's streaming mode instead releases its output in blocks (52.7 ms
    median delay for MQ outbound, docs/architecture/audio.md#resampling).

    Determinism: taps are integers / 2**20 and samples int16, so every product and every partial sum is an exact
    dyadic number far inside float64's 53 bits (|sum| < 2**17, finest bit 2**-20): BLAS may sum in any order, split
    the work any way, and the result is the same bit for bit. Rounding is ``np.rint`` (half to even), then a clip to
    int16. The output is therefore a pure function of the input samples, whatever the chunking.

    Speed: the input stays in one preallocated float64 buffer that starts at the next output's window. Outputs are
    computed in blocks of ``_BLOCK`` groups with one matrix product: each block's input window (two consecutive
    ``3·_BLOCK``- or ``_BLOCK``-sample rows) is copied next to each other so the product is a plain BLAS gemm against
    a banded matrix of the taps (measured fastest; see the commit introducing this class).
    """

    # Streaming state, set by reset() (declared here for the type checker; __slots__ holds the values).
    _odd: bytes
    _fill: int
    _fed: int
    _sent: int

    __slots__ = (
        "in_rate",
        "out_rate",
        "quality",
        "_odd",
        "_down",
        "_step",
        "_outs",
        "_span",
        "_k",
        "_cap",
        "_buf",
        "_fill",
        "_lo",
        "_hi",
        "_rows",
        "_mat",
        "_y",
        "_flat",
        "_fed",
        "_sent",
    )

    _BLOCK = _FIR_BLOCK

    def __init__(self, in_rate: int, out_rate: int, quality: str = "FIR") -> None:
        if quality != "FIR":
            raise ValueError(f"FirResampler quality must be 'FIR', not {quality!r}")
        # The taps are designed for the telephone band at 24 kHz: other rates (even by a factor of 3) would move
        # the band edges with them, so only this pair is accepted.
        if (in_rate, out_rate) not in FIR_RATES:
            raise ValueError(f"FIR resampling is 24000 <-> 8000 Hz only (factor 3), not {in_rate} -> {out_rate} Hz")
        self._down = in_rate > out_rate
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        if self._down:
            self._step, self._outs, self._span = 3, 1, FIR_TAPS  # inputs per group, outputs per group, group window
            self._mat = _DOWN_MATRIX
        else:
            self._step, self._outs, self._span = 1, 3, 2 * (FIR_DELAY // 3) + 1
            self._mat = _UP_MATRIX
        self._k = self._step * self._BLOCK  # input samples per block row
        self._alloc(in_rate // 10)  # 100 ms of input; a larger chunk grows it (_grow)
        self.reset()

    def _alloc(self, cap: int) -> None:
        k = self._k
        cap = -(-cap // k) * k + 2 * k  # whole rows, plus the row a partial last block reads past the input
        self._cap = cap
        self._buf = np.zeros(cap)
        rows = cap // k - 1
        self._lo = self._buf[: rows * k].reshape(rows, k)
        self._hi = self._buf[k : (rows + 1) * k].reshape(rows, k)
        self._rows = np.empty((rows, 2 * k))
        self._y = np.empty((rows, self._outs * self._BLOCK))
        self._flat = self._y.reshape(-1)

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Feed a chunk, get back every output sample its input completes. ``last=True`` drains the look-ahead."""
        pcm, self._odd = whole_samples(self._odd, pcm)
        n = len(pcm) >> 1
        fill = self._fill
        if fill + n + self._span > self._cap:
            self._grow(fill + n + self._span)
        buf = self._buf
        if n:
            buf[fill : fill + n] = np.frombuffer(pcm, "<i2")
            fill += n
            self._fed += n
        step = self._step
        if last:
            # Silence after the end, until every input instant has its output (soxr's flush does the same).
            want = -(-self._fed * self.out_rate // self.in_rate) - self._sent
            groups = -(-want // self._outs)
            need = (groups - 1) * step + self._span
            if need > fill:
                buf[fill:need] = 0.0
                fill = need
        else:
            groups = (fill - self._span) // step + 1
        if groups <= 0:
            self._fill = fill
            if last:
                self.reset()
            return b""
        nb = -(-groups // self._BLOCK)
        rows = self._rows[:nb]
        k = self._k
        rows[:, :k] = self._lo[:nb]
        rows[:, k:] = self._hi[:nb]
        m = groups * self._outs
        if last:
            m = min(m, want)
        np.dot(rows, self._mat, out=self._y[:nb])
        y = self._flat[:m]
        np.rint(y, out=y)  # exact sums (class docstring), then round half to even: a fixed rule
        _clip(y, -32768.0, 32767.0, out=y)
        used = groups * step
        rest = fill - used
        buf[:rest] = buf[used:fill]
        self._fill = rest
        self._sent += m
        if last:
            self.reset()
        return y.astype("<i2").tobytes()

    def output_for(self, nbytes: int) -> int:
        """How many output samples ``process`` would return now for ``nbytes`` more input bytes (not the last call)."""
        n = (len(self._odd) + nbytes) >> 1
        groups = (self._fill + n - self._span) // self._step + 1
        return groups * self._outs if groups > 0 else 0

    def input_for(self, outputs: int) -> int:
        """The fewest input bytes after which ``process`` returns at least ``outputs`` samples in all. The outbound
        path asks once per frame, so it can transcode exactly when a carrier frame completes (transcode.py)."""
        groups = -(-outputs // self._outs)
        n = max(0, (groups - 1) * self._step + self._span - self._fill)
        return max(0, 2 * n - len(self._odd))

    def _grow(self, need: int) -> None:
        old = self._buf[: self._fill].copy()
        self._alloc(2 * need)
        self._buf[: len(old)] = old

    def flush(self) -> bytes:
        """Drain the look-ahead: the last 2 ms of input get their output (zeros assumed after the end)."""
        return self.process(b"", last=True)

    def reset(self) -> None:
        """Drop all state: the same output afterwards as a new instance."""
        self._odd = b""
        self._buf[: self._span] = 0.0
        # The first group's window starts before input 0: the look-ahead behind it is silence.
        self._fill = FIR_DELAY if self._down else FIR_DELAY // 3
        self._fed = 0
        self._sent = 0


def make_resampler(in_rate: int, out_rate: int, quality: str) -> StreamResampler | FirResampler | JitFirResampler:
    """The resampler a config quality names: ``"FIR"`` for the block-free FIR (compiled when numba is installed: the
    same bytes, a third of the cost, gateway/audio/fir_jit.py), a soxr quality otherwise.

    The FIR exists for 24000 <-> 8000 Hz only. The quality is a process-wide setting but the carrier's rate is a
    call's (L16 at 16 kHz on SignalWire, Telnyx or Vonage), so for any other pair ``"FIR"`` means the soxr quality
    that is block-free or anti-aliases, as that direction needs (:func:`fir_fallback`), rather than a call that cannot
    start."""
    if quality == FIR:
        if (in_rate, out_rate) in FIR_RATES:
            # Imported here, not at the top: the local agent's pure modules use soxr from this module and must not
            # load numba. The call path loads it at start-up (gateway.audio.transcode.load_kernels).
            from .fir_jit import AVAILABLE, JitFirResampler

            return JitFirResampler(in_rate, out_rate, quality) if AVAILABLE else FirResampler(in_rate, out_rate)
        quality = fir_fallback(in_rate, out_rate)
    return StreamResampler(in_rate, out_rate, quality)


def fir_fallback(in_rate: int, out_rate: int) -> str:
    """The soxr quality that stands in for ``"FIR"`` at a rate pair it was not designed for. Up (the caller's audio
    to the agent): QQ, block-free like the FIR, so the agent hears every frame as it comes. Down (the agent's voice to
    the caller): MQ, which anti-aliases (QQ does not, and holding the first 80 ms of a reply is the lesser evil)."""
    return "QQ" if out_rate > in_rate else "MQ"

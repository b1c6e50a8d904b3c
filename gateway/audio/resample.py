"""Streaming PCM16 resampling with soxr. Pure (no I/O, no clock) and deterministic.

One :class:`StreamResampler` per call per direction keeps the filter state between 20 ms frames, so frame
boundaries do not click. soxr's streaming mode holds back samples (its filter delay, released in blocks for every
quality but QQ) until more input or ``flush()`` arrives; ``scripts/bench`` measures that holdback per quality and
direction (README "Performance", README "Audio").

Why 32-bit samples inside: soxr's 16-bit output path adds TPDF dither seeded from the clock, so the same input gave
different bytes on every run and for every chunking. Fed 16-bit samples widened to 32 bits (``audioop.lin2lin``,
a shift by 16) soxr neither dithers nor clips below 32 bits; narrowing back keeps the top 16 bits. The output is
then a pure function of the input samples, whatever the chunk sizes: a test can pin it byte for byte, and a
caller may coalesce chunks without changing the audio. Costs the same as the 16-bit path (measured by
``scripts/bench``); the dither it drops was 1 LSB of noise, far below what μ-law keeps.
"""

from __future__ import annotations

import warnings

import numpy as np
import soxr

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["QUALITIES", "StreamResampler"]

#: soxr quality names accepted in config, as soxr spells them.
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")

# audioop and np.int32 use native byte order; like g711.py this assumes a little-endian machine (PCM16 on the wire).
_EMPTY = np.zeros(0, dtype=np.int32)


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
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) & 1:
            # A carrier may split a sample across messages; keep the odd byte for the next call.
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
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

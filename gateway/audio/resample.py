"""Streaming PCM16 resampling with soxr. Pure (no I/O, no clock).

One :class:`StreamResampler` per call per direction keeps the filter state between 20 ms frames, so frame
boundaries do not click. soxr's streaming mode holds back a few samples (its filter delay) until more input or
``flush()`` arrives; ``holdback_ms`` reports that figure for the chosen quality (measured by
``scripts/bench_resample``; see README "Audio").
"""

from __future__ import annotations

import numpy as np
import soxr

__all__ = ["QUALITIES", "StreamResampler"]

#: soxr quality names accepted in config, as soxr spells them.
QUALITIES = ("QQ", "LQ", "MQ", "HQ", "VHQ")


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
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Feed a chunk, get back whatever output is ready. ``last=True`` drains the filter."""
        if self._odd:
            pcm = self._odd + pcm
            self._odd = b""
        if len(pcm) % 2:
            # A carrier may split a sample across messages; keep the odd byte for the next call.
            self._odd = pcm[-1:]
            pcm = pcm[:-1]
        if self.in_rate == self.out_rate:
            return pcm
        samples = np.frombuffer(pcm, dtype="<i2")
        out = self._stream.resample_chunk(samples, last=last)
        return out.astype("<i2", copy=False).tobytes()

    def flush(self) -> bytes:
        """Drain the samples the filter still holds (end of an utterance or a reply)."""
        out = self.process(b"", last=True)
        self.reset()
        return out

    def reset(self) -> None:
        """Drop all state, e.g. after a barge-in so no tail of the old reply replays."""
        self._odd = b""
        self._stream = soxr.ResampleStream(self.in_rate, self.out_rate, 1, dtype="int16", quality=self.quality)

"""What a listener hears in a reply several phrases long, read with the STT two ways.

The speech tests check that the reply audio says what ``transcript.agent`` claims by transcribing it, and the STT
is an imperfect listener in two known ways. Given the whole reply, Whisper now and then stops decoding at a long
pause and leaves the rest out: Piper renders a comma as ~370 ms of silence, and one CI run heard "We are open from
nine in the morning until ten at night, every day of the week." as "… until ten at night." Given the reply cut at
its pauses (as a transcription pipeline cuts at its voice detector's), each phrase is heard, but a short phrase is
read with less context ("lighthouse" came back "light house" once in 60 renderings). Audio that really lacks or
garbles words reads wrong both ways, so :func:`closest_reading` keeps the better of the two. Pure apart from the STT
it is given.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from tests.support.wer import word_error_rate

__all__ = ["closest_reading", "phrases", "transcribe_phrases"]

RATE = 16_000
_WINDOW = RATE // 100  # 10 ms
#: Peak level (PCM16) under which a 10 ms window is silent: about -50 dBFS, over the μ-law line's noise floor.
_QUIET = 100
#: Pauses this long or longer separate phrases; a word's own stop closure is far shorter.
MIN_PAUSE_MS = 250


class _Stt(Protocol):
    def transcribe(self, pcm16_16k: bytes) -> str: ...


def phrases(pcm16_16k: bytes, min_pause_ms: int = MIN_PAUSE_MS) -> list[bytes]:
    """``pcm16_16k`` cut in the middle of every pause of at least ``min_pause_ms``; silence at either end dropped.
    Nothing audible is left out: the pieces, joined, are the audio from its first loud window to its last."""
    samples = np.frombuffer(pcm16_16k[: len(pcm16_16k) - len(pcm16_16k) % 2], dtype="<i2")
    n = samples.size // _WINDOW
    if n == 0:
        return []
    peaks = np.abs(samples[: n * _WINDOW].astype(np.int32)).reshape(n, _WINDOW).max(axis=1)
    loud = np.flatnonzero(peaks > _QUIET)
    if loud.size == 0:
        return []
    cuts = [int(loud[0]) * _WINDOW]
    min_windows = min_pause_ms // 10
    for a, b in zip(loud[:-1], loud[1:], strict=True):
        if b - a - 1 >= min_windows:
            cuts.append(int(a + b + 1) // 2 * _WINDOW)
    cuts.append(min(samples.size, (int(loud[-1]) + 1) * _WINDOW))
    return [samples[x:y].tobytes() for x, y in zip(cuts[:-1], cuts[1:], strict=True)]


def transcribe_phrases(stt: _Stt, pcm16_16k: bytes, min_pause_ms: int = MIN_PAUSE_MS) -> str:
    """The words of ``pcm16_16k``, phrase by phrase (see :func:`phrases`), joined with spaces."""
    return " ".join(t for t in (stt.transcribe(p) for p in phrases(pcm16_16k, min_pause_ms)) if t)


def closest_reading(stt: _Stt, pcm16_16k: bytes, reference: str) -> str:
    """Of the whole-audio transcript and the phrase-by-phrase one, the one closer to ``reference`` (by WER)."""
    readings = (stt.transcribe(pcm16_16k), transcribe_phrases(stt, pcm16_16k))
    return min(readings, key=lambda heard: word_error_rate(reference, heard))

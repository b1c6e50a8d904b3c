"""What a listener hears in a reply several phrases long, read with the STT two ways.

The speech tests check that the reply audio says what ``transcript.agent`` claims by transcribing it, and the STT
is an imperfect listener in two known ways. Given the whole reply, Whisper now and then stops decoding at a long
pause and leaves the rest out: Piper renders a comma as ~370 ms of silence, and one CI run heard "We are open from
nine in the morning until ten at night, every day of the week." as "… until ten at night." Given the reply cut at
its pauses (as a transcription pipeline cuts at its voice detector's), each phrase is heard, but a short phrase is
read with less context ("lighthouse" came back "light house" once in 60 renderings). Audio that really lacks or
garbles words reads wrong both ways, so :func:`closest_reading` keeps the better of the two. The pauses are found as
the simulated caller finds the agent's speech (:func:`gateway.simulator.timeline.audible_spans`). Pure apart from
the STT it is given.
"""

from __future__ import annotations

from itertools import pairwise
from typing import Protocol

from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.simulator.timeline import audible_spans, frame_levels
from tests.support.wer import word_error_rate

__all__ = ["closest_reading", "phrases", "transcribe_phrases"]

RATE = 8000  # the reply audio the tests hold: 8 kHz μ-law
#: Pauses this long or longer separate phrases (whole 20 ms frames: 12 or more silent ones); a word's own stop
#: closure is far shorter, a comma's pause as Piper renders it longer.
MIN_PAUSE_S = 0.25


class _Stt(Protocol):
    def transcribe(self, pcm16_16k: bytes) -> str: ...


def phrases(ulaw8k: bytes, min_pause_s: float = MIN_PAUSE_S) -> list[bytes]:
    """``ulaw8k`` cut in the middle of every pause of at least ``min_pause_s``: joined, the pieces are the audio.
    Nothing for audio with nothing audible."""
    spans = audible_spans(frame_levels(ulaw8k), merge_gap_s=min_pause_s)
    if not spans:
        return []
    cuts = [0, *(round((a.end_s + b.start_s) / 2 * RATE) for a, b in pairwise(spans)), len(ulaw8k)]
    return [ulaw8k[x:y] for x, y in pairwise(cuts)]


def transcribe_phrases(stt: _Stt, ulaw8k: bytes, min_pause_s: float = MIN_PAUSE_S) -> str:
    """The words of ``ulaw8k``, phrase by phrase (see :func:`phrases`), joined with spaces."""
    heard = (stt.transcribe(ulaw8k_to_pcm16_16k(p)) for p in phrases(ulaw8k, min_pause_s))
    return " ".join(t for t in heard if t)


def closest_reading(stt: _Stt, ulaw8k: bytes, reference: str) -> str:
    """Of the whole-audio transcript and the phrase-by-phrase one, the one closer to ``reference`` (by WER)."""
    readings = (stt.transcribe(ulaw8k_to_pcm16_16k(ulaw8k)), transcribe_phrases(stt, ulaw8k))
    return min(readings, key=lambda heard: word_error_rate(reference, heard))

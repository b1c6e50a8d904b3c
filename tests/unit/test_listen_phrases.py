"""tests/support/listen.py: the cut at pauses the speech tests transcribe by (it must never lose audio)."""

from __future__ import annotations

import numpy as np

from tests.support.listen import RATE, closest_reading, phrases, transcribe_phrases
from tests.support.wer import word_error_rate


def tone(ms: int) -> np.ndarray:
    t = np.arange(RATE * ms // 1000) / RATE
    return (8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2")


def quiet(ms: int) -> np.ndarray:
    return np.zeros(RATE * ms // 1000, dtype="<i2")


def test_a_long_pause_separates_phrases_and_a_short_one_does_not() -> None:
    audio = np.concatenate([quiet(100), tone(300), quiet(400), tone(200), quiet(100), tone(100), quiet(200)])
    got = phrases(audio.tobytes())
    assert len(got) == 2
    # Cut in the middle of the 400 ms pause: 300 ms of tone and 200 of the pause, then the rest.
    assert len(got[0]) // 2 == RATE * 500 // 1000
    # Nothing audible lost: joined, the pieces are the audio from its first loud sample to its last.
    loud = np.flatnonzero(np.abs(audio.astype(np.int32)) > 100)
    joined = np.frombuffer(b"".join(got), dtype="<i2")
    start = int(np.flatnonzero(np.abs(joined.astype(np.int32)) > 100)[0])
    assert np.array_equal(joined[start : start + loud[-1] - loud[0] + 1], audio[loud[0] : loud[-1] + 1])


def test_silence_has_no_phrases_and_an_odd_byte_is_ignored() -> None:
    assert phrases(quiet(500).tobytes()) == []
    assert phrases(b"") == []
    assert len(phrases(tone(200).tobytes() + b"\x01")) == 1


class _Stt:
    def __init__(self) -> None:
        self.heard: list[int] = []

    def transcribe(self, pcm16_16k: bytes) -> str:
        self.heard.append(len(pcm16_16k))
        return f"p{len(self.heard)}" if len(self.heard) != 2 else ""


def test_each_phrase_is_transcribed_and_empty_ones_leave_no_gap() -> None:
    stt = _Stt()
    audio = np.concatenate([tone(200), quiet(300), tone(200), quiet(300), tone(200)])
    assert transcribe_phrases(stt, audio.tobytes()) == "p1 p3"
    assert len(stt.heard) == 3


class _Reader:
    """The whole audio (over 2 s) reads as ``whole``; the phrases, in turn, as ``phrases``."""

    def __init__(self, whole: str, phrases: list[str]) -> None:
        self.whole, self.phrases = whole, iter(phrases)

    def transcribe(self, pcm16_16k: bytes) -> str:
        return self.whole if len(pcm16_16k) > 4 * RATE else next(self.phrases)


def test_the_closer_reading_is_kept_and_audio_wrong_both_ways_reads_wrong() -> None:
    audio = np.concatenate([tone(600), quiet(400), tone(600), quiet(400), tone(600)]).tobytes()
    ref = "one two three"
    assert closest_reading(_Reader("One, two.", ["One.", "Two.", "Three."]), audio, ref) == "One. Two. Three."
    assert closest_reading(_Reader("One, two, three.", ["One.", "To.", "Three."]), audio, ref) == "One, two, three."
    heard = closest_reading(_Reader("One, two.", ["One.", "", "Three."]), audio, ref)
    assert word_error_rate(ref, heard) > 0

"""tests/support/listen.py: the cut at pauses the speech tests transcribe by (it must never lose audio)."""

from __future__ import annotations

import numpy as np

from gateway.audio import g711
from tests.support.listen import RATE, closest_reading, phrases, transcribe_phrases
from tests.support.wer import word_error_rate


def tone(ms: int) -> bytes:
    t = np.arange(RATE * ms // 1000) / RATE
    return g711.pcm16_to_ulaw((8000 * np.sin(2 * np.pi * 440 * t)).astype("<i2").tobytes())


def quiet(ms: int) -> bytes:
    return g711.pcm16_to_ulaw(bytes(2 * (RATE * ms // 1000)))


def test_a_long_pause_separates_phrases_and_a_short_one_does_not() -> None:
    audio = quiet(100) + tone(300) + quiet(400) + tone(200) + quiet(100) + tone(100) + quiet(200)
    got = phrases(audio)
    assert len(got) == 2
    # Cut in the middle of the 400 ms pause: 100 ms of silence, 300 ms of tone and 200 of the pause, then the rest.
    assert len(got[0]) == RATE * 600 // 1000
    # Nothing lost: joined, the pieces are the audio.
    assert b"".join(got) == audio


def test_silence_has_no_phrases_and_a_partial_last_frame_is_kept() -> None:
    assert phrases(quiet(500)) == []
    assert phrases(b"") == []
    audio = tone(200) + tone(5)
    assert phrases(audio) == [audio]


class _Stt:
    def __init__(self) -> None:
        self.heard: list[int] = []

    def transcribe(self, pcm16_16k: bytes) -> str:
        self.heard.append(len(pcm16_16k))
        return f"p{len(self.heard)}" if len(self.heard) != 2 else ""


def test_each_phrase_is_transcribed_and_empty_ones_leave_no_gap() -> None:
    stt = _Stt()
    audio = tone(200) + quiet(300) + tone(200) + quiet(300) + tone(200)
    assert transcribe_phrases(stt, audio) == "p1 p3"
    assert len(stt.heard) == 3


class _Reader:
    """The whole audio (over 2 s) reads as ``whole``; the phrases, in turn, as ``phrases``."""

    def __init__(self, whole: str, phrases: list[str]) -> None:
        self.whole, self.phrases = whole, iter(phrases)

    def transcribe(self, pcm16_16k: bytes) -> str:
        return self.whole if len(pcm16_16k) > 4 * 16000 else next(self.phrases)


def test_the_closer_reading_is_kept_and_audio_wrong_both_ways_reads_wrong() -> None:
    audio = tone(600) + quiet(400) + tone(600) + quiet(400) + tone(600)
    ref = "one two three"
    assert closest_reading(_Reader("One, two.", ["One.", "Two.", "Three."]), audio, ref) == "One. Two. Three."
    assert closest_reading(_Reader("One, two, three.", ["One.", "To.", "Three."]), audio, ref) == "One, two, three."
    heard = closest_reading(_Reader("One, two.", ["One.", "", "Three."]), audio, ref)
    assert word_error_rate(ref, heard) > 0

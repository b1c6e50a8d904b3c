"""Whisper tiny.en transcription of phone-quality caller speech, and silence on silence."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.local_agent.speech import SpeechModels
from gateway.local_agent.speech.phone import phone_path, ulaw8k_to_pcm16_16k
from tests.support.caller_voice import caller_pcm16_16k
from tests.support.wer import word_error_rate

pytestmark = pytest.mark.speech


@pytest.mark.parametrize(
    "text",
    [
        "What hours are you open on Saturday?",
        "Is it possible to book dinner for six people?",
        "My daughter is vegan, is there something she can eat?",
    ],
)
def test_caller_phrase_over_the_phone_path_is_transcribed(speech_models: SpeechModels, text: str) -> None:
    transcript = speech_models.stt.transcribe(caller_pcm16_16k(speech_models.tts, text))
    assert transcript == transcript.strip()
    assert word_error_rate(text, transcript) <= 0.15, transcript


@pytest.mark.parametrize("kind", ["digital silence", "line noise", "too short to hold a word"])
def test_no_speech_gives_an_empty_transcript(speech_models: SpeechModels, kind: str) -> None:
    if kind == "digital silence":
        pcm = bytes(2 * 16000)
    elif kind == "line noise":
        noise = (np.random.default_rng(3).standard_normal(2 * 8000) * 2000).astype("<i2").tobytes()
        pcm = ulaw8k_to_pcm16_16k(phone_path(noise, 8000))
    else:
        # 60 ms cut from the middle of real speech.
        speech = caller_pcm16_16k(speech_models.tts, "What hours are you open on Saturday?")
        middle = len(speech) // 4 * 2
        pcm = speech[middle : middle + 2 * 960]
    assert speech_models.stt.transcribe(pcm) == ""


def test_an_odd_trailing_byte_is_ignored(speech_models: SpeechModels) -> None:
    text = "Could you read me the menu?"
    pcm = caller_pcm16_16k(speech_models.tts, text)
    assert word_error_rate(text, speech_models.stt.transcribe(pcm + b"\x01")) <= 0.15


@pytest.mark.parametrize(
    "text,expected",
    [
        ("Hello? Yes? Hello? Yes?", "Hello? Yes?"),
        ("Is it open? Is it open?", "Is it open?"),
        ("Is it open? is it open", "Is it open?"),
        ("Stop. Stop. Stop.", "Stop."),
        ("Yes. No. Yes.", "Yes. No. Yes."),
        ("I want a table. For six.", "I want a table. For six."),
        ("", ""),
    ],
)
def test_a_transcript_read_twice_over_is_read_once(text: str, expected: str) -> None:
    from gateway.local_agent.speech.stt import collapse_repeats

    assert collapse_repeats(text) == expected

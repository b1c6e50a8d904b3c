"""Piper synthesis: one item per sentence, 24 kHz, plausible length, intelligible to our own STT."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pytest

from gateway.audio.resample import StreamResampler
from gateway.local_agent.speech import SpeechModels, Synthesizer, split_sentences
from tests.support.wer import word_error_rate


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("Hello there. How are you? Fine!", ["Hello there.", "How are you?", "Fine!"]),
        ("Ask Dr. Smith at 12 St. James Road. Thanks.", ["Ask Dr. Smith at 12 St. James Road.", "Thanks."]),
        ("No. We don't deliver.", ["No.", "We don't deliver."]),
        ('He said "wait." Then he left...  Really?!', ['He said "wait."', "Then he left...", "Really?!"]),
        ("Line one\n\nline two. Line three", ["Line one", "line two.", "Line three"]),
        ("The price is 4.50 pounds.", ["The price is 4.50 pounds."]),
        ("no punctuation at all", ["no punctuation at all"]),
        ("  \n ", []),
        ("", []),
    ],
)
def test_split_sentences(text: str, sentences: list[str]) -> None:
    assert split_sentences(text) == sentences


def seconds(pcm: bytes) -> float:
    return len(pcm) / 2 / Synthesizer.SAMPLE_RATE


def to_16k(pcm24k: bytes) -> bytes:
    return StreamResampler(Synthesizer.SAMPLE_RATE, 16000, "HQ").process(pcm24k, last=True)


@pytest.mark.speech
def test_yields_one_24khz_item_per_sentence_with_a_plausible_duration(speech_models: SpeechModels) -> None:
    text = "We are open every day. The kitchen closes at ten! Would you like to book a table?"
    items = list(speech_models.tts.synthesize(text))
    assert [sentence for sentence, _ in items] == split_sentences(text)
    assert Synthesizer.SAMPLE_RATE == 24000
    for sentence, pcm in items:
        assert len(pcm) % 2 == 0
        # Piper joe speaks 15–21 characters of text per second at its default speed (measured). The bounds catch
        # a halved or doubled rate; the test below pins the exact rate.
        chars_per_second = len(sentence) / seconds(pcm)
        assert 10 < chars_per_second < 28, (sentence, seconds(pcm))
        samples = np.frombuffer(pcm, dtype="<i2")
        assert np.abs(samples).max() <= 32767 * Synthesizer.VOLUME * 1.05  # headroom kept
        assert np.sqrt(np.mean(samples.astype(np.float64) ** 2)) > 1000  # not silence


@pytest.mark.speech
def test_output_is_the_voice_resampled_to_24khz(speech_models: SpeechModels) -> None:
    # With the noise scales at 0 Piper is deterministic, so the voice's native rendering can be compared with
    # ours: the same duration in seconds at the declared rates (Whisper is no judge of this: it transcribes
    # speech played 10 % too fast or slow without a single error, measured).
    from piper import SynthesisConfig

    text = "Please hold while I put you through."
    voice = speech_models.tts.voice
    native = b"".join(
        chunk.audio_int16_bytes for chunk in voice.synthesize(text, SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0))
    )
    ((_, ours),) = speech_models.tts.synthesize(text, noise_scale=0.0, noise_w_scale=0.0)
    assert voice.config.sample_rate == 22050
    assert seconds(ours) == pytest.approx(len(native) / 2 / voice.config.sample_rate, abs=0.002)


@pytest.mark.speech
def test_synthesized_reply_transcribes_back_to_its_text(speech_models: SpeechModels) -> None:
    # Piper's default noise makes every rendering differ, and Whisper's reading of it with it (a WER of 0.12 seen
    # once in many runs): with the noise scales at 0 the rendering is the same every run, so this checks the
    # voice and the resampling, not luck.
    text = "We are open from nine in the morning until ten at night, every day of the week."
    pcm = b"".join(pcm for _, pcm in speech_models.tts.synthesize(text, noise_scale=0.0, noise_w_scale=0.0))
    assert word_error_rate(text, speech_models.stt.transcribe(to_16k(pcm))) <= 0.1


@pytest.mark.speech
def test_a_larger_length_scale_speaks_slower(speech_models: SpeechModels) -> None:
    text = "Please hold while I put you through."

    def duration(length_scale: float) -> float:
        items = speech_models.tts.synthesize(text, length_scale=length_scale, noise_scale=0.0, noise_w_scale=0.0)
        return sum(seconds(pcm) for _, pcm in items)

    # Not proportional: Piper's durations grow sub-linearly with length_scale (1.0 → 2.0 gave 1.66x, measured).
    assert duration(2.0) > 1.4 * duration(1.0)


@pytest.mark.speech
def test_zero_noise_scales_make_synthesis_deterministic(speech_models: SpeechModels) -> None:
    def render() -> bytes:
        return b"".join(
            pcm for _, pcm in speech_models.tts.synthesize("Thanks for calling.", noise_scale=0.0, noise_w_scale=0.0)
        )

    assert render() == render()


class SpyVoice:
    """Delegates to a real PiperVoice and records which texts were synthesised."""

    def __init__(self, voice: Any) -> None:
        self.config = voice.config
        self._voice = voice
        self.calls: list[str] = []

    def synthesize(self, text: str, syn_config: Any = None) -> Iterable[Any]:
        self.calls.append(text)
        return self._voice.synthesize(text, syn_config)


@pytest.mark.speech
def test_first_sentence_is_yielded_before_later_sentences_are_synthesized(speech_models: SpeechModels) -> None:
    spy = SpyVoice(speech_models.tts.voice)
    gen = Synthesizer(spy).synthesize("First sentence. Second sentence. Third sentence.")  # type: ignore[arg-type]
    sentence, pcm = next(gen)
    assert sentence == "First sentence." and pcm
    assert spy.calls == ["First sentence."]
    assert [s for s, _ in gen] == ["Second sentence.", "Third sentence."]
    assert spy.calls == ["First sentence.", "Second sentence.", "Third sentence."]


@pytest.mark.speech
@pytest.mark.parametrize("text", ["", "   ", "..."])
def test_nothing_to_say_yields_nothing(speech_models: SpeechModels, text: str) -> None:
    assert list(speech_models.tts.synthesize(text)) == []


@pytest.mark.speech
def test_menu_reply_lasts_long_enough_for_barge_in_tests(
    speech_models: SpeechModels, intents_config: dict[str, Any]
) -> None:
    # tests/e2e interrupt the agent mid-way through this reply; it must outlast their barge-in scenarios.
    (menu,) = [i for i in intents_config["intent"] if i["name"] == "menu"]
    assert sum(seconds(pcm) for _, pcm in speech_models.tts.synthesize(menu["reply"])) >= 15.0

"""End-to-end recognition accuracy: caller voice → phone line → μ-law → 16 kHz → Whisper → intent matcher.

Every phrase in tests/fixtures/phrases.toml must reach its intent in config/local_agent/intents.toml, allowing at
most 10 % misses (the e2e tests and the demo rely on this path routing correctly).
"""

from __future__ import annotations

import pytest

from gateway.local_agent.speech import IntentMatcher, SpeechModels
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from tests.support.caller_voice import caller_ulaw8k
from tests.support.wer import word_error_rate

pytestmark = pytest.mark.speech

REQUIRED_ACCURACY = 0.9


def test_caller_phrases_over_the_phone_reach_their_intents(
    speech_models: SpeechModels, intent_matcher: IntentMatcher, phrases: list[dict[str, str]]
) -> None:
    rows = []
    for phrase in phrases:
        ulaw = caller_ulaw8k(speech_models.tts, phrase["text"])
        transcript = speech_models.stt.transcribe(ulaw8k_to_pcm16_16k(ulaw))
        intent, score = intent_matcher.match(transcript)
        rows.append((phrase["intent"] == intent, phrase["intent"], intent, score, phrase["text"], transcript))
    correct = sum(ok for ok, *_ in rows)
    table = "\n".join(
        f"{'ok  ' if ok else 'MISS'} {want:<14} {str(got):<14} {score:5.2f}  "
        f"wer={word_error_rate(text, heard):4.2f}  {text!r} -> {heard!r}"
        for ok, want, got, score, text, heard in rows
    )
    assert correct >= REQUIRED_ACCURACY * len(rows), f"{correct}/{len(rows)} correct\n{table}"

"""Silero VAD streaming: probabilities follow speech, and do not depend on how the audio is chunked."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.local_agent.speech import SpeechModels, VadStream
from gateway.local_agent.speech.phone import phone_path, ulaw8k_to_pcm16_16k
from tests.support.caller_voice import caller_pcm16_16k

pytestmark = pytest.mark.speech

PHRASE = "I want to reserve a table for Friday evening."
WINDOW_BYTES = VadStream.WINDOW_SAMPLES * 2
LEAD_S = TRAIL_S = 1.0


@pytest.fixture(scope="module")
def utterance(speech_models: SpeechModels) -> bytes:
    """The phrase at 16 kHz after the phone path, with 1 s of line noise before and after."""
    return caller_pcm16_16k(speech_models.tts, PHRASE, lead_s=LEAD_S, trail_s=TRAIL_S)


def push_in_pieces(stream: VadStream, pcm: bytes, piece_bytes: int) -> list[float]:
    probs: list[float] = []
    for i in range(0, len(pcm), piece_bytes):
        probs.extend(stream.push(pcm[i : i + piece_bytes]))
    return probs


def test_probability_is_high_inside_an_utterance_and_low_in_the_line_noise_around_it(
    speech_models: SpeechModels, utterance: bytes
) -> None:
    probs = np.array(speech_models.vad.stream().push(utterance))
    windows_per_s = VadStream.SAMPLE_RATE / VadStream.WINDOW_SAMPLES
    total = len(utterance) // 2 / VadStream.SAMPLE_RATE
    # Stay a few windows clear of the edges: the phone filter and Silero's own smoothing blur them.
    lead = probs[: int((LEAD_S - 0.1) * windows_per_s)]
    speech = probs[int((LEAD_S + 0.15) * windows_per_s) : int((total - TRAIL_S - 0.15) * windows_per_s)]
    trail = probs[int((total - TRAIL_S + 0.3) * windows_per_s) :]
    assert lead.max() < 0.2, lead
    assert trail.max() < 0.2, trail
    assert (speech > 0.5).mean() > 0.85, speech


@pytest.mark.parametrize("kind", ["digital silence", "white noise", "noise through the phone path"])
def test_probability_stays_low_without_speech(speech_models: SpeechModels, kind: str) -> None:
    rng = np.random.default_rng(7)
    if kind == "digital silence":
        pcm = bytes(2 * 3 * VadStream.SAMPLE_RATE)
    elif kind == "white noise":
        pcm = (rng.standard_normal(3 * VadStream.SAMPLE_RATE) * 1000).astype("<i2").tobytes()
    else:
        noise = (rng.standard_normal(3 * 8000) * 3000).astype("<i2").tobytes()
        pcm = ulaw8k_to_pcm16_16k(phone_path(noise, 8000))
    probs = speech_models.vad.stream().push(pcm)
    assert len(probs) == len(pcm) // WINDOW_BYTES
    assert max(probs) < 0.2


@pytest.mark.parametrize("piece_bytes", [640, 333, WINDOW_BYTES, 3 * WINDOW_BYTES + 2])
def test_chunking_does_not_change_the_probabilities(
    speech_models: SpeechModels, utterance: bytes, piece_bytes: int
) -> None:
    # 640 bytes = the 20 ms frames the gateway delivers; 333 splits samples across pushes.
    whole = speech_models.vad.stream().push(utterance)
    pieces = push_in_pieces(speech_models.vad.stream(), utterance, piece_bytes)
    assert len(pieces) == len(whole) == len(utterance) // WINDOW_BYTES
    np.testing.assert_allclose(pieces, whole, rtol=0, atol=1e-6)


def test_matches_the_upstream_onnx_wrapper_loop(speech_models: SpeechModels, utterance: bytes) -> None:
    # silero_vad.utils_vad.OnnxWrapper.__call__ (which needs torch), redone in numpy: every 512-sample window is
    # run with the previous window's last 64 samples prepended and the state the previous run returned.
    session = speech_models.vad.session
    audio = np.frombuffer(utterance, dtype="<i2").astype(np.float32) / 32768.0
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(64, dtype=np.float32)
    expected = []
    for start in range(0, audio.size - 511, 512):
        window = audio[start : start + 512]
        out, state = session.run(
            None, {"input": np.concatenate([context, window])[None], "state": state, "sr": np.array(16000)}
        )
        context = window[-64:]
        expected.append(float(out[0, 0]))
    np.testing.assert_allclose(push_in_pieces(speech_models.vad.stream(), utterance, 640), expected, atol=1e-6)


def test_dropping_state_between_windows_changes_the_probabilities(
    speech_models: SpeechModels, utterance: bytes
) -> None:
    # The counterpart of the test above: Silero's state and context do matter, so a stream that forgot them
    # between windows would be caught.
    whole = np.array(speech_models.vad.stream().push(utterance))
    stream = speech_models.vad.stream()
    forgetful = []
    for i in range(0, len(utterance) - WINDOW_BYTES + 1, WINDOW_BYTES):
        stream.reset()
        forgetful.extend(stream.push(utterance[i : i + WINDOW_BYTES]))
    assert np.abs(np.array(forgetful) - whole).max() > 0.05


def test_remainder_is_carried_until_a_window_completes(speech_models: SpeechModels, utterance: bytes) -> None:
    stream = speech_models.vad.stream()
    assert stream.push(utterance[: WINDOW_BYTES - 2]) == []
    assert stream.pending_samples == VadStream.WINDOW_SAMPLES - 1
    assert len(stream.push(utterance[WINDOW_BYTES - 2 : WINDOW_BYTES + 1])) == 1  # ends with half a sample
    assert stream.pending_samples == 0


def test_reset_makes_a_stream_behave_like_a_new_one(speech_models: SpeechModels, utterance: bytes) -> None:
    half = len(utterance) // 4 * 2  # a whole number of samples
    fresh = speech_models.vad.stream().push(utterance[half:])
    reused = speech_models.vad.stream()
    reused.push(utterance[: half + 101])  # leaves state, context, a remainder and an odd byte behind
    reused.reset()
    assert reused.pending_samples == 0
    np.testing.assert_allclose(reused.push(utterance[half:]), fresh, rtol=0, atol=1e-6)

"""DTMF tones we send (gateway/audio/dtmf.py): every symbol synthesised at 8 kHz μ-law decodes back to itself with the
Goertzel detector, and the detector refuses what is not a digit pair
(docs/architecture/twilio-media-streams.md#transfer)."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio import dtmf, g711

FRAME = 160


@pytest.mark.parametrize("digits", ["0123456789*#ABCD", "1", "1111", "00", "159#", "*9*9"])
def test_tones_decode_back_to_the_same_digits(digits):
    ulaw = dtmf.tones_ulaw(digits)
    assert dtmf.decode_ulaw(ulaw) == digits


def test_tones_are_whole_frames_of_100ms_tone_and_100ms_gap_per_digit():
    ulaw = dtmf.tones_ulaw("12#")
    assert len(ulaw) % FRAME == 0
    assert len(ulaw) == 3 * 1600  # 3 × (800 + 800) samples: already frame aligned, no padding
    pcm = np.frombuffer(g711.ulaw_to_pcm16(ulaw), dtype="<i2").astype(float)
    for i in range(3):
        tone, gap = pcm[i * 1600 : i * 1600 + 800], pcm[i * 1600 + 800 : (i + 1) * 1600]
        assert np.sqrt(np.mean(tone**2)) > 5000  # two tones at 0.3 of full scale each
        assert np.max(np.abs(gap)) < 10  # μ-law silence
    assert dtmf.tones_duration_ms("12#") == 600


def test_odd_lengths_are_padded_with_ulaw_silence_to_whole_frames():
    ulaw = dtmf.tones_ulaw("7", tone_ms=70, gap_ms=45)  # 560 + 360 = 920 samples
    assert len(ulaw) == 960 and ulaw[920:] == bytes([g711.ULAW_SILENCE]) * 40
    assert dtmf.decode_ulaw(ulaw) == "7"


@pytest.mark.parametrize(
    "digit,row,col", [("1", 697, 1209), ("5", 770, 1336), ("#", 941, 1477), ("D", 941, 1633), ("a", 697, 1633)]
)
def test_keypad_frequencies(digit, row, col):
    assert dtmf.frequencies(digit) == (row, col)


@pytest.mark.parametrize("bad", ["E", "", "12", " "])
def test_unknown_symbol_is_refused(bad):
    with pytest.raises(ValueError):
        dtmf.frequencies(bad)


def test_each_tone_carries_exactly_its_two_frequencies():
    pcm = np.frombuffer(dtmf.tones_pcm16("9", gap_ms=0), dtype="<i2").astype(float)
    spectrum = np.abs(np.fft.rfft(pcm * np.hanning(len(pcm))))
    freqs = np.fft.rfftfreq(len(pcm), 1 / 8000)
    top = sorted(freqs[np.argsort(spectrum)[-2:]])
    assert abs(top[0] - 852) <= 10 and abs(top[1] - 1477) <= 10


def test_detector_streams_across_arbitrary_chunk_boundaries():
    pcm = dtmf.tones_pcm16("4#0", tone_ms=80, gap_ms=60)
    det = dtmf.DtmfDetector()
    got: list[str] = []
    for size in range(0, len(pcm), 2 * 37):  # 37-sample chunks: never block aligned
        got += det.feed(pcm[size : size + 2 * 37])
    assert "".join(got) == "4#0"


def test_detector_survives_line_noise():
    rng = np.random.default_rng(7)
    x = np.frombuffer(dtmf.tones_pcm16("8675309"), dtype="<i2").astype(float) + rng.normal(0, 1000, 11200)
    assert dtmf.decode_pcm16(np.clip(x, -32768, 32767).astype("<i2").tobytes()) == "8675309"


def test_detector_ignores_silence_noise_single_tones_and_non_dtmf_pairs():
    t = np.arange(8000) / 8000
    rng = np.random.default_rng(3)
    cases = {
        "silence": np.zeros(8000),
        "noise": rng.normal(0, 3000, 8000),
        "row tone alone": np.sin(2 * np.pi * 770 * t) * 8000,
        "column tone alone": np.sin(2 * np.pi * 1336 * t) * 8000,
        "440 + 770 (no column)": (np.sin(2 * np.pi * 440 * t) + np.sin(2 * np.pi * 770 * t)) * 8000,
        "two rows": (np.sin(2 * np.pi * 697 * t) + np.sin(2 * np.pi * 941 * t)) * 8000,
    }
    for name, x in cases.items():
        assert dtmf.decode_pcm16(x.astype("<i2").tobytes()) == "", name


def test_a_held_key_is_one_digit_and_a_dropout_block_does_not_split_it():
    pcm = np.frombuffer(dtmf.tones_pcm16("3", tone_ms=600, gap_ms=0), dtype="<i2").copy()
    pcm[2400:2450] = 0  # 6 ms glitch in the middle of the tone
    assert dtmf.decode_pcm16(pcm.tobytes()) == "3"


def test_very_short_bursts_are_not_digits():
    # 20 ms is under Q.24's minimum (40 ms) and shorter than two detector blocks: no digit.
    assert dtmf.decode_ulaw(dtmf.tones_ulaw("5", tone_ms=20, gap_ms=100)) == ""


@pytest.mark.parametrize(
    "encoding,rate,frame,decode",
    [
        ("audio/pcmu", 8000, 160, lambda b: dtmf.decode_ulaw(b)),
        ("audio/pcma", 8000, 160, lambda b: dtmf.decode_pcm16(g711.alaw_to_pcm16(b))),
        ("audio/pcm", 16000, 640, lambda b: dtmf.decode_pcm16(b, 16000)),
        ("audio/pcm", 24000, 960, lambda b: dtmf.decode_pcm16(b, 24000)),
    ],
)
def test_tones_come_as_whole_frames_in_the_carriers_own_format(encoding, rate, frame, decode):
    frames = dtmf.tones_for_carrier("*05#", encoding, rate, frame)
    assert all(len(f) == frame for f in frames)
    assert decode(b"".join(frames)) == "*05#"


def test_unknown_carrier_format_is_refused():
    with pytest.raises(ValueError):
        dtmf.tones_for_carrier("1", "audio/opus", 48000, 960)

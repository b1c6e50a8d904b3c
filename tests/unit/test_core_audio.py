"""Pure audio helpers (gateway/audio/): G.711, 20 ms framing, streaming resampling, per-call transcoding.

Audio facts from docs/architecture/twilio-media-streams.md#limits and
docs/architecture/agent-api.md#audio-formats: Twilio is μ-law 8 kHz mono (160 bytes = 20 ms), the agent's default
is 16-bit little-endian PCM at 24 kHz, and 0xFF is μ-law silence.
"""

from __future__ import annotations

import numpy as np
import pytest

from gateway.audio import g711
from gateway.audio.framing import Reframer
from gateway.audio.resample import QUALITIES, StreamResampler
from gateway.audio.transcode import AGENT_FORMATS, InboundAudio, OutboundAudio, agent_format_spec

FRAME = 160  # 20 ms of 8 kHz μ-law


def tone(freq: float, rate: int, seconds: float, amplitude: int = 8000) -> np.ndarray:
    n = round(rate * seconds)
    return (np.sin(2 * np.pi * freq * np.arange(n) / rate) * amplitude).astype("<i2")


def pcm(samples: np.ndarray) -> bytes:
    return samples.astype("<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2")


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    x = x.astype(np.float64)
    x = x[rate // 50 :]  # skip the filter's start-up transient
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spectrum) * rate / len(x))


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def assert_pcm_close(a: bytes, b: bytes) -> None:
    """Same length and within a few LSB: two soxr streams (LQ and better) given identical input differ by up to
    2 LSB from run to run (measured; most likely soxr's dither on int16 output)."""
    assert len(a) == len(b)
    assert np.abs(samples(a).astype(np.int64) - samples(b).astype(np.int64)).max(initial=0) <= 4


def assert_mulaw_close(a: list[bytes], b: list[bytes]) -> None:
    """Same frames, and each μ-law byte at most one companding step from the other (see assert_pcm_close)."""
    assert [len(f) for f in a] == [len(f) for f in b]
    x = samples(g711.ulaw_to_pcm16(b"".join(a))).astype(np.int64)
    y = samples(g711.ulaw_to_pcm16(b"".join(b))).astype(np.int64)
    assert np.all(np.abs(x - y) <= np.maximum(np.abs(x), np.abs(y)) // 8 + 16)


def sample_aligned(data: bytes, size: int) -> list[bytes]:
    """The chunks a resampler that carries odd bytes actually sees when ``data`` arrives in ``size``-byte pieces:
    each boundary rounded down to a whole sample. (soxr output depends slightly on chunking, so the reference
    must be chunked the same way.)"""
    ends = [min(i + size, len(data)) // 2 * 2 for i in range(0, len(data), size)]
    starts = [0] + ends[:-1]
    return [data[a:b] for a, b in zip(starts, ends, strict=True)]


# ---- g711 -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("decode", "code", "linear"),
    [
        (g711.ulaw_to_pcm16, 0xFF, 0),
        (g711.ulaw_to_pcm16, 0x7F, 0),  # μ-law's "negative zero"
        (g711.ulaw_to_pcm16, 0x00, -32124),
        (g711.ulaw_to_pcm16, 0x80, 32124),
        (g711.alaw_to_pcm16, 0xD5, 8),
        (g711.alaw_to_pcm16, 0x55, -8),
        (g711.alaw_to_pcm16, 0x2A, -32256),
        (g711.alaw_to_pcm16, 0xAA, 32256),
    ],
    ids=["ulaw_ff", "ulaw_7f", "ulaw_00", "ulaw_80", "alaw_d5", "alaw_55", "alaw_2a", "alaw_aa"],
)
def test_g711_decodes_reference_code_words(decode: object, code: int, linear: int) -> None:
    assert samples(decode(bytes([code]))).tolist() == [linear]  # type: ignore[operator]


def test_silence_bytes_are_what_digital_silence_encodes_to() -> None:
    zeros = bytes(2 * FRAME)
    assert g711.pcm16_to_ulaw(zeros) == bytes([g711.ULAW_SILENCE]) * FRAME == b"\xff" * FRAME
    assert g711.pcm16_to_alaw(zeros) == bytes([g711.ALAW_SILENCE]) * FRAME == b"\xd5" * FRAME
    assert not samples(g711.ulaw_to_pcm16(b"\xff" * FRAME)).any()
    assert np.abs(samples(g711.alaw_to_pcm16(b"\xd5" * FRAME))).max() <= 8


def test_every_ulaw_byte_survives_decode_then_encode_except_negative_zero() -> None:
    every = bytes(range(256))
    back = g711.pcm16_to_ulaw(g711.ulaw_to_pcm16(every))
    assert [i for i in range(256) if back[i] != i] == [0x7F]
    assert back[0x7F] == 0xFF  # both zeros come back as the canonical silence byte


def test_every_alaw_byte_survives_decode_then_encode() -> None:
    every = bytes(range(256))
    assert g711.pcm16_to_alaw(g711.alaw_to_pcm16(every)) == every


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(g711.pcm16_to_ulaw, g711.ulaw_to_pcm16), (g711.pcm16_to_alaw, g711.alaw_to_pcm16)],
    ids=["ulaw", "alaw"],
)
def test_linear_round_trip_error_is_within_companding_step(encode: object, decode: object) -> None:
    x = np.arange(-32768, 32768, dtype=np.int64)
    y = samples(decode(encode(pcm(x)))).astype(np.int64)  # type: ignore[operator]
    assert len(y) == len(x)
    # Logarithmic companding: the step grows with the level, about 1/16 of it, never more than ~650 at full scale.
    assert np.all(np.abs(y - x) <= np.abs(x) // 16 + 16)


def test_g711_maps_one_byte_to_one_sample() -> None:
    x = pcm(tone(440, 8000, 0.02))
    assert len(g711.pcm16_to_ulaw(x)) == len(g711.pcm16_to_alaw(x)) == FRAME
    assert len(g711.ulaw_to_pcm16(b"\x10" * FRAME)) == len(g711.alaw_to_pcm16(b"\x10" * FRAME)) == 2 * FRAME


# ---- framing.Reframer -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("pushes", "frames_per_push", "pending_after"),
    [
        ([160], [1], 0),
        ([100, 60], [0, 1], 0),
        ([300, 20], [1, 1], 0),
        ([159, 1, 159], [0, 1, 0], 159),
        ([480], [3], 0),
        ([0, 0], [0, 0], 0),
        ([1] * 161, [0] * 159 + [1, 0], 1),
        ([1000], [6], 40),
    ],
)
def test_reframer_hands_out_whole_frames_and_carries_the_remainder(
    pushes: list[int], frames_per_push: list[int], pending_after: int
) -> None:
    stream = bytes(i % 251 for i in range(sum(pushes)))
    r = Reframer(FRAME)
    out: list[bytes] = []
    pos = 0
    for size, expected in zip(pushes, frames_per_push, strict=True):
        got = r.push(stream[pos : pos + size])
        pos += size
        assert len(got) == expected
        out += got
    assert all(len(f) == FRAME for f in out)
    assert b"".join(out) == stream[: len(out) * FRAME]  # byte order preserved across pushes
    assert r.pending == pending_after


def test_reframer_flush_pads_the_remainder_with_the_given_byte() -> None:
    r = Reframer(FRAME)
    r.push(b"\x01" * 200)
    assert r.flush(0xFF) == [b"\x01" * 40 + b"\xff" * 120]
    assert r.pending == 0
    assert r.flush(0xFF) == []


def test_reframer_flush_of_nothing_is_nothing() -> None:
    r = Reframer(FRAME)
    r.push(b"\x01" * 320)
    assert r.flush(0xFF) == []


def test_reframer_clear_drops_the_remainder() -> None:
    r = Reframer(FRAME)
    r.push(b"\x01" * 100)
    r.clear()
    assert r.pending == 0
    assert r.push(b"\x02" * FRAME) == [b"\x02" * FRAME]


def test_reframer_frames_are_independent_copies() -> None:
    r = Reframer(4)
    a = r.push(b"abcd")
    r.push(b"efgh")
    assert a == [b"abcd"]


@pytest.mark.parametrize("size", [0, -160])
def test_reframer_rejects_a_non_positive_frame_size(size: int) -> None:
    with pytest.raises(ValueError):
        Reframer(size)


# ---- resample.StreamResampler ---------------------------------------------------------------------------------
@pytest.mark.parametrize("quality", QUALITIES)
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000)])
def test_one_second_in_is_one_second_out_after_flush(quality: str, in_rate: int, out_rate: int) -> None:
    r = StreamResampler(in_rate, out_rate, quality)
    x = pcm(tone(440, in_rate, 1.0))
    before = b"".join(r.process(c) for c in chunks(x, in_rate // 50 * 2))  # 20 ms chunks
    after = r.flush()
    # Streaming holds back the filter delay (at most a few tens of ms for any quality) until flush.
    assert out_rate - len(before) // 2 <= out_rate * 0.05
    assert abs((len(before) + len(after)) // 2 - out_rate) <= 1
    assert len(before) % 2 == 0 and len(after) % 2 == 0


def test_resampler_carries_an_odd_byte_to_the_next_chunk() -> None:
    x = pcm(tone(440, 8000, 0.5))
    aligned = StreamResampler(8000, 24000, "MQ")
    expected = b"".join(aligned.process(c) for c in sample_aligned(x, 161)) + aligned.flush()
    split = StreamResampler(8000, 24000, "MQ")
    got = b"".join(split.process(c) for c in chunks(x, 161)) + split.flush()  # most boundaries split a sample
    assert len(got) == len(expected) == 2 * 24000 // 2
    assert_pcm_close(got, expected)


def test_same_rate_passes_bytes_through_and_still_carries_odd_bytes() -> None:
    r = StreamResampler(8000, 8000, "HQ")
    assert r.process(b"\x01\x02\x03") == b"\x01\x02"
    assert r.process(b"\x04\x05") == b"\x03\x04"
    assert r.process(b"\x06") == b"\x05\x06"
    assert r.flush() == b""


def test_resampler_reset_forgets_held_samples_and_odd_byte() -> None:
    x = pcm(tone(440, 24000, 0.1))
    r = StreamResampler(24000, 8000, "MQ")
    r.process(x + b"\x01")  # holds back filter delay and one odd byte
    r.reset()
    assert r.flush() == b""
    fresh = StreamResampler(24000, 8000, "MQ")
    assert_pcm_close(r.process(x) + r.flush(), fresh.process(x) + fresh.flush())


def test_resampler_keeps_the_tone_frequency() -> None:
    r = StreamResampler(8000, 24000, "HQ")
    out = samples(r.process(pcm(tone(1000, 8000, 1.0))) + r.flush())
    assert abs(dominant_frequency(out, 24000) - 1000) < 5


@pytest.mark.parametrize("quality", ["hq", "best", "", "soxr_hq", "QQQ"])
def test_unknown_quality_name_is_a_value_error(quality: str) -> None:
    with pytest.raises(ValueError):
        StreamResampler(8000, 24000, quality)


# ---- transcode ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("agent_format", "spec"),
    [
        ("pcm24k", {"encoding": "audio/pcm", "sample_rate": 24000}),
        ("pcmu", {"encoding": "audio/pcmu"}),
        ("pcma", {"encoding": "audio/pcma"}),
    ],
)
def test_agent_format_spec_is_the_documented_format_object(agent_format: str, spec: dict[str, object]) -> None:
    assert agent_format_spec(agent_format) == spec
    assert agent_format in AGENT_FORMATS


@pytest.mark.parametrize("agent_format", ["pcm16k", "PCM24K", "", "ulaw"])
def test_unknown_agent_format_is_a_value_error(agent_format: str) -> None:
    with pytest.raises(ValueError):
        agent_format_spec(agent_format)
    with pytest.raises(ValueError):
        InboundAudio("audio/pcmu", 8000, agent_format)
    with pytest.raises(ValueError):
        OutboundAudio(agent_format, "audio/pcmu", 8000, FRAME)


def test_inbound_pcm24k_turns_mulaw_8k_tone_into_24k_pcm_of_the_same_frequency() -> None:
    inbound = InboundAudio("audio/pcmu", 8000, "pcm24k", "QQ")
    assert not inbound.passthrough
    ulaw = g711.pcm16_to_ulaw(pcm(tone(1000, 8000, 1.0)))
    out = b"".join(inbound.convert(f) for f in chunks(ulaw, FRAME))
    assert len(out) % 2 == 0
    # Three samples out per sample in, two bytes each, minus the (small) filter delay still held back.
    assert 0 <= 2 * 24000 - len(out) <= 2 * 24000 * 0.02
    y = samples(out)
    assert abs(dominant_frequency(y, 24000) - 1000) < 5
    assert 6000 < np.abs(y[480:]).max() < 10000  # level kept (8000 peak, μ-law and filter ripple aside)


def test_inbound_pcm24k_output_per_20ms_frame_is_about_960_bytes() -> None:
    inbound = InboundAudio("audio/pcmu", 8000, "pcm24k", "QQ")
    ulaw = g711.pcm16_to_ulaw(pcm(tone(300, 8000, 0.2)))
    sizes = [len(inbound.convert(f)) for f in chunks(ulaw, FRAME)]
    assert all(size % 2 == 0 for size in sizes)
    assert all(abs(size - 960) <= 64 for size in sizes[1:])


def test_outbound_pcm24k_tone_becomes_whole_160_byte_mulaw_frames() -> None:
    out = OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ")
    assert not out.passthrough and out.frame_bytes == FRAME
    x = pcm(tone(1000, 24000, 1.0))
    # 10 ms agent chunks (docs/architecture/agent-api.md#server-events)
    frames = [f for c in chunks(x, 480) for f in out.convert(c)]
    assert frames and all(len(f) == FRAME for f in frames)
    assert len(frames) < 50  # the resampler still holds its filter delay
    frames += out.flush()
    assert len(frames) == 50 and all(len(f) == FRAME for f in frames)
    y = samples(g711.ulaw_to_pcm16(b"".join(frames)))
    assert abs(dominant_frequency(y, 8000) - 1000) < 5


def test_outbound_flush_drains_the_resampler_and_pads_with_mulaw_silence() -> None:
    out = OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ")
    x = pcm(tone(1000, 24000, 0.035))  # 35 ms = 280 samples at 8 kHz: one frame and 120 bytes
    frames = out.convert(x)
    frames += out.flush()
    assert [len(f) for f in frames] == [FRAME, FRAME]
    last = frames[-1]
    assert last[120:] == b"\xff" * 40
    assert last[:120] != b"\xff" * 120
    assert out.flush() == []  # nothing left after a flush


def test_outbound_flush_with_nothing_pending_sends_nothing() -> None:
    assert OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ").flush() == []
    assert OutboundAudio("pcmu", "audio/pcmu", 8000, FRAME).flush() == []


def test_outbound_carries_odd_pcm_bytes_between_agent_chunks() -> None:
    x = pcm(tone(700, 24000, 0.2))
    even = OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ")
    odd = OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ")
    a = [f for c in sample_aligned(x, 481) for f in even.convert(c)] + even.flush()
    b = [f for c in chunks(x, 481) for f in odd.convert(c)] + odd.flush()
    assert_mulaw_close(a, b)


def test_pcmu_mode_is_byte_exact_passthrough_both_ways() -> None:
    data = bytes(range(256)) * 3
    inbound = InboundAudio("audio/pcmu", 8000, "pcmu")
    assert inbound.passthrough
    assert b"".join(inbound.convert(c) for c in chunks(data, 160)) == data
    out = OutboundAudio("pcmu", "audio/pcmu", 8000, FRAME)
    assert out.passthrough
    # 300-byte agent chunks (docs/architecture/agent-api.md#server-events)
    frames = [f for c in chunks(data, 300) for f in out.convert(c)] + out.flush()
    assert all(len(f) == FRAME for f in frames)
    assert b"".join(frames) == data + b"\xff" * (len(frames) * FRAME - len(data))


def test_pcma_agent_with_mulaw_carrier_transcodes_law_without_resampling() -> None:
    ulaw = g711.pcm16_to_ulaw(pcm(tone(500, 8000, 0.1)))
    inbound = InboundAudio("audio/pcmu", 8000, "pcma")
    assert not inbound.passthrough
    assert inbound.convert(ulaw) == g711.pcm16_to_alaw(g711.ulaw_to_pcm16(ulaw))
    alaw = g711.pcm16_to_alaw(pcm(tone(500, 8000, 0.04)))  # 320 bytes = two frames
    out = OutboundAudio("pcma", "audio/pcmu", 8000, FRAME)
    assert b"".join(out.convert(alaw)) == g711.pcm16_to_ulaw(g711.alaw_to_pcm16(alaw))


def test_outbound_reset_drops_the_partial_frame() -> None:
    out = OutboundAudio("pcmu", "audio/pcmu", 8000, FRAME)
    assert out.convert(b"\x01" * 100) == []
    out.reset()
    assert out.flush() == []
    assert out.convert(b"\x02" * FRAME) == [b"\x02" * FRAME]


def test_outbound_reset_drops_what_the_resampler_held_back() -> None:
    out = OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ")
    out.convert(pcm(tone(1000, 24000, 0.105)))  # leaves a partial frame and the filter delay behind
    out.reset()
    assert out.flush() == []
    fresh = OutboundAudio("pcm24k", "audio/pcmu", 8000, FRAME, "MQ")
    x = pcm(tone(300, 24000, 0.1))
    assert_mulaw_close(out.convert(x) + out.flush(), fresh.convert(x) + fresh.flush())

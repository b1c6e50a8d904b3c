"""The block-free polyphase FIR resampler (gateway/audio/resample.py, ``FirResampler``, config quality ``"FIR"``).

What it must keep (issue #7): output that is a pure function of the input samples whatever the chunking (the outbound
path coalesces agent chunks and tests pin bytes), a holdback of the filter's look-ahead only (2 ms), and telephone
quality: ≥ 70 dB against aliases/images from 4.6 kHz, flat to 3.4 kHz, ≥ 70 dB SNR on a 1 kHz tone. No timing here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from gateway.audio.fir_design import interpolator_phases as _interpolator_phases
from gateway.audio.fir_design import prototype as _prototype
from gateway.audio.fir_design import quantize as _quantize
from gateway.audio.fir_jit import JitFirResampler
from gateway.audio.resample import (
    FIR,
    FIR_DELAY,
    RESAMPLE_QUALITIES,
    FirResampler,
    StreamResampler,
    make_resampler,
)
from gateway.audio.transcode import OutboundAudio


@pytest.fixture(params=[FirResampler, JitFirResampler], ids=["numpy", "jit"])
def fir_cls(request: pytest.FixtureRequest) -> type[FirResampler]:
    """Both implementations of the FIR: every property below holds for each (gateway/audio/fir_jit.py)."""
    cls: type[FirResampler] = request.param
    return cls


DIRECTIONS = [(24000, 8000), (8000, 24000)]


def pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def samples(data: bytes) -> np.ndarray:
    return np.frombuffer(data, "<i2").astype(np.float64)


def noise(rate: int, seconds: float, seed: int = 0, level: float = 6000) -> bytes:
    return pcm(np.random.default_rng(seed).normal(0, level, int(rate * seconds)))


def tone(freq: float, rate: int, seconds: float = 1.0, amplitude: float = 10000) -> bytes:
    return pcm(np.sin(2 * np.pi * freq * np.arange(int(rate * seconds)) / rate) * amplitude)


def run(r: FirResampler, data: bytes, sizes: list[int]) -> bytes:
    out, pos, i = [], 0, 0
    while pos < len(data):
        n = sizes[i % len(sizes)]
        out.append(r.process(data[pos : pos + n]))
        pos, i = pos + n, i + 1
    return b"".join(out) + r.flush()


def whole(in_rate: int, out_rate: int, data: bytes, cls: type[FirResampler] = FirResampler) -> bytes:
    r = cls(in_rate, out_rate)
    return r.process(data) + r.flush()


def reference(in_rate: int, out_rate: int, data: bytes) -> np.ndarray:
    """The filter written the plain way: np.convolve with the same integer taps, zero-phase alignment, silence
    before the start and after the end, round half to even, clip."""
    x = np.frombuffer(data, "<i2").astype(np.float64)
    if in_rate > out_rate:
        q = _quantize(_prototype())
        y = np.convolve(np.concatenate([np.zeros(FIR_DELAY), x, np.zeros(FIR_DELAY + 3)]), q)
        y = y[2 * FIR_DELAY :: 3][: -(-len(x) // 3)]
    else:
        g = np.zeros(3 * len(_interpolator_phases(_prototype())[0]))
        for p, branch in enumerate(_interpolator_phases(_prototype())):
            g[p : p + 3 * len(branch) : 3] = branch
        u = np.zeros(3 * len(x) + 2 * FIR_DELAY + 3)
        u[FIR_DELAY : FIR_DELAY + 3 * len(x) : 3] = x
        y = np.convolve(u, g)[2 * FIR_DELAY :][: 3 * len(x)]
    return np.clip(np.rint(y / 2**20), -32768, 32767)


# ---- construction ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(16000, 8000), (44100, 8000), (8000, 16000), (8000, 8000), (48000, 8000), (24000, 16000), (9000, 3000)],
)
def test_anything_but_the_8k_24k_pair_is_a_value_error(
    in_rate: int, out_rate: int, fir_cls: type[FirResampler]
) -> None:
    with pytest.raises(ValueError):
        fir_cls(in_rate, out_rate)


@pytest.mark.parametrize("quality", ["MQ", "fir", "", "QQ"])
def test_the_fir_class_only_takes_its_own_quality_name(quality: str, fir_cls: type[FirResampler]) -> None:
    with pytest.raises(ValueError):
        fir_cls(24000, 8000, quality)


def test_make_resampler_picks_the_class_from_the_quality_name() -> None:
    assert FIR in RESAMPLE_QUALITIES
    # The compiled kernels when numba is installed (it is a dependency), the numpy version otherwise.
    assert isinstance(make_resampler(24000, 8000, "FIR"), JitFirResampler)
    assert isinstance(make_resampler(24000, 8000, "MQ"), StreamResampler)
    with pytest.raises(ValueError):
        make_resampler(24000, 8000, "fir")


def test_the_designed_filter_is_linear_phase_with_exact_unit_dc_gain() -> None:
    q = _quantize(_prototype())
    assert len(q) == 2 * FIR_DELAY + 1 < 100  # < 100 integer taps: sums stay exact in float64
    assert np.array_equal(q, q[::-1]) and q.sum() == 2**20 and np.all(q == np.rint(q))
    branches = _interpolator_phases(_prototype())
    assert [b.sum() for b in branches] == [2**20] * 3
    assert np.array_equal(branches[0], branches[0][::-1]) and np.array_equal(branches[1], branches[2][::-1])


# ---- determinism ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_output_is_the_plain_convolution_exactly(in_rate: int, out_rate: int, fir_cls: type[FirResampler]) -> None:
    data = noise(in_rate, 0.5) + tone(1000, in_rate, 0.2, 32000) + pcm(np.full(in_rate // 50, 32767.0))
    got = samples(whole(in_rate, out_rate, data, fir_cls))
    want = reference(in_rate, out_rate, data)
    assert len(got) == len(want) == len(data) // 2 * out_rate // in_rate
    assert np.array_equal(got, want)


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_output_does_not_depend_on_chunking(in_rate: int, out_rate: int, fir_cls: type[FirResampler]) -> None:
    data = noise(in_rate, 0.4, seed=1)
    ref = whole(in_rate, out_rate, data)
    chunkings = [
        [1],
        [2],
        [3],
        [7, 1, 2],
        [in_rate // 50 * 2],
        [in_rate // 100 * 2],
        [961, 7, 320, 2, 1],
        [len(data)],
        [len(data) + 1],
    ]
    rng = np.random.default_rng(7)
    chunkings += [list(rng.integers(1, 4000, 40)) for _ in range(6)]
    for sizes in chunkings:
        assert run(fir_cls(in_rate, out_rate), data, [int(s) for s in sizes]) == ref, sizes[:5]


def test_empty_chunks_change_nothing(fir_cls: type[FirResampler]) -> None:
    data = noise(24000, 0.1, seed=2)
    r = fir_cls(24000, 8000)
    out = b"".join(r.process(b"") + r.process(data[i : i + 480]) for i in range(0, len(data), 480)) + r.flush()
    assert out == whole(24000, 8000, data)


def test_an_odd_byte_is_carried_to_the_next_chunk(fir_cls: type[FirResampler]) -> None:
    data = noise(24000, 0.1, seed=3)
    r = fir_cls(24000, 8000)
    assert r.process(data[:3]) == b""  # one sample and a half: nothing complete yet
    rest = r.process(data[3:]) + r.flush()
    assert rest == whole(24000, 8000, data)


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_a_reset_resampler_gives_what_a_new_one_gives(in_rate: int, out_rate: int, fir_cls: type[FirResampler]) -> None:
    data = noise(in_rate, 0.3, seed=4)
    used = fir_cls(in_rate, out_rate)
    used.process(noise(in_rate, 0.2, seed=5) + b"\x01")  # history, a pending odd byte
    used.reset()
    assert run(used, data, [in_rate // 50 * 2]) == whole(in_rate, out_rate, data)
    assert used.flush() == b""  # the flush inside run() reset it again


def test_a_chunk_larger_than_the_buffer_grows_it_without_changing_a_byte(fir_cls: type[FirResampler]) -> None:
    data = noise(24000, 3.0, seed=6)
    r = fir_cls(24000, 8000)
    small = run(fir_cls(24000, 8000), data, [960])
    assert r.process(data[:960]) + r.process(data[960:]) + r.flush() == small


# ---- delay ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_flush_releases_exactly_the_look_ahead(in_rate: int, out_rate: int, fir_cls: type[FirResampler]) -> None:
    data = noise(in_rate, 0.3, seed=8)  # a whole number of output samples
    r = fir_cls(in_rate, out_rate)
    before = r.process(data)
    tail = r.flush()
    ahead = FIR_DELAY * out_rate // 24000  # 48 samples at 24 kHz, 16 at 8 kHz: 2.0 ms
    assert len(tail) // 2 == ahead
    assert (len(before) + len(tail)) // 2 == len(data) // 2 * out_rate // in_rate


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_an_impulse_comes_out_in_place_after_exactly_the_group_delay(
    in_rate: int, out_rate: int, fir_cls: type[FirResampler]
) -> None:
    at = 300  # input index, a multiple of 3
    x = np.zeros(in_rate // 10)
    x[at] = 30000
    data = pcm(x)
    r = fir_cls(in_rate, out_rate)
    out = b""
    fed_when_peak_out = None
    peak = at * out_rate // in_rate
    for i in range(len(x)):
        out += r.process(data[2 * i : 2 * i + 2])
        if fed_when_peak_out is None and len(out) // 2 > peak:
            fed_when_peak_out = i
    y = samples(out + r.flush())
    assert int(np.argmax(y)) == peak  # zero-phase alignment: the output is not shifted in time
    # Look-ahead: the peak needs input up to 2.0 ms after it (48 samples at 24 kHz, 16 at 8 kHz).
    assert fed_when_peak_out - at == FIR_DELAY * in_rate // 24000
    around = y[peak - 40 : peak + 41]
    assert np.array_equal(around, around[::-1])  # symmetric response: linear phase


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_every_output_sample_leaves_within_the_chunk_plus_2_ms(
    in_rate: int, out_rate: int, fir_cls: type[FirResampler]
) -> None:
    chunk = in_rate // 50  # 20 ms
    data = tone(440, in_rate, 1.0)
    r = fir_cls(in_rate, out_rate)
    emitted = 0
    for k, pos in enumerate(range(0, len(data), 2 * chunk)):
        emitted += len(r.process(data[pos : pos + 2 * chunk])) // 2
        fed_ms = (k + 1) * 20
        # Everything up to 2 ms before the end of what was fed is out, and nothing later.
        assert emitted == (fed_ms - 2) * out_rate // 1000


# ---- quality --------------------------------------------------------------------------------------------------------
def level(in_rate: int, out_rate: int, freq: float) -> float:
    y = samples(whole(in_rate, out_rate, tone(freq, in_rate, 1.0)))[400:-400]
    return float(np.sqrt(2) * np.std(y) / 10000)


def test_the_telephone_band_is_flat_to_3_4_khz() -> None:
    for freq in (300, 1000, 2000, 3000, 3400):
        assert abs(20 * np.log10(level(24000, 8000, freq))) < 0.1, freq
        assert abs(20 * np.log10(level(8000, 24000, freq))) < 0.1, freq


@pytest.mark.parametrize("freq", [4600, 5000, 6000, 8000, 10000, 11900])
def test_content_from_4_6_khz_up_is_rejected_by_70_db_going_down(freq: int) -> None:
    assert -20 * np.log10(level(24000, 8000, freq) + 1e-9) >= 70


@pytest.mark.parametrize("freq", [1000, 3400])
def test_images_from_4_6_khz_up_are_70_db_down_going_up(freq: int) -> None:
    y = samples(whole(8000, 24000, tone(freq, 8000, 1.0)))[1200:-1200]
    spectrum = np.abs(np.fft.rfft(y * np.blackman(len(y)))) ** 2
    f = np.fft.rfftfreq(len(y), 1 / 24000)
    assert 10 * np.log10(spectrum[f < 4000].sum() / spectrum[f >= 4600].sum()) >= 70


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_a_1_khz_tone_keeps_70_db_snr(in_rate: int, out_rate: int) -> None:
    y = samples(whole(in_rate, out_rate, tone(1000, in_rate, 1.0)))
    t = np.arange(len(y)) / out_rate
    core = slice(400, -400)
    basis = np.vstack([np.sin(2 * np.pi * 1000 * t), np.cos(2 * np.pi * 1000 * t)]).T
    coef, *_ = np.linalg.lstsq(basis[core], y[core], rcond=None)
    fit = basis @ coef
    assert 10 * np.log10(np.sum(fit[core] ** 2) / np.sum((y - fit)[core] ** 2)) >= 70
    assert abs(np.hypot(*coef) / 10000 - 1) < 0.002
    assert abs(coef[1]) < 1e-3 * abs(coef[0])  # no phase shift: the output is aligned with the input


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_full_scale_overshoot_clips_instead_of_wrapping(
    in_rate: int, out_rate: int, fir_cls: type[FirResampler]
) -> None:
    square = np.where(np.sin(2 * np.pi * 50 * np.arange(in_rate // 5) / in_rate) >= 0, 32767.0, -32768.0)
    y = samples(whole(in_rate, out_rate, pcm(square), fir_cls))
    ref = np.where(np.sin(2 * np.pi * 50 * np.arange(len(y)) / out_rate) >= 0, 1, -1)
    assert y.max() == 32767 and y.min() == -32768
    # A wrapped sample would flip sign in the middle of a plateau.
    far = np.abs(np.sin(2 * np.pi * 50 * np.arange(len(y)) / out_rate)) > 0.2
    assert np.all(np.sign(y[far]) == ref[far])


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_output_for_predicts_what_process_returns(in_rate: int, out_rate: int, fir_cls: type[FirResampler]) -> None:
    data = noise(in_rate, 0.3, seed=9)
    r = fir_cls(in_rate, out_rate)
    rng = np.random.default_rng(10)
    pos = 0
    while pos < len(data):
        chunk = data[pos : pos + int(rng.integers(0, 700))]
        predicted = r.output_for(len(chunk))
        assert len(r.process(chunk)) // 2 == predicted
        pos += len(chunk)


@pytest.mark.parametrize(("in_rate", "out_rate"), DIRECTIONS)
def test_input_for_is_the_fewest_bytes_that_give_that_much_output(
    in_rate: int, out_rate: int, fir_cls: type[FirResampler]
) -> None:
    data = noise(in_rate, 0.3, seed=11)
    r = fir_cls(in_rate, out_rate)
    rng = np.random.default_rng(12)
    pos, out = 0, 0
    while pos < len(data) - 2000:
        want = int(rng.integers(1, 200))
        need = r.input_for(want)
        assert r.output_for(need) >= want
        assert need == 0 or r.output_for(need - 1) < want
        got = len(r.process(data[pos : pos + need])) // 2
        assert got >= want
        pos, out = pos + need, out + got
        skew = int(rng.integers(0, 3))  # sometimes leave an odd byte pending
        r.process(data[pos : pos + skew])
        pos += skew


@pytest.mark.parametrize(
    ("agent_format", "carrier", "rate", "frame", "width"),
    [
        ("pcm24k", "audio/pcmu", 8000, 160, 480),
        ("pcmu", "audio/pcm", 24000, 960, 80),
        ("pcm24k", "audio/pcm", 8000, 320, 333),
    ],
)
def test_outbound_frames_leave_on_the_chunk_that_completes_them(
    agent_format: str, carrier: str, rate: int, frame: int, width: int
) -> None:
    # The fast path coalesces agent chunks; with the FIR's 2 ms lag it must still hand out each frame on the very
    # chunk the plain path (transcode every chunk) does, with the same bytes, across a flush and a reset.
    from gateway.audio.transcode import OutboundAudio
    from tests.support.plain_media_path import PlainOutbound

    data = (
        noise(24000, 1.0, seed=13)
        if agent_format == "pcm24k"
        else bytes(np.random.default_rng(13).integers(0, 256, 8000, dtype=np.uint8))
    )
    fast = OutboundAudio(agent_format, carrier, rate, frame, "FIR")
    plain = PlainOutbound(agent_format, carrier, rate, frame, "FIR")
    for conv_round in range(2):
        for pos in range(0, len(data), width):
            if conv_round and pos == 10 * width:
                fast.reset()
                plain.reset()
            assert fast.convert(data[pos : pos + width]) == plain.convert(data[pos : pos + width]), pos
        assert fast.flush() == plain.flush()


def test_fir_configured_for_a_pair_it_was_not_designed_for_falls_back_to_soxr(fir_cls: type[FirResampler]) -> None:
    # The quality is process-wide, the carrier's rate per call: a 16 kHz L16 stream must still start. Up, the
    # stand-in is block-free (QQ: the agent hears each frame as it comes, as with the FIR); down, it anti-aliases (MQ).
    for in_rate, out_rate, soxr_quality in ((24000, 16000, "MQ"), (16000, 24000, "QQ"), (24000, 48000, "QQ")):
        used = make_resampler(in_rate, out_rate, "FIR")
        assert isinstance(used, StreamResampler) and used.quality == soxr_quality
    up = make_resampler(16000, 24000, "FIR")
    assert len(up.process(bytes(640))) > 2 * 470  # one 20 ms frame in, its 20 ms out at once (MQ: nothing yet)
    out = OutboundAudio("pcm24k", "audio/pcm", 16000, 640, "FIR")
    pcm = b"".join(int(8000 * math.sin(i / 7)).to_bytes(2, "little", signed=True) for i in range(4800))
    frames = out.convert(pcm) + out.flush()
    assert frames and all(len(f) == 640 for f in frames)
    with pytest.raises(ValueError, match="24000 <-> 8000"):
        fir_cls(24000, 16000)

"""The compiled FIR (gateway/audio/fir_jit.py) gives the numpy FIR's bytes for any stream of chunks: odd sizes,
empty chunks, chunks larger than its buffer, flushes and resets in between; the fused encoder gives the plain path's
frames (the properties each has on its own are
in test_fir_resampler.py, run against both)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio import g711
from gateway.audio.fir_jit import AVAILABLE, G711_TABLES, FusedFirDecoder, FusedFirEncoder, JitFirResampler
from gateway.audio.resample import FirResampler
from gateway.audio.transcode import InboundAudio
from tests.support.plain_media_path import PlainInbound, PlainOutbound

#: One step of a stream: feed n bytes, flush, or reset.
_STEP = st.one_of(
    st.integers(min_value=0, max_value=3000).map(lambda n: ("feed", n)),
    # The live service's chunk sizes, where a frame completes exactly at a chunk's end (10 ms, 20 ms, 5 ms).
    st.sampled_from([480, 960, 240]).map(lambda n: ("feed", n)),
    # Longer than the history the converters start with (100 ms): they grow it, keeping what they hold.
    st.integers(min_value=4800, max_value=12001).map(lambda n: ("feed", n)),
    # One sample at a time: every chunk boundary is hit, so a frame held one chunk too long shows.
    st.integers(min_value=1, max_value=600).map(lambda n: ("trickle", n)),
    st.just(("flush", 0)),
    st.just(("reset", 0)),
)


def test_numba_is_installed_so_calls_get_the_compiled_kernels() -> None:
    assert AVAILABLE


@pytest.mark.parametrize(("in_rate", "out_rate"), [(24000, 8000), (8000, 24000)])
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_STEP, max_size=40), seed=st.integers(0, 2**32 - 1), level=st.sampled_from([30, 8000, 60000]))
def test_same_bytes_as_the_numpy_fir(
    in_rate: int, out_rate: int, steps: list[tuple[str, int]], seed: int, level: int
) -> None:
    rng = np.random.default_rng(seed)
    ref, jit = FirResampler(in_rate, out_rate), JitFirResampler(in_rate, out_rate)
    for op, n in steps:
        if op == "trickle":
            data = (rng.standard_normal(n) * level).clip(-32768, 32767).astype("<i2").tobytes()
            assert [jit.process(data[i : i + 2]) for i in range(0, len(data), 2)] == [
                ref.process(data[i : i + 2]) for i in range(0, len(data), 2)
            ]
        elif op == "flush":
            assert jit.flush() == ref.flush()
        elif op == "reset":
            ref.reset()
            jit.reset()
        else:
            data = (rng.standard_normal(n // 2 + 1) * level).clip(-32768, 32767).astype("<i2").tobytes()[:n]
            assert jit.output_for(n) == ref.output_for(n)
            assert jit.input_for(160) == ref.input_for(160)
            assert jit.process(data) == ref.process(data)
    assert jit.process(b"\x01\x02\x03", last=True) == ref.process(b"\x01\x02\x03", last=True)


@pytest.mark.parametrize(("carrier", "pad"), [("audio/pcmu", 0xFF), ("audio/pcma", 0xD5)])
@settings(max_examples=60, deadline=None)
@given(steps=st.lists(_STEP, max_size=40), seed=st.integers(0, 2**32 - 1), level=st.sampled_from([30, 8000, 60000]))
def test_the_fused_encoder_gives_the_plain_paths_frames_on_the_same_chunks(
    carrier: str, pad: int, steps: list[tuple[str, int]], seed: int, level: int
) -> None:
    # The plain path: the numpy FIR, audioop's G.711 encoder and the Reframer, every chunk transcoded as it comes.
    rng = np.random.default_rng(seed)
    fused, plain = FusedFirEncoder(carrier, 160, pad), PlainOutbound("pcm24k", carrier, 8000, 160, "FIR")
    for op, n in steps:
        if op == "flush":
            assert fused.flush() == plain.flush()
        elif op == "reset":
            fused.reset()
            plain.reset()
        elif op == "trickle":
            data = (rng.standard_normal(n) * level).clip(-32768, 32767).astype("<i2").tobytes()
            for i in range(0, len(data), 2):
                assert fused.convert(data[i : i + 2]) == plain.convert(data[i : i + 2])
        else:
            data = (rng.standard_normal(n // 2 + 1) * level).clip(-32768, 32767).astype("<i2").tobytes()[:n]
            assert fused.convert(data) == plain.convert(data)
    assert fused.flush() == plain.flush()


def test_the_kernels_load_only_for_settings_that_resample_with_them() -> None:
    # numba costs ~130 MB per process: a G.711 passthrough or soxr-only gateway (and the local agent) never loads it.
    code = (
        "import sys\n"
        "from gateway.audio.transcode import load_kernels\n"
        "import gateway.cli, gateway.local_agent.codec\n"
        "assert 'numba' not in sys.modules\n"
        "assert not load_kernels('pcmu', 'FIR', 'FIR') and not load_kernels('pcm24k', 'QQ', 'MQ')\n"
        "assert 'numba' not in sys.modules\n"
        "assert load_kernels('pcm24k', 'QQ', 'FIR') and 'gateway.audio.fir_jit' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("carrier", ["audio/pcmu", "audio/pcma"])
@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(min_value=0, max_value=900), max_size=30), seed=st.integers(0, 2**32 - 1))
def test_the_fused_decoder_gives_the_decoder_and_the_numpy_firs_bytes(
    carrier: str, sizes: list[int], seed: int
) -> None:
    # Every G.711 byte value, in payloads of any size (a carrier's 20 ms, Exotel's 100 ms, odd ones): the table the
    # kernel decodes with is audioop's, and the filter is the numpy FIR's, so the bytes are the same.
    rng = np.random.default_rng(seed)
    fused, plain = FusedFirDecoder(carrier), PlainInbound(carrier, 8000, "pcm24k", "FIR")
    for i, n in enumerate(sizes):
        payload = bytes(rng.integers(0, 256, n, dtype=np.uint8))
        assert fused.convert(payload) == plain.convert(payload)
        if i % 7 == 6:
            fused.reset()
            plain.resampler.reset()


def test_the_default_inbound_pair_converts_with_the_fused_decoder() -> None:
    # InboundAudio hands the frame straight to the compiled step (no wrapper call) for 8 kHz G.711 → pcm24k with FIR,
    # and only then.
    assert (
        getattr(InboundAudio("audio/pcmu", 8000, "pcm24k", "FIR").convert, "__self__", None).__class__
        is FusedFirDecoder
    )
    assert InboundAudio("audio/pcmu", 8000, "pcm24k", "QQ").convert.__func__ is InboundAudio.convert
    assert InboundAudio("audio/pcmu", 8000, "pcmu", "FIR").convert.__func__ is InboundAudio.convert


@pytest.mark.parametrize(
    ("carrier", "encode"), [("audio/pcmu", g711.pcm16_to_ulaw), ("audio/pcma", g711.pcm16_to_alaw)]
)
def test_the_encoders_table_gives_audioops_byte_for_every_sample(carrier: str, encode: Any) -> None:
    # The fused encoder looks a sample up at (sample + 32768) >> 2: the quarter-size table must hold for all 65,536.
    every = np.arange(-32768, 32768, dtype="<i2")
    expected = np.frombuffer(encode(every.tobytes()), np.uint8)
    assert (G711_TABLES[carrier][(every.astype(np.int64) + 32768) >> 2] == expected).all()


def test_the_kernels_are_called_without_numbas_dispatcher_and_still_check_their_arrays() -> None:
    # The compiled entry point skips type resolution; an array of the wrong dtype must still be refused, not read.
    from gateway.audio.fir_jit import _DOWN, _DOWN_ENCODE, _DOWN_TAPS

    assert not hasattr(_DOWN_ENCODE, "overloads")  # the compiled function, not the Dispatcher
    with pytest.raises(TypeError):
        _DOWN(np.zeros(200, np.float32), 0, bytes(2), _DOWN_TAPS, np.zeros(200, np.int16))


def test_without_an_entry_point_the_dispatcher_itself_is_used() -> None:
    # Another numba version may not expose one: the kernels then go through the dispatcher, as before.
    from gateway.audio.fir_jit import _compiled

    calls: list[tuple[int, ...]] = []

    class Dispatcher:
        overloads = {"sig": object()}  # a compile result without entry_point

        def __call__(self, *args: int) -> None:
            calls.append(args)

    d = Dispatcher()
    assert _compiled(d, 1, 2) is d and calls == [(1, 2)]


def test_a_second_process_loads_the_kernels_from_numbas_cache(tmp_path: Any) -> None:
    """The kernels compile once per install, not at every start: a second process finds all four in the cache.
    (They were closures, and numba keys a closure's cache entry by its pickled cells, which differ in every process:
    each start compiled them again, for seconds, and wrote four new entries next to the module.)"""
    env = {"PATH": "/usr/bin:/bin", "NUMBA_CACHE_DIR": str(tmp_path), "NUMBA_DEBUG_CACHE": "1"}

    def start() -> str:
        run = subprocess.run(
            [sys.executable, "-c", "import gateway.audio.fir_jit"], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        return run.stdout + run.stderr

    first = start()
    assert first.count("data saved") == 4  # the first start compiles and saves each kernel
    entries = sorted(p.name for p in tmp_path.rglob("*.nbc"))
    second = start()
    assert "data saved" not in second
    assert second.count("data loaded") == 4
    assert sorted(p.name for p in tmp_path.rglob("*.nbc")) == entries  # nothing new written

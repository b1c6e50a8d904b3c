"""The compiled FIR (gateway/audio/fir_jit.py) gives the numpy FIR's bytes for any stream of chunks: odd sizes,
empty chunks, chunks larger than its buffer, flushes and resets in between (the properties each has on its own are
in test_fir_resampler.py, run against both)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio.fir_jit import AVAILABLE, JitFirResampler
from gateway.audio.resample import FirResampler

#: One step of a stream: feed n bytes, flush, or reset.
_STEP = st.one_of(
    st.integers(min_value=0, max_value=3000).map(lambda n: ("feed", n)),
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
        if op == "flush":
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

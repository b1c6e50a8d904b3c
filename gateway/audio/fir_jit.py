"""The block-free FIR resampler compiled to machine code with numba: the same filter and the same output, bit for bit,
as :class:`~gateway.audio.resample.FirResampler`, at less than half the cost per 20 ms frame. Pure (no I/O, no clock).

Why: with numpy the FIR costs ~6.5 µs a frame, almost all of it the overhead of the eight numpy calls around one
small matrix product; the arithmetic itself (160 outputs × 97 taps down, 480 × 33 up) is about a microsecond. One
compiled loop per direction reads the PCM bytes as they arrive, keeps only the filter's history (96 samples) between
frames, and writes into a preallocated array: 2–3 µs a frame, and no per-call copy of the taps
(docs/architecture/audio.md#fir).

Exactness: as in the numpy version the taps are integers (scaled by 2**20) and the samples int16, so every product
and partial sum is an integer far inside float64's 53 bits. The kernels sum the integer taps, scale by 2**-20 (exact),
round half to even and clip, which is exactly what the numpy version does: ``tests/unit/test_fir_jit.py`` holds the
two to the same bytes over random chunkings, flushes and resets. ``fastmath`` may reorder the sums: exact sums do not
depend on the order.

The kernels compile when this module is imported (numba caches the machine code next to this file, or in
``NUMBA_CACHE_DIR``), so no call ever waits for the compiler. Without numba (a platform it has no wheel for),
:data:`AVAILABLE` is False and :func:`~gateway.audio.resample.make_resampler` uses the numpy version.
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np

from . import g711
from .fir_design import (
    FIR_DELAY,
    FIR_RATES,
    FIR_SCALE_BITS,
    FIR_TAPS,
    interpolator_phases,
    prototype,
    quantize,
    whole_samples,
)

__all__ = ["AVAILABLE", "G711_DECODE", "G711_TABLES", "FusedFirDecoder", "FusedFirEncoder", "JitFirResampler"]

try:
    from numba import njit
except ImportError:  # pragma: no cover - numba ships wheels for every platform we deploy on
    AVAILABLE = False
else:
    # The fused encoder reads agent PCM in place as native int16, which is the little-endian PCM the agent sends
    # only on a little-endian machine; numba runs on no other kind, so this is not a limit in practice.
    AVAILABLE = sys.byteorder == "little"

_SCALE = 1.0 / (1 << FIR_SCALE_BITS)
#: Every fourth int16 sample, from -32768: G.711 ignores a sample's two lowest bits (μ-law encodes 14 bits, A-law 13),
#: so a sample's code is the code of ``(sample + 32768) >> 2`` in this list; ``test_fir_jit`` checks that against all
#: 65,536 samples. A 16 KB table rather than 64 KB: fewer cache lines for a frame's 160 look-ups on a busy core.
_EVERY_FOURTH_SAMPLE = np.arange(-32768, 32768, 4, dtype="<i2").tobytes()
#: Each of those samples' G.711 byte, made by the stdlib's own encoder: the fused encoder gives audioop's bytes by
#: construction, not by a re-implementation of the companding.
G711_TABLES = {
    "audio/pcmu": np.frombuffer(g711.pcm16_to_ulaw(_EVERY_FOURTH_SAMPLE), np.uint8).copy(),
    "audio/pcma": np.frombuffer(g711.pcm16_to_alaw(_EVERY_FOURTH_SAMPLE), np.uint8).copy(),
}
#: Every G.711 byte's int16 sample, as float64 (the up kernels' history), made by the stdlib's own decoder.
G711_DECODE = {
    "audio/pcmu": np.frombuffer(g711.ulaw_to_pcm16(bytes(range(256))), "<i2").astype(np.float64),
    "audio/pcma": np.frombuffer(g711.alaw_to_pcm16(bytes(range(256))), "<i2").astype(np.float64),
}
#: Down: the 97 integer taps, reversed (output j is window [3j, 3j + 97) · taps). Up: the three polyphase branches of
#: 33 taps (the shorter ones zero-padded), each reversed the same way: output 3j + p is window [j, j + 33) · branch p.
_DOWN_TAPS = quantize(prototype())[::-1].copy()
#: Down, by phase (the fused encoder's layout): _DOWN_PHASES[r, u] = _DOWN_TAPS[3u + r], the last column of phases 1
#: and 2 zero (97 = 33 + 32 + 32).
_DOWN_PHASES = np.zeros((3, -(-FIR_TAPS // 3)))
for _r in range(3):
    _DOWN_PHASES[_r, : len(_DOWN_TAPS[_r::3])] = _DOWN_TAPS[_r::3]
_UP_TAPS = np.zeros((3, 2 * (FIR_DELAY // 3) + 1))
for _p, _branch in enumerate(interpolator_phases(prototype())):
    # y[3j + p] = sum_t branch[t] * x[j + lead - t]: over the window w = x[j : j + 2·lead + 1], w[2·lead - t].
    _UP_TAPS[_p, 2 * (FIR_DELAY // 3) - np.arange(len(_branch))] = _branch
#: The one window width of both (33 taps per phase down, per branch up: test_fir_jit fails if they part), a constant
#: the compiler sees: loops of a known length over the taps unroll and vectorise, which the same loop bounded by
#: ``taps.shape[1]`` does not.
_WINDOW = _DOWN_PHASES.shape[1]

#: The fused encoder's state, one int64 array the kernel reads and updates (one argument instead of five integers in
#: and out, and no bookkeeping in Python per frame): the history's length, the samples it holds at most, the pending
#: partial frame's start and length in the output buffer, input samples fed and outputs made since the reply began
#: (for the flush), the frame size, and "filter now even if no frame completes" (the flush).
_ST_NH, _ST_CAP, _ST_START, _ST_FILL, _ST_FED, _ST_SENT, _ST_SIZE, _ST_FORCE = range(8)
_ST_LEN = 8
#: The standard base64 alphabet (RFC 4648, section 4), for the media message the encoder may also write
#: (gateway/audio/fir_message.py); and the message buffer of an encoder that writes none (its offset is -1).
_ALPHABET = np.frombuffer(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/", np.uint8).copy()
_NO_MESSAGE = np.zeros(1, np.uint8)


if AVAILABLE:
    # The four loops and their helpers (inlined into each), defined at module level when numba is there: not in a
    # function, whose closures numba would key its cache entries by, pickled, which differs in every process (then
    # every start compiled them again and wrote new entries; tests/unit/test_fir_jit.py).

    @njit(cache=True, fastmath=True, inline="always")
    def append_pcm(hist: Any, nh: int, pcm: Any) -> int:
        # The new little-endian int16 samples after the ``nh`` kept in the history; returns the history's length.
        n = len(pcm) >> 1
        for i in range(n):
            v = pcm[2 * i] | (pcm[2 * i + 1] << 8)
            hist[nh + i] = v - 65536 if v >= 32768 else v
        return nh + n

    @njit(cache=True, fastmath=True, inline="always")
    def append_phased(ph: Any, nh: int, x: Any) -> int:
        # The int16 samples ``x`` after the ``nh`` kept in a history split by phase (sample h goes to
        # ph[h % 3, h // 3]); returns the history's length.
        n = len(x)
        p0, p1, p2 = ph[0], ph[1], ph[2]
        i, h = 0, nh
        while h % 3 and i < n:  # up to phase 0
            ph[h % 3, h // 3] = x[i]
            i, h = i + 1, h + 1
        q = h // 3
        for k in range((n - i) // 3):  # whole triples, one sample per phase
            b = i + 3 * k
            p0[q + k] = x[b]
            p1[q + k] = x[b + 1]
            p2[q + k] = x[b + 2]
        i, h = i + (n - i) // 3 * 3, h + (n - i) // 3 * 3
        while i < n:  # the rest
            ph[h % 3, h // 3] = x[i]
            i, h = i + 1, h + 1
        return nh + n

    @njit(cache=True, fastmath=True, inline="always")
    def dot8(row: Any, x: Any, j: int) -> tuple[float, float, float, float, float, float, float, float]:
        # Eight windows side by side: sum over u of row[u] * x[j + k + u], k = 0..7. Contiguous reads, summed across
        # outputs (vectorised, no horizontal sum per output); ``row`` is _WINDOW taps long. Integer taps and samples:
        # every order of the sums is exact.
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = 0.0
        for u in range(_WINDOW):
            c, i = row[u], j + u
            a0 += c * x[i]
            a1 += c * x[i + 1]
            a2 += c * x[i + 2]
            a3 += c * x[i + 3]
            a4 += c * x[i + 4]
            a5 += c * x[i + 5]
            a6 += c * x[i + 6]
            a7 += c * x[i + 7]
        return a0, a1, a2, a3, a4, a5, a6, a7

    @njit(cache=True, fastmath=True, inline="always")
    def dot1(row: Any, x: Any, j: int) -> float:
        # One window: sum over u of row[u] * x[j + u] (the few outputs after the last eight).
        a = 0.0
        for u in range(_WINDOW):
            a += row[u] * x[j + u]
        return a

    @njit(cache=True, fastmath=True, inline="always")
    def need_bytes(size: int, fill: int, nh: int) -> int:
        # The agent bytes that complete the next frame: its remaining outputs need 3 input samples each after the
        # filter's span, of which the history holds ``nh``.
        return 2 * ((size - fill - 1) * 3 + FIR_TAPS - nh)

    @njit(cache=True, fastmath=True, inline="always")
    def to_int16(acc: float) -> int:
        # An exact integer sum of integer taps: scaled back (exact), rounded half to even, clipped (with min and
        # max, which compile to two instructions, not to branches).
        return int(min(max(np.rint(acc * _SCALE), -32768.0), 32767.0))

    @njit(cache=True, fastmath=True, inline="always")
    def down_at(hist: Any, j: int, taps: Any) -> int:
        # Output sample of the 97-sample window starting at input ``j``.
        acc = 0.0
        for t in range(taps.shape[0]):
            acc += taps[t] * hist[j + t]
        return to_int16(acc)

    @njit(cache=True, fastmath=True, inline="always")
    def keep_tail(hist: Any, used: int, total: int) -> int:
        # Drop the first ``used`` samples, which no later output needs; returns how many are kept.
        for i in range(total - used):
            hist[i] = hist[used + i]
        return total - used

    @njit(cache=True, fastmath=True)
    def down(hist: Any, nh: int, pcm: Any, taps: Any, out: Any) -> tuple[int, int]:
        # One output per 3 inputs whose 97-sample window is complete.
        total = append_pcm(hist, nh, pcm)
        width = taps.shape[0]
        m = 0
        j = 0
        while j + width <= total:
            out[m] = down_at(hist, j, taps)
            m += 1
            j += 3
        return m, keep_tail(hist, j, total)

    @njit(cache=True, inline="always")
    def b64_into(src: Any, n: int, dst: Any, at: int) -> None:
        # src[:n] as padded base64 at dst[at:]: three bytes to four letters, then the one or two left over.
        i, o = 0, at
        while i + 3 <= n:
            v = src[i] * 65536 + src[i + 1] * 256 + src[i + 2]
            dst[o], dst[o + 1] = _ALPHABET[v >> 18], _ALPHABET[(v >> 12) & 63]
            dst[o + 2], dst[o + 3] = _ALPHABET[(v >> 6) & 63], _ALPHABET[v & 63]
            i += 3
            o += 4
        if i < n:  # one or two bytes left: "=" (61) pads the four letters
            v = src[i] * 65536 + (src[i + 1] * 256 if i + 1 < n else 0)
            dst[o], dst[o + 1] = _ALPHABET[v >> 18], _ALPHABET[(v >> 12) & 63]
            dst[o + 2], dst[o + 3] = _ALPHABET[(v >> 6) & 63] if i + 1 < n else 61, 61

    @njit(cache=True, fastmath=True)
    def encode_chunk(ph: Any, st: Any, pcm: Any, taps: Any, law: Any, out: Any, msg: Any, at: int) -> tuple[int, int]:
        # FusedFirEncoder's step for one agent chunk; its state is in ``st`` (the _ST_* slots).
        # 1. The chunk's samples (whole ones: an even length) go into the history, read in place as int16 (a
        #    third of the time of assembling each from two bytes), split by phase: sample h at ph[h % 3, h // 3].
        # 2. Unless they complete the next frame, that is all. Otherwise the filter computes every output the
        #    history allows, once, each through the G.711 table, after the partial frame pending in ``out`` (moved
        #    to the front first). Output j is the sum over r, u of taps[r, u] * ph[r, j + u]: per phase, eight
        #    outputs at a time (dot8): the filter 1.3 us a 20 ms frame, against 2.0 for one dot product per output.
        # Returns the whole frames now at the front of ``out`` and the input bytes that complete the next one (the
        # caller holds smaller chunks back without a call), or (-1, 0) when the history is too short for the chunk:
        # nothing changed; grow it and call again.
        n = len(pcm) >> 1
        if st[_ST_NH] + n > st[_ST_CAP]:
            return -1, 0
        total = append_phased(ph, st[_ST_NH], np.frombuffer(pcm, np.int16))
        st[_ST_FED] += n
        fill = st[_ST_FILL]
        size = st[_ST_SIZE]
        m = (total - FIR_TAPS) // 3 + 1 if total >= FIR_TAPS else 0
        if fill + m < size and not st[_ST_FORCE]:
            st[_ST_NH] = total
            return 0, need_bytes(size, fill, total)
        start = st[_ST_START]
        for i in range(fill if start else 0):
            out[i] = out[start + i]
        p0, p1, p2 = ph[0], ph[1], ph[2]
        t0, t1, t2 = taps[0], taps[1], taps[2]
        j = 0
        while j + 8 <= m:
            s0, s1, s2 = dot8(t0, p0, j), dot8(t1, p1, j), dot8(t2, p2, j)
            for k in range(8):
                out[fill + j + k] = law[(to_int16(s0[k] + s1[k] + s2[k]) + 32768) >> 2]
            j += 8
        while j < m:  # the last few outputs, one at a time
            out[fill + j] = law[(to_int16(dot1(t0, p0, j) + dot1(t1, p1, j) + dot1(t2, p2, j)) + 32768) >> 2]
            j += 1
        # Keep the tail: the first 3m samples (m per phase) are no later window's.
        kept = total - 3 * m
        if m:
            for i in range(-(-kept // 3)):
                p0[i] = p0[m + i]
                p1[i] = p1[m + i]
                p2[i] = p2[m + i]
        st[_ST_NH] = kept
        st[_ST_SENT] += m
        buffered = fill + m
        frames = buffered // size
        fill = buffered - frames * size
        st[_ST_START] = frames * size  # the partial frame waits where it is; the next run moves it
        st[_ST_FILL] = fill
        if frames == 1 and at >= 0:  # the steady state, with a media message to fill: the frame's base64 at ``at``
            b64_into(out, size, msg, at)
        return frames, need_bytes(size, fill, kept)

    @njit(cache=True, fastmath=True, inline="always")
    def up_filter(hist: Any, total: int, taps: Any, out: Any) -> tuple[int, int]:
        # Three outputs per input whose 33-sample window is complete, one per polyphase branch: output 3j + p is
        # the window [j, j + 33) · taps[p]. Branch by branch, eight windows at a time (dot8), as the encoder's
        # filter does: the decoder's step 1.9 against 2.3 us a 20 ms frame with the three sums of one window at a
        # time (docs/architecture/performance.md#inbound-filter).
        if total < _WINDOW:
            return 0, total
        groups = total - _WINDOW + 1
        for p in range(3):
            row = taps[p]
            j = 0
            while j + 8 <= groups:
                sums = dot8(row, hist, j)
                for k in range(8):
                    out[3 * (j + k) + p] = to_int16(sums[k])
                j += 8
            while j < groups:  # the last few windows, one at a time
                out[3 * j + p] = to_int16(dot1(row, hist, j))
                j += 1
        return 3 * groups, keep_tail(hist, groups, total)

    @njit(cache=True, fastmath=True)
    def up(hist: Any, nh: int, pcm: Any, taps: Any, out: Any) -> tuple[int, int]:
        return up_filter(hist, append_pcm(hist, nh, pcm), taps, out)

    @njit(cache=True, fastmath=True)
    def up_decode(hist: Any, nh: int, payload: Any, law: Any, taps: Any, out: Any) -> tuple[int, int]:
        # up, from G.711 bytes: each byte through the 256-entry decoding table first.
        n = len(payload)
        for i in range(n):
            hist[nh + i] = law[payload[i]]
        return up_filter(hist, nh + n, taps, out)


def _compiled(dispatcher: Any, *example: Any) -> Any:
    """Compile ``dispatcher`` (or load it from the cache) for the example's types, now, at import (never on a call's
    first frame), and return the compiled function itself when numba exposes it: calling it skips the dispatcher's
    type resolution (0.3-1 us a call on a busy core, twice per 20 ms frame). It still checks every argument when it
    unboxes it (an array of another dtype is a TypeError) and reads any bytes-like object as bytes."""
    dispatcher(*example)
    overloads = list(getattr(dispatcher, "overloads", {}).values())
    entry = getattr(overloads[0], "entry_point", None) if len(overloads) == 1 else None
    return entry if callable(entry) else dispatcher


if AVAILABLE:
    _DOWN = _compiled(down, np.zeros(200), 0, bytes(2), _DOWN_TAPS, np.zeros(200, np.int16))
    _UP = _compiled(up, np.zeros(200), 0, bytes(2), _UP_TAPS, np.zeros(600, np.int16))
    _UP_DECODE = _compiled(up_decode, np.zeros(200), 0, bytes(2), np.zeros(256), _UP_TAPS, np.zeros(600, np.int16))
    _DOWN_ENCODE = _compiled(
        encode_chunk, np.zeros((3, 70)), np.zeros(_ST_LEN, np.int64), bytes(2), _DOWN_PHASES,
        np.zeros(16384, np.uint8), np.zeros(70, np.uint8), _NO_MESSAGE, -1,
    )  # fmt: skip


class JitFirResampler:
    """:class:`~gateway.audio.resample.FirResampler`'s interface and output (``process``, ``flush``, ``reset``,
    ``output_for``, ``input_for``), compiled. Factor 3 only: 24 kHz → 8 kHz or 8 kHz → 24 kHz."""

    # Streaming state, set by reset() (declared here for the type checker; __slots__ holds the values).
    _odd: bytes
    _nh: int
    _fed: int
    _sent: int
    _hist: np.ndarray
    _out: np.ndarray

    __slots__ = ("in_rate", "out_rate", "quality", "_down", "_kernel", "_taps", "_step", "_outs", "_span", "_hist",
                 "_nh", "_out", "_odd", "_fed", "_sent")  # fmt: skip

    def __init__(self, in_rate: int, out_rate: int, quality: str = "FIR") -> None:
        if not AVAILABLE:  # pragma: no cover - make_resampler checks first
            raise RuntimeError("numba is not installed")
        if quality != "FIR":
            raise ValueError(f"JitFirResampler quality must be 'FIR', not {quality!r}")
        if (in_rate, out_rate) not in FIR_RATES:
            raise ValueError(f"FIR resampling is 24000 <-> 8000 Hz only (factor 3), not {in_rate} -> {out_rate} Hz")
        self.in_rate, self.out_rate, self.quality = in_rate, out_rate, quality
        self._down = in_rate > out_rate
        if self._down:
            self._kernel, self._taps = _DOWN, _DOWN_TAPS
            self._step, self._outs, self._span = 3, 1, FIR_TAPS
        else:
            self._kernel, self._taps = _UP, _UP_TAPS
            self._step, self._outs, self._span = 1, 3, _UP_TAPS.shape[1]
        self._alloc(in_rate // 10)  # 100 ms of input per call; a larger chunk grows it
        self.reset()

    def _alloc(self, inputs: int) -> None:
        self._hist = np.zeros(inputs + self._span)
        self._out = np.empty((len(self._hist) // self._step + 1) * self._outs, np.int16)

    def process(self, pcm: bytes, last: bool = False) -> bytes:
        """Feed a chunk, get back every output sample its input completes. ``last=True`` drains the look-ahead."""
        if self._odd or len(pcm) & 1:
            pcm, self._odd = whole_samples(self._odd, pcm)
        n = len(pcm) >> 1
        if self._nh + n > len(self._hist):
            self._grow(self._nh + n)
        self._fed += n
        m, self._nh = self._kernel(self._hist, self._nh, pcm, self._taps, self._out)
        if last:
            return self._drain(m)
        self._sent += m
        return self._out[:m].tobytes()

    def _drain(self, m: int) -> bytes:
        """The rest of ``process(last=True)``: silence after the end until every input instant has its output."""
        want = -(-self._fed * self.out_rate // self.in_rate) - self._sent
        head = self._out[: max(0, min(m, want))].tobytes()
        more = want - m
        tail = b""
        if more > 0:
            groups = -(-more // self._outs)
            zeros = max(0, (groups - 1) * self._step + self._span - self._nh)
            if self._nh + zeros > len(self._hist):
                self._grow(self._nh + zeros)
            k, self._nh = self._kernel(self._hist, self._nh, bytes(2 * zeros), self._taps, self._out)
            tail = self._out[: min(k, more)].tobytes()
        self.reset()
        return head + tail

    def _grow(self, inputs: int) -> None:
        old = self._hist[: self._nh].copy()
        self._alloc(2 * inputs)
        self._hist[: len(old)] = old

    def output_for(self, nbytes: int) -> int:
        """How many output samples ``process`` would return now for ``nbytes`` more input bytes (not the last call)."""
        n = (len(self._odd) + nbytes) >> 1
        groups = (self._nh + n - self._span) // self._step + 1
        return groups * self._outs if groups > 0 else 0

    def input_for(self, outputs: int) -> int:
        """The fewest input bytes after which ``process`` returns at least ``outputs`` samples in all."""
        groups = -(-outputs // self._outs)
        n = max(0, (groups - 1) * self._step + self._span - self._nh)
        return max(0, 2 * n - len(self._odd))

    def flush(self) -> bytes:
        """Drain the look-ahead: the last 2 ms of input get their output (zeros assumed after the end)."""
        return self.process(b"", last=True)

    def reset(self) -> None:
        """Drop all state: the same output afterwards as a new instance."""
        self._odd = b""
        # The first window starts before input 0: the look-ahead behind it is silence.
        self._nh = FIR_DELAY if self._down else FIR_DELAY // 3
        self._hist[: self._nh] = 0.0
        self._fed = 0
        self._sent = 0


class FusedFirDecoder:
    """Caller → agent in one compiled step: 8 kHz G.711 bytes in, 24 kHz PCM16 out (the G.711 table, then the FIR
    up). The same bytes, on the same chunks, as ``audioop``'s decoder + :class:`JitFirResampler` (what
    :class:`~gateway.audio.transcode.InboundAudio` does for any other pair), minus one call and one copy per frame."""

    __slots__ = ("_law", "_hist", "_nh", "_out", "_view")

    _hist: np.ndarray
    _out: np.ndarray
    _view: memoryview  # the same bytes as _out: a frame's PCM is copied out of it (0.13 µs cheaper than the array's)
    _nh: int

    def __init__(self, carrier_encoding: str) -> None:
        if not AVAILABLE:  # pragma: no cover - transcode.py checks first
            raise RuntimeError("numba is not installed")
        self._law = G711_DECODE[carrier_encoding]
        self._alloc(800)  # 100 ms of input; a larger payload grows it
        self.reset()

    def _alloc(self, inputs: int) -> None:
        self._hist = np.zeros(inputs + _UP_TAPS.shape[1])
        buf = bytearray(6 * len(self._hist))
        self._out, self._view = np.frombuffer(buf, np.int16), memoryview(buf)

    def convert(self, payload: bytes) -> bytes:
        if self._nh + len(payload) > len(self._hist):
            old = self._hist[: self._nh].copy()
            self._alloc(2 * (self._nh + len(payload)))
            self._hist[: len(old)] = old
        m, self._nh = _UP_DECODE(self._hist, self._nh, payload, self._law, _UP_TAPS, self._out)
        return self._view[: 2 * m].tobytes()

    def reset(self) -> None:
        """Drop all state: the same output afterwards as a new instance."""
        self._nh = FIR_DELAY // 3
        self._hist[: self._nh] = 0.0


class FusedFirEncoder:
    """Agent → caller in one compiled step: 24 kHz PCM16 in, whole 8 kHz G.711 carrier frames out (the FIR down,
    then the G.711 table, into a frame buffer). The same frames, on the same chunks, as
    :class:`JitFirResampler` + ``audioop`` + :class:`~gateway.audio.framing.Reframer` (what
    :class:`~gateway.audio.transcode.OutboundAudio` does for any other pair), for about half the cost: no
    intermediate bytes, one compiled call per frame with the streaming state in one array, and the filter runs once
    per frame: a chunk that cannot complete the next frame (the first 10 ms chunk of two) is only held, without a
    call, and a frame leaves on the chunk that completes it. Its history is kept split by phase (``_hist[r, i]`` is
    sample ``3i + r``), the layout its kernel sums fastest."""

    __slots__ = ("frame_bytes", "_law", "_pad", "_hist", "_out", "_first", "_view", "_st", "_held", "_need", "_msg",
                 "_at")  # fmt: skip

    _hist: np.ndarray
    _out: np.ndarray  # the frames made by the last call at the front, then the pending partial frame
    _view: memoryview  # the same bytes, to copy frames out of: slicing a memoryview of a bytearray is 0.1 µs a
    _first: memoryview  # frame cheaper than slicing the array; and the first frame's slot is sliced once
    _st: np.ndarray  # the kernel's state (the _ST_* slots)
    _held: bytes  # agent bytes not filtered yet: too few for the next frame, or a split sample's first byte
    _need: int  # the agent bytes that complete it (the kernel works it out)

    def __init__(self, carrier_encoding: str, frame_bytes: int, pad: int) -> None:
        if not AVAILABLE:  # pragma: no cover - transcode.py checks first
            raise RuntimeError("numba is not installed")
        self.frame_bytes = frame_bytes
        self._law = G711_TABLES[carrier_encoding]
        self._pad = pad
        self._st = np.zeros(_ST_LEN, np.int64)
        self._st[_ST_SIZE] = frame_bytes
        self._msg, self._at = _NO_MESSAGE, -1  # no media message to fill (gateway/audio/fir_message.py sets one)
        self._alloc(2400)  # 100 ms of input; a larger chunk grows it
        self.reset()

    def _alloc(self, inputs: int) -> None:
        self._hist = np.zeros((3, (inputs + FIR_TAPS) // 3 + 1))
        self._st[_ST_CAP] = 3 * self._hist.shape[1] - 3  # in samples, with a triple to spare
        buf = bytearray(self._hist.shape[1] + 1 + self.frame_bytes)
        self._out, self._view = np.frombuffer(buf, np.uint8), memoryview(buf)
        self._first = self._view[: self.frame_bytes]

    def convert(self, data: bytes) -> list[bytes]:
        held = self._held
        if held:
            data = held + data
        if len(data) < self._need:
            self._held = data  # cannot complete the next frame yet
            return []
        if len(data) & 1:  # a sample split across chunks: its first byte waits for the second
            data, self._held = data[:-1], data[-1:]
        else:
            self._held = b""
        k, self._need = _DOWN_ENCODE(
            self._hist, self._st, data, _DOWN_PHASES, self._law, self._out, self._msg, self._at
        )
        if k == 1:  # the steady state
            return [self._first.tobytes()]
        return self._frames(k, data)

    def _step(self, data: bytes) -> int:
        """The kernel on ``data`` (whole samples): the frames it made (-1: grow first); ``_need`` for the next. The
        per-chunk roads (:meth:`convert`, and ``message`` in gateway/audio/fir_message.py) call the kernel inline,
        one Python call fewer per chunk."""
        k, self._need = _DOWN_ENCODE(
            self._hist, self._st, data, _DOWN_PHASES, self._law, self._out, self._msg, self._at
        )
        return int(k)

    def _run(self, data: bytes) -> list[bytes]:
        return self._frames(self._step(data), data)

    def _frames(self, k: int, data: bytes) -> list[bytes]:
        if k < 0:  # the history is too short for this chunk: grow it, then run the chunk
            self._grow(int(self._st[_ST_NH]) + len(data) // 2 + 1)
            k = self._step(data)
        size, view = self.frame_bytes, self._view
        return [view[i : i + size].tobytes() for i in range(0, k * size, size)]

    def flush(self) -> list[bytes]:
        """End of a reply: the filter's look-ahead (silence after the end), then the last frame padded with silence.
        A byte of a split sample still waiting is dropped, as on the plain path."""
        st, held = self._st, self._held
        frames = self._run(held[: len(held) & ~1]) if len(held) > 1 else []
        want = -(-int(st[_ST_FED]) // 3) - int(st[_ST_SENT])
        zeros = max(0, (want - 1) * 3 + FIR_TAPS - int(st[_ST_NH])) if want > 0 else 0
        st[_ST_FORCE] = 1  # filter what is there even if no frame completes
        try:
            frames += self._run(bytes(2 * zeros))
        finally:
            st[_ST_FORCE] = 0
        start, fill = int(st[_ST_START]), int(st[_ST_FILL])
        if fill:
            self._out[:fill] = self._out[start : start + fill]
            self._out[fill : self.frame_bytes] = self._pad
            frames.append(self._first.tobytes())
        self.reset()
        return frames

    def _grow(self, inputs: int) -> None:
        st = self._st
        nh, start, fill = int(st[_ST_NH]), int(st[_ST_START]), int(st[_ST_FILL])
        old, pending = self._hist[:, : -(-nh // 3)].copy(), self._out[start : start + fill].copy()
        self._alloc(2 * inputs)
        self._hist[:, : old.shape[1]] = old
        self._out[:fill] = pending
        st[_ST_START] = 0

    def reset(self) -> None:
        """Drop all state (barge-in): the same output afterwards as a new instance."""
        st = self._st
        # The history starts with the look-ahead's silence, a multiple of 3 samples: sample 0 is phase 0.
        st[_ST_NH] = FIR_DELAY
        self._hist[:, : FIR_DELAY // 3] = 0.0
        st[_ST_START] = st[_ST_FILL] = st[_ST_FED] = st[_ST_SENT] = st[_ST_FORCE] = 0
        self._held = b""
        self._step(b"")  # what the first frame needs: the kernel's answer for no input (it changes nothing then)

"""The resampler study: for each soxr quality and the block-free FIR (``"FIR"``), and each direction, what streaming
costs in delay, quality and CPU, measured on the gateway's own resamplers (``make_resampler``: soxr's 32-bit path,
or the compiled FIR, ``JitFirResampler``), exactly as the media path builds them.

- ``end_ms``: output still withheld after 1 s of input fed in chunks (what a ``flush`` releases at a reply's end).
- ``first_ms``: input that must arrive before the first output sample comes out.
- ``delay_med_ms`` / ``delay_max_ms``: for every output sample, when it comes out minus when its input instant was
  fed, in steady state. A converter that releases output per chunk scores 0…chunk (QQ is the floor); soxr's other
  qualities release output in blocks of tens of ms, which is the real latency they add; FIR adds its 2 ms look-ahead.
- ``snr_db``: 1 kHz tone (phase-fitted reference); ``alias_db``: rejection of a 6 kHz tone going 24 → 8 kHz;
  ``edge_db``: gain at 3.4 kHz (the top of the telephone band) going 24 → 8 kHz.
- ``us``: µs per chunk (median of rounds).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass

import numpy as np

from gateway.audio.resample import RESAMPLE_QUALITIES, make_resampler

__all__ = ["ResampleRow", "study"]


@dataclass
class ResampleRow:
    quality: str
    direction: str  # "in 8k→24k" | "out 24k→8k"
    chunk_ms: int
    end_ms: float
    first_ms: float
    delay_med_ms: float
    delay_max_ms: float
    snr_db: float
    alias_db: float | None
    edge_db: float | None
    us: float

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _pcm(x: np.ndarray) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _stream_delays(in_rate: int, out_rate: int, quality: str, chunk_ms: int, seconds: float = 3.0) -> tuple[float, ...]:
    r = make_resampler(in_rate, out_rate, quality)
    step = in_rate * chunk_ms // 1000
    x = _pcm(np.sin(2 * np.pi * 440 * np.arange(int(in_rate * seconds)) / in_rate) * 8000)
    emitted = 0
    first = None
    delays: list[float] = []
    for k, pos in enumerate(range(0, len(x), step * 2)):
        m = len(r.process(x[pos : pos + step * 2])) // 2
        fed_ms = (k + 1) * chunk_ms
        if m and first is None:
            first = fed_ms
        if fed_ms > 1000:  # steady state
            delays.extend(fed_ms - (emitted + i) * 1000 / out_rate for i in range(m))
        emitted += m
    end_ms = (len(x) // 2 * out_rate / in_rate - emitted) * 1000 / out_rate
    return end_ms, float(first or 0), float(np.median(delays)), float(max(delays))


def _snr(in_rate: int, out_rate: int, quality: str) -> tuple[float, float | None, float | None]:
    t = np.arange(in_rate * 2) / in_rate
    r = make_resampler(in_rate, out_rate, quality)
    y = np.frombuffer(r.process(_pcm(np.sin(2 * np.pi * 1000 * t) * 10000), last=True), "<i2").astype(float)
    tt = np.arange(len(y)) / out_rate
    basis = np.vstack([np.sin(2 * np.pi * 1000 * tt), np.cos(2 * np.pi * 1000 * tt)]).T
    core = slice(400, -400)
    coef, *_ = np.linalg.lstsq(basis[core], y[core], rcond=None)
    fit = basis @ coef
    snr = 10 * np.log10(np.sum(fit[core] ** 2) / np.sum((y - fit)[core] ** 2))
    alias = edge = None
    if out_rate < in_rate:

        def level(freq: float) -> float:
            r2 = make_resampler(in_rate, out_rate, quality)
            y2 = np.frombuffer(r2.process(_pcm(np.sin(2 * np.pi * freq * t) * 10000), last=True), "<i2")
            return float(np.sqrt(2) * np.std(y2.astype(float)[core]) / 10000)

        alias = float(-20 * np.log10(level(6000) + 1e-9))
        edge = float(20 * np.log10(level(3400)))
    return float(snr), alias, edge


def _cost(in_rate: int, out_rate: int, quality: str, chunk_ms: int, rounds: int = 9) -> float:
    r = make_resampler(in_rate, out_rate, quality)
    n = in_rate * chunk_ms // 1000
    chunk = _pcm(np.random.default_rng(1).normal(0, 1000, n))
    per = []
    for _ in range(rounds):
        t0 = time.perf_counter_ns()
        for _ in range(500):
            r.process(chunk)
        per.append((time.perf_counter_ns() - t0) / 500 / 1000)
    return statistics.median(per)


def study(qualities: tuple[str, ...] = RESAMPLE_QUALITIES, out_chunk_ms: int = 20) -> list[ResampleRow]:
    """``out_chunk_ms``: what the outbound resampler is fed per call (20: the gateway coalesces agent chunks)."""
    rows = []
    for q in qualities:
        for in_rate, out_rate, name, chunk_ms in (
            (8000, 24000, "in 8k→24k", 20),
            (24000, 8000, "out 24k→8k", out_chunk_ms),
        ):
            end_ms, first_ms, med, mx = _stream_delays(in_rate, out_rate, q, chunk_ms)
            snr, alias, edge = _snr(in_rate, out_rate, q)
            rows.append(
                ResampleRow(
                    q,
                    name,
                    chunk_ms,
                    end_ms,
                    first_ms,
                    med,
                    mx,
                    snr,
                    alias,
                    edge,
                    _cost(in_rate, out_rate, q, chunk_ms),
                )
            )
    return rows


def format_rows(rows: list[ResampleRow]) -> str:
    head = (
        f"{'quality':7} {'direction':11} {'chunk':>5} {'end':>6} {'first':>6} {'delay med':>9} {'delay max':>9} "
        f"{'SNR':>6} {'alias rej':>9} {'3.4 kHz':>7} {'µs/chunk':>8}"
    )
    lines = [head]
    for r in rows:
        alias = f"{min(r.alias_db, 120):.1f}" if r.alias_db is not None else "-"
        edge = f"{r.edge_db:.1f}" if r.edge_db is not None else "-"
        lines.append(
            f"{r.quality:7} {r.direction:11} {r.chunk_ms:>3}ms {r.end_ms:5.1f}ms {r.first_ms:5.0f}ms "
            f"{r.delay_med_ms:7.1f}ms {r.delay_max_ms:7.1f}ms {r.snr_db:5.1f} {alias:>9} {edge:>7} "
            f"{r.us:8.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    print(format_rows(study()))

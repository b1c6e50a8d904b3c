"""What recording a call costs in CPU, per call-second, measured in process (no sockets, no other load's noise):
the media path's share (the per-call tap's appends and the once-a-second hand-over) and the writer thread's (decode,
place on the sample clock, append to the WAV). Compare with ``scripts/bench``'s CPU per call-second of the whole
gateway (docs/how-to/call-records.md#what-it-costs).

    .venv/bin/python -m bench.recording_cost            # medians of 7 rounds of 200 call-seconds
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from gateway.records.mixer import HOLD_S, RATE, Mixer, pcm8k_decoder
from gateway.records.recorder import CallTap
from gateway.records.wav import StereoWav

FRAME = 160


def one_round(seconds: int, wav_dir: Path) -> tuple[float, float]:
    """(media-path µs, writer-thread µs) per call-second, over ``seconds`` of one call with the agent talking
    half the time."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, FRAME, dtype=np.uint8).tobytes() for _ in range(50)]
    tap = CallTap(0.0, record=True, bytes_per_s=8000)
    mixer = Mixer(pcm8k_decoder("audio/pcmu", 8000), pcm8k_decoder("audio/pcmu", 8000), 8000)
    wav = StereoWav(wav_dir / "cost.wav")
    loop_s = thread_s = 0.0
    for sec in range(seconds):
        t0 = time.thread_time()
        for i, f in enumerate(frames):
            now = sec + i * 0.02
            tap.caller_audio(f, now)
            if sec % 2:  # the agent speaks every other second
                tap.sent("r", f, now, now + 0.2)
        caller, times, agent = tap.take()
        t1 = time.thread_time()
        mixer.add_caller(caller, times)
        mixer.add_agent(agent)
        wav.append(mixer.commit(int((sec + 1 - HOLD_S) * RATE)).tobytes())
        t2 = time.thread_time()
        loop_s += t1 - t0
        thread_s += t2 - t1
    wav.close()
    return loop_s / seconds * 1e6, thread_s / seconds * 1e6


def main() -> int:
    rounds = 7
    with tempfile.TemporaryDirectory() as d:
        one_round(20, Path(d))  # warm-up
        results = [one_round(200, Path(d)) for _ in range(rounds)]
    loop_us = statistics.median(r[0] for r in results)
    thread_us = statistics.median(r[1] for r in results)
    print(f"recording cost per call-second (median of {rounds} rounds of 200 call-seconds):")
    print(f"  media path (tap appends, hand-over)   {loop_us:7.1f} µs")
    print(f"  writer thread (decode, mix, write)    {thread_us:7.1f} µs")
    print(f"  total                                 {loop_us + thread_us:7.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())

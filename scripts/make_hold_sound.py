#!/usr/bin/env python
"""Regenerate the bundled hold sound (gateway/assets/hold.ulaw): a soft, looping chime the caller hears while a slow
tool runs (docs/how-to/conversation.md#hold-audio). Synthesised here, not downloaded: deterministic, a re-run gives
the same bytes.

Usage: .venv/bin/python scripts/make_hold_sound.py

Four seconds: four soft notes of a major chord (each a sine with its octave quietly above, a 40 ms attack and an
exponential decay), peaking near -20 dBFS so it sits well below speech, band-limited to the phone band by
construction (fundamentals 440-880 Hz), silent at both ends so the loop has no click. 8 kHz μ-law, raw, a whole
number of 20 ms frames, like the bundled prompts.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio import g711
from gateway.hold_sound import BUNDLED_HOLD

RATE = 8000
LOOP_S = 4.0
NOTES_HZ = (523.25, 659.25, 783.99, 659.25)  # C5 E5 G5 E5
PEAK = 0.1  # -20 dBFS


def render() -> bytes:
    n = int(RATE * LOOP_S)
    out = np.zeros(n)
    t = np.arange(int(RATE * 0.9)) / RATE
    env = np.minimum(t / 0.04, 1.0) * np.exp(-t * 4.0)
    for i, f in enumerate(NOTES_HZ):
        note = (np.sin(2 * np.pi * f * t) + 0.25 * np.sin(4 * np.pi * f * t)) * env
        start = int(i * RATE * LOOP_S / len(NOTES_HZ))
        out[start : start + len(note)] += note
    out *= PEAK / np.max(np.abs(out))
    pcm = np.round(out * 32767).astype("<i2").tobytes()
    return g711.pcm16_to_ulaw(pcm)


def main() -> None:
    data = render()
    assert len(data) % 160 == 0
    BUNDLED_HOLD.write_bytes(data)
    print(f"{BUNDLED_HOLD}: {len(data)} bytes, {len(data) / RATE:.1f} s")


if __name__ == "__main__":
    main()

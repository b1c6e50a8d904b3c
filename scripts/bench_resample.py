#!/usr/bin/env python3
"""The resampler study alone (holdback, block release, SNR, alias rejection, cost per soxr quality, the block-free FIR,
and direction).
``scripts/bench`` runs the same study as part of the full benchmark; see bench/resampling.py for the definitions.

    .venv/bin/python scripts/bench_resample.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.resampling import format_rows, study

if __name__ == "__main__":
    print(format_rows(study()))

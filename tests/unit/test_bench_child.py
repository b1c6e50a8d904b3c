"""bench/child.py: a benchmark run over its time bound is interrupted so that its own cleanup runs (it stops the
gateway and the load generator it started), not killed outright, which left them running."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from bench.child import run_bounded

# A stand-in for one ramp: it "starts" its children (writes a file), and its cleanup "stops" them (removes it).
CHILD = """
import pathlib, sys, time
flag = pathlib.Path(sys.argv[1])
flag.write_text("running")
try:
    time.sleep(60)
finally:
    flag.unlink()
"""


def test_a_run_over_its_bound_is_interrupted_and_cleans_up(tmp_path: Path) -> None:
    flag = tmp_path / "children"
    t0 = time.monotonic()
    assert run_bounded([sys.executable, "-c", CHILD, str(flag)], timeout=1.5) is None
    assert time.monotonic() - t0 < 30
    assert not flag.exists()  # its finally ran: a SIGKILL would have left the file (and the gateway) behind


def test_a_run_that_ends_returns_its_exit_code(tmp_path: Path) -> None:
    assert run_bounded([sys.executable, "-c", "raise SystemExit(3)"], timeout=30) == 3
    assert run_bounded([sys.executable, "-c", "pass"], timeout=30) == 0

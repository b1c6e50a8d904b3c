"""Running one benchmark run as a child process, bounded in time, so that a wedged run cannot hang the loop that
alternates runs (``scripts/bench --interleave``) and cannot leave its own children behind."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Sequence

__all__ = ["run_bounded"]


def run_bounded(cmd: Sequence[str], timeout: float, grace: float = 30.0) -> int | None:
    """Run ``cmd`` to its end and return its exit code, or None if it ran over ``timeout`` seconds. Over time, it is
    interrupted (SIGINT, as a Ctrl-C would), so that its own cleanup stops the gateway and the load generator it
    started (they run in sessions of their own with ``--sched nice``, out of reach of a signal to its group); killed
    only if that takes more than ``grace`` seconds. An interrupt of this process interrupts the child too."""
    child = subprocess.Popen(list(cmd))
    try:
        return child.wait(timeout)
    except subprocess.TimeoutExpired:
        _interrupt(child, grace)
        return None
    except BaseException:
        _interrupt(child, grace)
        raise


def _interrupt(child: subprocess.Popen[bytes], grace: float) -> None:
    """SIGINT, then a kill if the child is still running after ``grace`` seconds."""
    if child.poll() is not None:
        return
    child.send_signal(signal.SIGINT)
    try:
        child.wait(grace)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()

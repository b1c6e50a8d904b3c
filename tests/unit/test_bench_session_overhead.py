"""bench/session_overhead.py drives the real CallSession's steady-state fast paths with stand-in sockets; if a
refactor of gateway/session.py moves what it relies on, this fails instead of the benchmark quietly measuring
something else. No timing is asserted."""

from __future__ import annotations

from bench.report import rotated
from bench.session_overhead import measure, measure_cold


def test_the_harness_sends_what_the_real_session_sends_for_each_message() -> None:
    res = measure(n=100, rounds=1)
    assert res["agent sends"] == 100  # one input.audio per caller frame, from the carrier reader itself
    # 100 agent chunks of 10 ms = 1 s of reply: 50 frames less what soxr MQ still holds (≤ 80 ms), each one
    # media message, plus the mark after each second of audio
    assert 40 <= res["carrier sends"] <= 52
    assert all(
        res[k] > 0
        for k in (
            "carrier → agent, session path",
            "agent → carrier, session path",
            "carrier → agent, pure parts",
            "agent → carrier, pure parts",
        )
    )


def test_the_cold_harness_drives_every_call_through_the_same_paths() -> None:
    # 3 calls x 4 rounds: each round is 2 agent chunks (one 20 ms frame out) and 1 caller frame (one input.audio)
    # per call, so the stand-in sockets must have seen exactly that; the figures are means of positive timings.
    res = measure_cold(calls=3, evict_kb=64, rounds=4)
    assert res["cold: agent sends"] == 3 * 4
    assert 3 * 4 - 3 <= res["cold: carrier sends"] <= 3 * 4  # the FIR's 2 ms look-ahead may hold the first frame
    assert all(res[f"cold µs per message, {k}"] > 0 for k in ("in path", "in parts", "out path", "out parts"))


def test_the_cold_harness_times_the_path_and_its_parts_first_in_turn() -> None:
    # Timed back to back on the same message, the first pays for the code both share: always timing the path first
    # charged the session with the parts' cold misses (2026-12-06: 14 µs of session per agent chunk, ~2 µs rotated).
    names = ["path", "parts"]
    assert [rotated(names, r)[0] for r in range(4)] == ["path", "parts", "path", "parts"]
    assert all(sorted(rotated(names, r)) == sorted(names) for r in range(4))

"""bench/session_overhead.py drives the real CallSession's steady-state fast paths with stand-in sockets; if a
refactor of gateway/session.py moves what it relies on, this fails instead of the benchmark quietly measuring
something else. No timing is asserted."""

from __future__ import annotations

from bench.session_overhead import measure


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

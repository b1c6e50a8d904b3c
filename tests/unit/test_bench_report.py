"""scripts/bench's report: a step the load generator could not keep up with is flagged, so its latency is not read
as the gateway's (docs/architecture/performance.md#method)."""

from __future__ import annotations

from typing import Any

from bench.report import format_report, generator_bound, step_table, summarize_run


def _step(calls: int, *, gen_cpu: float = 0.3, lag_ms: float = 0.4, p99: float = 1.0) -> dict[str, Any]:
    pct = {"n": 100, "p50": p99 / 3, "p90": p99 / 2, "p99": p99, "max": p99}
    return {
        "calls": calls,
        "target": calls,
        "in": pct,
        "out": pct,
        "clear": {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0},
        "gateway_cpu": calls / 200,
        "loadgen_cpu": gen_cpu,
        "gateway_rss_mb": 90.0,
        "gateway_rss0_mb": 70.0,
        "tick_lag_p99_ms": lag_ms,
        "dropped": 0,
    }


def test_generator_bound_by_its_cpu_or_its_ticker_lag() -> None:
    assert not generator_bound(_step(100))
    assert generator_bound(_step(100, gen_cpu=0.9))
    assert generator_bound(_step(100, lag_ms=3.5))


def test_step_table_shows_the_ticker_lag_and_flags_a_generator_bound_step() -> None:
    table = step_table([_step(100), _step(200, lag_ms=3.5)]).splitlines()
    assert "gen lag p99" in table[0]
    assert "0.40ms" in table[1] and "generator-bound" not in table[1]
    assert "3.50ms" in table[2] and table[2].endswith("generator-bound")


def test_report_notes_a_ramp_that_ended_generator_bound() -> None:
    steps = [_step(100), _step(200, gen_cpu=0.95, p99=9.0)]
    summary = summarize_run(steps, 5.0)
    assert summary["generator_bound"] and summary["max_calls_p99_ok"] == 100
    assert summary["loadgen_lag_p99_at_max_ms"] == 0.4
    text = format_report({"runs": [{"steps": steps, "summary": summary}], "p99_limit_ms": 5.0, "micro": None})
    assert "in 1 of 1 ramps the last step was generator-bound" in text and "may carry more" in text
    calm = summarize_run([_step(100), _step(200, p99=9.0)], 5.0)
    assert not calm["generator_bound"]

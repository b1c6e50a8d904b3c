"""gateway/ratelimit.py: the per-call inbound audio budget, driven synchronously with explicit times (it reads no
clock). Arrival schedules are tables of (arrival time, audio seconds); the budget must let real time and late bunches
through untouched and hold anything faster to ``burst_s + rate·T``. Also its config keys and its counter."""

from __future__ import annotations

import math
import random
import tomllib
from dataclasses import dataclass

import numpy as np
import pytest

from gateway.config import REPO_CONFIG_DIR, ServerSettings, load_settings
from gateway.errors import ConfigError
from gateway.metrics import GatewayMetrics
from gateway.ratelimit import InboundAudioBudget, seconds_per_byte
from gateway.session import CallSummary

FRAME_S = 0.020
Schedule = list[tuple[float, float]]  # (arrival time s, audio s)


@dataclass
class Result:
    sent: int
    dropped: int
    admitted_s: float
    admitted: list[bool]

    @property
    def drop_fraction(self) -> float:
        return self.dropped / self.sent


def run(schedule: Schedule, rate: float = 1.2, burst_s: float = 1.0, start: float = 0.0) -> Result:
    budget = InboundAudioBudget(rate, burst_s, now=start)
    admitted = [budget.admit(d, t) for t, d in schedule]
    return Result(
        len(schedule),
        admitted.count(False),
        sum(d for (_, d), ok in zip(schedule, admitted, strict=True) if ok),
        admitted,
    )


def paced(speed: float, audio_s: float, t0: float = 0.0, frame_s: float = FRAME_S) -> Schedule:
    """``audio_s`` of audio in ``frame_s`` frames sent at ``speed`` × real time from ``t0`` (frame i leaves when the
    audio before it has been spoken, divided by the speed)."""
    return [(t0 + i * frame_s / speed, frame_s) for i in range(round(audio_s / frame_s))]


def bunch(n: int, at: float, frame_s: float = FRAME_S) -> Schedule:
    return [(at, frame_s)] * n


# ---- arrival patterns --------------------------------------------------------------------------------------------
# A stall of S seconds on a real-time stream: nothing arrives for S s, then the late frames come together at the end
# of the stall (the moment the last of them was due), then real time resumes.
def stall(before_s: float, stall_s: float, after_s: float) -> Schedule:
    head = paced(1.0, before_s)
    t_stall = before_s  # the first late frame was due here
    late = bunch(round(stall_s / FRAME_S), at=t_stall + stall_s - FRAME_S)
    return head + late + paced(1.0, after_s, t0=t_stall + stall_s)


def repeated_stalls(n: int, every_s: float, stall_s: float) -> Schedule:
    """``n`` cycles of real time with a stall of ``stall_s`` at the end of every ``every_s``."""
    out: Schedule = []
    for k in range(n):
        t0 = k * every_s
        out += paced(1.0, every_s - stall_s, t0=t0) + bunch(round(stall_s / FRAME_S), at=t0 + every_s - FRAME_S)
    return out


CASES = [
    # name, schedule, (rate, burst), expected dropped frames or (min, max) of the drop fraction
    ("steady real time for 10 min never drops", paced(1.0, 600.0), (1.2, 1.0), 0),
    ("1.19x sustained for 10 min never drops", paced(1.19, 600.0), (1.2, 1.0), 0),
    ("exactly 1.2x sustained for 10 min never drops", paced(1.2, 600.0), (1.2, 1.0), 0),
    ("1.25x sustained drops a few percent", paced(1.25, 60.0), (1.2, 1.0), (0.02, 0.05)),
    ("2x sustained drops about 40 %", paced(2.0, 200.0), (1.2, 1.0), (0.39, 0.41)),
    ("30x sustained drops about 96 %", paced(30.0, 300.0), (1.2, 1.0), (0.955, 0.965)),
    ("a 1 s stall delivered as one bunch, then real time: nothing dropped", stall(5.0, 1.0, 5.0), (1.2, 1.0), 0),
    ("a 0.5 s stall with a 0.5 s burst allowance: nothing dropped", stall(5.0, 0.5, 5.0), (1.2, 0.5), 0),
    ("a 2 s stall: only the excess over the 1 s burst is dropped", stall(5.0, 2.0, 5.0), (1.2, 1.0), 50),
    ("a 2 s stall with a 2 s burst allowance: nothing dropped", stall(5.0, 2.0, 5.0), (1.2, 2.0), 0),
    ("a 1 s stall every 5 s for 10 min: nothing dropped", repeated_stalls(120, 5.0, 1.0), (1.2, 1.0), 0),
    ("a 1 s stall every 2 s (half of all audio late): nothing dropped", repeated_stalls(100, 2.0, 1.0), (1.2, 1.0), 0),
    ("1.5 s stalls: each time the 0.5 s over the burst is dropped", repeated_stalls(40, 3.0, 1.5), (1.2, 1.0), 40 * 25),
    ("a frozen clock admits the burst and nothing more", bunch(1000, at=0.0), (1.2, 1.0), 950),
    ("a higher limit lets 2x through", paced(2.0, 60.0), (2.0, 1.0), 0),
]


@pytest.mark.parametrize(("name", "schedule", "limits", "expected"), CASES, ids=[c[0] for c in CASES])
def test_arrival_patterns(name: str, schedule: Schedule, limits: tuple[float, float], expected: object) -> None:
    res = run(schedule, *limits)
    if isinstance(expected, tuple):
        lo, hi = expected
        assert lo <= res.drop_fraction <= hi, (res.dropped, res.sent)
    else:
        assert res.dropped == expected, (res.dropped, res.sent)


@pytest.mark.parametrize(("speed", "audio_s"), [(2.0, 20.0), (10.0, 10.0), (30.0, 30.0), (1.5, 60.0)])
def test_faster_than_real_time_is_held_to_burst_plus_rate_times_elapsed(speed: float, audio_s: float) -> None:
    schedule = paced(speed, audio_s)
    res = run(schedule)
    elapsed = schedule[-1][0]
    assert res.admitted_s <= 1.0 + 1.2 * elapsed + 1e-6
    assert res.admitted_s >= 1.0 + 1.2 * elapsed - FRAME_S - 1e-6  # and what the budget allows is not wasted


def test_ten_seconds_sent_in_an_instant_pass_only_the_burst() -> None:
    res = run(bunch(500, at=3.0), start=0.0)  # the bucket was full before: it does not fill beyond burst_s
    assert res.admitted == [True] * 50 + [False] * 450


def test_frame_sizes_follow_the_negotiated_format_not_the_message_count() -> None:
    # 20 ms in each format is a different byte count; counted as duration, each is limited the same way.
    for encoding, rate, frame_bytes in [
        ("audio/pcmu", 8000, 160),
        ("audio/pcma", 8000, 160),
        ("audio/pcm", 8000, 320),
        ("audio/pcm", 16000, 640),
        ("audio/pcm", 24000, 960),
    ]:
        d = frame_bytes * seconds_per_byte(encoding, rate)
        assert d == pytest.approx(FRAME_S)
        assert run([(t, d) for t, _ in paced(1.0, 60.0)]).dropped == 0
        assert 0.39 <= run([(t, d) for t, _ in paced(2.0, 200.0)]).drop_fraction <= 0.41
    # Exotel-style 100 ms messages at real time pass; sent twice as fast, ~40 % of the *audio* is dropped.
    assert run(paced(1.0, 60.0, frame_s=0.1)).dropped == 0
    assert 0.38 <= run(paced(2.0, 200.0, frame_s=0.1)).drop_fraction <= 0.41
    # The same bytes read as 16 kHz L16 are a quarter of the μ-law duration: four times as many pass per second.
    assert seconds_per_byte("audio/pcm", 16000) * 4 == seconds_per_byte("audio/pcmu", 8000)


@pytest.mark.parametrize(("encoding", "rate"), [("audio/opus", 48000), ("audio/pcmu", 0), ("audio/pcm", -8000)])
def test_unknown_formats_are_refused(encoding: str, rate: int) -> None:
    with pytest.raises(ValueError):
        seconds_per_byte(encoding, rate)


def test_a_message_longer_than_the_whole_burst_passes_when_full_and_its_debt_is_paid() -> None:
    # 2 s messages against a 0.5 s burst: at real time all pass; at 2x half of them, i.e. still ≤ 1.2x real time.
    assert run([(2.0 * i, 2.0) for i in range(30)], burst_s=0.5).dropped == 0
    res = run([(1.0 * i, 2.0) for i in range(60)], burst_s=0.5)
    assert res.admitted[:4] == [True, False, True, False]
    assert res.admitted_s <= 0.5 + 1.2 * 59 + 2.0


def test_a_refused_message_costs_nothing() -> None:
    b = InboundAudioBudget(1.2, 1.0, now=0.0)
    assert b.admit(1.0, 0.0)
    assert not b.admit(0.02, 0.0)
    assert b.available_s(0.0) == pytest.approx(0.0, abs=1e-12)
    assert b.admit(0.012, 0.01)  # 10 ms later: 12 ms of budget, the refused frame took none of it


def test_a_clock_that_goes_back_neither_refills_nor_takes_away() -> None:
    b = InboundAudioBudget(1.2, 1.0, now=10.0)
    assert b.admit(0.5, 10.0)
    assert b.admit(0.02, 5.0)  # what was left is still there
    assert b.available_s(10.0) == pytest.approx(0.48)  # and the 5 s "back" are not credited again going forward
    assert not b.admit(0.5, 10.0)
    assert b.admit(0.48, 10.0)


def test_the_bound_holds_over_every_window_for_random_jittered_arrivals() -> None:
    # A real-time-ish stream with random jitter, stalls and an abusive stretch at 5x: in every window [s, t] between
    # arrivals, both ends included, the audio admitted is at most burst + rate·(t − s).
    rnd = random.Random(7)
    schedule: Schedule = []
    t = 0.0
    for i in range(1500):
        speed = 5.0 if 600 <= i < 900 else 1.0
        t += FRAME_S / speed + (rnd.uniform(0, 0.4) if rnd.random() < 0.02 else 0.0)
        schedule.append((t + rnd.uniform(0.0, 0.01), FRAME_S))
    schedule.sort()
    res = run(schedule)
    times = np.array([a for a, _ in schedule])
    got = np.cumsum([d if ok else 0.0 for (_, d), ok in zip(schedule, res.admitted, strict=True)])
    before = np.concatenate(([0.0], got[:-1]))
    # admitted in [times[s], times[e]] = got[e] - before[s]
    window = got[None, :] - before[:, None]
    allowed = 1.0 + 1.2 * (times[None, :] - times[:, None]) + 1e-6
    upper = np.triu(np.ones_like(window, dtype=bool))
    assert not np.any((window > allowed) & upper)
    assert 0 < res.dropped < 300  # the abusive stretch was cut


@pytest.mark.parametrize(
    ("rate", "burst"), [(0.99, 1.0), (0.0, 1.0), (math.nan, 1.0), (1.2, 0.0), (1.2, -1.0), (1.2, math.nan)]
)
def test_invalid_limits_are_refused(rate: float, burst: float) -> None:
    with pytest.raises(ValueError):
        InboundAudioBudget(rate, burst)


# ---- config --------------------------------------------------------------------------------------------------------
def test_defaults_and_the_committed_file_agree() -> None:
    assert (ServerSettings().inbound_rate_limit, ServerSettings().inbound_burst_s) == (1.2, 1.0)
    committed = tomllib.loads((REPO_CONFIG_DIR / "gateway.toml").read_text(encoding="utf-8"))["server"]
    assert (committed["inbound_rate_limit"], committed["inbound_burst_s"]) == (1.2, 1.0)


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[server]\ninbound_rate_limit = 0.9\n", "server.inbound_rate_limit"),
        ("[server]\ninbound_rate_limit = nan\n", "server.inbound_rate_limit"),
        ('[server]\ninbound_rate_limit = "fast"\n', "server.inbound_rate_limit"),
        ("[server]\ninbound_burst_s = 0\n", "server.inbound_burst_s"),
        ("[server]\ninbound_burst_s = -1.0\n", "server.inbound_burst_s"),
    ],
)
def test_invalid_config_names_the_key(tmp_path, toml: str, key: str) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as err:
        load_settings(cfg, env={})
    assert str(err.value).startswith(key + ":"), str(err.value)


def test_valid_config_is_read(tmp_path) -> None:
    cfg = tmp_path / "g.toml"
    cfg.write_text("[server]\ninbound_rate_limit = 1\ninbound_burst_s = 2.5\n")
    s = load_settings(cfg, env={}).server
    assert (s.inbound_rate_limit, s.inbound_burst_s) == (1.0, 2.5) and isinstance(s.inbound_rate_limit, float)


# ---- the counter ---------------------------------------------------------------------------------------------------
def test_the_summary_count_moves_the_counter_and_the_series_exists_at_zero() -> None:
    m = GatewayMetrics(active_calls=lambda: 0, accepting=lambda: True, max_concurrent_calls=1, process_metrics=False)
    name = "voice_gateway_inbound_audio_dropped_total"
    assert m.registry.get_sample_value(name, {"reason": "rate_limit"}) == 0.0
    m.on_summary(CallSummary(call_sid="CA1", outcome="caller_hangup", frames_dropped_rate_limit=7))
    m.on_summary(CallSummary(call_sid="CA2", outcome="caller_hangup", frames_dropped_to_agent=3))
    assert m.registry.get_sample_value(name, {"reason": "rate_limit"}) == 7.0
    assert m.registry.get_sample_value("voice_gateway_frames_dropped_total", {"queue": "caller_to_agent"}) == 3.0
    assert CallSummary(frames_dropped_rate_limit=7).log_fields()["frames_dropped_rate_limit"] == 7

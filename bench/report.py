"""Turns benchmark results into the printed table, a markdown table and the latency-vs-calls plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any, TypeVar

__all__ = [
    "busiest",
    "format_interleaved",
    "format_report",
    "generator_bound",
    "interleaved_summary",
    "limited_p99",
    "plot",
    "rotated",
    "step_table",
    "summarize_run",
]

T = TypeVar("T")


def limited_p99(step: dict[str, Any]) -> float:
    """The p99 the latency limit applies to: both directions, but for AudioSocket (``out_paced``) only the caller's:
    there the gateway holds the agent's audio on purpose to play it at real time (Asterisk has no playout buffer),
    so the outbound figure is the pacing queue, not the gateway's cost."""
    return step["in"]["p99"] if step.get("out_paced") else max(step["in"]["p99"], step["out"]["p99"])


def summarize_run(steps: list[dict[str, Any]], p99_limit_ms: float) -> dict[str, Any]:
    """The headline figures of one ramp."""
    passing = [s for s in steps if limited_p99(s) <= p99_limit_ms and not s["dropped"]]
    best = max(passing, key=lambda s: s["calls"]) if passing else None
    loaded = [s for s in steps if s["calls"] >= 25]
    cpu_per_call = [s["gateway_cpu"] / s["calls"] for s in loaded] or [0.0]
    mem_per_call = [(s["gateway_rss_mb"] - s["gateway_rss0_mb"]) / s["calls"] for s in loaded] or [0.0]
    clear = [s["clear"]["p50"] for s in steps if s["clear"]["n"]]
    clear99 = [s["clear"]["p99"] for s in steps if s["clear"]["n"]]
    last = steps[-1] if steps else None
    return {
        "max_calls_p99_ok": best["calls"] if best else 0,
        "p99_at_max_ms": limited_p99(best) if best else None,
        "cpu_at_max": best["gateway_cpu"] if best else None,
        "stopped_by": _stopped_by(last, p99_limit_ms) if last else "no steps",
        # At the heaviest passing step: at light load every message wakes the loop on its own and costs more.
        "cpu_ms_per_call_s": (best["gateway_cpu"] / best["calls"] if best else statistics.median(cpu_per_call)) * 1000,
        "mem_mb_per_call": statistics.median(mem_per_call),
        "clear_p50_ms": statistics.median(clear) if clear else None,
        "clear_p99_ms": max(clear99) if clear99 else None,
        # The issue's barge-in figure: p99 at the load the capacity figure claims (the worst step above includes
        # the first overloaded step, where every latency is hundreds of ms).
        "clear_p99_at_max_ms": best["clear"]["p99"] if best and best["clear"]["n"] else None,
        "loadgen_cpu_max": max((s["loadgen_cpu"] for s in steps), default=0.0),
        "loadgen_lag_p99_at_max_ms": best.get("tick_lag_p99_ms") if best else None,
        "generator_bound": bool(last and generator_bound(last)),
    }


#: The generator is the limit rather than the gateway when its own core is this busy, or its 1 ms ticker runs more
#: than this late at p99: then the gateway's latency at that step is partly the generator's.
GENERATOR_BUSY = 0.85
GENERATOR_LAG_MS = 2.0


def generator_bound(step: dict[str, Any]) -> bool:
    """Whether the load generator, not the gateway, may have limited ``step``. The ticker's lag comes in whole
    milliseconds plus the clock arithmetic's float error (2.0000000004 for two ticks late), so it is compared to the
    microsecond: the error must not decide."""
    lag = round(step.get("tick_lag_p99_ms", 0.0), 3)
    return step["loadgen_cpu"] > GENERATOR_BUSY or lag > GENERATOR_LAG_MS


def _stopped_by(last: dict[str, Any], limit: float) -> str:
    if last["dropped"]:
        return f"calls dropped ({last['dropped']})"
    if limited_p99(last) > limit:
        return f"p99 {limited_p99(last):.1f} ms > {limit:g} ms at {last['calls']} calls"
    if last["gateway_cpu"] > 0.9:
        return f"gateway CPU {last['gateway_cpu']:.0%} at {last['calls']} calls"
    if last["calls"] < last["target"]:
        return f"could not set up {last['target']} calls"
    return "end of plan"


def busiest(step: dict[str, Any]) -> str:
    """The share of its core the gateway's event loop took in the step's busiest 100 ms (steps recorded before
    the figure existed: "-")."""
    loop = step.get("gateway_loop_100ms")
    return f"{loop['max']:.0%}" if loop and loop["n"] else "-"


def step_table(steps: list[dict[str, Any]]) -> str:
    head = (
        f"{'calls':>5} {'in p50':>7} {'in p99':>7} {'out p50':>7} {'out p99':>7} {'clear p50':>9} "
        f"{'gw CPU':>6} {'busiest':>7} {'CPU/call-s':>10} {'RSS':>7} {'gen CPU':>7} {'gen lag p99':>11}"
    )
    lines = [head]
    for s in steps:
        cps = s["gateway_cpu"] / s["calls"] * 1000 if s["calls"] else 0
        clear = f"{s['clear']['p50']:.2f}" if s["clear"]["n"] else "-"
        lines.append(
            f"{s['calls']:>5} {s['in']['p50']:7.2f} {s['in']['p99']:7.2f} {s['out']['p50']:7.2f} "
            f"{s['out']['p99']:7.2f} {clear:>9} {s['gateway_cpu']:6.0%} {busiest(s):>7} {cps:8.2f}ms "
            f"{s['gateway_rss_mb']:6.0f}M "
            f"{s['loadgen_cpu']:7.0%} {s.get('tick_lag_p99_ms', 0.0):9.2f}ms"
            + ("  generator-bound" if generator_bound(s) else "")
        )
    return "\n".join(lines)


def _med(values: list[Any]) -> tuple[Any, Any, Any]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, None
    return statistics.median(vals), min(vals), max(vals)


def format_report(result: dict[str, Any]) -> str:
    runs = result["runs"]
    out = []
    for i, run in enumerate(runs, 1):
        out.append(f"ramp {i}/{len(runs)} (added latency in ms, gateway on one core):")
        out.append(step_table(run["steps"]))
        out.append("")
    summaries = [r["summary"] for r in runs]

    def line(label: str, key: str, fmt: str, unit: str = "") -> str:
        med, lo, hi = _med([s[key] for s in summaries])
        if med is None:
            return f"  {label:42s} -"
        spread = f"  (runs: {lo:{fmt}}–{hi:{fmt}})" if len(summaries) > 1 else ""
        return f"  {label:42s} {med:{fmt}}{unit}{spread}"

    out.append(f"summary (median of {len(runs)} ramp{'s' if len(runs) > 1 else ''}):")
    out.append(line("max calls/core at p99 added latency ≤ %g ms" % result["p99_limit_ms"], "max_calls_p99_ok", ".0f"))
    out.append(line("CPU per call-second (at that load)", "cpu_ms_per_call_s", ".2f", " ms"))
    out.append(line("memory per call (RSS delta / calls)", "mem_mb_per_call", ".3f", " MB"))
    out.append(line("barge-in → clear, p50", "clear_p50_ms", ".2f", " ms"))
    out.append(line("barge-in → clear, p99 at that load", "clear_p99_at_max_ms", ".2f", " ms"))
    out.append(line("barge-in → clear, worst step p99", "clear_p99_ms", ".2f", " ms"))
    out.append(f"  {'stopped by':42s} " + "; ".join(s["stopped_by"] for s in summaries))
    out.append(line("load generator CPU, busiest step", "loadgen_cpu_max", ".0%"))
    out.append(line("load generator tick lag p99, at that load", "loadgen_lag_p99_at_max_ms", ".2f", " ms"))
    bound = sum(1 for s in summaries if s.get("generator_bound"))
    if bound:
        out.append(
            f"  note: in {bound} of {len(summaries)} ramps the last step was generator-bound (its CPU over"
            f" {GENERATOR_BUSY:.0%} or its ticker over {GENERATOR_LAG_MS:g} ms late at p99):"
            " the gateway may carry more."
        )
    first = [r["steps"][0] for r in runs if r["steps"]]
    if result.get("sched") != "rt" and any(max(s["in"]["p99"], s["out"]["p99"]) > 2.0 for s in first):
        out.append(
            "  note: p99 is already over 2 ms at the lightest load: other processes are preempting the gateway"
            " or the generator. On a shared machine, --sched rt measures the gateway as if its core were its own."
        )
    out.append("")
    if result["micro"] is None:
        return "\n".join(out)
    m = result["micro"]["median"]
    out.append(f"per 20 ms frame, pure functions (µs, median of rounds; agent chunks {result['chunk_ms']} ms):")
    out.append(f"  in : parse media → transcode → input.audio      fast {m['in']:6.2f}   plain {m['in_plain']:6.2f}")
    out.append(f"  out: parse reply.audio → transcode → media      fast {m['out']:6.2f}   plain {m['out_plain']:6.2f}")
    parts = [k for k in m if "." in k and not k.endswith("_plain")]
    for k in parts:
        plain = m.get(k + "_plain")
        out.append(f"    {k:36s} {m[k]:6.2f}" + (f"   plain {plain:6.2f}" if plain is not None else ""))
    pc = result.get("pipecat")
    if pc:
        if pc.get("error"):
            out.append(f"  pipecat comparison skipped: {pc['error']}")
        else:
            ours_in = m["in.audio_frame"] + m["in.transcode"]  # the road the gateway takes for a whole frame
            # (the message lane, where the gateway takes it, is both in one step)
            ours_out = m.get("out.message_lane", m["out.transcode"] + m["out.build_media"])
            out.append(
                f"  pipecat-ai {pc['version']} TwilioFrameSerializer (same frames, same run): "
                f"in {pc['in_us']:.2f} µs, out {pc['out_us']:.2f} µs"
            )
            out.append(
                f"    same scope (carrier side only: media → PCM 24 kHz; PCM 24 kHz → media): ours in "
                f"{ours_in:.2f} µs = {ours_in / pc['in_us']:.2f}× pipecat, out {ours_out:.2f} µs = "
                f"{ours_out / pc['out_us']:.2f}× pipecat"
            )
            out.append(
                f"    whole path (ours also parses reply.audio / builds input.audio): in "
                f"{m['in'] / pc['in_us']:.2f}×, out {m['out'] / pc['out_us']:.2f}×"
            )
    out.append("")
    out.append("resampler (gateway's StreamResampler; delay = output time − input time, QQ is the chunking floor):")
    out.append(result["resample_table"])
    return "\n".join(out)


def _cpu_ms_by_calls(result: dict[str, Any]) -> dict[int, list[float]]:
    """CPU per call-second (ms) of every window of one result, by the step's call count."""
    out: dict[int, list[float]] = {}
    for run in result["runs"]:
        for step in run["steps"]:
            out.setdefault(step["calls"], []).append(step["gateway_cpu"] * 1000 / step["calls"])
    return out


def rotated(items: list[T], r: int) -> list[T]:
    """``items`` in round ``r``'s order (from 0): starting ``r`` places later, so that over a multiple of
    ``len(items)`` rounds each holds each place as often. Whatever runs first in a round pays for what the others then
    find warm or cool: a ramp's place in an interleaved sitting biases its CPU figure (``scripts/bench --interleave``,
    docs/architecture/performance.md#method), and of a path and its parts timed back to back in
    ``bench.session_overhead --cold`` the first pays the cold misses of the code both share."""
    k = r % len(items)
    return items[k:] + items[:k]


def interleaved_summary(rounds: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Figures of variants run alternately (``scripts/bench --interleave``): ``rounds[variant][r]`` is the result of
    ``variant``'s ramp in round ``r``. Per variant: the headline figures (median and range over its ramps) and CPU per
    call-second by call count over all its windows. Per round and call count: each variant's CPU per call-second
    divided by the reference's (the last variant) from the same round, so that the machine's drift between rounds
    cancels; then the median and range of those ratios."""
    names = list(rounds)
    ref = names[-1]
    variants: dict[str, Any] = {}
    for name in names:
        summaries = [run["summary"] for result in rounds[name] for run in result["runs"]]
        pooled: dict[int, list[float]] = {}
        for result in rounds[name]:
            for calls, xs in _cpu_ms_by_calls(result).items():
                pooled.setdefault(calls, []).extend(xs)
        variants[name] = {
            "max_calls": _med([s["max_calls_p99_ok"] for s in summaries]),
            "clear_p99_at_max_ms": _med([s["clear_p99_at_max_ms"] for s in summaries]),
            "mem_mb_per_call": _med([s["mem_mb_per_call"] for s in summaries]),
            "cpu_ms_by_calls": {c: (statistics.median(xs), len(xs)) for c, xs in sorted(pooled.items())},
        }
    ratios: dict[str, dict[int, tuple[float, float, float, int]]] = {}
    for name in names[:-1]:
        per_calls: dict[int, list[float]] = {}
        for mine, theirs in zip(rounds[name], rounds[ref], strict=False):
            a, b = _cpu_ms_by_calls(mine), _cpu_ms_by_calls(theirs)
            for calls in a.keys() & b.keys():
                per_calls.setdefault(calls, []).append(statistics.median(a[calls]) / statistics.median(b[calls]))
        ratios[name] = {c: (*_med(xs), len(xs)) for c, xs in sorted(per_calls.items())}
    return {"reference": ref, "variants": variants, "ratios": ratios, "ends": _ends(rounds, variants, ref)}


def _ends(rounds: dict[str, list[dict[str, Any]]], variants: dict[str, Any], ref: str) -> dict[str, dict[str, Any]]:
    """Each variant against the reference ``ref`` at the end of its ramps: max calls per core (by the medians, and
    round by round), and CPU per call-second at each one's own max step, round by round. Both ramps end at about the
    same load on their core, so the second is the CPU ratio the first reads: unlike the ratio at one call count, it
    includes what each costs per call at the load it reaches (docs/architecture/performance.md#generator)."""
    out: dict[str, dict[str, Any]] = {}
    for name in rounds:
        if name == ref:
            continue
        calls: list[float] = []
        cpu: list[float] = []
        for mine, theirs in zip(rounds[name], rounds[ref], strict=False):
            for a, b in zip(mine["runs"], theirs["runs"], strict=False):
                x, y = a["summary"], b["summary"]
                if x["max_calls_p99_ok"] and y["max_calls_p99_ok"] and y["cpu_ms_per_call_s"]:
                    calls.append(x["max_calls_p99_ok"] / y["max_calls_p99_ok"])
                    cpu.append(x["cpu_ms_per_call_s"] / y["cpu_ms_per_call_s"])
        mine_max, ref_max = variants[name]["max_calls"][0], variants[ref]["max_calls"][0]
        out[name] = {
            "calls_by_medians": mine_max / ref_max if mine_max and ref_max else None,
            "calls": (*_med(calls), len(calls)),
            "cpu_at_max": (*_med(cpu), len(cpu)),
        }
    return out


def format_interleaved(summary: dict[str, Any]) -> str:
    """The table ``scripts/bench --interleave`` prints."""

    def rng(t: tuple[Any, Any, Any], fmt: str) -> str:
        return "-" if t[0] is None else f"{t[0]:{fmt}} ({t[1]:{fmt}}–{t[2]:{fmt}})"

    ref = summary["reference"]
    lines = ["interleaved (medians, ranges over ramps):"]
    for name, v in summary["variants"].items():
        lines.append(
            f"  {name}: max calls/core {rng(v['max_calls'], '.0f')}, barge-in → clear p99 at max "
            f"{rng(v['clear_p99_at_max_ms'], '.2f')} ms, memory/call {rng(v['mem_mb_per_call'], '.3f')} MB"
        )
        cpu = ", ".join(f"{c}: {m:.2f} ms ({n})" for c, (m, n) in v["cpu_ms_by_calls"].items())
        lines.append(f"    CPU per call-second by calls (windows): {cpu}")
    for name, by_calls in summary["ratios"].items():
        parts = ", ".join(f"{c}: {m:.2f}× ({lo:.2f}–{hi:.2f}, {n} rounds)" for c, (m, lo, hi, n) in by_calls.items())
        lines.append(f"  {name} ÷ {ref}, CPU per call-second round by round: {parts}")
    for name, e in summary.get("ends", {}).items():
        if e["calls_by_medians"] is None or e["calls"][0] is None:
            continue
        (m, lo, hi, n), (cm, clo, chi, _n) = e["calls"], e["cpu_at_max"]
        lines.append(
            f"  {name} ÷ {ref}, max calls/core: {e['calls_by_medians']:.0%} by the medians, round by round {m:.0%} "
            f"({lo:.0%}–{hi:.0%}, {n} rounds); CPU per call-second at each one's max step, round by round "
            f"{cm:.2f}× ({clo:.2f}–{chi:.2f})"
        )
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colors = {"p50": "tab:green", "p90": "tab:orange", "p99": "tab:red"}
    for ax, side, title in ((axes[0], "in", "caller → agent"), (axes[1], "out", "agent → caller")):
        for i, run in enumerate(result["runs"]):
            calls = [s["calls"] for s in run["steps"]]
            for q, color in colors.items():
                ax.plot(
                    calls,
                    [s[side][q] for s in run["steps"]],
                    marker="o",
                    ms=3,
                    color=color,
                    alpha=1.0 if i == 0 else 0.45,
                    label=q if i == 0 else None,
                )
        ax.axhline(result["p99_limit_ms"], color="grey", ls="--", lw=1)
        ax.set_title(f"added latency, {title}")
        ax.set_xlabel("concurrent full-duplex calls (gateway on 1 core)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ms")
    axes[0].set_yscale("log")
    axes[0].legend()
    fig.suptitle(f"scripts/bench — {result['label']}  (faint: repeat ramps; dashed: the 5 ms limit)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)

"""Renders a simulated call as a PNG: caller and agent waveforms on one time axis, with the caller's turns, the
agent's greeting and replies, barge-ins, clears and response latencies marked. Not pure (writes a file).

matplotlib is imported lazily, only here, and is the optional extra ``plot`` (``pip install -e '.[plot]'``); the
data come from :func:`gateway.simulator.timeline.plot_data`, which is pure and tested without matplotlib.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import UsageError
from .timeline import Timeline, plot_data

__all__ = ["render_plot", "require_matplotlib"]

_CALLER = "#1f77b4"
_AGENT = "#2ca02c"
_CLEAR = "#d62728"
_BARGE = "#ff7f0e"


def require_matplotlib() -> Any:
    """Import matplotlib with a non-interactive backend, or explain which extra is missing."""
    try:
        import matplotlib
    except ImportError:
        raise UsageError("--plot needs matplotlib: pip install -e '.[plot]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def render_plot(timeline: Timeline, path: str | Path, *, title: str | None = None) -> None:
    plt = require_matplotlib()
    d = plot_data(timeline)
    fig, (ax_c, ax_a) = plt.subplots(2, 1, sharex=True, figsize=(12, 5.2), constrained_layout=True)
    try:
        ax_c.fill_between(d.t, d.caller_min, d.caller_max, color=_CALLER, linewidth=0.4)
        ax_a.fill_between(d.t, d.agent_min, d.agent_max, color=_AGENT, linewidth=0.4)
        for ax, name in ((ax_c, "caller (sent)"), (ax_a, "agent (heard)")):
            ax.set_ylim(-1.05, 1.05)
            ax.set_yticks([])
            ax.set_ylabel(name)
            ax.grid(axis="x", alpha=0.3)
        for index, span, barge in d.turns:
            ax_c.axvspan(span.start_s, span.end_s, color=_BARGE if barge else _CALLER, alpha=0.12)
            ax_c.text(span.start_s, 0.92, f"turn {index}" + (" (barge-in)" if barge else ""), fontsize=8, va="top")
            if barge:
                for ax in (ax_c, ax_a):
                    ax.axvline(span.start_s, color=_BARGE, linestyle="--", linewidth=1.2)
        for label, span in d.agent_speech:
            ax_a.axvspan(span.start_s, span.end_s, color=_AGENT, alpha=0.10)
            ax_a.text(span.start_s, 0.92, label, fontsize=8, va="top")
        for i, t in enumerate(d.clears):
            for ax in (ax_c, ax_a):
                ax.axvline(t, color=_CLEAR, linewidth=1.5, label="clear" if (i == 0 and ax is ax_a) else None)
        for end, start, ms in d.latencies:
            ax_a.annotate("", xy=(start, -0.85), xytext=(end, -0.85), arrowprops={"arrowstyle": "->", "lw": 1})
            ax_a.text((end + start) / 2, -0.8, f"{ms:.0f} ms", fontsize=8, ha="center", va="bottom")
        if d.clears:
            ax_a.legend(loc="lower right", fontsize=8)
        ax_a.set_xlim(0, max(d.duration_s, 0.1))
        ax_a.set_xlabel("seconds since the stream started")
        r = timeline.record
        ax_c.set_title(title or f"simulated call {r.call_sid} ({r.outcome})", fontsize=10)
        fig.savefig(str(path), dpi=110)
    finally:
        plt.close(fig)

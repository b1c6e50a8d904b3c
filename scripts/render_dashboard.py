#!/usr/bin/env python3
"""Render the Grafana dashboard's layout (deploy/grafana/dashboards/voice-gateway.json) to a PNG, without Grafana:
each panel drawn where its gridPos puts it, with its title and type, rows as section headings. The docs show the
result (docs/dashboard.png) so a reader sees what the dashboard holds before running the compose stack.

    .venv/bin/python scripts/render_dashboard.py [--out docs/dashboard.png]

Needs matplotlib (the `test` and `bench` extras carry it).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "voice-gateway.json"
GRID_COLUMNS = 24  # Grafana's grid is 24 columns wide; a height unit is about 30 px
_COLORS = {"stat": "#e8f1fb", "timeseries": "#eef7ee", "logs": "#fbf3e6"}


def render(dashboard: dict[str, Any], out: Path) -> list[str]:
    """Draw the panels of ``dashboard`` into ``out`` (PNG). Returns the titles drawn, rows included, in order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    panels = dashboard["panels"]
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in panels)
    fig, ax = plt.subplots(figsize=(16, 16 * height / GRID_COLUMNS * 0.42))
    ax.set_xlim(0, GRID_COLUMNS)
    ax.set_ylim(height, 0)
    ax.axis("off")
    drawn: list[str] = []
    for p in panels:
        g, title, kind = p["gridPos"], p.get("title", ""), p.get("type", "")
        if kind == "row":
            ax.text(g["x"] + 0.1, g["y"] + 0.7, title, fontsize=13, fontweight="bold", va="center")
        else:
            ax.add_patch(
                Rectangle(
                    (g["x"] + 0.08, g["y"] + 0.08),
                    g["w"] - 0.16,
                    g["h"] - 0.16,
                    facecolor=_COLORS.get(kind, "#f2f2f2"),
                    edgecolor="#8a8a8a",
                    linewidth=0.8,
                )
            )
            ax.text(g["x"] + 0.3, g["y"] + 0.6, title, fontsize=8.5, va="top", wrap=True)
            ax.text(g["x"] + g["w"] - 0.3, g["y"] + g["h"] - 0.4, kind, fontsize=7, color="#666666", ha="right")
        drawn.append(title)
    ax.set_title(f'Grafana dashboard "{dashboard.get("title", "")}" (layout rendered from its JSON)', fontsize=12)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    plt.close(fig)
    return drawn


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png")
    args = p.parse_args()
    drawn = render(json.loads(DASHBOARD.read_text(encoding="utf-8")), args.out)
    print(f"wrote {args.out}: {len(drawn)} panels")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

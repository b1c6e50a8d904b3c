"""scripts/render_dashboard.py draws every panel of the Grafana dashboard from its JSON, and docs/dashboard.png is a
render of the dashboard as it is now (same size as a fresh render: a panel added or moved changes it)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import matplotlib.image

ROOT = Path(__file__).resolve().parents[2]


def _script():
    spec = importlib.util.spec_from_file_location("render_dashboard", ROOT / "scripts" / "render_dashboard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_panel_is_drawn_and_the_docs_picture_is_current(tmp_path):
    script = _script()
    dashboard = json.loads(script.DASHBOARD.read_text(encoding="utf-8"))
    out = tmp_path / "dashboard.png"
    drawn = script.render(dashboard, out)
    assert drawn == [p.get("title", "") for p in dashboard["panels"]] and len(drawn) > 20
    fresh = matplotlib.image.imread(out)
    committed = matplotlib.image.imread(ROOT / "docs" / "dashboard.png")
    assert committed.shape == fresh.shape, "docs/dashboard.png is stale: run scripts/render_dashboard.py"

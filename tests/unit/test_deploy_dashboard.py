"""The Grafana dashboard queries only what the gateway exports, and its Loki panels drill down by call_sid."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/dashboards/voice-gateway.json"
#: Metric names in PromQL: the gateway's own and the process collector's.
METRIC_IN_EXPR = re.compile(r"\b((?:voice_gateway|process)_[a-z0-9_]+)\b")
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "gauge": ("",),
    "info": ("_info",),
    "summary": ("", "_count", "_sum", "_created"),
}


def exported_metric_names(exposition: str) -> set[str]:
    """Every series name a Prometheus server would store from this exposition, including families that have no
    sample yet (a labelled counter before its first increment)."""
    names: set[str] = set()
    for fam in text_string_to_metric_families(exposition):
        names.update(fam.name + s for s in _SUFFIXES.get(fam.type, ("",)))
        names.update(s.name for s in fam.samples)
    return names


async def scrape_names(http, gw) -> set[str]:
    async with http.get(gw.base_url + "/metrics") as r:
        assert r.status == 200
        return exported_metric_names(await r.text())


def _panels() -> list[dict]:
    return [p for p in json.loads(DASHBOARD.read_text())["panels"] if p["type"] != "row"]


async def test_every_metric_the_dashboard_queries_is_exported(start_gateway, http):
    exported = await scrape_names(http, await start_gateway())
    assert "voice_gateway_calls_total" in exported and "voice_gateway_response_latency_seconds_bucket" in exported
    used: set[str] = set()
    for panel in _panels():
        for target in panel["targets"]:
            if target["datasource"]["type"] == "prometheus":
                names = set(METRIC_IN_EXPR.findall(target["expr"]))
                assert names, f"{panel['title']}: query names no gateway metric: {target['expr']}"
                used |= names
    assert used - exported == set(), f"dashboard queries metrics the gateway does not export: {used - exported}"
    # The headline series of issue #6 are all on the dashboard.
    for needed in (
        "voice_gateway_active_calls",
        "voice_gateway_response_latency_seconds_bucket",
        "voice_gateway_barge_ins_total",
        "voice_gateway_agent_session_errors_total",
        "voice_gateway_carrier_mark_round_trip_seconds_bucket",
        "voice_gateway_event_loop_lag_seconds_bucket",
        "voice_gateway_barge_in_clear_latency_seconds_bucket",
        "voice_gateway_protocol_errors_total",
    ):
        assert needed in used, needed


def test_every_prometheus_query_parses():
    import promql_parser

    queries = [t["expr"] for p in _panels() for t in p["targets"] if t["datasource"]["type"] == "prometheus"]
    assert len(queries) > 20
    for q in queries:
        promql_parser.parse(q.replace("$__rate_interval", "5m"))  # Grafana's macro → a literal range
    with pytest.raises(ValueError):
        promql_parser.parse("sum(rate(voice_gateway_calls_total[5m])")


def test_the_metric_name_check_would_catch_a_typo():
    exported = exported_metric_names(
        "# HELP voice_gateway_calls Calls.\n# TYPE voice_gateway_calls counter\n"
        "# HELP voice_gateway_active_calls Live.\n# TYPE voice_gateway_active_calls gauge\n"
        "voice_gateway_active_calls 0.0\n"
    )
    assert {"voice_gateway_calls_total", "voice_gateway_active_calls"} <= exported
    assert set(METRIC_IN_EXPR.findall("sum(rate(voice_gateway_call_total[5m]))")) - exported


def test_loki_panels_drill_down_by_call_sid_and_read_the_summary_event():
    dash = json.loads(DASHBOARD.read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["call_sid"]["type"] == "textbox"
    assert variables["prometheus"]["type"] == variables["loki"]["type"] == "datasource"
    loki = [(p, t) for p in _panels() for t in p["targets"] if t["datasource"]["type"] == "loki"]
    assert loki
    for panel, target in loki:
        assert '{app="$app"}' in target["expr"], panel["title"]
        assert panel["datasource"]["uid"] == "${loki}"
    drill = [p for p, t in loki if 'call_sid="$call_sid"' in t["expr"]]
    assert drill and drill[0]["type"] == "logs"
    assert any('event="call.ended"' in t["expr"] and "unwrap response_latency_median_ms" in t["expr"] for _, t in loki)
    for panel in _panels():
        ds = panel["datasource"]
        assert ds["uid"] in ("${prometheus}", "${loki}"), panel["title"]  # no hard-wired data source


def test_panels_do_not_overlap():
    taken: set[tuple[int, int]] = set()
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        g = panel["gridPos"]
        assert g["x"] + g["w"] <= 24
        cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not cells & taken, panel["title"]
        taken |= cells


def test_grafana_provisioning_loads_this_dashboard_with_both_data_sources():
    compose = yaml.safe_load((ROOT / "deploy/docker-compose.yml").read_text())
    mounts = dict(
        v.rsplit(":", 1)[0].split(":", 1) for v in compose["services"]["grafana"]["volumes"] if v.startswith("./")
    )
    provider = yaml.safe_load((ROOT / "deploy/grafana/provisioning/dashboards/dashboards.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert mounts["./grafana/dashboards"] == path
    assert (ROOT / "deploy/grafana/dashboards" / DASHBOARD.name).is_file()
    assert mounts["./grafana/provisioning"] == "/etc/grafana/provisioning"
    sources = yaml.safe_load((ROOT / "deploy/grafana/provisioning/datasources/datasources.yaml").read_text())
    assert {d["type"] for d in sources["datasources"]} == {"prometheus", "loki"}

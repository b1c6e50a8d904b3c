"""The OpenAPI document (gateway/openapi.py) and the routes cannot drift apart: every route of a gateway with every
door open is in the document with its method, every path of the document is a route, the document is valid
OpenAPI 3.1, and docs/reference/http.md names every path of it. tests/integration/test_openapi_served.py checks
that GET /openapi.json serves it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from openapi_spec_validator import validate

from gateway.app import create_app
from gateway.carriers.registry import CARRIERS
from gateway.config import load_settings
from gateway.openapi import openapi_document

ROOT = Path(__file__).resolve().parents[2]
METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _every_door_open(**env: str) -> Any:
    """Development (no public URL): every carrier door opens without its secret, and so does the softphone
    ("auto"); no AGENT_URL, so the embedded local agent mounts at /agent (built, never started: no model loads)."""
    return load_settings(None, env={"GATEWAY_TOKEN_SECRET": "x", **env})


def _router_routes(app: web.Application) -> set[tuple[str, str]]:
    """(path, method) of every route, the /agent sub-app's included; aiohttp's automatic HEAD of a GET skipped."""
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD" or route.resource is None:
            continue
        routes.add((route.resource.canonical, route.method.lower()))
    return routes


def _document_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}


@pytest.fixture
def settings() -> Any:
    settings = _every_door_open()
    assert set(settings.open_doors()) == {spec.name for spec in CARRIERS}
    assert settings.use_local_agent
    return settings


def test_every_route_is_documented_and_every_documented_route_exists(settings: Any) -> None:
    app = create_app(settings)
    routes = _router_routes(app)
    assert any(path.startswith("/agent/") for path, _ in routes), "the local agent sub-app is not in the walk"
    assert any(path.startswith("/softphone") for path, _ in routes), "softphone is off"
    documented = _document_routes(openapi_document(settings))
    assert routes - documented == set(), "routes missing from gateway/openapi.py"
    assert documented - routes == set(), "documented routes the gateway does not serve"


def test_document_is_valid_openapi_3_1(settings: Any) -> None:
    doc = openapi_document(settings)
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    validate(doc)  # openapi-spec-validator: the 3.1 schema, refs resolved, path parameters declared
    assert "servers" not in doc
    public = openapi_document(_every_door_open(GATEWAY_PUBLIC_URL="https://gw.example.com", GATEWAY_API_KEY="k"))
    assert public["servers"] == [{"url": "https://gw.example.com"}]
    validate(public)


def test_carrier_doors_come_from_the_registry(settings: Any) -> None:
    paths = openapi_document(settings)["paths"]
    for spec in CARRIERS:
        assert set(paths[spec.webhook_path]) == {m.lower() for m in spec.webhook_methods}
        if spec.served_by:  # AudioSocket: a TCP stream, no route
            assert spec.stream_path == "" and "" not in paths
            continue
        assert "WebSocket" in paths[spec.stream_path]["get"]["description"]
        assert (
            "docs/security.md#carrier-doors" in paths[spec.webhook_path][spec.webhook_methods[0].lower()]["description"]
        )
    assert paths["/calls"]["post"]["security"] == [{"gatewayApiKey": []}]
    assert set(paths["/calls"]["post"]["responses"]) == {"201", "400", "401", "422", "502", "503"}


def test_the_reference_page_names_every_path(settings: Any) -> None:
    """docs/reference/http.md is hand-written; it names each path (in backticks, after its method or with the
    other routes of its row), so a route added to the document without a line on the page fails here."""
    page = (ROOT / "docs" / "reference" / "http.md").read_text(encoding="utf-8")
    assert "/openapi.json" in page
    # A path ends its code span, or its query string starts (`GET /softphone/events?call_sid=…`).
    missing = [path for path in openapi_document(settings)["paths"] if not re.search(f" {re.escape(path)}[`?]", page)]
    assert missing == []

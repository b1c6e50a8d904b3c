"""GET /openapi.json on a running gateway answers the document of gateway/openapi.py as JSON (the document itself
is checked against the routes by tests/unit/test_openapi.py)."""

from __future__ import annotations

from typing import Any

from gateway.keys import SETTINGS
from gateway.openapi import openapi_document


async def test_get_openapi_json_serves_the_document(start_gateway: Any, http: Any) -> None:
    server = await start_gateway()
    async with http.get(f"{server.base_url}/openapi.json") as resp:
        assert resp.status == 200
        assert resp.content_type == "application/json"
        body = await resp.json()
    assert body["openapi"] == "3.1.0"
    assert body == openapi_document(server.app[SETTINGS])

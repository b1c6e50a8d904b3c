"""The pieces every part of the OpenAPI document is built from (:mod:`gateway.openapi`): responses, the error
schema, operations with their path parameters. Pure."""

from __future__ import annotations

from typing import Any

__all__ = ["ERROR", "error", "json_body", "operation", "path_params", "text"]

ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {"error": {"type": "string", "description": "what went wrong, for a person"}},
}


def text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": {"type": "string"}}}}


def json_body(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def error(description: str) -> dict[str, Any]:
    return json_body(description, {"$ref": "#/components/schemas/Error"})


def path_params(path: str) -> list[dict[str, Any]]:
    """The ``{name}`` segments of ``path`` as required path parameters (OpenAPI requires each to be declared)."""
    names = [part[1:-1].split(":", 1)[0] for part in path.split("/") if part.startswith("{") and part.endswith("}")]
    return [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}} for name in names]


def operation(
    op_id: str, summary: str, description: str, responses: dict[str, Any], tags: list[str], path: str, **extra: Any
) -> dict[str, Any]:
    op: dict[str, Any] = {
        "operationId": op_id,
        "summary": summary,
        "description": description,
        "tags": tags,
        "responses": responses,
    }
    params = path_params(path)
    if params:
        op["parameters"] = params
    op.update(extra)
    return op

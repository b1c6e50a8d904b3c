"""The ``/calls`` family in the OpenAPI document (:mod:`gateway.openapi`): call records (gateway.records.http) and
live-call control from any replica (gateway.cluster.control). Pure."""

from __future__ import annotations

from typing import Any

from .openapi_common import error as _error
from .openapi_common import json_body as _json
from .openapi_common import operation as _operation

__all__ = ["cluster_paths", "records_paths"]

_RECORDS = (
    "Call records (docs/how-to/call-records.md): `Authorization: Bearer $GATEWAY_API_KEY` (or HTTP Basic with the "
    "key as password); 401 without it, 404 while records are off. Read from the storage, so with the S3 backend "
    "any replica answers for any call."
)


def records_paths() -> dict[str, dict[str, Any]]:
    record = {"type": "object", "description": "the call record (docs/reference/call-record.md)"}
    common = {"401": _error("a missing or wrong key"), "503": _error("the storage is unreachable")}
    security: list[dict[str, list[str]]] = [{"gatewayApiKey": []}]
    return {
        "/calls/{call_sid}": {
            "get": _operation(
                "get_call_record",
                "A call's record",
                f"The call record JSON of one call. {_RECORDS}",
                {"200": _json("the record", record), "404": _error("no record of this call"), **common},
                ["call records"],
                "/calls/{call_sid}",
                security=security,
            )
        },
        "/calls/{call_sid}/recording": {
            "get": _operation(
                "get_call_recording",
                "A call's recording",
                f"The two-channel 8 kHz WAV (caller left, agent right). {_RECORDS}",
                {
                    "200": {"description": "the recording", "content": {"audio/wav": {}}},
                    "404": _error("no recording of this call"),
                    **common,
                },
                ["call records"],
                "/calls/{call_sid}/recording",
                security=security,
            )
        },
    }


def cluster_paths() -> dict[str, dict[str, Any]]:
    """Live calls and call control from any replica (gateway.cluster.control, docs/how-to/operations/scale-out.md)."""
    any_replica = (
        "Any replica answers: the request is forwarded to the replica that holds the call, whose answer is "
        "returned as is (docs/architecture/scale-out.md#call-control-from-any-replica)."
    )
    accepted = {
        "type": "object",
        "required": ["call_sid", "action", "status"],
        "properties": {
            "call_sid": {"type": "string"},
            "action": {"type": "string"},
            "status": {"type": "string", "description": "ending | sent | transferring"},
            "replica": {"type": "string", "description": "the replica that holds the call"},
        },
    }
    common = {
        "401": _error("a missing or wrong bearer key"),
        "404": _error("no replica holds a live call with this call_sid"),
        "409": _error("the call cannot do this now (its agent session is not live, parked, or already ending)"),
        "410": _error("the replica that held the call is gone (it stopped, or stopped answering)"),
        "503": _error("the shared state store is unavailable and the call is not on this replica"),
        "504": _error("the replica that holds the call did not answer in time"),
    }
    bodies: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "hangup": ("End a live call", "Ends the call now (outcome `api_hangup`).", None),
        "transfer": (
            "Transfer a live call",
            "The carrier's transfer, as the agent's `transfer_call` tool does it: the destination must be on the "
            "call profile's `transfer_allow`; with `announcement`, the agent says it first.",
            {
                "type": "object",
                "required": ["to"],
                "properties": {"to": {"type": "string"}, "announcement": {"type": "string"}},
            },
        ),
        "say": (
            "Make the agent say something",
            "The agent replies now, following `instructions` (a `reply.create` into its session).",
            {
                "type": "object",
                "required": ["instructions"],
                "properties": {"instructions": {"type": "string", "maxLength": 4000}},
            },
        ),
    }
    paths: dict[str, dict[str, Any]] = {}
    for action, (summary, description, schema) in bodies.items():
        path = f"/calls/{{call_sid}}/{action}"
        responses = {"202": _json("the replica that holds the call took it on", accepted), **common}
        if schema is not None:
            responses["400"] = _error("the body is not a JSON object of this shape")
        if action == "transfer":
            responses["422"] = _error("the destination is not on the transfer allow-list")
        extra: dict[str, Any] = {"security": [{"gatewayApiKey": []}]}
        if schema is not None:
            extra["requestBody"] = {"required": True, "content": {"application/json": {"schema": schema}}}
        paths[path] = {
            "post": _operation(
                f"call_{action}", summary, f"{description} {any_replica}", responses, ["call control"], path, **extra
            )
        }
    live = {
        "type": "object",
        "required": ["calls", "partial", "store"],
        "properties": {
            "calls": {"type": "array", "items": {"type": "object"}},
            "partial": {"type": "boolean", "description": "true while the store is down: this replica's calls only"},
            "store": {"type": "string", "description": "memory | redis"},
        },
    }
    paths["/calls/live"] = {
        "get": _operation(
            "live_calls",
            "Live calls of every replica",
            "Each call: call_sid, stream_sid, carrier, profile, state (live | parked), session_id, started_at, "
            "replica, replica_draining.",
            {"200": _json("the live calls", live), "401": _error("a missing or wrong bearer key")},
            ["call control"],
            "/calls/live",
            security=[{"gatewayApiKey": []}],
        )
    }
    return paths

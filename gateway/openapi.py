"""The gateway's HTTP API as an OpenAPI 3.1 document: :func:`openapi_document`. Pure (no aiohttp app is touched; it
reads the carrier registry and the settings), served at ``GET /openapi.json`` by :mod:`gateway.ops` and rendered by
docs/reference/http.md.

**Which routes.** The document lists every route the gateway *can* serve, not only those the given settings open:
a client or a reviewer reading it learns the whole surface, and one document fits every deployment. Routes that
exist only under a condition say so in their description:

- each carrier's webhook and media stream (derived from :data:`gateway.carriers.registry.CARRIERS`) and
  ``POST /twilio/status`` exist only while that carrier's door is open (docs/security.md#carrier-doors);
- the ``/softphone`` routes only when ``[softphone] enabled`` allows it (docs/security.md#the-browser-softphone);
- ``/agent/v1/ws``, ``/agent/v1/token`` and the local agent's REST routes (``/agent/v1/agents``,
  ``/agent/v1/sessions``) only when the embedded local agent answers (no ``AGENT_URL``, no ``ASSEMBLYAI_API_KEY``).

The settings only fill in ``servers`` (the public URL, when one is set). tests/unit/test_openapi.py checks the
document against the router of a gateway with every door open, in both directions, and against
docs/reference/http.md.
"""

from __future__ import annotations

from typing import Any

from .carriers.registry import CARRIERS
from .config import Settings
from .openapi_calls import cluster_paths, records_paths
from .openapi_common import ERROR as _ERROR
from .openapi_common import error as _error
from .openapi_common import json_body as _json
from .openapi_common import operation as _operation
from .openapi_common import path_params as _path_params
from .openapi_common import text as _text

__all__ = ["OPENAPI_VERSION", "openapi_document"]

OPENAPI_VERSION = "3.1.0"

_DOORS = "Exists only while this carrier's door is open (docs/security.md#carrier-doors); a closed door answers 404."
_SOFTPHONE = (
    "Only when `[softphone] enabled` allows it (docs/security.md#the-browser-softphone); with `on` and a public URL "
    "it asks for GATEWAY_API_KEY (Basic password or Bearer)."
)
_LOCAL_AGENT = "Only when the embedded local agent answers (no AGENT_URL, no ASSEMBLYAI_API_KEY)."
_WEBSOCKET = "A WebSocket upgrade (`Upgrade: websocket`); a plain GET is refused."


def _audiosocket_path() -> dict[str, Any]:
    """AudioSocket's UUID endpoint (gateway.audiosocket_server): its media is a TCP stream, not a route."""
    path, item = "/audiosocket/calls", {}
    for method in ("get", "post"):
        item[method] = _operation(
            f"audiosocket_uuid_{method}",
            "a UUID for Asterisk's AudioSocket",
            "The dialplan calls it with CURL() before AudioSocket(): reserves a call slot, binds the call's token to "
            "the profile its `to` selects, and answers a fresh UUID (text/plain), valid once for "
            "`carriers.audiosocket.uuid_ttl_s`. AUDIOSOCKET_SECRET as the Basic password or a Bearer token, or a "
            "source address in `carriers.audiosocket.allowed_networks` (docs/how-to/pbx/asterisk-audiosocket.md). "
            f"{_DOORS}",
            {
                "200": _text("the UUID for AudioSocket()"),
                "403": _text("a missing or wrong secret"),
                "503": _text("at capacity, draining, or no listener (`carriers.audiosocket.listen` empty)"),
            },
            ["audiosocket"],
            path,
        )
    return {path: item}


def _carrier_paths() -> dict[str, dict[str, Any]]:
    paths: dict[str, dict[str, Any]] = {}
    for spec in CARRIERS:
        if spec.served_by:
            continue  # its own module's doors: below
        signed = (
            f"When {spec.what_authenticates()} is set, the request must carry {spec.name}'s signature (403 "
            "otherwise); without it the door is open only in development, with a warning at start-up."
        )
        webhook: dict[str, Any] = {}
        for method in spec.webhook_methods:
            webhook[method.lower()] = _operation(
                f"{spec.name}_webhook_{method.lower()}",
                f"{spec.name}'s voice webhook",
                f"{spec.name} calls it when a call arrives: reserves a call slot and answers the carrier's document "
                f"that connects the media stream, or its busy answer at capacity or while draining. {signed} "
                f"{_DOORS}",
                {
                    "200": _text("the carrier's answer document (XML, or JSON for some carriers)"),
                    "400": _text("a request that is not a call of this carrier"),
                    "403": _text("a missing or wrong signature"),
                },
                [spec.name],
                spec.webhook_path,
            )
        paths[spec.webhook_path] = webhook
        paths[spec.stream_path] = {
            "get": _operation(
                f"{spec.name}_stream",
                f"{spec.name}'s media stream (WebSocket)",
                f"{_WEBSOCKET} The call's audio in {spec.name}'s protocol; the stream must present the call token "
                f"minted by the webhook. {signed} {_DOORS}",
                {
                    "101": {"description": "switching to the WebSocket protocol"},
                    "403": _text("a missing or wrong signature or token"),
                    "503": _text("draining or at capacity"),
                },
                [spec.name],
                spec.stream_path,
            )
        }
    return {**paths, **_audiosocket_path()}


def _ops_paths() -> dict[str, dict[str, Any]]:
    readiness = {
        "type": "object",
        "required": ["status", "active_calls", "reserved", "limit", "accepting"],
        "properties": {
            "status": {"enum": ["ready", "not_ready"]},
            "active_calls": {"type": "integer"},
            "reserved": {"type": "integer"},
            "limit": {"type": "integer"},
            "accepting": {"type": "boolean"},
        },
    }
    return {
        "/healthz": {
            "get": _operation(
                "healthz",
                "Liveness",
                "200 while the process is alive.",
                {"200": _json("alive", {"type": "object", "properties": {"status": {"const": "ok"}}})},
                ["operations"],
                "/healthz",
            )
        },
        "/readyz": {
            "get": _operation(
                "readyz",
                "Readiness",
                "200 while the process takes calls, 503 at capacity or while draining.",
                {"200": _json("taking calls", readiness), "503": _json("not taking calls", readiness)},
                ["operations"],
                "/readyz",
            )
        },
        "/metrics": {
            "get": _operation(
                "metrics",
                "Prometheus metrics",
                "This process's metrics in Prometheus text format (docs/reference/metrics.md).",
                {"200": _text("Prometheus exposition format")},
                ["operations"],
                "/metrics",
            )
        },
        "/openapi.json": {
            "get": _operation(
                "openapi",
                "This document",
                "The gateway's HTTP API as an OpenAPI 3.1 document (gateway/openapi.py).",
                {"200": _json("the OpenAPI document", {"type": "object"})},
                ["operations"],
                "/openapi.json",
            )
        },
    }


_RECORDS_LIST: dict[str, Any] = {
    "type": "object",
    "required": ["calls", "truncated"],
    "properties": {
        "calls": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["call_sid", "stored_at", "record"],
                "properties": {
                    "call_sid": {"type": "string"},
                    "stored_at": {"type": "string", "format": "date-time"},
                    "record": {"type": "string", "description": "the path of the record"},
                    "recording": {"type": ["string", "null"], "description": "the path of the recording"},
                },
            },
        },
        "truncated": {"type": "boolean"},
    },
}


def _call_control_paths() -> dict[str, dict[str, Any]]:
    # The shape gateway.outbound.parse_outbound_request accepts: no other field (400), to/from strings.
    request = {
        "type": "object",
        "required": ["to", "from"],
        "additionalProperties": False,
        "properties": {
            "to": {"type": "string", "description": "an E.164 number, a sip: URI or a client: name"},
            "from": {"type": "string", "description": "an E.164 number of your Twilio account, or a client: name"},
            "profile": {"type": "string", "description": "a configured profile; default: the default profile"},
            "variables": {
                "type": ["object", "null"],
                "maxProperties": 32,
                "propertyNames": {"pattern": "^[A-Za-z_][A-Za-z0-9_]{0,63}$"},
                "additionalProperties": {"type": "string"},
                "description": "filled into the profile's {name} placeholders; each name + value under 500 chars",
            },
            "machine_detection": {
                "type": "boolean",
                "description": "Twilio's answering-machine detection: on a machine the profile's voicemail.message "
                "is left after the beep (docs/how-to/conversation.md#voicemail); needs a public URL",
            },
        },
    }
    created = {
        "type": "object",
        "required": ["call_sid", "status"],
        "properties": {"call_sid": {"type": "string"}, "status": {"type": "string"}},
    }
    return {
        "/calls": {
            "post": _operation(
                "create_call",
                "Place an outbound call",
                "Asks Twilio to place the call, its media stream connected to the gateway "
                "(docs/how-to/outbound-calls.md).",
                {
                    "201": _json("Twilio accepted the call", created),
                    "400": _error("the body is not JSON, or not of this shape"),
                    "401": _error("a missing or wrong bearer key"),
                    "422": _error("well-formed but unusable: unknown profile, bad number, variable too long"),
                    "502": _error("Twilio refused or failed the request"),
                    "503": _error("Twilio is not configured, or the gateway is at capacity or draining"),
                },
                ["call control"],
                "/calls",
                requestBody={"required": True, "content": {"application/json": {"schema": request}}},
                security=[{"gatewayApiKey": []}],
            ),
            "get": _operation(
                "list_call_records",
                "Recent call records",
                "The records stored since `since`, newest first, at most `limit` (100; at most 1000). "
                "Call records (docs/how-to/call-records.md): `Authorization: Bearer $GATEWAY_API_KEY`; 401 without "
                "it, 404 while records are off.",
                {
                    "200": _json("the records", _RECORDS_LIST),
                    "400": _error("a `since` or `limit` that does not parse"),
                    "401": _error("a missing or wrong key"),
                    "503": _error("the storage is unreachable"),
                },
                ["call records"],
                "/calls",
                parameters=[
                    {"name": "since", "in": "query", "required": False, "schema": {"type": "string"}},
                    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer"}},
                ],
                security=[{"gatewayApiKey": []}],
            ),
        },
        "/control/dial/{carrier}/{token}": {
            method: _operation(
                f"dial_document_{method}",
                "A transfer's <Dial> document",
                "The Plivo XML or cXML a transfer by URL points at (Plivo, SignalWire; "
                "docs/how-to/call-control.md#transfer-by-url). The token is minted by the transfer for the "
                "destination in the to query parameter and this carrier, valid for 5 minutes.",
                {
                    "200": {
                        "description": "the document",
                        "content": {"application/xml": {"schema": {"type": "string"}}},
                    },
                    "403": _text("a token this gateway did not mint for this destination and carrier, or expired"),
                    "404": _text("a carrier that does not transfer by URL"),
                },
                ["call control"],
                "/control/dial/{carrier}/{token}",
                parameters=[
                    *_path_params("/control/dial/{carrier}/{token}"),
                    {"name": "to", "in": "query", "required": True, "schema": {"type": "string"}},
                ],
            )
            for method in ("get", "post")
        },
        "/twilio/amd": {
            "post": _operation(
                "twilio_amd",
                "Twilio's answering-machine detection result",
                "Twilio's asynchronous AMD callback for an outbound call placed with machine_detection "
                f"(docs/how-to/conversation.md#voicemail), signature-checked like its webhook. {_DOORS}",
                {
                    "204": {"description": "delivered to the live call"},
                    "400": _text("no CallSid, or an AnsweredBy Twilio does not document"),
                    "403": _text("a missing or wrong signature"),
                    "404": _text("no live call with this CallSid here"),
                },
                ["twilio"],
                "/twilio/amd",
                requestBody={
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                },
            )
        },
        "/twilio/transfer": {
            "post": _operation(
                "twilio_transfer",
                "Twilio's reports on a warm transfer",
                "Call status and conference participant callbacks of a warm transfer's human leg "
                f"(docs/how-to/conversation.md#warm-transfer), signature-checked like its webhook. {_DOORS}",
                {
                    "204": {"description": "delivered to the waiting call"},
                    "400": _text("no CallSid, or neither CallStatus nor StatusCallbackEvent"),
                    "403": _text("a missing or wrong signature"),
                    "404": _text("no warm transfer with this CallSid here"),
                },
                ["twilio"],
                "/twilio/transfer",
                requestBody={
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                },
            )
        },
        "/twilio/status": {
            "post": _operation(
                "twilio_status",
                "Twilio's status callbacks",
                "Twilio's call and stream status callbacks (docs/how-to/call-control.md#status-callbacks), "
                f"signature-checked like its webhook. {_DOORS}",
                {
                    "204": {"description": "recorded"},
                    "400": _text("neither CallStatus nor StreamEvent"),
                    "403": _text("a missing or wrong signature"),
                },
                ["twilio"],
                "/twilio/status",
                requestBody={
                    "required": True,
                    "content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}},
                },
            )
        },
    }


def _softphone_paths() -> dict[str, dict[str, Any]]:
    def op(op_id: str, path: str, summary: str, description: str, responses: dict[str, Any]) -> dict[str, Any]:
        return _operation(op_id, summary, f"{description} {_SOFTPHONE}", responses, ["softphone"], path)

    dial = op(
        "softphone_dial",
        "/softphone/dial",
        "Dial from the softphone",
        "From the same origin: reserves a slot and answers a softphone call token.",
        {
            "200": _json("the call to start", {"type": "object"}),
            "403": _text("cross-origin"),
            "415": _text("not application/json"),
            "503": _text("at capacity"),
        },
    )
    dial["requestBody"] = {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"type": "object", "required": ["to"], "properties": {"to": {"type": "string"}}}
            }
        },
    }
    events = op(
        "softphone_events",
        "/softphone/events",
        "A softphone call's events",
        "Server-sent events of a call dialled from the softphone; 404 for any other call.",
        {"200": {"description": "an event stream", "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
    )
    events["parameters"] = [{"name": "call_sid", "in": "query", "required": True, "schema": {"type": "string"}}]
    return {
        "/softphone": {"get": op("softphone_page", "/softphone", "The softphone page", "", {"200": _text("HTML")})},
        "/softphone/{name}": {
            "get": op(
                "softphone_asset",
                "/softphone/{name}",
                "The page's scripts",
                "`softphone.js` or `worklet.js`.",
                {"200": _text("JavaScript"), "404": _text("any other name")},
            )
        },
        "/softphone/dial": {"post": dial},
        "/softphone/stream": {
            "get": op(
                "softphone_stream",
                "/softphone/stream",
                "The softphone's media stream (WebSocket)",
                f"{_WEBSOCKET} Twilio's protocol, softphone call tokens only.",
                {"101": {"description": "switching to the WebSocket protocol"}},
            )
        },
        "/softphone/events": {"get": events},
    }


def _local_agent_paths() -> dict[str, dict[str, Any]]:
    return {
        "/agent/v1/ws": {
            "get": _operation(
                "local_agent_ws",
                "The local agent's Voice Agent API socket (WebSocket)",
                f"{_WEBSOCKET} The Voice Agent API (docs/reference/local-agent-api.md). {_LOCAL_AGENT}",
                {"101": {"description": "switching to the WebSocket protocol"}},
                ["local agent"],
                "/agent/v1/ws",
            )
        },
        "/agent/v1/token": {
            "get": _operation(
                "local_agent_token",
                "Mint a temporary token",
                f"A temporary token for the socket, for the local agent's API key. {_LOCAL_AGENT}",
                {
                    "200": _json(
                        "the token",
                        {
                            "type": "object",
                            "properties": {"token": {"type": "string"}, "expires_in_seconds": {"type": "integer"}},
                        },
                    ),
                    "404": {"description": "a wrong key"},
                    "422": {"description": "a missing header or parameter"},
                },
                ["local agent"],
                "/agent/v1/token",
            )
        },
    }


_DETAIL = {"type": "object", "required": ["detail"], "properties": {"detail": {}}}


def _local_agent_rest_paths() -> dict[str, dict[str, Any]]:
    """/agent/v1/agents and /agent/v1/sessions (docs/reference/local-agent-api.md#stored-agents, #sessions)."""
    doc = "docs/reference/local-agent-api.md"
    keyed: dict[str, Any] = {"security": [{"localAgentKey": []}]}
    agent = {"type": "object", "description": f"a stored agent ({doc}#stored-agents)"}
    session = {"type": "object", "description": f"a session record ({doc}#sessions)"}
    body = {"required": True, "content": {"application/json": {"schema": agent}}}
    denied = {"401": _json("no key, or a wrong one", _DETAIL)}
    unknown = {"404": _json("no such id", _DETAIL)}
    invalid = {"422": _json("the body or query does not validate: FastAPI-style `detail` list", _DETAIL)}

    def op(op_id: str, summary: str, path: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
        merged = {**responses, **denied}
        return _operation(op_id, summary, f"{summary}. {_LOCAL_AGENT}", merged, ["local agent"], path, **extra)

    agents, one_agent = "/agent/v1/agents", "/agent/v1/agents/{agent_id}"
    sessions, one_session = "/agent/v1/sessions", "/agent/v1/sessions/{session_id}"
    page = {"type": "object", "properties": {"has_more": {"type": "boolean"}, "response_metadata": {"type": "object"}}}
    artifact = "A signed link from the session record works without the key for an hour"
    return {
        agents: {
            "post": op("local_agent_create_agent", "Create a stored agent", agents,
                       {"201": _json("the agent", agent), **invalid}, requestBody=body, **keyed),
            "get": op("local_agent_list_agents", "List stored agents, newest first", agents,
                      {"200": _json("a page of agents", page), **invalid}, **keyed),
        },
        one_agent: {
            "get": op("local_agent_get_agent", "Read a stored agent", one_agent,
                      {"200": _json("the agent", agent), **unknown}, **keyed),
            "put": op("local_agent_replace_agent", "Replace a stored agent", one_agent,
                      {"200": _json("the agent", agent), **unknown, **invalid}, requestBody=body, **keyed),
            "delete": op("local_agent_delete_agent", "Delete a stored agent", one_agent,
                         {"204": {"description": "deleted"}, **unknown}, **keyed),
        },
        sessions: {
            "get": op("local_agent_list_sessions", "List sessions, newest first", sessions,
                      {"200": _json("a page of session records", page), **invalid}, **keyed),
        },
        one_session: {
            "get": op("local_agent_get_session", "Read a session with its config and artifacts", one_session,
                      {"200": _json("the session", session), **unknown}, **keyed),
            "delete": op("local_agent_delete_session", "Delete an ended session and its files", one_session,
                         {"204": {"description": "deleted"}, **unknown, "409": _json("still active", _DETAIL)},
                         **keyed),
        },
        f"{one_session}/recording": {
            "get": op("local_agent_session_recording", f"The stereo WAV recording. {artifact}",
                      f"{one_session}/recording",
                      {"200": {"description": "caller left, agent right",
                               "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}}},
                       **unknown}),
        },
        f"{one_session}/timeline": {
            "get": op("local_agent_session_timeline", f"The timeline JSON. {artifact}", f"{one_session}/timeline",
                      {"200": _json("turns and tool calls", {"type": "object"}), **unknown}),
        },
    }  # fmt: skip


def openapi_document(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every route the gateway can serve (see the module docstring)."""
    paths: dict[str, dict[str, Any]] = {
        **_carrier_paths(),
        **_ops_paths(),
        **_call_control_paths(),
        **records_paths(),
        **cluster_paths(),
        **_softphone_paths(),
        **_local_agent_paths(),
        **_local_agent_rest_paths(),
    }
    doc: dict[str, Any] = {
        "openapi": OPENAPI_VERSION,
        "info": {
            "title": "voice-gateway",
            "version": "0.1.0",
            "description": "Telephony gateway: carrier webhooks and media streams bridged to Voice Agent API "
            "sessions. Routes that exist only under a condition say so (docs/reference/http.md).",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "gatewayApiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "GATEWAY_API_KEY, as `Authorization: Bearer <key>`.",
                },
                "localAgentKey": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "The local agent's key (LOCAL_AGENT_API_KEY), raw or as `Bearer <key>`.",
                },
            },
        },
    }
    if settings.server.public_url:
        doc["servers"] = [{"url": settings.server.public_url}]
    return doc

"""``/v1/agents`` and ``/v1/sessions``: the local agent's REST API for stored agents and session history. Not pure
(aiohttp handlers).

Routes, fields and error shapes: docs/reference/local-agent-api.md#stored-agents and #sessions. Every route asks
for the WebSocket's API key (``Authorization: <key>`` or ``Bearer <key>``; 401 ``{"detail": ...}`` without it),
except that an artifact link signed by ``GET /v1/sessions/{id}`` works without it for an hour, as the cloud's
presigned links do. Unknown ids are 404 ``{"detail": ...}``; a body or query that does not validate is 422 with a
FastAPI-style ``detail`` list.
"""

from __future__ import annotations

import hmac
import json
import secrets
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiohttp import web

from ..protocol.tokens import _strip_bearer
from .agents import AgentInvalid, new_agent_id, validate_agent
from .artifacts import LINK_TTL_S, artifact_list, check_link, sign_link
from .db import SessionRow
from .service import SessionStore, is_session_id
from .timeline import build_timeline

__all__ = ["add_store_routes"]

STATUSES = ("active", "completed", "failed")


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).isoformat().replace("+00:00", "Z")


def _detail(status: int, detail: Any) -> web.Response:
    return web.json_response({"detail": detail}, status=status)


def _query_error(name: str, msg: str, value: Any, type_: str = "value_error") -> web.Response:
    return _detail(422, [{"type": type_, "loc": ["query", name], "msg": msg, "input": value}])


def _page_params(request: web.Request) -> tuple[int, str | None] | web.Response:
    raw = request.query.get("limit")
    limit = 50
    if raw is not None:
        if not raw.strip().isdigit():
            return _query_error("limit", "Input should be a valid integer", raw, "int_parsing")
        limit = int(raw)
        if not 1 <= limit <= 200:
            return _query_error("limit", "Input should be between 1 and 200", raw)
    return limit, request.query.get("cursor") or None


def _page(key: str, items: list[dict[str, Any]], more: bool) -> dict[str, Any]:
    last = items[-1]["id"] if items and more else None
    return {key: items, "has_more": more, "response_metadata": {"next_cursor": last}}


def _agent_out(agent: dict[str, Any]) -> dict[str, Any]:
    return {**agent, "created_at": _iso(agent["created_at"]), "updated_at": _iso(agent["updated_at"])}


def add_store_routes(
    app: web.Application,
    store: Callable[[], SessionStore],
    *,
    api_key: str,
    secret: bytes,
    voices: Sequence[str],
) -> None:
    """Register the REST routes on the local agent's ``app``; ``store()`` is the started store (or raises 503)."""

    def authorized(request: web.Request) -> web.Response | None:
        raw = request.headers.get("Authorization")
        cred = _strip_bearer(raw) if raw else ""
        if not cred:
            return _detail(401, "Missing API key")
        if not hmac.compare_digest(cred.encode(), api_key.encode()):
            return _detail(401, "Invalid API key")
        return None

    async def body_of(request: web.Request) -> Any:
        try:
            return await request.json(loads=json.loads)
        except (ValueError, UnicodeDecodeError) as e:
            raise web.HTTPUnprocessableEntity(
                text=json.dumps(
                    {"detail": [{"type": "json_invalid", "loc": ["body"], "msg": f"JSON decode error: {e}"}]}
                ),
                content_type="application/json",
            ) from None

    # ---- agents

    async def create_agent(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        try:
            agent = validate_agent(await body_of(request), voices=voices)
        except AgentInvalid as e:
            return _detail(422, e.detail)
        s = store()
        stored = await s.run(s.db.put_agent, new_agent_id(secrets.token_hex), agent, now=time.time(), create=True)
        assert stored is not None
        return web.json_response(_agent_out(stored), status=201)

    async def list_agents(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        params = _page_params(request)
        if isinstance(params, web.Response):
            return params
        s = store()
        agents, more = await s.run(s.db.list_agents, limit=params[0], cursor=params[1])
        return web.json_response(_page("agents", [_agent_out(a) for a in agents], more))

    async def get_agent(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        s = store()
        agent = await s.run(s.db.get_agent, request.match_info["agent_id"])
        return _detail(404, "Agent not found") if agent is None else web.json_response(_agent_out(agent))

    async def replace_agent(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        s = store()
        agent_id = request.match_info["agent_id"]
        if await s.run(s.db.get_agent, agent_id) is None:
            return _detail(404, "Agent not found")
        try:
            agent = validate_agent(await body_of(request), voices=voices)
        except AgentInvalid as e:
            return _detail(422, e.detail)
        stored = await s.run(s.db.put_agent, agent_id, agent, now=time.time(), create=False)
        return _detail(404, "Agent not found") if stored is None else web.json_response(_agent_out(stored))

    async def delete_agent(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        s = store()
        if not await s.run(s.db.delete_agent, request.match_info["agent_id"]):
            return _detail(404, "Agent not found")
        return web.Response(status=204)

    # ---- sessions

    def session_out(request: web.Request, row: SessionRow, *, full: bool) -> dict[str, Any]:
        duration = None if row.ended_at is None else round(row.ended_at - row.created_at, 3)
        out: dict[str, Any] = {
            "id": row.id,
            "status": row.status,
            "agent_id": row.agent_id,
            "public_close_reason": row.public_close_reason,
            "duration_seconds": duration,
            "created_at": _iso(row.created_at),
            "ended_at": _iso(row.ended_at),
        }
        if full:
            out["config"] = row.config
            out["artifacts"] = [] if row.status == "active" else artifacts(request, row)
        return out

    def artifacts(request: web.Request, row: SessionRow) -> list[dict[str, Any]]:
        folder = store().session_dir(row.id)
        now = time.time()
        urls: dict[str, str] = {}
        for name, filename in (("recording", "recording.wav"), ("timeline", "timeline.jsonl")):
            if (folder / filename).exists():
                path = app.router[f"local_agent_session_{name}"].url_for(session_id=row.id)
                urls[name] = str(request.url.join(path).with_query(sign_link(secret, row.id, name, now=now)))
        described = {"sample_rate": row.sample_rate, "channels": 2, "channel_layout": ["user", "agent"]}
        return artifact_list(urls, expires_at=int(now) + LINK_TTL_S, recording=described if row.sample_rate else None)

    async def list_sessions(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        params = _page_params(request)
        if isinstance(params, web.Response):
            return params
        status = request.query.get("status") or None
        if status is not None and status not in STATUSES:
            return _query_error("status", f"Input should be one of: {', '.join(STATUSES)}", status, "enum")
        s = store()
        rows, more = await s.run(
            s.db.list_sessions,
            limit=params[0],
            cursor=params[1],
            status=status,
            agent_id=request.query.get("agent_id") or None,
        )
        return web.json_response(_page("sessions", [session_out(request, r, full=False) for r in rows], more))

    async def get_session(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        s = store()
        row = await s.run(s.db.get_session, request.match_info["session_id"])
        if row is None:
            return _detail(404, "Session not found")
        return web.json_response(session_out(request, row, full=True))

    async def delete_session(request: web.Request) -> web.Response:
        if (denied := authorized(request)) is not None:
            return denied
        s = store()
        sid = request.match_info["session_id"]
        if s.is_live(sid):
            return _detail(409, "Session is active; end it first")
        if not await s.delete_session(sid):
            return _detail(404, "Session not found")
        return web.Response(status=204)

    def artifact_handler(name: str, filename: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.StreamResponse:
            sid = request.match_info["session_id"]
            if not check_link(secret, sid, name, request.query, now=time.time()):
                if (denied := authorized(request)) is not None:
                    return denied
            s = store()
            if not is_session_id(sid) or await s.run(s.db.get_session, sid) is None:
                return _detail(404, "Artifact not found")
            path: Path = s.session_dir(sid) / filename
            if not path.exists():
                return _detail(404, "Artifact not found")
            if name == "recording":
                return web.FileResponse(path, headers={"Content-Type": "audio/wav"})
            text = await s.run(path.read_text, encoding="utf-8")
            entries = [json.loads(line) for line in text.splitlines() if line.strip()]
            return web.json_response({"session_id": sid, **build_timeline(entries)})

        return handler

    r = app.router
    r.add_post("/v1/agents", create_agent)
    r.add_get("/v1/agents", list_agents)
    r.add_get("/v1/agents/{agent_id}", get_agent)
    r.add_put("/v1/agents/{agent_id}", replace_agent)
    r.add_delete("/v1/agents/{agent_id}", delete_agent)
    r.add_get("/v1/sessions", list_sessions)
    r.add_get("/v1/sessions/{session_id}", get_session)
    r.add_delete("/v1/sessions/{session_id}", delete_session)
    r.add_get(
        "/v1/sessions/{session_id}/recording",
        artifact_handler("recording", "recording.wav"),
        name="local_agent_session_recording",
    )
    r.add_get(
        "/v1/sessions/{session_id}/timeline",
        artifact_handler("timeline", "timeline.jsonl"),
        name="local_agent_session_timeline",
    )

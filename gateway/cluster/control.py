"""Call control from any replica, and the internal listener replicas forward to (docs/how-to/operations/scale-out.md,
docs/reference/http.md). Thin aiohttp handlers; the credential is :mod:`gateway.cluster.forward`'s.

Public (bearer ``GATEWAY_API_KEY``, as ``POST /calls``):

- ``GET /calls/live``: every live call of the cluster (``partial: true`` while the store is down: this replica's only);
- ``POST /calls/{call_sid}/hangup``: end the call (outcome ``api_hangup``);
- ``POST /calls/{call_sid}/transfer`` ``{"to", "announcement"?}``: the carrier's transfer, as ``transfer_call`` does
  (the destination must be on the call profile's ``transfer_allow``);
- ``POST /calls/{call_sid}/say`` ``{"instructions"}``: the agent replies now, following them (``reply.create``).

Whichever replica receives one finds the call's owner in the registry: itself → done here; another live replica → the
request is forwarded to that replica's internal listener and its answer returned as is; a replica that died → 410;
no replica → 404. The store down → what this replica holds is still served, anything else is 503.

Why HTTP forwarding and not Redis request/reply: the owner answers synchronously with its own status code, a dead or
slow owner shows as a refused connection or a bounded timeout instead of a message nobody reads, nothing subscribes
per replica, and Redis carries no call-control traffic (it holds only state).

Internal (``state.internal_port``, never behind the Ingress; every request carries the forward credential):

- ``POST /internal/v1/calls/{call_sid}/{hangup|transfer|say}``: the same actions, for the owner;
- ``POST /internal/v1/calls/{call_sid}/handover``: a new stream of this call landed on another replica: give up the
  parked agent session *without* ``session.end`` (the socket is closed; the other replica resumes it with
  ``session.resume``) and answer its id.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import structlog
from aiohttp import web

from ..errors import ForwardRefused, StateUnavailable
from ..keys import CALLS, CLUSTER, HTTP, METRICS, PARKED, SETTINGS
from ..reattach import HandedOver
from ..state import open_store
from ..state.store import Replica
from ..tools import call_control as cc
from .forward import HEADER, sign_forward
from .node import Cluster

__all__ = ["ACTIONS", "claim_remote", "handover", "reserve", "setup"]

log = structlog.get_logger("gateway.cluster")

ACTIONS = ("hangup", "transfer", "say")
_CALL_SID = re.compile(r"[A-Za-z0-9_.:@+-]{1,128}")
#: How long the owner waits for a stream of the call that is still stopping to park its agent session.
HANDOVER_WAIT_S = 2.0


def _error(status: int, error: str, **extra: object) -> web.Response:
    return web.json_response({"error": error, **extra}, status=status)


def _authorized(request: web.Request) -> bool:
    key = request.app[SETTINGS].secrets.gateway_api_key
    presented = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    return bool(key) and hmac.compare_digest(presented, f"Bearer {key}".encode())


def _unauthorized(request: web.Request) -> web.Response:
    log.warning("call_control.refused", reason="unauthorized", status=401, path=request.path)
    request.app[METRICS].refused("call_control", "unauthorized")
    return web.json_response({"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": "Bearer"})


# ---- public ------------------------------------------------------------------------------------------------------
async def live_calls(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized(request)
    cluster = request.app[CLUSTER]
    calls, complete = await cluster.live_calls()
    rows = [
        {
            "call_sid": c.call_sid,
            "stream_sid": c.stream_sid,
            "carrier": c.carrier,
            "profile": c.profile,
            "state": c.state,
            "session_id": c.session_id or None,
            "started_at": c.started_at,
            "replica": r.id,
            "replica_draining": r.draining,
        }
        for r, c in sorted(calls, key=lambda rc: rc[1].started_at)
    ]
    return web.json_response({"calls": rows, "partial": not complete, "store": cluster.store.name})


async def call_action(request: web.Request) -> web.Response:
    if not _authorized(request):
        return _unauthorized(request)
    action, call_sid = request.path.rsplit("/", 1)[1], request.match_info["call_sid"]
    if not _CALL_SID.fullmatch(call_sid):  # no carrier's call id looks otherwise; it goes into a forward's path
        return _error(404, "no live call with this call_sid")
    body = await request.read()
    cluster = request.app[CLUSTER]
    try:
        owner = await cluster.owner_of(call_sid)
    except StateUnavailable:
        return _error(503, "the shared state store is unavailable and the call is not on this replica")
    if owner is None:
        return _error(404, "no live call with this call_sid")
    if owner.replica is None:
        return _error(410, "the replica that held this call is gone", call_sid=call_sid)
    if owner.replica.id == cluster.me.id:
        status, answer = await act(request.app, action, call_sid, body)
        return web.json_response(answer, status=status)
    status, answer = await forward(request.app, owner.replica.address, owner.replica.id, action, call_sid, body)
    cluster.forwards.labels(action, "sent" if status < 500 else "failed").inc()
    return web.json_response(answer, status=status)


async def forward(
    app: web.Application, address: str, target: str, action: str, call_sid: str, body: bytes
) -> tuple[int, dict[str, Any]]:
    """POST the action to the owner's internal listener; its answer, or 410/504 when it cannot be reached."""
    cluster = app[CLUSTER]
    path = f"/internal/v1/calls/{call_sid}/{action}"
    header = sign_forward(
        cluster.key, target=target, method="POST", path=path, body=body, now=time.time(), nonce=secrets.token_hex(12)
    )
    timeout = aiohttp.ClientTimeout(total=cluster.settings.forward_timeout_s)
    try:
        async with app[HTTP].post(
            address + path, data=body, headers={HEADER: header, "Content-Type": "application/json"}, timeout=timeout
        ) as r:
            try:
                answer = await r.json(content_type=None)
            except ValueError:
                answer = {"error": (await r.text())[:200]}
            return r.status, answer if isinstance(answer, dict) else {"result": answer}
    except TimeoutError:
        log.warning("call_control.forward_failed", action=action, call_sid=call_sid, replica=target, error="timeout")
        return 504, {"error": "the replica that holds this call did not answer in time"}
    except aiohttp.ClientError as exc:
        log.warning("call_control.forward_failed", action=action, call_sid=call_sid, replica=target, error=str(exc))
        return 410, {"error": "the replica that held this call is gone", "call_sid": call_sid}


def _json_body(body: bytes) -> dict[str, Any] | None:
    if not body.strip():
        return {}
    try:
        data = json.loads(body)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


async def act(app: web.Application, action: str, call_sid: str, body: bytes) -> tuple[int, dict[str, Any]]:
    """Carry out ``action`` on a call this replica holds: (status, answer)."""
    data = _json_body(body)
    if data is None:
        return 400, {"error": "body must be a JSON object"}
    session = next(
        (s for s, _t in list(app[CALLS].active.values()) if s.started and s.summary.call_sid == call_sid), None
    )
    call = session.call if session is not None else None
    if session is None or call is None:
        if call_sid in app[PARKED]:
            return 409, {"error": "the call's stream has stopped; its agent session waits for a new stream"}
        return 404, {"error": "no live call with this call_sid"}
    answer: dict[str, Any] = {"call_sid": call_sid, "action": action, "replica": app[CLUSTER].me.id}
    if action == "hangup":
        session.request_end("api_hangup")
        log.info("call_control.hangup", call_sid=call_sid)
        return 202, {**answer, "status": "ending"}
    if action == "say":
        instructions = data.get("instructions")
        if not isinstance(instructions, str) or not instructions.strip() or len(instructions) > 4000:
            return 400, {"error": "'instructions' must be a non-empty string (at most 4000 characters)"}
        if not await call.say(instructions):
            return 409, {"error": "the agent session is not live (connecting, resuming or ending)"}
        log.info("call_control.say", call_sid=call_sid, chars=len(instructions))
        return 202, {**answer, "status": "sent"}
    destination, why = cc.check_destination(data.get("to"), call.core.profile.transfer_allow)
    if destination is None:
        return 422, {"error": why}
    announcement = data.get("announcement")
    refused = await call.transfer(destination, announcement if isinstance(announcement, str) else "")
    if refused is not None:
        return 409, {"error": refused}
    return 202, {**answer, "status": "transferring"}


# ---- internal ----------------------------------------------------------------------------------------------------
async def _verified(request: web.Request, main: web.Application) -> bytes:
    body = await request.read()
    try:
        main[CLUSTER].verifier.verify(
            request.headers.get(HEADER), method=request.method, path=request.path, body=body, now=time.time()
        )
    except ForwardRefused as exc:
        log.warning("call_control.forward_refused", reason=str(exc), path=request.path)
        main[CLUSTER].forwards.labels(request.match_info.get("action", "handover"), "refused").inc()
        raise web.HTTPForbidden(text=json.dumps({"error": str(exc)}), content_type="application/json") from None
    return body


def internal_app(main: web.Application) -> web.Application:
    """The internal listener's app: forwarded actions and re-attach hand-overs, for ``main``'s calls."""

    async def internal_action(request: web.Request) -> web.Response:
        body = await _verified(request, main)
        action, call_sid = request.match_info["action"], request.match_info["call_sid"]
        status, answer = await act(main, action, call_sid, body)
        main[CLUSTER].forwards.labels(action, "served").inc()
        return web.json_response(answer, status=status)

    async def internal_handover(request: web.Request) -> web.Response:
        await _verified(request, main)
        out = await handover(main, request.match_info["call_sid"])
        if out is None:
            return _error(404, "no parked agent session for this call here")
        return web.json_response(out)

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_post("/internal/v1/calls/{call_sid}/handover", internal_handover)
    app.router.add_post("/internal/v1/calls/{call_sid}/{action:hangup|transfer|say}", internal_action)
    return app


async def handover(app: web.Application, call_sid: str) -> dict[str, Any] | None:
    """Give up ``call_sid``'s parked agent session for a stream on another replica: close its socket without
    ``session.end`` (the session stays resumable, docs/architecture/agent-api.md#resume)."""
    calls = app[CALLS]

    def stopping() -> bool:
        return any(s.summary.call_sid == call_sid for s, _ in list(calls.active.values()))

    parked = await app[PARKED].claim(call_sid, wait_s=HANDOVER_WAIT_S, stopping=stopping)
    if parked is None:
        return None
    try:
        async with asyncio.timeout(2):
            await parked.agent.close()
    except (TimeoutError, OSError):
        pass
    app[CLUSTER].ended(call_sid, parked.stream_sid, call_over=False)
    parked_ms = round((time.monotonic() - parked.parked_at) * 1000, 1)
    log.info("call.handed_over", call_sid=call_sid, session_id=parked.session_id, parked_ms=parked_ms)
    return {
        "session_id": parked.session_id,
        "profile": parked.profile_name,
        "stream_sid": parked.stream_sid,
        "parked_ms": parked_ms,
    }


async def reserve(app: web.Application, call_sid: str) -> str | None:
    """The webhook's cluster-wide slot (``state.max_cluster_calls``), after this process reserved its own: None, or
    ``at_capacity`` (this process's reservation is given back)."""
    refusal = await app[CLUSTER].reserve(call_sid)
    if refusal is not None:
        app[CALLS].admission.unreserve(call_sid)
    return refusal


async def claim_remote(app: web.Application, owner: Replica, call_sid: str) -> HandedOver | None:
    """Ask ``owner`` for ``call_sid``'s parked agent session (this replica took the call's new stream)."""
    status, answer = await forward(app, owner.address, owner.id, "handover", call_sid, b"")
    app[CLUSTER].forwards.labels("handover", "sent" if status < 500 else "failed").inc()
    if status != 200 or not isinstance(answer.get("session_id"), str):
        log.info("call.reattach_remote_missed", call_sid=call_sid, replica=owner.id, status=status)
        return None
    return HandedOver(
        answer["session_id"],
        str(answer.get("profile", "")),
        str(answer.get("stream_sid", "")),
        float(answer.get("parked_ms", 0.0)),
    )


# ---- wiring ------------------------------------------------------------------------------------------------------
def setup(app: web.Application) -> None:
    """``app[CLUSTER]`` and the public routes; with a shared store, the internal listener for the app's lifetime."""
    settings = app[SETTINGS]
    calls = app[CALLS]
    cluster = app[CLUSTER] = Cluster(
        settings.state,
        open_store(settings.state),
        token_secret=settings.secrets.token_secret,
        token_ttl_s=settings.server.call_token_ttl_s,
        accepting=lambda: calls.accepting,
        unavailable=app[METRICS].state_unavailable,
        forwards=app[METRICS].forwards,
    )
    calls.on_accepting.append(cluster.draining_changed)
    parked = app[PARKED]
    parked.on_park.append(lambda p: cluster.parked(p.call_sid, p.stream_sid, p.session_id))
    parked.on_gone.append(cluster.ended)

    async def cluster_ctx(app: web.Application) -> AsyncIterator[None]:
        runner = None
        port: int | None = None  # no internal listener without a shared store: nothing to reach this replica at
        if settings.state.shared:
            runner = web.AppRunner(internal_app(app), access_log=None, shutdown_timeout=2.0)
            await runner.setup()
            site = web.TCPSite(runner, settings.state.internal_host, settings.state.internal_port)
            await site.start()
            port = runner.addresses[0][1]
        await cluster.start(port)
        try:
            yield
        finally:
            await cluster.stop()
            if runner is not None:
                await runner.cleanup()

    app.cleanup_ctx.append(cluster_ctx)
    app.router.add_get("/calls/live", live_calls)
    for action in ACTIONS:
        app.router.add_post(f"/calls/{{call_sid}}/{action}", call_action)

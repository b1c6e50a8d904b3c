"""The read API of call records (docs/reference/http.md#call-records): ``GET /calls``, ``GET /calls/{call_sid}``,
``GET /calls/{call_sid}/recording``. Not pure: aiohttp handlers over :mod:`gateway.records.storage`.

Same key as ``POST /calls``: ``Authorization: Bearer $GATEWAY_API_KEY`` (or HTTP Basic with the key as password,
so a browser can open a recording link); with no key configured the API is off (401). Everything is read from
the storage, so with the S3 backend any replica answers for any call. ``{call_sid}`` never matches ``live``:
``GET /calls/live`` is the live-call list of another area.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from ..keys import CALLS, HTTP, METRICS, RECORDS, SETTINGS
from .service import Records
from .settings import records_wanted
from .storage import StorageUnavailable, safe_id

__all__ = ["CALL_SID", "setup"]

#: The ``{call_sid}`` route segment: anything but ``live`` (``GET /calls/live`` is not a call).
CALL_SID = "{call_sid:(?!live$)[^/]+}"
#: Most records ``GET /calls`` lists at once.
MAX_LIST = 1000

log = structlog.get_logger("gateway.records")


def _authorized(request: web.Request) -> bool:
    key = request.app[SETTINGS].secrets.gateway_api_key
    if not key:
        return False
    header = request.headers.get("Authorization", "").encode("utf-8", "surrogateescape")
    if hmac.compare_digest(header, f"Bearer {key}".encode()):
        return True
    if header[:6].lower() == b"basic ":
        try:
            _user, _, password = base64.b64decode(header[6:], validate=True).partition(b":")
        except (binascii.Error, ValueError):
            return False
        return hmac.compare_digest(password, key.encode())
    return False


def _refuse(request: web.Request) -> web.Response | None:
    if not _authorized(request):
        log.warning("records.refused", reason="unauthorized", path=request.path)
        return web.json_response(
            {"error": "unauthorized"}, status=401, headers={"WWW-Authenticate": 'Bearer, Basic realm="call records"'}
        )
    if RECORDS not in request.app:
        return web.json_response({"error": "call records are off ([storage], docs/how-to/call-records.md)"}, status=404)
    return None


def _call_sid(request: web.Request) -> str:
    sid = request.match_info["call_sid"]
    if not safe_id(sid):
        raise web.HTTPNotFound(text='{"error": "no such call"}', content_type="application/json")
    return sid


async def get_call(request: web.Request) -> web.StreamResponse:
    if (refusal := _refuse(request)) is not None:
        return refusal
    sid = _call_sid(request)
    records = request.app[RECORDS]
    try:
        data = await records.storage.get(f"{sid}.json")
    except StorageUnavailable as exc:
        log.warning("records.storage_unavailable", call_sid=sid, error=str(exc))
        return web.json_response({"error": "storage unavailable"}, status=503)
    if data is None:
        return web.json_response({"error": "no such call"}, status=404)
    return web.Response(
        body=data,
        content_type="application/json",
        headers={"X-Record-Location": records.storage.location(f"{sid}.json")},
    )


async def get_recording(request: web.Request) -> web.StreamResponse:
    if (refusal := _refuse(request)) is not None:
        return refusal
    sid = _call_sid(request)
    records = request.app[RECORDS]
    key = f"{sid}.wav"
    local = records.storage.local_path(key)
    if local is not None:
        if not local.is_file():
            return web.json_response({"error": "no recording of this call"}, status=404)
        return web.FileResponse(local, headers={"Content-Type": "audio/wav"})
    response: web.StreamResponse | None = None
    try:
        async for chunk in records.storage.stream(key):
            if response is None:
                response = web.StreamResponse(headers={"Content-Type": "audio/wav"})
                await response.prepare(request)
            await response.write(chunk)
    except StorageUnavailable as exc:
        log.warning("records.storage_unavailable", call_sid=sid, error=str(exc))
        if response is None:
            return web.json_response({"error": "storage unavailable"}, status=503)
        raise
    if response is None:
        return web.json_response({"error": "no recording of this call"}, status=404)
    await response.write_eof()
    return response


def _since(text: str) -> float:
    """``since``: seconds since the epoch, or ISO 8601 (a naive time is UTC)."""
    try:
        return float(text)
    except ValueError:
        pass
    when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


async def list_calls(request: web.Request) -> web.Response:
    if (refusal := _refuse(request)) is not None:
        return refusal
    try:
        since = _since(request.query.get("since", "0"))
        limit = int(request.query.get("limit", "100"))
    except ValueError:
        return web.json_response({"error": "since: seconds since the epoch or ISO 8601; limit: an integer"}, status=400)
    limit = max(1, min(limit, MAX_LIST))
    try:
        objects = await request.app[RECORDS].storage.list()
    except StorageUnavailable as exc:
        log.warning("records.storage_unavailable", error=str(exc))
        return web.json_response({"error": "storage unavailable"}, status=503)
    names = {o.key for o in objects}
    found = sorted((o for o in objects if o.key.endswith(".json") and o.modified >= since), key=lambda o: -o.modified)
    calls = []
    for o in found[:limit]:
        sid = o.key.removesuffix(".json")
        calls.append(
            {
                "call_sid": sid,
                "stored_at": dt.datetime.fromtimestamp(o.modified, dt.UTC).isoformat(timespec="seconds"),
                "record": f"/calls/{sid}",
                "recording": f"/calls/{sid}/recording" if f"{sid}.wav" in names else None,
            }
        )
    return web.json_response({"calls": calls, "truncated": len(found) > limit})


def setup(app: web.Application) -> None:
    """The read API's routes, always (404 while records are off); the records themselves when the settings keep
    them (gateway.records.settings.records_wanted)."""
    app.router.add_get("/calls", list_calls)
    app.router.add_get(f"/calls/{CALL_SID}", get_call)
    app.router.add_get(f"/calls/{CALL_SID}/recording", get_recording)
    settings = app[SETTINGS]
    if not records_wanted(settings):
        return
    records = app[RECORDS] = Records(settings, app[METRICS])
    calls = app[CALLS]
    calls.on_accept.append(records.on_accept)
    calls.listeners.append(records.on_event)
    calls.on_record.append(records.on_summary)

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        async for _ in records.run(app[HTTP]):
            yield

    app.cleanup_ctx.append(ctx)

"""A stand-in for Plivo's Call API (api.plivo.com, which tests cannot reach): the live-call requests the gateway
sends (docs/how-to/call-control.md#carriers; Plivo "Call" API v1). Lives in tests/ only.

It checks what the real API would refuse, so a malformed request fails the test instead of passing silently:
- HTTP Basic auth with the Auth ID and Auth Token, and that Auth ID in the path, else 401 ``{"api_id", "error"}``;
- ``DELETE /v1/Account/{auth_id}/Call/{call_uuid}/`` (hang up): **204**, no body; a call that is over (or that this
  fake saw end) answers **404** ``{"api_id", "error": "not found"}``, as Plivo does when the caller hung up first;
- ``POST …/Call/{call_uuid}/`` (transfer): a JSON object with ``legs`` ``aleg``/``bleg``/``both`` and the matching
  ``aleg_url``/``bleg_url`` (+ optional ``*_method`` GET/POST): **202** ``{"api_id", "message": "call transferred"}``.
  Like Plivo, it then requests ``aleg_url`` (POST, form ``CallUUID``…) and keeps the XML it got, which must parse
  with a ``<Response>`` root, in :attr:`FakePlivoRest.transfers`;
- ``POST …/Call/{call_uuid}/DTMF/``: ``digits`` (and optional ``leg``): 202 ``{"message": "digits sent"}``.
Unknown fields are refused (400). Every call_uuid it has not seen end counts as live (tests do not know the
simulator's ids ahead). Every request is recorded in :attr:`FakePlivoRest.requests`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree

import aiohttp
from aiohttp import web

TRANSFER_FIELDS = {"legs", "aleg_url", "aleg_method", "bleg_url", "bleg_method"}
DTMF_FIELDS = {"digits", "leg"}
_PATH = re.compile(r"^/v1/Account/(?P<auth_id>[^/]+)/Call/(?P<call>[^/]+)/(?P<sub>DTMF/)?$")


@dataclass
class PlivoRequest:
    t: float
    method: str
    path: str
    call_uuid: str
    body: Any
    auth: tuple[str, str] | None
    content_type: str
    status: int = 0


@dataclass
class FakePlivoRest:
    auth_id: str = "MA" + "1" * 18
    auth_token: str = "plivo-rest-token"
    requests: list[PlivoRequest] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)
    transfers: dict[str, tuple[str, str]] = field(default_factory=dict)  # call_uuid -> (aleg_url, the XML it served)
    url: str = ""  # set by the fixture: the base URL to configure as [carriers.plivo] api_base_url
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.app = web.Application()
        self.app.router.add_route("*", "/{tail:.*}", self._any)

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while not pred():
                self.changed.clear()
                await self.changed.wait()

    @staticmethod
    def _json(status: int, **fields: str) -> web.Response:
        return web.json_response({"api_id": str(uuid.uuid4()), **fields}, status=status)

    async def _any(self, request: web.Request) -> web.Response:
        m = _PATH.match(request.path)
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        rec = PlivoRequest(time.monotonic(), request.method, request.path, m["call"] if m else "", body,
                           _basic(request.headers.get("Authorization", "")),
                           request.headers.get("Content-Type", ""))  # fmt: skip
        self.requests.append(rec)
        resp = await self._answer(rec, m)
        rec.status = resp.status
        self.changed.set()
        return resp

    async def _answer(self, rec: PlivoRequest, m: re.Match[str] | None) -> web.Response:
        if rec.auth != (self.auth_id, self.auth_token) or (m is not None and m["auth_id"] != self.auth_id):
            return self._json(401, error="Authentication failed")
        if m is None:
            return self._json(404, error="not found")
        if rec.call_uuid in self.ended:
            return self._json(404, error="not found")
        if m["sub"]:  # DTMF
            if rec.method != "POST" or not isinstance(rec.body, dict):
                return self._json(400, error="expected a JSON object")
            if set(rec.body) - DTMF_FIELDS or not re.fullmatch(r"[0-9A-D*#]+", str(rec.body.get("digits", ""))):
                return self._json(400, error="invalid DTMF request")
            return self._json(202, message="digits sent")
        if rec.method == "DELETE":
            self.ended.add(rec.call_uuid)
            return web.Response(status=204)
        if rec.method != "POST":
            return self._json(405, error="method not allowed")
        return await self._transfer(rec)

    async def _transfer(self, rec: PlivoRequest) -> web.Response:
        b = rec.body
        if not rec.content_type.startswith("application/json") or not isinstance(b, dict):
            return self._json(400, error="expected a JSON object")
        if set(b) - TRANSFER_FIELDS:
            return self._json(400, error=f"unknown parameters {sorted(set(b) - TRANSFER_FIELDS)}")
        legs = b.get("legs", "aleg")
        if legs not in ("aleg", "bleg", "both"):
            return self._json(400, error="legs must be aleg, bleg or both")
        for leg in ("aleg", "bleg"):
            if legs in (leg, "both") and not str(b.get(f"{leg}_url", "")).startswith(("http://", "https://")):
                return self._json(400, error=f"{leg}_url is required for legs={legs}")
            if b.get(f"{leg}_method", "POST") not in ("GET", "POST"):
                return self._json(400, error=f"{leg}_method must be GET or POST")
        url, method = str(b["aleg_url"]), str(b.get("aleg_method", "POST"))
        # Plivo fetches the new XML of the caller's leg (here at once, so a test sees what the call would run).
        async with aiohttp.ClientSession() as http:
            form = {"CallUUID": rec.call_uuid, "Event": "Transfer", "CallStatus": "in-progress"}
            kw: dict[str, Any] = {"data": form} if method == "POST" else {"params": form}
            async with http.request(method, url, **kw) as resp:
                xml, status = await resp.text(), resp.status
        if status != 200 or not _parses(xml):
            return self._json(400, error=f"aleg_url answered {status}: not Plivo XML")
        self.transfers[rec.call_uuid] = (url, xml)
        return self._json(202, message="call transferred")


def _parses(xml: str) -> bool:
    try:
        return ElementTree.fromstring(xml).tag == "Response"
    except ElementTree.ParseError:
        return False


def _basic(header: str) -> tuple[str, str] | None:
    if not header.startswith("Basic "):
        return None
    try:
        user, _, pw = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except ValueError:
        return None
    return user, pw

"""A stand-in for Telnyx's Call Control API (api.telnyx.com, which tests cannot reach): the call commands the gateway
sends (docs/how-to/call-control.md#carriers; Telnyx "Call Commands", API v2). Lives in tests/ only.

It checks what the real API would refuse, so a malformed request fails the test instead of passing silently:
- ``Authorization: Bearer <API key>``, else 401 with Telnyx's error body (code 10009);
- ``POST /v2/calls/{call_control_id}/actions/{hangup|transfer|send_dtmf}`` only, with an
  ``application/json`` object body; unknown fields, a transfer without ``to``, DTMF without ``digits`` are 422;
- a command on a call that is over answers **422 with code 90018** ("Call has already ended"), as Telnyx does when
  the caller hung up first.
Success is 200 ``{"data": {"result": "ok"}}``. Telnyx answers commands for any call of the account; the fake
treats every ``call_control_id`` it has not seen end as a live call (tests do not know the simulator's ids ahead).

Every request is recorded (method, path, JSON body, bearer key) in :attr:`FakeTelnyxRest.requests`;
``fail_next`` scripts error answers.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

ALLOWED = {
    "hangup": ({"client_state", "command_id"}, set()),
    "transfer": (
        {
            "to",
            "from",
            "from_display_name",
            "timeout_secs",
            "time_limit_secs",
            "client_state",
            "command_id",
            "target_leg_client_state",
            "webhook_url",
            "webhook_url_method",
            "custom_headers",
            "sip_headers",
        },
        {"to"},
    ),  # fmt: skip
    "send_dtmf": ({"digits", "duration_millis", "client_state", "command_id"}, {"digits"}),
}


@dataclass
class TelnyxRequest:
    t: float
    method: str
    path: str
    call_control_id: str
    action: str
    body: Any
    bearer: str | None
    content_type: str
    status: int = 0


@dataclass
class FakeTelnyxRest:
    api_key: str = "KEY-telnyx-test"
    requests: list[TelnyxRequest] = field(default_factory=list)
    ended: set[str] = field(default_factory=set)  # call_control_ids that are over
    transfers: dict[str, str] = field(default_factory=dict)  # call_control_id -> where it was transferred
    fail_next: list[tuple[int, str, str]] = field(default_factory=list)  # (HTTP status, Telnyx code, title)
    url: str = ""  # set by the fixture: the base URL to configure as [carriers.telnyx] api_base_url
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
    def _error(status: int, code: str, title: str, detail: str = "") -> web.Response:
        return web.json_response({"errors": [{"code": code, "title": title, "detail": detail or title}]}, status=status)

    async def _any(self, request: web.Request) -> web.Response:
        parts = request.path.split("/")  # "", "v2", "calls", id, "actions", action
        valid_path = len(parts) == 6 and parts[1:3] == ["v2", "calls"] and parts[4] == "actions"
        call_id, action = (parts[3], parts[5]) if valid_path else ("", "")
        auth = request.headers.get("Authorization", "")
        ctype = request.headers.get("Content-Type", "")
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw
        rec = TelnyxRequest(time.monotonic(), request.method, request.path, call_id, action, body,
                            auth[7:] if auth.startswith("Bearer ") else None, ctype)  # fmt: skip
        self.requests.append(rec)
        resp = self._answer(request.method, rec, valid_path)
        rec.status = resp.status
        self.changed.set()
        return resp

    def _answer(self, method: str, rec: TelnyxRequest, valid_path: bool) -> web.Response:
        if rec.bearer != self.api_key:
            return self._error(401, "10009", "Authentication failed", "The API key is missing or wrong.")
        if method != "POST" or not valid_path or rec.action not in ALLOWED:
            return self._error(404, "10005", "Resource not found", f"{method} {rec.path}")
        if not rec.content_type.startswith("application/json") or not isinstance(rec.body, dict):
            return self._error(422, "10015", "Bad Request", "expected a JSON object body")
        allowed, required = ALLOWED[rec.action]
        unknown = set(rec.body) - allowed
        if unknown or not required <= set(rec.body):
            return self._error(422, "10015", "Invalid parameters", f"unknown {sorted(unknown)}, required {required}")
        if self.fail_next:
            status, code, title = self.fail_next.pop(0)
            return self._error(status, code, title)
        if rec.call_control_id in self.ended:
            return self._error(
                422, "90018", "Call has already ended", "This call is no longer active and can't receive commands."
            )
        if rec.action == "hangup":
            self.ended.add(rec.call_control_id)
        elif rec.action == "transfer":
            self.transfers[rec.call_control_id] = str(rec.body["to"])
        return web.json_response({"data": {"result": "ok"}})

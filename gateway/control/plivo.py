"""Plivo's Call resource for a live call: hang up, transfer, send DTMF. A thin async shell over aiohttp; the request
shapes and the error parsing above the class are pure (docs/how-to/call-control.md#carriers, Plivo "Call" API).

Every request goes to ``https://api.plivo.com/v1/Account/{auth_id}/Call/{call_uuid}/…`` with HTTP Basic auth
(``PLIVO_AUTH_ID`` : ``PLIVO_AUTH_TOKEN``) and a JSON body:

- hang up: ``DELETE …/Call/{call_uuid}/``, answered **204** with no body. A call that is over (or unknown) answers
  **404**, which the hang-up reports as "already ended";
- transfer: ``POST …/Call/{call_uuid}/`` with ``{"legs": "aleg", "aleg_url": URL, "aleg_method": "POST"}``, answered
  202: Plivo fetches ``URL`` and runs the Plivo XML it returns on the caller's leg, which ends our ``<Stream>``. Plivo
  has no inline-XML transfer, so the gateway serves that XML itself (:mod:`gateway.control.dial`);
- DTMF: ``POST …/Call/{call_uuid}/DTMF/`` with ``{"digits": "…", "leg": "aleg"}``, answered 202.

Failures answer JSON ``{"api_id", "error"}`` (Plivo has no numeric error codes): each is a
:class:`gateway.errors.CallControlFailed` with the HTTP status and the ``error`` text. The call's id is the stream
``start``'s ``callId`` (the answer webhook's ``CallUUID``). Not retried (see :mod:`gateway.control.telnyx`).
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import aiohttp

from ..errors import CallControlFailed
from .http import DEFAULT_TIMEOUT_S, send

__all__ = ["DEFAULT_BASE_URL", "PlivoCallControl", "call_path", "dtmf_body", "parse_error", "transfer_body"]

DEFAULT_BASE_URL = "https://api.plivo.com"
_ID = re.compile(r"[A-Za-z0-9_\-]{1,64}")
_DTMF = re.compile(r"[0-9A-D*#]{1,64}")


def call_path(auth_id: str, call_uuid: str, sub: str = "") -> str:
    for kind, value in (("auth_id", auth_id), ("call_uuid", call_uuid)):
        if not _ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a Plivo {kind}")
    return f"/v1/Account/{auth_id}/Call/{call_uuid}/" + (f"{sub}/" if sub else "")


def transfer_body(aleg_url: str) -> dict[str, Any]:
    return {"legs": "aleg", "aleg_url": aleg_url, "aleg_method": "POST"}


def dtmf_body(digits: str) -> dict[str, Any]:
    if not _DTMF.fullmatch(digits):
        raise ValueError("Plivo DTMF digits are 0-9, A-D, * and # (1 to 64)")
    return {"digits": digits, "leg": "aleg"}


def parse_error(status: int, body: str) -> CallControlFailed:
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict) and isinstance(obj.get("error"), str):
        return CallControlFailed(status, None, obj["error"][:200])
    return CallControlFailed(status, None, body[:200] or f"HTTP {status}")


class PlivoCallControl:
    """One Plivo account's call control. ``http`` is the app's shared ``aiohttp.ClientSession``; ``dial_url``
    turns a destination into the URL of a Plivo XML ``<Dial>`` document the gateway serves."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        auth_id: str,
        auth_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._http = http
        self.auth_id = auth_id
        self._authorization = "Basic " + base64.b64encode(f"{auth_id}:{auth_token}".encode()).decode("ascii")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"PlivoCallControl(auth_id={self.auth_id!r}, base_url={self.base_url!r})"  # never the token

    async def hang_up(self, call_uuid: str) -> bool:
        """True if this request ended the call, False if it had already ended (404)."""
        try:
            await self._request("DELETE", self._path(call_uuid), None)
        except CallControlFailed as exc:
            if exc.status == 404:
                return False
            raise
        return True

    async def transfer(self, call_uuid: str, aleg_url: str) -> None:
        await self._request("POST", self._path(call_uuid), transfer_body(aleg_url))

    async def send_dtmf(self, call_uuid: str, digits: str) -> None:
        try:
            body = dtmf_body(digits)
        except ValueError as exc:  # nothing was sent
            raise CallControlFailed(0, None, str(exc)) from None
        await self._request("POST", self._path(call_uuid, "DTMF"), body)

    def _path(self, call_uuid: str, sub: str = "") -> str:
        try:
            return call_path(self.auth_id, call_uuid, sub)
        except ValueError as exc:  # nothing was sent
            raise CallControlFailed(0, None, str(exc)) from None

    async def _request(self, method: str, path: str, body: dict[str, Any] | None) -> None:
        status, text = await send(
            self._http,
            method,
            self.base_url + path,
            authorization=self._authorization,
            json_body=body,
            timeout_s=self.timeout_s,
        )
        if not 200 <= status < 300:
            raise parse_error(status, text)

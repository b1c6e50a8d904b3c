"""Telnyx Call Control commands: hang up, transfer, send DTMF. A thin async shell over aiohttp; the request shapes
and the error parsing above the class are pure (docs/how-to/call-control.md#carriers, Telnyx "Call Commands").

All three are ``POST https://api.telnyx.com/v2/calls/{call_control_id}/actions/<command>`` with a JSON body and the
API key as a bearer token (``Authorization: Bearer <TELNYX_API_KEY>``):

- ``hangup``: body ``{}``; the call ends (Telnyx then sends ``call.hangup``);
- ``transfer``: body ``{"to": "+1…" | "sip:…"}``; Telnyx dials the destination and bridges the caller to it;
- ``send_dtmf``: body ``{"digits": "…", "duration_millis": 250}``.

A command Telnyx accepted answers 200 ``{"data": {"result": "ok"}}``. Failures answer ``{"errors": [{"code",
"title", "detail"}]}``; a call that is over answers **422 with code 90018** ("Call has already ended"), which the
hang-up reports as "already ended" instead of a failure. The call's id is the ``call_control_id`` (``v3:…``), which the
stream's ``start`` carries (and a TeXML webhook's ``CallSid``). Every failure is a
:class:`gateway.errors.CallControlFailed` carrying Telnyx's HTTP status and numeric code. Not retried: a transfer
that reached Telnyx must not run twice, and a failed hang-up still ends the call by closing its stream.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote

import aiohttp

from ..errors import CallControlFailed
from .http import DEFAULT_TIMEOUT_S, send

__all__ = [
    "CODE_ALREADY_ENDED",
    "DEFAULT_BASE_URL",
    "TelnyxCallControl",
    "action_path",
    "dtmf_body",
    "parse_error",
    "transfer_body",
]

DEFAULT_BASE_URL = "https://api.telnyx.com"
#: "Call has already ended": the 422 a command on a finished call gets.
CODE_ALREADY_ENDED = 90018
# call_control_id: "v3:" + base64url-ish characters (older ids "v2:…"); nothing that could change the URL's path.
_CALL_CONTROL_ID = re.compile(r"[A-Za-z0-9:_\-]{1,200}")
_DTMF = re.compile(r"[0-9A-D*#wW]{1,64}")


def action_path(call_control_id: str, action: str) -> str:
    if not _CALL_CONTROL_ID.fullmatch(call_control_id):
        raise ValueError(f"{call_control_id!r} is not a Telnyx call_control_id")
    return f"/v2/calls/{quote(call_control_id, safe=':')}/actions/{action}"


def transfer_body(destination: str) -> dict[str, Any]:
    """An E.164 number or a SIP URI, as the transfer tool normalised it."""
    return {"to": destination}


def dtmf_body(digits: str, duration_ms: int = 250) -> dict[str, Any]:
    if not _DTMF.fullmatch(digits):
        raise ValueError("Telnyx DTMF digits are 0-9, A-D, *, # and w/W pauses (1 to 64)")
    return {"digits": digits, "duration_millis": duration_ms}


def parse_error(status: int, body: str) -> CallControlFailed:
    """A non-2xx answer: Telnyx's first ``errors[]`` entry (code as a number, detail or title), else the text."""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    errors = obj.get("errors") if isinstance(obj, dict) else None
    first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else None
    if first is None:
        return CallControlFailed(status, None, body[:200] or f"HTTP {status}")
    raw = first.get("code")
    code = int(raw) if isinstance(raw, (str, int)) and not isinstance(raw, bool) and str(raw).isdigit() else None
    return CallControlFailed(status, code, str(first.get("detail") or first.get("title") or f"HTTP {status}"))


def already_ended(exc: CallControlFailed) -> bool:
    return exc.status == 422 and exc.code == CODE_ALREADY_ENDED


class TelnyxCallControl:
    """One Telnyx account's Call Control commands. ``http`` is the app's shared ``aiohttp.ClientSession``."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        api_key: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self._http = http
        self._authorization = f"Bearer {api_key}"
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"TelnyxCallControl(base_url={self.base_url!r})"  # never the key

    async def hang_up(self, call_control_id: str) -> bool:
        """True if this command ended the call, False if it had already ended (422/90018)."""
        try:
            await self._command(call_control_id, "hangup", {})
        except CallControlFailed as exc:
            if already_ended(exc):
                return False
            raise
        return True

    async def transfer(self, call_control_id: str, destination: str) -> None:
        await self._command(call_control_id, "transfer", transfer_body(destination))

    async def send_dtmf(self, call_control_id: str, digits: str) -> None:
        try:
            body = dtmf_body(digits)
        except ValueError as exc:  # nothing was sent
            raise CallControlFailed(0, None, str(exc)) from None
        await self._command(call_control_id, "send_dtmf", body)

    async def _command(self, call_control_id: str, action: str, body: dict[str, Any]) -> None:
        try:
            path = action_path(call_control_id, action)
        except ValueError as exc:  # nothing was sent
            raise CallControlFailed(0, None, str(exc)) from None
        status, text = await send(
            self._http,
            "POST",
            self.base_url + path,
            authorization=self._authorization,
            json_body=body,
            timeout_s=self.timeout_s,
        )
        if not 200 <= status < 300:
            raise parse_error(status, text)

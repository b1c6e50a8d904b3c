"""Twilio's REST API for call control: hang up, redirect (transfer), create (outbound). A thin async shell over
aiohttp; the request shapes and the error parsing above the class are pure.

The three requests (docs/architecture/twilio-media-streams.md#ending-a-call, #transfer and #call-status; Twilio
"Call resource", API version 2010-04-01), all
``application/x-www-form-urlencoded``, HTTP Basic auth with the Account SID and the Auth Token:

- hang up:  ``POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` with ``Status=completed`` (``canceled`` only applies
  to queued or ringing calls). A 404 whose body says code 20404 means the call is already over: the hang-up is
  idempotent and reports it as ``already_ended`` (pipecat #2145: the caller hung up first).
- redirect: the same URL with ``Twiml=<Response>…</Response>`` (or ``Url=`` + ``Method=``). It replaces the call's
  TwiML at once; the ``<Connect><Stream>`` ends (Twilio sends ``stop``, the socket closes).
- create:   ``POST /2010-04-01/Accounts/{AC}/Calls.json`` with ``To``, ``From``, ``Twiml`` or ``Url``,
  ``StatusCallback``, ``StatusCallbackMethod`` and one ``StatusCallbackEvent`` field per event (repeated key).

Errors: Twilio answers failures with JSON ``{"code", "message", "more_info", "status"}``; any non-2xx becomes a
:class:`TwilioRestError` carrying them. A connection failure, a timeout or an unreadable answer is a
:class:`TwilioUnavailable` (a subclass, so callers may catch one type). Retrying: only the hang-up retries (once,
on unavailability, 429 or 5xx) because ``Status=completed`` is idempotent; a create is never retried (that could
ring the callee twice). The base URL is configurable (``[twilio] api_base_url``) so tests point it at a local fake;
the credentials come from the environment via :class:`gateway.config.Secrets` and are never logged.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from ..errors import GatewayError

__all__ = [
    "DEFAULT_BASE_URL",
    "API_VERSION",
    "CALL_STATUS_EVENTS",
    "CODE_NOT_FOUND",
    "CallResource",
    "TwilioRest",
    "TwilioRestError",
    "TwilioUnavailable",
    "call_path",
    "calls_path",
    "create_call_form",
    "hangup_form",
    "parse_error",
    "redirect_form",
]

DEFAULT_BASE_URL = "https://api.twilio.com"
API_VERSION = "2010-04-01"
#: "The requested resource … was not found": for a call, it has ended (or never existed on this account).
CODE_NOT_FOUND = 20404
#: ``StatusCallbackEvent`` values for a created call (docs/architecture/twilio-media-streams.md#call-status).
CALL_STATUS_EVENTS = ("initiated", "ringing", "answered", "completed")
# Path segments: real SIDs are two letters + 32 hex; accept any short token of safe characters (test tools,
# Twilio-compatible carriers) but nothing that could change the URL's path.
_SID = re.compile(r"[A-Za-z0-9_\-]{1,64}")


class TwilioRestError(GatewayError):
    """Twilio answered a REST request with an error (``status`` HTTP status; ``code``, ``message``, ``more_info``
    from the JSON body when it had one)."""

    def __init__(self, status: int, code: int | None, message: str, more_info: str = "") -> None:
        super().__init__(f"Twilio REST {status}" + (f" (code {code})" if code is not None else "") + f": {message}")
        self.status = status
        self.code = code
        self.message = message
        self.more_info = more_info

    @property
    def already_ended(self) -> bool:
        """404 + 20404: the call is no longer there (over, or unknown to this account)."""
        return self.status == 404 and self.code == CODE_NOT_FOUND

    @property
    def retryable(self) -> bool:
        return self.status == 429 or self.status >= 500


class TwilioUnavailable(TwilioRestError):
    """Twilio could not be reached, did not answer in time, or answered something unreadable (``status`` 0 when
    there was no answer at all)."""

    @property
    def retryable(self) -> bool:
        return True


@dataclass(frozen=True)
class CallResource:
    """The fields of a Call resource the gateway uses; ``raw`` keeps the whole JSON."""

    sid: str
    status: str = ""
    to: str = ""
    from_: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CallResource:
        sid = obj.get("sid")
        if not isinstance(sid, str) or not sid:
            raise TwilioUnavailable(0, None, "Call resource without a sid")
        return cls(
            sid=sid,
            status=str(obj.get("status") or ""),
            to=str(obj.get("to") or ""),
            from_=str(obj.get("from") or ""),
            raw=dict(obj),
        )


# ---- pure request shapes ---------------------------------------------------------------------------------------
def _check_sid(kind: str, sid: str) -> str:
    if not _SID.fullmatch(sid):
        raise ValueError(f"{kind} {sid!r} is not a SID")
    return sid


def calls_path(account_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{_check_sid('account', account_sid)}/Calls.json"


def call_path(account_sid: str, call_sid: str) -> str:
    return f"/{API_VERSION}/Accounts/{_check_sid('account', account_sid)}/Calls/{_check_sid('call', call_sid)}.json"


def hangup_form() -> list[tuple[str, str]]:
    return [("Status", "completed")]


def redirect_form(*, twiml: str | None = None, url: str | None = None, method: str = "POST") -> list[tuple[str, str]]:
    if (twiml is None) == (url is None):
        raise ValueError("redirect needs exactly one of twiml or url")
    if twiml is not None:
        return [("Twiml", twiml)]
    assert url is not None
    return [("Url", url), ("Method", method)]


def create_call_form(
    *,
    to: str,
    from_: str,
    twiml: str | None = None,
    url: str | None = None,
    method: str = "POST",
    status_callback: str | None = None,
    status_callback_events: Iterable[str] = CALL_STATUS_EVENTS,
    status_callback_method: str = "POST",
    timeout_s: int | None = None,
) -> list[tuple[str, str]]:
    if (twiml is None) == (url is None):
        raise ValueError("create needs exactly one of twiml or url")
    form = [("To", to), ("From", from_)]
    form += [("Twiml", twiml)] if twiml is not None else [("Url", url or ""), ("Method", method)]
    if status_callback:
        form.append(("StatusCallback", status_callback))
        form.append(("StatusCallbackMethod", status_callback_method))
        form += [("StatusCallbackEvent", e) for e in status_callback_events]
    if timeout_s is not None:
        form.append(("Timeout", str(timeout_s)))  # seconds to let it ring
    return form


def parse_error(status: int, body: str) -> TwilioRestError:
    """A non-2xx answer as an exception; Twilio's JSON error body when there is one, the raw text otherwise."""
    try:
        obj = json.loads(body)
    except ValueError:
        obj = None
    if isinstance(obj, dict):
        code = obj.get("code")
        return TwilioRestError(
            status,
            code if isinstance(code, int) and not isinstance(code, bool) else None,
            str(obj.get("message") or body[:200]),
            str(obj.get("more_info") or ""),
        )
    return TwilioRestError(status, None, body[:200] or f"HTTP {status}")


# ---- the shell -------------------------------------------------------------------------------------------------
class TwilioRest:
    """One account's REST client. ``http`` is the app's shared ``aiohttp.ClientSession`` (not owned here)."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        account_sid: str,
        auth_token: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        timeout_s: float = 10.0,
        retry_delay_s: float = 0.5,
    ) -> None:
        _check_sid("account", account_sid)
        self._http = http
        self.account_sid = account_sid
        # HTTP Basic (RFC 7617), encoded here: aiohttp 3.14 deprecates its BasicAuth helper.
        self._authorization = "Basic " + base64.b64encode(f"{account_sid}:{auth_token}".encode()).decode("ascii")
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._retry_delay_s = retry_delay_s

    def __repr__(self) -> str:
        return f"TwilioRest(account_sid={self.account_sid!r}, base_url={self.base_url!r})"  # never the token

    async def hang_up(self, call_sid: str) -> bool:
        """End a live call. True if this request ended it, False if it had already ended (20404). Raises
        :class:`TwilioRestError` otherwise (after one retry when the failure is retryable)."""
        path = call_path(self.account_sid, call_sid)
        for attempt in (1, 2):
            try:
                await self._post(path, hangup_form())
                return True
            except TwilioRestError as exc:
                if exc.already_ended:
                    return False
                if attempt == 2 or not exc.retryable:
                    raise
            await asyncio.sleep(self._retry_delay_s)
        raise AssertionError("unreachable")  # pragma: no cover

    async def redirect(
        self, call_sid: str, *, twiml: str | None = None, url: str | None = None, method: str = "POST"
    ) -> CallResource:
        """Replace the live call's TwiML (transfer). Not retried: a redirect that did reach Twilio must not run
        twice."""
        obj = await self._post(
            call_path(self.account_sid, call_sid), redirect_form(twiml=twiml, url=url, method=method)
        )
        return CallResource.from_json(obj)

    async def create_call(
        self,
        *,
        to: str,
        from_: str,
        twiml: str | None = None,
        url: str | None = None,
        status_callback: str | None = None,
        status_callback_events: Iterable[str] = CALL_STATUS_EVENTS,
        timeout_s: int | None = None,
        extra_form: Iterable[tuple[str, str]] = (),
    ) -> CallResource:
        """Place an outbound call. Never retried (a retry could ring the callee twice). ``extra_form``: more of
        Twilio's create-call parameters (answering-machine detection: gateway.amd)."""
        form = create_call_form(
            to=to,
            from_=from_,
            twiml=twiml,
            url=url,
            status_callback=status_callback,
            status_callback_events=status_callback_events,
            timeout_s=timeout_s,
        )
        form += extra_form
        return CallResource.from_json(await self._post(calls_path(self.account_sid), form))

    async def _post(self, path: str, form: list[tuple[str, str]]) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.timeout_s):
                async with self._http.post(
                    self.base_url + path,
                    data=form,
                    headers={"Accept": "application/json", "Authorization": self._authorization},
                ) as resp:
                    body = await resp.text()
                    status = resp.status
        except TimeoutError:
            raise TwilioUnavailable(0, None, f"no answer within {self.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise TwilioUnavailable(0, None, f"request failed: {exc.__class__.__name__}") from None
        if not 200 <= status < 300:
            raise parse_error(status, body)
        try:
            obj = json.loads(body)
        except ValueError:
            raise TwilioUnavailable(status, None, "answer is not JSON") from None
        if not isinstance(obj, dict):
            raise TwilioUnavailable(status, None, "answer is not a JSON object")
        return obj

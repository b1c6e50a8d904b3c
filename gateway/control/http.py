"""One JSON request to a carrier's REST API, as the Telnyx and Plivo clients make it. Not pure: aiohttp.

Every failure comes back as :class:`gateway.errors.CallControlFailed` (status 0: nothing answered, or in time), so the
call session handles one exception type whatever the carrier; a 2xx answer is returned as (status, body text) for
the carrier's module to read. Credentials travel only in the ``Authorization`` header the caller builds; nothing here
logs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp

from ..errors import CallControlFailed

__all__ = ["DEFAULT_TIMEOUT_S", "send"]

#: Per-request timeout of the Telnyx and Plivo clients (Twilio's is ``[twilio] request_timeout_s``).
DEFAULT_TIMEOUT_S = 10.0


async def send(
    http: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    authorization: str,
    json_body: Mapping[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> tuple[int, str]:
    """(HTTP status, body) of one request. Raises CallControlFailed(0, …) when there is no answer in time."""
    headers = {"Accept": "application/json", "Authorization": authorization}
    try:
        async with asyncio.timeout(timeout_s):
            async with http.request(method, url, json=json_body, headers=headers) as resp:
                return resp.status, await resp.text()
    except TimeoutError:
        raise CallControlFailed(0, None, f"no answer within {timeout_s:g} s") from None
    except aiohttp.ClientError as exc:
        raise CallControlFailed(0, None, f"request failed: {exc.__class__.__name__}") from None

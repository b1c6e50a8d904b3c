"""Server events on the wire: ids, the event envelope, ``session.error``, compact JSON. Pure.

Events are plain dicts built with the ``timestamp`` the caller passes (every event carries one, float epoch
seconds, as live: docs/reference/local-agent-api.md#implemented); ids take their randomness from ``rand`` so tests
can pass a deterministic one.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Callable, Mapping
from typing import Any, TypeAlias

__all__ = [
    "RandHex",
    "is_int",
    "is_number",
    "json_dumps",
    "new_call_id",
    "new_item_id",
    "new_reply_id",
    "new_session_id",
    "server_event",
    "session_error",
]

#: ``rand(n)`` returns n random bytes as hex.
RandHex: TypeAlias = Callable[[int], str]


def new_session_id(rand: RandHex = secrets.token_hex) -> str:
    return "sess_" + rand(16)


def new_reply_id(rand: RandHex = secrets.token_hex) -> str:
    return "resp_" + rand(16)


def new_item_id(rand: RandHex = secrets.token_hex) -> str:
    return "msg_" + rand(16)


def new_call_id(rand: RandHex = secrets.token_hex) -> str:
    # The managed-LLM shape the live service uses: chatcmpl-tool-<16 hex>
    # (docs/reference/local-agent-api.md#implemented, Tools).
    return "chatcmpl-tool-" + rand(8)


def server_event(type_: str, now: float, **fields: Any) -> dict[str, Any]:
    """One server event; every event carries ``timestamp`` as float epoch seconds (live behaviour)."""
    event: dict[str, Any] = {"type": type_}
    event.update(fields)
    event["timestamp"] = float(now)
    return event


def session_error(
    code: str, message: str, *, now: float, param: str | None = None, session_id: str | None = None
) -> dict[str, Any]:
    """``session.error`` in the live shape (docs/reference/local-agent-api.md#auth): lower-case code; ``param``,
    ``session_id`` always present."""
    return server_event("session.error", now, code=code.lower(), message=message, param=param, session_id=session_id)


def json_dumps(event: Mapping[str, Any]) -> str:
    """Compact JSON for the wire."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


def is_number(v: object) -> bool:
    """A finite JSON number (``true``/``false`` are not numbers, although Python's ``bool`` is an ``int``)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)

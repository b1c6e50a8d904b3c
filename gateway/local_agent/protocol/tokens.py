"""Credentials of the local agent: the API key, minted tokens, resume tokens, and ``GET /v1/token``. Pure.

Tokens are stateless HMAC-SHA256 signatures under the runtime's ``token_secret``, checked with ``now`` passed in;
the live service's rules, copied here, are in docs/reference/local-agent-api.md#auth.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from gateway.errors import RemoteProtocolError

from .wire import RandHex, is_int, is_number

__all__ = [
    "Grant",
    "TokenRequestInvalid",
    "authenticate",
    "mint_resume_token",
    "mint_token",
    "validate_token_request",
    "verify_token",
]

_TOKEN_PREFIX: Final = "lat1"


@dataclass(frozen=True, slots=True)
class Grant:
    """Who opened the socket. ``kind="resume"``: only ``session.resume`` of ``session_id`` is allowed."""

    kind: Literal["key", "token", "resume"]
    session_id: str | None = None
    max_session_s: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest())


def _make_token(secret: bytes, claims: Mapping[str, Any]) -> str:
    body = f"{_TOKEN_PREFIX}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{body}.{_sign(secret, body)}"


def mint_token(
    secret: bytes, *, now: float, expires_in_s: int, max_session_s: int | None, rand: RandHex = secrets.token_hex
) -> str:
    """A stateless HMAC-signed temporary token, redeemable until ``now + expires_in_s``
    (docs/reference/local-agent-api.md#auth).

    Not single use: the live service let one token open several sessions inside its window
    (docs/reference/local-agent-api.md#auth), so a token is a bearer credential for its whole window.
    """
    claims = {"k": "t", "exp": now + expires_in_s, "max": max_session_s, "n": rand(8)}
    return _make_token(secret, claims)


def mint_resume_token(secret: bytes, *, session_id: str, expires_at: float) -> str:
    """``session.ready.resume_token``: a credential that may only resume ``session_id``
    (docs/reference/local-agent-api.md#auth)."""
    return _make_token(secret, {"k": "r", "sid": session_id, "exp": expires_at})


def verify_token(secret: bytes, token: str, *, now: float) -> Grant | None:
    """The grant a token carries, or ``None`` if it is forged, malformed or expired."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _TOKEN_PREFIX:
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, body), parts[2]):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not is_number(claims.get("exp")) or now >= claims["exp"]:
        return None
    if claims.get("k") == "t":
        max_s = claims.get("max")
        return Grant("token", max_session_s=max_s if is_int(max_s) else None)
    if claims.get("k") == "r" and isinstance(claims.get("sid"), str):
        return Grant("resume", session_id=claims["sid"])
    return None


def _strip_bearer(value: str) -> str:
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value


def authenticate(
    authorization: str | None, query_token: str | None, *, api_key: str, secret: bytes, now: float
) -> Grant | None:
    """Check the upgrade's credentials (docs/reference/local-agent-api.md#auth): ``Authorization: Bearer <key>`` or the
    raw key, or ``?token=`` carrying a minted token or the key itself. A token (or a resume token) in the header is
    accepted too."""
    for raw in (authorization, query_token):
        if not raw:
            continue
        cred = _strip_bearer(raw)
        if not cred:
            continue
        if hmac.compare_digest(cred.encode(), api_key.encode()):
            return Grant("key")
        grant = verify_token(secret, cred, now=now)
        if grant is not None:
            return grant
    return None


class TokenRequestInvalid(RemoteProtocolError):
    """``GET /v1/token`` failed validation: ``detail`` is the FastAPI 422 list (live shape,
    docs/reference/local-agent-api.md#auth). The client's mistake, as a :class:`ProtocolError` is on the socket."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.detail = detail


def _int_param(
    query: Mapping[str, str], name: str, lo: int, hi: int, required: bool, errors: list[dict[str, Any]]
) -> int | None:
    loc = ["query", name]
    raw = query.get(name)
    if raw is None:
        if required:
            errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": loc,
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        )
        return None
    if value < lo:
        errors.append(
            {
                "type": "greater_than_equal",
                "loc": loc,
                "msg": f"Input should be greater than or equal to {lo}",
                "input": raw,
                "ctx": {"ge": lo},
            }
        )
        return None
    if value > hi:
        errors.append(
            {
                "type": "less_than_equal",
                "loc": loc,
                "msg": f"Input should be less than or equal to {hi}",
                "input": raw,
                "ctx": {"le": hi},
            }
        )
        return None
    return value


def validate_token_request(authorization: str | None, query: Mapping[str, str]) -> tuple[str, int, int | None]:
    """``GET /v1/token`` parameters → ``(credential, expires_in_seconds, max_session_duration_seconds)``.

    Raises :class:`TokenRequestInvalid` with every problem at once, as FastAPI does (missing auth header or an
    out-of-range parameter → 422, docs/reference/local-agent-api.md#auth). Whether the credential is the right key is
    the caller's check (→ 404).
    """
    errors: list[dict[str, Any]] = []
    cred = _strip_bearer(authorization) if authorization else ""
    if not cred:
        errors.append({"type": "missing", "loc": ["header", "authorization"], "msg": "Field required", "input": None})
    expires = _int_param(query, "expires_in_seconds", 1, 600, True, errors)
    max_session = _int_param(query, "max_session_duration_seconds", 60, 10800, False, errors)
    if errors:
        raise TokenRequestInvalid(errors)
    assert expires is not None
    return cred, expires, max_session

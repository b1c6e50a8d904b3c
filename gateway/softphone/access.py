"""Who may use the softphone. The dial endpoint mints call tokens, and every call opens an agent session (on the
operator's API key with a cloud agent), so a reachable softphone is a door into the agent.

- **Credential** (only when the gateway has a public URL; ``auto`` never serves one then, ``on`` must): the operator
  key GATEWAY_API_KEY, as HTTP Basic auth (any user name, the key as password: the browser shows its own login
  prompt, caches the answer for the origin and sends it on the page's fetch, EventSource and WebSocket requests) or
  ``Authorization: Bearer <key>`` (scripts). Checked on every softphone route, page and assets included, so an
  unauthenticated visitor learns nothing but the realm.
- **Same origin** (the routes that act: dial, events, stream): a request whose ``Origin`` is not the gateway's own
  (the public URL's, else the request's scheme and Host) or that the browser marks ``Sec-Fetch-Site: cross-site``
  is refused, so another web site cannot make a visitor's browser dial (CSRF; a ``text/plain`` POST needs no CORS
  preflight, and Basic credentials are sent by the browser on its own).

The helpers above :func:`guard` are pure (no I/O, no clock); :func:`guard` wraps an aiohttp handler and logs and
counts every refusal as ``softphone.refused`` (``reason``) and ``call_refusals_total{stage="softphone"}``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections.abc import Awaitable, Callable
from functools import wraps
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from ..keys import METRICS

__all__ = [
    "REALM",
    "Handler",
    "cross_site",
    "guard",
    "key_matches",
    "local_host",
    "origin_of",
    "presented_key",
    "refuse",
]

log = structlog.get_logger("gateway.softphone")

REALM = "softphone"
_CHALLENGE = {"WWW-Authenticate": f'Basic realm="{REALM}"', "Cache-Control": "no-store"}
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# ---- pure ----------------------------------------------------------------------------------------------------------
def presented_key(authorization: str | None) -> str | None:
    """The key an ``Authorization`` header presents: a Basic password (the user name is ignored) or a Bearer token;
    None if there is none or the header is malformed."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer":
        return value or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        _user, sep, password = decoded.partition(":")
        return password if sep and password else None
    return None


def key_matches(presented: str | None, key: str) -> bool:
    """Constant time in the key's content and length: both sides are hashed first, so neither the comparison's
    duration nor an early length mismatch tells how close a guess was."""
    if presented is None or not key:
        return False
    return hmac.compare_digest(hashlib.sha256(presented.encode()).digest(), hashlib.sha256(key.encode()).digest())


def origin_of(url: str) -> str | None:
    """``scheme://host[:port]`` of a URL or an ``Origin`` header, lower-cased, default port left out (RFC 6454 §6.1
    serialization), so ``https://Voice.example.com:443`` and ``https://voice.example.com`` compare equal. None if it
    is not a hierarchical http(s)/ws(s) origin (``null``, ``file://``, garbage)."""
    try:
        u = urlsplit(url.strip())
        port = u.port
    except ValueError:
        return None
    scheme = u.scheme.lower()
    host = u.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        host = f"{host}:{port}"
    return f"{scheme}://{host}"


def cross_site(origin: str | None, fetch_site: str | None, own_origin: str | None) -> bool:
    """True if the browser says the request comes from another site or another origin. No ``Origin`` and no
    ``Sec-Fetch-Site`` (curl, scripts, old browsers' same-origin GETs) is not a browser acting for another site."""
    if (fetch_site or "").strip().lower() == "cross-site":
        return True
    if origin is None:
        return False
    theirs = origin_of(origin)
    return theirs is None or own_origin is None or theirs != own_origin


# ---- the aiohttp shell ---------------------------------------------------------------------------------------------
def refuse(
    request: web.Request, status: int, reason: str, text: str, headers: dict[str, str] | None = None
) -> web.Response:
    """Log, count and answer one refusal. A missing credential is every browser's first visit (the challenge that
    makes it prompt), so it is logged at info; anything else at warning."""
    if reason == "no_credential":
        log.info("softphone.refused", reason=reason, path=request.path, status=status)
    else:
        log.warning("softphone.refused", reason=reason, path=request.path, status=status)
    request.app[METRICS].refused("softphone", reason)
    return web.Response(status=status, text=text, headers=headers)


def local_host(host: str) -> bool:
    """Whether a ``Host`` header names this machine the way a developer reaches it: an IP literal or ``localhost``
    (``*.localhost`` included, RFC 6761 §6.3). A DNS name that is not ``localhost`` is what a DNS-rebinding page
    presents once its name points at the developer's loopback, so development refuses it."""
    name = origin_of(f"http://{host}")
    if name is None:
        return False
    hostname = urlsplit(name).hostname or ""
    if hostname == "localhost" or hostname.endswith(".localhost"):
        return True
    try:
        ipaddress.ip_address(hostname)
    except ValueError:
        return False
    return True


def _own_origin(request: web.Request, public_url: str) -> str | None:
    if public_url:
        return origin_of(public_url)
    # Local development: no public URL, so the gateway is whatever the browser reached (its Host), as long as that
    # is an address or localhost (a rebound DNS name is refused: it is another site reaching our loopback).
    if not local_host(request.host):
        return None
    return origin_of(f"{request.scheme}://{request.host}")


def guard(handler: Handler, *, key: str | None, public_url: str, same_origin: bool) -> Handler:
    """``handler``, behind the credential check (when ``key`` is set) and, for ``same_origin`` routes, the
    cross-origin check. Both run before the handler reads anything of the request."""

    @wraps(handler)
    async def guarded(request: web.Request) -> web.StreamResponse:
        if key is not None:
            authorization = request.headers.get("Authorization")
            if not key_matches(presented_key(authorization), key):
                reason = "no_credential" if authorization is None else "bad_credential"
                return refuse(request, 401, reason, "the softphone needs the operator key", _CHALLENGE)
        if same_origin and cross_site(
            request.headers.get("Origin"), request.headers.get("Sec-Fetch-Site"), _own_origin(request, public_url)
        ):
            return refuse(request, 403, "cross_origin", "cross-origin requests to the softphone are refused")
        return await handler(request)

    return guarded

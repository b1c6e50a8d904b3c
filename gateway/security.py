"""Who may connect: Twilio request signatures and per-call stream tokens. Pure (``now`` is passed in).

- :func:`twilio_signature` / :func:`validate_twilio_signature`: HMAC-SHA1 over the full URL plus the POST params sorted
  by name (docs/architecture/twilio-media-streams.md#signatures), accepting the URL with and without an explicit default
  port, as Twilio's own validator does. For the media-stream upgrade the URL is the ``wss://`` URL from the TwiML and
  the params are empty.
- :func:`mint_call_token` / :func:`verify_call_token`: the token the webhook puts in ``<Parameter name="token">``:
  HMAC-SHA256 over its *scope* (the carrier door that minted it: ``twilio``, ``telnyx``, ``softphone``…), its
  *subject* (the CallSid and the profile the call was answered with, :func:`gateway.outbound.token_subject`) and
  its expiry, with a secret from the environment, so any replica can verify it without shared state. Compared in
  constant time; a token minted at one door is refused at every other (docs/security.md); short TTL.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from urllib.parse import urlsplit, urlunsplit

from .errors import GatewayError

__all__ = ["twilio_signature", "validate_twilio_signature", "mint_call_token", "verify_call_token", "TokenError"]

_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}
_NONCE = re.compile(r"[A-Za-z0-9_-]{1,32}")


def _signing_string(url: str, params: Mapping[str, str | Iterable[str]]) -> str:
    parts = [url]
    for name in sorted(params):
        value = params[name]
        values = [value] if isinstance(value, str) else sorted(value)
        parts.extend(name + v for v in values)
    return "".join(parts)


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str | Iterable[str]]) -> str:
    mac = hmac.new(auth_token.encode(), _signing_string(url, params).encode(), hashlib.sha1)
    return base64.b64encode(mac.digest()).decode("ascii")


def _port_variants(url: str) -> list[str]:
    u = urlsplit(url)
    default = _DEFAULT_PORTS.get(u.scheme)
    host = u.hostname or ""
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    userinfo = u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else ""
    with_port = urlunsplit((u.scheme, f"{userinfo}{host}:{u.port or default}", u.path, u.query, u.fragment))
    without = urlunsplit((u.scheme, f"{userinfo}{host}", u.path, u.query, u.fragment))
    if u.port not in (None, default):
        return [url]
    return [url, with_port if u.port is None else without]


def validate_twilio_signature(
    auth_token: str, url: str, params: Mapping[str, str | Iterable[str]], signature: str | None
) -> bool:
    """True if ``signature`` (the X-Twilio-Signature header) signs ``url`` + ``params``."""
    if not signature or not auth_token:
        return False
    ok = False
    for variant in _port_variants(url):
        # No early exit: constant work whichever variant matches.
        ok |= hmac.compare_digest(twilio_signature(auth_token, variant, params), signature)
    return ok


class TokenError(GatewayError, ValueError):
    """The per-call token is missing, malformed, expired, forged or for another call. ``str()`` says which."""


def mint_call_token(
    secret: bytes, subject: str, now: float, ttl_s: float, *, scope: str, nonce: str | None = None
) -> str:
    """A token for ``subject`` (what the stream must present it with: :func:`gateway.outbound.token_subject`),
    valid only at the stream door named ``scope`` until ``now + ttl_s``. ``nonce`` (default: 64 random bits) makes
    every token unique, so a token spent on one call never equals the next one minted for the same call."""
    if "|" in scope:
        raise ValueError(f"token scope {scope!r} must not contain '|'")  # our misuse: scopes are door names
    if nonce is None:
        nonce = secrets.token_urlsafe(8)
    expiry = int(now + ttl_s)
    mac = hmac.new(secret, f"v2|{scope}|{subject}|{expiry}|{nonce}".encode(), hashlib.sha256).digest()
    return f"v2.{expiry}.{nonce}.{base64.urlsafe_b64encode(mac).decode('ascii').rstrip('=')}"


def verify_call_token(secret: bytes, token: str | None, subject: str, now: float, *, scope: str) -> None:
    """Raise :class:`TokenError` unless ``token`` was minted with ``secret`` for ``subject`` at the door ``scope``
    and is unexpired. A token for another call, profile or door fails the same way as a forged one."""
    if not token:
        raise TokenError("missing")
    parts = token.split(".")
    if (
        len(parts) != 4
        or parts[0] != "v2"
        or not (parts[1].isascii() and parts[1].isdigit() and len(parts[1]) <= 18)
        or not token.isascii()
        or not _NONCE.fullmatch(parts[2])
    ):
        raise TokenError("malformed")
    expiry = int(parts[1])
    expected = mint_call_token(secret, subject, expiry, 0, scope=scope, nonce=parts[2])
    if not hmac.compare_digest(expected.encode(), token.encode()):
        raise TokenError("bad signature, or minted for another call, profile or carrier")
    if now > expiry:
        raise TokenError("expired")

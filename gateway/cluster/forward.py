"""The credential of an internal forward between replicas (docs/architecture/scale-out.md#forwarding). Pure: ``now``
and the nonce are passed in.

A replica that receives call control for a call another replica owns forwards the request to the owner's internal
listener. The owner must know the request comes from a replica of the same gateway, is for *it*, and is not a
replay. So the forward carries ``X-Gateway-Forward: v1 <unix seconds> <nonce> <hex HMAC-SHA256>`` over::

    v1 \\n <seconds> \\n <nonce> \\n <target replica id> \\n <METHOD> \\n <path> \\n <sha256 of the body>

with a key derived from ``GATEWAY_TOKEN_SECRET`` (shared by every replica already, for stream tokens) under its own
label, so a forward credential can never pass as a stream token or the other way round. The receiver refuses a
missing or malformed header, a bad MAC, a time outside ``±window_s``, and a nonce it has already accepted within the
window (:class:`ForwardVerifier` remembers them for as long as the window could accept them again).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, field

from ..errors import ForwardRefused

__all__ = ["HEADER", "ForwardVerifier", "forward_key", "sign_forward"]

HEADER = "X-Gateway-Forward"
_LABEL = b"voice-gateway internal forward v1"


def forward_key(token_secret: bytes) -> bytes:
    """The forward key, derived from the stream-token secret under its own label."""
    return hmac.new(token_secret, _LABEL, hashlib.sha256).digest()


def _mac(key: bytes, seconds: int, nonce: str, target: str, method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256(body).hexdigest()
    msg = f"v1\n{seconds}\n{nonce}\n{target}\n{method.upper()}\n{path}\n{digest}".encode()
    return hmac.new(key, msg, hashlib.sha256).hexdigest()


def sign_forward(key: bytes, *, target: str, method: str, path: str, body: bytes, now: float, nonce: str) -> str:
    """The header value for a forward to replica ``target`` (``nonce``: fresh random, URL-safe, no spaces)."""
    seconds = int(now)
    return f"v1 {seconds} {nonce} {_mac(key, seconds, nonce, target, method, path, body)}"


@dataclass
class ForwardVerifier:
    """Checks forwards addressed to replica ``me``; remembers accepted nonces (bounded by the window)."""

    key: bytes
    me: str
    window_s: float = 30.0
    max_nonces: int = 100_000
    _seen: dict[str, float] = field(default_factory=dict)  # nonce -> forget after (insertion order)

    def verify(self, header: str | None, *, method: str, path: str, body: bytes, now: float) -> None:
        """Raise :class:`ForwardRefused` (the reason in its message) unless the forward is genuine and new."""
        parts = (header or "").split(" ")
        if len(parts) != 4 or parts[0] != "v1" or not parts[1].isdigit() or not (8 <= len(parts[2]) <= 64):
            raise ForwardRefused("missing or malformed forward credential")
        seconds, nonce, mac = int(parts[1]), parts[2], parts[3]
        expected = _mac(self.key, seconds, nonce, self.me, method, path, body)
        if not hmac.compare_digest(mac.encode(), expected.encode()):
            raise ForwardRefused("bad forward credential")
        if abs(now - seconds) > self.window_s:
            raise ForwardRefused("forward outside the replay window")
        self._forget(now)
        if nonce in self._seen:
            raise ForwardRefused("forward replayed")
        if len(self._seen) >= self.max_nonces:  # a flood of genuine forwards: refuse rather than forget early
            raise ForwardRefused("too many forwards in the window")
        self._seen[nonce] = now + 2 * self.window_s

    def remembers(self, nonce: str) -> bool:
        """Whether ``nonce`` is still remembered (a forward carrying it would be a replay)."""
        return nonce in self._seen

    def _forget(self, now: float) -> None:
        while self._seen:
            nonce, until = next(iter(self._seen.items()))
            if until > now:
                break
            del self._seen[nonce]

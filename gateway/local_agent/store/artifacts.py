"""A session's artifacts as ``GET /v1/sessions/{id}`` lists them, and the signed links they are fetched by. Pure.

The cloud hands out artifacts as short-lived presigned URLs a client downloads without its API key; the local agent
does the same with links it signs itself: ``?expires=<epoch s>&signature=<HMAC-SHA256>`` over the session id, the
artifact and the expiry, under the runtime's token secret, valid for :data:`LINK_TTL_S` (one hour, as the cloud's).
A request with the API key needs no signature (docs/reference/local-agent-api.md#artifacts).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["ARTIFACTS", "LINK_TTL_S", "artifact_list", "check_link", "sign_link"]

LINK_TTL_S: Final = 3600
#: Each artifact: its route's last segment, type and content type.
ARTIFACTS: Final[Mapping[str, tuple[str, str]]] = {
    "recording": ("audio", "audio/wav"),
    "timeline": ("timeline", "application/json"),
}


def _mac(secret: bytes, session_id: str, artifact: str, expires: int) -> str:
    msg = f"{session_id}\n{artifact}\n{expires}".encode()
    return base64.urlsafe_b64encode(hmac.new(secret, msg, hashlib.sha256).digest()).rstrip(b"=").decode("ascii")


def sign_link(secret: bytes, session_id: str, artifact: str, *, now: float) -> dict[str, str]:
    """The query parameters that let anyone holding the link fetch ``artifact`` of ``session_id`` for an hour."""
    expires = int(now) + LINK_TTL_S
    return {"expires": str(expires), "signature": _mac(secret, session_id, artifact, expires)}


def check_link(secret: bytes, session_id: str, artifact: str, query: Mapping[str, str], *, now: float) -> bool:
    raw, sig = query.get("expires", ""), query.get("signature", "")
    if not raw.isdigit() or not sig:
        return False
    expires = int(raw)
    return now < expires and hmac.compare_digest(_mac(secret, session_id, artifact, expires), sig)


def artifact_list(
    urls: Mapping[str, str], *, expires_at: int, recording: Mapping[str, Any] | None
) -> list[dict[str, Any]]:
    """The ``artifacts`` of a session record: ``urls`` maps each present artifact to its signed absolute URL;
    ``recording`` describes the WAV (rate, channels)."""
    out: list[dict[str, Any]] = []
    for name, url in urls.items():
        type_, content_type = ARTIFACTS[name]
        item: dict[str, Any] = {"type": type_, "url": url, "content_type": content_type, "expires_at": expires_at}
        if name == "recording" and recording is not None:
            item.update(recording)
        out.append(item)
    return out

"""Standard Webhooks signatures (docs/how-to/call-records.md#verifying-a-webhook). Pure.

A delivery carries ``webhook-id`` (the event's id: the same on every retry, so a receiver can drop duplicates),
``webhook-timestamp`` (seconds since the epoch, of this attempt) and ``webhook-signature``: ``v1,`` and the base64
HMAC-SHA256, keyed with the secret's decoded bytes, of ``{id}.{timestamp}.{body}``. The secret is
``GATEWAY_WEBHOOK_SECRET``, base64 with an optional ``whsec_`` prefix.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

__all__ = ["signed_headers"]


def signed_headers(key: bytes, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The headers of one delivery attempt of ``body``."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": f"v1,{digest}",
        "content-type": "application/json",
    }

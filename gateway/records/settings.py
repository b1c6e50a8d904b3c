"""The ``[storage]`` and ``[webhooks]`` tables (docs/reference/configuration.md#storage), and their start-up checks.
Pure.

Records (the call record JSON, and the recording when a profile has ``record = true``) are kept when
``storage.url`` is set, or when any profile records or has a webhook, or ``webhooks.url`` is set: then an empty
``storage.url`` means a directory under ``storage.data_dir``. A malformed ``storage.url`` or webhook URL fails
start-up with a :class:`~gateway.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "MASK_RULES",
    "StorageSettings",
    "WebhookSettings",
    "check_records",
    "records_wanted",
    "secret_key",
    "storage_url",
]

#: How ``from``/``to`` numbers appear in call records: ``last4`` (``+*******1234``), ``hidden`` (``***``), ``none``.
MASK_RULES = ("last4", "hidden", "none")


@dataclass(frozen=True)
class StorageSettings:
    """``[storage]``: where call records and recordings are kept, and for how long."""

    url: str = ""  # file:///abs/dir | s3://bucket/prefix | "" (a directory "calls" under data_dir)
    data_dir: str = "data"  # the webhook outbox (SQLite) and S3 upload spool; relative to the working directory
    retention_days: float = 30.0  # records and recordings older than this are deleted (0: kept forever)
    mask_numbers: str = "last4"  # from/to in records: last4 | hidden | none
    presign_s: int = 3600  # S3: how long a recording URL in a webhook stays valid


@dataclass(frozen=True)
class WebhookSettings:
    """``[webhooks]``: the post-call webhook (a profile's ``webhook_url`` overrides ``url``)."""

    url: str = ""  # http(s) URL receiving call.ended (and call.started when on); "" = none
    call_started: bool = False  # also send call.started when a call is accepted
    retry_for_h: float = 24.0  # retry with exponential backoff this long, then dead-letter
    backoff_s: float = 5.0  # the first retry's wait; doubled per attempt up to 30 min
    timeout_s: float = 10.0  # one delivery attempt


def records_wanted(s: Settings) -> bool:
    """Whether this gateway keeps call records at all."""
    return bool(s.storage.url or s.webhooks.url or any(p.record or p.webhook_url for p in s.profiles.values()))


def storage_url(s: Settings) -> str:
    """The storage URL in force: ``storage.url``, or ``file://`` + ``<data_dir>/calls`` made absolute."""
    if s.storage.url:
        return s.storage.url
    return (Path(s.storage.data_dir).resolve() / "calls").as_uri()


def _http_url(url: str) -> bool:
    u = urlsplit(url)
    return u.scheme in ("http", "https") and bool(u.hostname) and not u.fragment


def check_records(s: Settings) -> None:
    """Start-up checks: raise ConfigError naming the bad key."""

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    st = s.storage
    if st.url:
        u = urlsplit(st.url)
        need(u.scheme in ("file", "s3"), "storage.url", "must be file:///absolute/dir or s3://bucket/prefix")
        if u.scheme == "file":
            need(u.netloc in ("", "localhost") and u.path.startswith("/"), "storage.url", "file:///absolute/dir")
        else:
            need(bool(u.netloc) and not u.query and not u.fragment, "storage.url", "s3://bucket[/prefix]")
    need(bool(st.data_dir), "storage.data_dir", "must not be empty")
    need(st.retention_days >= 0, "storage.retention_days", "must be >= 0 (0 keeps records forever)")
    need(st.mask_numbers in MASK_RULES, "storage.mask_numbers", f"must be one of {', '.join(MASK_RULES)}")
    need(60 <= st.presign_s <= 7 * 86400, "storage.presign_s", "must be 60..604800 (S3 allows at most 7 days)")
    wh = s.webhooks
    need(not wh.url or _http_url(wh.url), "webhooks.url", "must be an http(s) URL")
    need(wh.retry_for_h > 0, "webhooks.retry_for_h", "must be positive")
    need(wh.timeout_s > 0, "webhooks.timeout_s", "must be positive")
    need(wh.backoff_s > 0, "webhooks.backoff_s", "must be positive")
    for name, p in s.profiles.items():
        need(not p.webhook_url or _http_url(p.webhook_url), f"profiles.{name}.webhook_url", "must be an http(s) URL")
        if p.record_announcement:
            path = Path(p.record_announcement)
            path = path if path.is_absolute() else s.config_dir / path
            need(
                path.suffix == ".wav" and path.is_file(),
                f"profiles.{name}.record_announcement",
                f"must name a .wav file (8 kHz mono 16-bit; relative to the config directory): {path} is not one",
            )
    hooked = wh.url or any(p.webhook_url for p in s.profiles.values())
    need(
        not hooked or bool(s.secrets.webhook_secret),
        "GATEWAY_WEBHOOK_SECRET",
        "a webhook URL is configured but the signing secret is not set (Standard Webhooks: whsec_<base64>)",
    )
    if s.secrets.webhook_secret:
        need(
            secret_key(s.secrets.webhook_secret) is not None,
            "GATEWAY_WEBHOOK_SECRET",
            "must be base64 (optionally prefixed whsec_), at least 24 bytes once decoded",
        )


def secret_key(secret: str) -> bytes | None:
    """The signing key of a Standard Webhooks secret (``whsec_`` + base64), or None if it is not one."""
    raw = secret.removeprefix("whsec_")
    try:
        key = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        return None
    return key if len(key) >= 24 else None

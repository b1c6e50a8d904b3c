"""The ``[state]`` settings: where replicas share what must be shared (docs/architecture/scale-out.md). Pure.

``redis_url`` empty (and no ``REDIS_URL``): the in-process store, one replica needs nothing else. Set: a Redis every
replica reaches, plus an internal listener (``internal_port``) that the other replicas forward call control and
re-attach hand-overs to. :func:`state_settings` applies the environment and validates, naming the bad key.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import ConfigError

__all__ = ["StateSettings", "state_settings"]


@dataclass(frozen=True)
class StateSettings:
    # redis://[user:password@]host:port/db (or rediss://); env REDIS_URL overrides. Empty: in-process store.
    redis_url: str = ""
    # Every key this gateway writes starts with it (several deployments may share one Redis).
    key_prefix: str = "vg:"
    # The longest any store call may take (webhook, stream upgrade and call control never wait longer on Redis).
    op_timeout_s: float = 0.25
    # Redis unreachable: "degrade" (calls go on; single-use tokens per process, a warning and
    # voice_gateway_state_unavailable_total say so) or "refuse" (new streams are refused: fail closed).
    on_unavailable: str = "degrade"
    # A replica's registry entry (and its live calls) expire this long after its last heartbeat (every third of it).
    call_ttl_s: float = 15.0
    # The internal listener other replicas forward to (never behind the Ingress). 0: a free port (tests).
    internal_host: str = "0.0.0.0"
    internal_port: int = 8081
    # How other replicas reach this one's internal listener, e.g. http://10.0.3.7:8081, or only its host (10.0.3.7:
    # then http://<host>:<internal_port>; Kubernetes' status.podIP fits); env GATEWAY_INTERNAL_URL.
    # Empty: http://<this host's address>:<internal port>.
    internal_url: str = ""
    # An internal forward older (or newer) than this is refused; its nonce is remembered this long (replays).
    forward_window_s: float = 30.0
    # How long a replica waits for the owner's answer to a forwarded call-control request.
    forward_timeout_s: float = 5.0
    # Cluster-wide limit of concurrent calls (0: none; each replica's server.max_concurrent_calls holds anyway). The
    # webhook reserves a slot that expires (reservation_ttl_s) unless the call's stream starts; a live call's slot is
    # kept by its replica's heartbeat and freed at hang-up or, if its replica dies, once that replica is known dead:
    # call_ttl_s (plus 2 x op_timeout_s) after its last heartbeat.
    max_cluster_calls: int = 0
    reservation_ttl_s: float = 30.0

    @property
    def shared(self) -> bool:
        """Several replicas share state through Redis."""
        return bool(self.redis_url)


def state_settings(s: StateSettings, env: Mapping[str, str]) -> StateSettings:
    """``s`` with ``REDIS_URL`` / ``GATEWAY_INTERNAL_URL`` applied, validated (:class:`ConfigError` names the key)."""
    if env.get("REDIS_URL"):
        s = dataclasses.replace(s, redis_url=env["REDIS_URL"])
    if env.get("GATEWAY_INTERNAL_URL"):
        s = dataclasses.replace(s, internal_url=env["GATEWAY_INTERNAL_URL"].rstrip("/"))

    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"state.{key}: {msg}")

    if s.redis_url:
        need(urlsplit(s.redis_url).scheme in ("redis", "rediss", "unix"), "redis_url", "must be redis://, rediss://…")
    if "://" in s.internal_url:
        need(urlsplit(s.internal_url).scheme in ("http", "https"), "internal_url", "must be an http(s):// URL")
    need(
        " " not in s.internal_url and "/" not in s.internal_url.partition("://")[2].rstrip("/"),
        "internal_url",
        "must be http(s)://host:port or a bare host",
    )
    need(0 < s.op_timeout_s <= 5, "op_timeout_s", "must be in (0, 5] seconds (webhooks wait on it)")
    need(s.on_unavailable in ("degrade", "refuse"), "on_unavailable", "must be degrade or refuse")
    need(1 <= s.call_ttl_s <= 300, "call_ttl_s", "must be 1..300 seconds")
    need(0 <= s.internal_port < 65536, "internal_port", "must be 0..65535")
    need(1 <= s.forward_window_s <= 300, "forward_window_s", "must be 1..300 seconds")
    need(0 < s.forward_timeout_s <= 30, "forward_timeout_s", "must be in (0, 30] seconds")
    need(bool(s.key_prefix) and " " not in s.key_prefix, "key_prefix", "must be non-empty, without spaces")
    need(s.max_cluster_calls >= 0, "max_cluster_calls", "must be >= 0 (0: no cluster-wide limit)")
    need(1 <= s.reservation_ttl_s <= 300, "reservation_ttl_s", "must be 1..300 seconds")
    return s

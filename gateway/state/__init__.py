"""Shared state of the gateway's replicas (docs/architecture/scale-out.md): the store interface
(:mod:`gateway.state.store`), its in-process default and its Redis implementation (:mod:`gateway.state.redis_store`,
imported only when ``state.redis_url`` / ``REDIS_URL`` is set), and the ``[state]`` settings."""

from __future__ import annotations

from .settings import StateSettings
from .store import InProcessStore, StateStore

__all__ = ["StateSettings", "open_store"]


def open_store(settings: StateSettings) -> StateStore:
    """The store ``settings`` ask for (connections are opened lazily, on first use)."""
    if not settings.shared:
        return InProcessStore()
    from .redis_store import RedisStore

    return RedisStore(settings.redis_url, prefix=settings.key_prefix, op_timeout_s=settings.op_timeout_s)

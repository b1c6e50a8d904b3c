"""The embedded local voice agent: an offline server of the Voice Agent API protocol.

With no cloud API key configured, the gateway mounts :func:`create_local_agent_app` at ``/agent`` and sends calls
to it over a loopback WebSocket; :func:`run_standalone` serves it on its own (``/v1/ws``, ``/v1/token``;
``python -m gateway.local_agent.app``). Speech runs on the offline models of :mod:`gateway.local_agent.speech`;
see README "Local agent".
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import LlmSettings, LocalAgentSettings

if TYPE_CHECKING:
    from .app import create_local_agent_app, local_agent_api_key, local_agent_runtime, run_standalone

__all__ = [
    "LlmSettings",
    "LocalAgentSettings",
    "create_local_agent_app",
    "local_agent_api_key",
    "local_agent_runtime",
    "run_standalone",
]

_APP_NAMES = frozenset({"create_local_agent_app", "local_agent_api_key", "local_agent_runtime", "run_standalone"})


def __getattr__(name: str) -> Any:
    # Lazy, so `python -m gateway.local_agent.app` does not import the app module twice.
    if name in _APP_NAMES:
        from . import app

        return getattr(app, name)
    raise AttributeError(name)

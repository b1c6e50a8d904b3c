"""The embedded local voice agent: an offline server of the Voice Agent API protocol.

With no cloud API key configured, the gateway mounts :func:`create_local_agent_app` at ``/agent`` and sends calls
to it over a loopback WebSocket; :func:`run_standalone` serves it on its own (``/v1/ws``, ``/v1/token``;
``python -m gateway.local_agent.app``). Speech runs on the offline models of :mod:`gateway.local_agent.speech`;
see docs/how-to/local-agent.md (running it) and docs/architecture/local-agent.md (how it works).

One module per concept. Pure (no asyncio, sockets, clock or environment; time passed in):
:mod:`.protocol` (the wire protocol, a package), :mod:`.handshake` (opening a socket, one state table),
:mod:`.turns` (turn detection), :mod:`.turn_merge` (held and early-ended turns), :mod:`.tool_calls` (calls in
flight), :mod:`.brain` (reply engines: the interface and the intent engine), :mod:`.conversation`,
:mod:`.llm_stream` (the LLM's stream formats), :mod:`.codec` (audio at the edges), :mod:`.synth_cache`,
:mod:`.endings`, and :mod:`.settings` (which reads the environment only in ``settings_from_env``).
The shell: :mod:`.app` (the aiohttp app), :mod:`.bridge` (the gateway's config → the app), :mod:`.runtime` (what
sessions share: the worker pool, models, engine), :mod:`.endpoint` (``GET /v1/ws``), :mod:`.connection` (the
only holder of a socket: reader, writer, task group), :mod:`.outbox`, :mod:`.session` and :mod:`.jobs` (what
survives a socket), :mod:`.hearing` and :mod:`.listener` (VAD, turn detection), :mod:`.replier`,
:mod:`.speaker` (TTS and pacing), :mod:`.llm` (the LLM engine's HTTP).
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

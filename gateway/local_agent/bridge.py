"""Wiring between the gateway's config and the local agent: builds the embedded sub-application mounted at
``/agent`` and runs the standalone server (``python -m gateway local-agent``). Not pure (reads the environment's
secrets through :func:`~.settings.settings_from_env`, at start-up)."""

from __future__ import annotations

from aiohttp import web

from ..config import Settings
from .settings import settings_from_app, settings_from_env

__all__ = ["build_embedded_agent", "run_local_agent"]


def build_embedded_agent(settings: Settings, api_key: str, models: object | None = None) -> web.Application:
    """The local agent as a sub-app; the gateway mounts it at ``/agent`` and dials it over loopback."""
    from .app import create_local_agent_app

    la = settings_from_env(settings_from_app(settings, api_key))
    return create_local_agent_app(la, models)  # type: ignore[arg-type]


def run_local_agent(settings: Settings, *, host: str, port: int, api_key: str | None) -> None:
    from .app import run_standalone

    run_standalone(host, port, settings_from_env(settings_from_app(settings, api_key)))

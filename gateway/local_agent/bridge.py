"""Wiring between the gateway's config and the local agent: builds the embedded sub-application mounted at
``/agent`` and runs the standalone server (``python -m gateway local-agent``). Not pure (reads settings only)."""

from __future__ import annotations

import dataclasses

from aiohttp import web

from ..config import Settings
from ..errors import ConfigError
from .settings import LlmSettings, LocalAgentSettings, SettingsError

__all__ = ["local_agent_settings", "build_embedded_agent", "run_local_agent"]


def local_agent_settings(settings: Settings, api_key: str | None) -> LocalAgentSettings:
    cfg = settings.local_agent
    llm = None
    if cfg.llm_base_url:
        llm = LlmSettings(base_url=cfg.llm_base_url, model=cfg.llm_model, api_key_env=cfg.llm_api_key_env or None)
    la = LocalAgentSettings(
        api_key=api_key,
        intents_path=settings.local_agent_intents_path(),
        resume_window_s=cfg.resume_window_s,
        backchannel_max_ms=cfg.backchannel_max_ms,
        min_silence_ms=cfg.min_silence_ms,
        threads=cfg.threads,
        model_cpu_threads=cfg.model_cpu_threads,
        llm=llm,
    )
    try:
        la.validate()
    except SettingsError as exc:
        raise ConfigError(f"local_agent.{exc}") from None
    if not la.intents_path.exists():
        raise ConfigError(f"local_agent.intents: {la.intents_path} does not exist")
    return la


def build_embedded_agent(settings: Settings, api_key: str, models: object | None = None) -> web.Application:
    """The local agent as a sub-app; the gateway mounts it at ``/agent`` and dials it over loopback."""
    from .app import create_local_agent_app

    return create_local_agent_app(local_agent_settings(settings, api_key), models)  # type: ignore[arg-type]


def run_local_agent(settings: Settings, *, host: str, port: int, api_key: str | None) -> None:
    from .app import run_standalone
    from .settings import settings_from_env

    la = settings_from_env(local_agent_settings(settings, api_key))
    run_standalone(host, port, dataclasses.replace(la))

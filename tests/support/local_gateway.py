"""The real gateway with its embedded local agent, served on a real loopback TCP port, for end-to-end tests of the
call simulator and the softphone. The speech models are loaded once per test process and shared."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from gateway.app import create_app
from gateway.config import Settings, load_settings

__all__ = ["local_agent_settings", "serve_gateway", "shared_speech_models"]


@functools.lru_cache(maxsize=1)
def shared_speech_models() -> Any:
    """One load per test process (~2 s, several hundred MB), warmed up so the first call is not slower."""
    from gateway.local_agent.app import warm_up
    from gateway.local_agent.speech import SpeechModels

    models = SpeechModels.load(cpu_threads=2)
    warm_up(models)
    return models


def local_agent_settings(**env: str) -> Settings:
    """The committed config (config/gateway.toml) with no agent URL and no API key: calls go to the embedded local
    agent (``settings.use_local_agent``), and the softphone is on (``auto``)."""
    base = {"GATEWAY_TOKEN_SECRET": "e2e-token-secret", "LOG_FORMAT": "json"}
    settings = load_settings(None, env={**base, **env})
    assert settings.use_local_agent, "the e2e tests need the embedded local agent"
    return settings


@contextlib.asynccontextmanager
async def serve_gateway(settings: Settings, models: Any) -> AsyncIterator[tuple[str, web.Application]]:
    """Run ``create_app(settings)`` on 127.0.0.1 on a free port; yields (base URL, app). Cleaned up on exit."""
    app = create_app(settings, local_agent_models=models)
    runner = web.AppRunner(app, shutdown_timeout=5.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield f"http://{host}:{port}", app
    finally:
        await runner.cleanup()

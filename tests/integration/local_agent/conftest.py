"""Fixtures for the local agent's integration tests: the real speech models (loaded once per test session and
shared by every app instance), and the real local-agent app served on loopback."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any

import pytest
from aiohttp import web

from gateway.local_agent.app import create_local_agent_app, local_agent_runtime, warm_up
from gateway.local_agent.runtime import AgentRuntime
from gateway.local_agent.settings import LocalAgentSettings
from gateway.local_agent.speech import SpeechModels

from .agent_client import AgentClient

API_KEY = "test-local-agent-key"
TOKEN_SECRET = b"local-agent-test-secret-0123456789"


@pytest.fixture(scope="session")
def speech_models() -> SpeechModels:
    # One load per test session (~2 s, ~600 MB). Two intra-op threads: the tests run one call at a time.
    models = SpeechModels.load(cpu_threads=2)
    warm_up(models)
    return models


@pytest.fixture
def agent_settings() -> LocalAgentSettings:
    # Resume window shortened so the expiry test does not wait 30 s.
    return LocalAgentSettings(api_key=API_KEY, token_secret=TOKEN_SECRET, resume_window_s=2.0)


@dataclass
class AgentServer:
    server: Any
    app: web.Application

    @property
    def base(self) -> str:
        return str(self.server.make_url("")).rstrip("/")

    @property
    def ws_url(self) -> str:
        return self.base.replace("http://", "ws://") + "/v1/ws"

    @property
    def runtime(self) -> AgentRuntime:
        return local_agent_runtime(self.app)

    async def client(self, *, key: str | None = API_KEY, query: str = "", raw: bool = False) -> AgentClient:
        headers = {}
        if key is not None:
            headers["Authorization"] = key if raw else f"Bearer {key}"
        return await AgentClient.connect(self.ws_url + query, headers=headers)

    async def session(self, **session: Any) -> tuple[AgentClient, dict[str, Any]]:
        c = await self.client()
        ready = await c.open_session(**session)
        return c, ready


@pytest.fixture
def start_agent(
    aiohttp_server: Any, speech_models: SpeechModels, agent_settings: LocalAgentSettings
) -> Callable[..., Awaitable[AgentServer]]:
    async def start(**overrides: Any) -> AgentServer:
        app = create_local_agent_app(replace(agent_settings, **overrides), speech_models)
        server = await aiohttp_server(app)
        return AgentServer(server, app)

    return start


@pytest.fixture
async def agent(start_agent: Callable[..., Awaitable[AgentServer]]) -> AgentServer:
    return await start_agent()

"""Shared fixtures: the real gateway app on loopback, wired to a spec-following fake of the cloud agent."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.app import create_app
from gateway.config import load_settings
from tests.support.fake_agent import FakeAgent
from tests.support.twilio_peer import TwilioPeer

# The embedded local agent keeps stored agents and session recordings under $XDG_DATA_HOME by default
# (docs/reference/local-agent-api.md#data-directory): a test run gets a scratch one, never the developer's home.
os.environ["XDG_DATA_HOME"] = tempfile.mkdtemp(prefix="voice-gateway-tests-")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """How scripts/test spreads the suite over processes (pytest-xdist, ``--dist loadgroup``; docs/contributing.md).
    Everything that runs the offline speech models (the e2e calls, the local agent's tests, the ``speech`` mark) is
    one group, so one worker runs those one at a time: two model-heavy tests side by side on a 2-core machine would
    slow each other's real-time audio past what the tests allow. Every other test file is a group of its own (its
    module-scoped servers start once), and the files spread over the workers around the heavy group."""
    for item in items:
        path = item.path.as_posix()
        heavy = "/tests/e2e/" in path or "/tests/integration/local_agent/" in path or item.get_closest_marker("speech")
        item.add_marker(pytest.mark.xdist_group("speech" if heavy else item.nodeid.split("::", 1)[0]))


CALL_TASK_NAMES = {
    "carrier_reader",
    "agent_runner",
    "agent_sender",
    "carrier_writer",
    "watchdog",
    "call_control",
    "agent_end",
}


def call_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name() in CALL_TASK_NAMES or t.get_name().startswith("tool:")]


@pytest.fixture
async def fake_agent(aiohttp_server: Any) -> FakeAgent:
    agent = FakeAgent()
    server = await aiohttp_server(agent.app)
    agent.url = str(server.make_url("/v1/ws")).replace("http://", "ws://")  # type: ignore[attr-defined]
    return agent


@pytest.fixture
def gateway_env(fake_agent: FakeAgent) -> dict[str, str]:
    return {
        "AGENT_URL": fake_agent.url,  # type: ignore[attr-defined]
        "ASSEMBLYAI_API_KEY": fake_agent.api_key,
        "GATEWAY_TOKEN_SECRET": "test-secret",
        "LOG_FORMAT": "json",
    }


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def agent_transport() -> str | None:
    """The agent socket's client (``[agent] transport``); None: as configured. Modules whose tests depend on how
    the agent socket ends (drops, resume) override this fixture to run against every transport."""
    return None


@pytest.fixture
def start_gateway(
    aiohttp_server: Any, gateway_env: dict[str, str], agent_transport: str | None
) -> Callable[..., Awaitable[Any]]:
    async def start(config: str | None = None, **env: str) -> Any:
        settings = load_settings(config, env={**gateway_env, **env})
        if agent_transport is not None:
            settings = dataclasses.replace(
                settings, agent=dataclasses.replace(settings.agent, transport=agent_transport)
            )
        server = await aiohttp_server(create_app(settings))
        server.base_url = str(server.make_url("")).rstrip("/")
        return server

    return start


@pytest.fixture
async def new_peer(http: aiohttp.ClientSession) -> AsyncIterator[Callable[..., Awaitable[TwilioPeer]]]:
    peers: list[TwilioPeer] = []

    async def make(server: Any, dial: bool = True, **kw: Any) -> TwilioPeer:
        p = TwilioPeer(server.base_url, http, **kw)
        if dial:
            await p.dial()
        peers.append(p)
        return p

    yield make
    for p in peers:
        await p.close()

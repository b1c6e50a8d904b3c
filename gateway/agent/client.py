"""Thin asyncio transport for one Voice Agent API connection (the ``websockets`` client). Moves text frames and
parses them with :mod:`gateway.agent.protocol`; owns connect timeouts. No call logic here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..errors import AgentProtocolError, AgentUnavailable
from .protocol import ServerEvent, SessionEnded, parse_server_event, session_end

__all__ = ["AgentEndpoint", "AgentConnection", "AgentClosed"]


@dataclass(frozen=True)
class AgentEndpoint:
    """Where and how to reach an agent. ``name`` is what logs call it (cloud region or 'local')."""

    url: str
    api_key: str
    name: str = "cloud"

    def __repr__(self) -> str:
        return f"AgentEndpoint(url={self.url!r}, name={self.name!r})"  # never the key


class AgentClosed(Exception):
    """The agent socket closed. ``code``/``reason`` as received (None/'' for a drop without a close frame)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"agent socket closed: {code} {reason}")
        self.code = code
        self.reason = reason


class AgentConnection:
    def __init__(self, ws: ClientConnection, endpoint: AgentEndpoint) -> None:
        self._ws = ws
        self.endpoint = endpoint

    @classmethod
    async def open(cls, endpoint: AgentEndpoint, *, timeout: float, max_size: int = 4 * 1024 * 1024) -> AgentConnection:
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        try:
            ws = await connect(
                endpoint.url,
                additional_headers=headers,
                open_timeout=timeout,
                max_size=max_size,
                compression=None,  # audio is base64 in JSON: deflate costs CPU per frame for little gain
                # A silent network drop must be noticed well inside the agent's 30 s resume window (§4.3);
                # the library default (20 s + 20 s) could take 40 s.
                ping_interval=5,
                ping_timeout=10,
                close_timeout=2,
                user_agent_header="voice-gateway",
            )
        except (OSError, asyncio.TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise AgentUnavailable(f"cannot connect to agent {endpoint.url}: {exc!r}") from None
        return cls(ws, endpoint)

    async def send(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise AgentClosed(*_close_info(exc)) from None

    async def recv(self) -> ServerEvent:
        try:
            data = await self._ws.recv()
        except ConnectionClosed as exc:
            raise AgentClosed(*_close_info(exc)) from None
        return parse_server_event(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    async def end(self, timeout: float) -> bool:
        """End the session cleanly: ``session.end`` (billing stops at once, voice-agent-api.md §2.1), read until
        ``session.ended`` for at most ``timeout`` s (events still in flight are nobody's any more), then close.
        Returns True if ``session.ended`` was seen. Never raises for a peer that is already gone."""
        ended = False
        try:
            async with asyncio.timeout(timeout):
                if self.open_:
                    await self.send(session_end())
                    while not isinstance(await self.recv(), SessionEnded):
                        pass
                    ended = True
        except (TimeoutError, AgentClosed, AgentProtocolError, OSError):
            pass
        try:
            async with asyncio.timeout(2):
                await self.close()
        except (TimeoutError, OSError):
            pass
        return ended

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    @property
    def open_(self) -> bool:
        return self._ws.state is websockets.protocol.State.OPEN


def _close_info(exc: ConnectionClosed) -> tuple[int | None, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""

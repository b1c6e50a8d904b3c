"""PROTOTYPE, bench only (``scripts/bench --prototype aiohttp-agent``): gateway/agent/client.py on aiohttp's client
WebSocket instead of ``websockets``, same interface, to measure what the agent transport costs. Not reviewed for
production: close reasons, drops without a close frame and ping timeouts map differently from websockets, and
gateway/session.py's resume logic relies on those details. One shared ClientSession per process."""
from __future__ import annotations

from dataclasses import dataclass

import aiohttp
from aiohttp import WSMsgType

from ..errors import AgentUnavailable
from .protocol import ServerEvent, parse_server_event

__all__ = ["AgentClosed", "AgentConnection", "AgentEndpoint"]

@dataclass(frozen=True)
class AgentEndpoint:
    url: str
    api_key: str
    name: str = "cloud"
    def __repr__(self) -> str:
        return f"AgentEndpoint(url={self.url!r}, name={self.name!r})"

class AgentClosed(Exception):
    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"agent socket closed: {code} {reason}")
        self.code = code
        self.reason = reason

_SESSION: aiohttp.ClientSession | None = None

class AgentConnection:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse, endpoint: AgentEndpoint) -> None:
        self._ws = ws
        self.endpoint = endpoint
    @classmethod
    async def open(cls, endpoint: AgentEndpoint, *, timeout: float, max_size: int = 4 * 1024 * 1024) -> AgentConnection:
        global _SESSION
        if _SESSION is None:
            _SESSION = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))  # no pool cap: one socket per call
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        try:
            ws = await _SESSION.ws_connect(endpoint.url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=2), max_msg_size=max_size, compress=0, heartbeat=20, autoping=True)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            raise AgentUnavailable(f"cannot connect to agent {endpoint.url}: {exc!r}") from None
        return cls(ws, endpoint)
    async def send(self, text: str) -> None:
        if self._ws.closed:
            raise AgentClosed(self._ws.close_code, "")
        try:
            await self._ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError):
            raise AgentClosed(self._ws.close_code, "") from None
    async def recv(self) -> ServerEvent:
        msg = await self._ws.receive()
        if msg.type is WSMsgType.TEXT:
            return parse_server_event(msg.data)
        raise AgentClosed(self._ws.close_code, str(msg.extra or ""))
    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code=code, message=reason.encode())
    @property
    def close_code(self) -> int | None:
        return self._ws.close_code
    @property
    def close_reason(self) -> str:
        return ""
    @property
    def open_(self) -> bool:
        return not self._ws.closed

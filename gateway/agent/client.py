"""Thin asyncio transport for one Voice Agent API connection. Moves text frames and parses them with
:mod:`gateway.agent.protocol`; owns connect timeouts and keepalive. No call logic here.

Two interchangeable transports behind one :class:`AgentConnection` interface (config ``[agent] transport``):

- ``aiohttp`` (default): aiohttp's client WebSocket on the app's shared ``ClientSession`` (one per process, one
  socket per call: ``TCPConnector(limit=0)``). The benchmark measured it cheaper per message than ``websockets``
  (docs/architecture/decisions/0001-aiohttp-agent-transport.md), and the carrier side already runs on aiohttp.
- ``websockets``: the ``websockets`` client, kept selectable as the reference implementation.

Both map the socket's end the same way, because the resume logic (:mod:`gateway.call.shell.agent_link`) depends on it:

- :class:`AgentClosed` ``(code, reason)`` from :meth:`~AgentConnection.send` / :meth:`~AgentConnection.recv`:
  ``code``/``reason`` of the close frame the *peer* sent; ``(None, "")`` for a drop without one (FIN or RST,
  keepalive timeout, a protocol error on our side such as a message over ``max_size``, a send that could not finish
  within ``send_timeout``). ``send`` raises it instead of writing once the socket is known to be closing, so the
  session can keep that audio for the resumed session.
- :class:`gateway.errors.AgentUnavailable` from :meth:`AgentConnection.open`: refused, unreachable, TLS or HTTP
  handshake rejected (the status is in the message), or no handshake within ``timeout``.

Every await on the socket is bounded. A send writes at once and returns without suspending while the socket keeps up
(its buffer empty and the message under the transport's high-water mark: the steady caller frame, no timer). Only a
send that may have to wait for the drain (the socket is backed up, or the message is long) runs under
``send_timeout``; one that does not finish in that time means a blackholed link or an agent that stopped reading:
the transport is aborted (unsent bytes discarded, any other waiting send released) and the send raises
:class:`AgentClosed` ``(None, "")``, so the call resumes the session on a new socket. A close that does not finish in
time (:meth:`~AgentConnection.end`, the link's ``discard``) aborts the transport too: a socket never outlives its call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp
import websockets
from aiohttp import WSMsgType
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from ..errors import AgentClosed, AgentProtocolError, AgentUnavailable
from .protocol import ServerEvent, SessionEnded, parse_server_event, session_end

__all__ = ["AgentEndpoint", "AgentConnection", "AgentClosed", "TRANSPORTS", "new_http_session"]

TRANSPORTS = ("aiohttp", "websockets")
#: Keepalive. A silent network drop must be noticed well inside the agent's 30 s resume window
#: (docs/architecture/agent-api.md#resume). websockets pings every 5 s and gives up 10 s after an unanswered ping.
#: aiohttp pings after 6 s without any received data and gives up 3 s later (heartbeat / 2), so a dead socket is noticed
#: within 9 s, and a busy one (reply audio, transcripts) sends no pings at all.
WEBSOCKETS_PING_INTERVAL_S = 5.0
WEBSOCKETS_PING_TIMEOUT_S = 10.0
AIOHTTP_HEARTBEAT_S = 6.0
CLOSE_TIMEOUT_S = 2.0
#: The default bound of a send that has to wait for the drain (config ``agent.send_timeout_s``).
SEND_TIMEOUT_S = 5.0
#: The most bytes a WebSocket frame header adds (client frames: 2 + 8 length + 4 mask).
_FRAME_HEADER_MAX = 14
USER_AGENT = "voice-gateway"


def new_http_session() -> aiohttp.ClientSession:
    """The process's shared client session for agent sockets (the app's ``cleanup_ctx`` owns and closes it). No pool
    limit: every call holds one socket for its whole length, so a cap would queue calls, not reuse connections."""
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0),
        timeout=aiohttp.ClientTimeout(total=None),  # open() bounds the handshake itself; a call lasts minutes
        cookie_jar=aiohttp.DummyCookieJar(),
        headers={"User-Agent": USER_AGENT},
    )
    # aiohttp silently repeats an idempotent request (the upgrade GET) once when the connection drops before the
    # response. One connect attempt must be one connection: the call's backoff (gateway.call.shell.agent_link)
    # decides when to try again. No public switch exists; aiohttp's own test client (test_utils.py) sets the same
    # attribute.
    session._retry_connection = False  # noqa: SLF001 - see above: aiohttp has no public switch
    return session


@dataclass(frozen=True)
class AgentEndpoint:
    """Where and how to reach an agent. ``name`` is what logs call it (cloud region or 'local'). ``transport`` picks
    the WebSocket client; ``http`` is the shared session the ``aiohttp`` transport opens its sockets on."""

    url: str
    api_key: str
    name: str = "cloud"
    transport: str = "websockets"
    http: aiohttp.ClientSession | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"AgentEndpoint(url={self.url!r}, name={self.name!r}, transport={self.transport!r})"  # never the key


class AgentConnection:
    """One agent socket. :meth:`open` returns the implementation for ``endpoint.transport``."""

    endpoint: AgentEndpoint

    @classmethod
    async def open(
        cls,
        endpoint: AgentEndpoint,
        *,
        timeout: float,
        max_size: int = 4 * 1024 * 1024,
        send_timeout: float = SEND_TIMEOUT_S,
    ) -> AgentConnection:
        """Connect (the handshake within ``timeout`` s). ``send_timeout``: how long a send may wait for the drain
        before the socket counts as dead (module docstring)."""
        if endpoint.transport == "aiohttp":
            return await _AiohttpConnection.connect(
                endpoint, timeout=timeout, max_size=max_size, send_timeout=send_timeout
            )
        if endpoint.transport == "websockets":
            return await _WebsocketsConnection.connect(
                endpoint, timeout=timeout, max_size=max_size, send_timeout=send_timeout
            )
        raise ValueError(f"unknown agent transport {endpoint.transport!r}")

    async def send(self, text: str) -> None:
        """Send one text message. Returns without suspending while the socket keeps up; a send that has to wait for
        the drain is bounded by ``send_timeout`` (module docstring). Raises :class:`AgentClosed` if the message was
        not sent."""
        raise NotImplementedError

    async def recv(self) -> ServerEvent:
        raise NotImplementedError

    async def close(self, code: int = 1000, reason: str = "") -> None:
        raise NotImplementedError

    @property
    def close_code(self) -> int | None:
        """The peer's close code once closed (1006 if it sent none); None while open."""
        raise NotImplementedError

    @property
    def close_reason(self) -> str:
        raise NotImplementedError

    @property
    def open_(self) -> bool:
        raise NotImplementedError

    def backlogged(self) -> bool:
        """True while bytes wait in user space for the socket (the kernel's send buffer is full: the agent or the
        network is not keeping up). A send now may wait for the drain, so the carrier reader must not make it
        itself (gateway/call/shell/session.py, fast path): it queues the frame, where the drop-oldest policy applies."""
        transport = self._transport
        return transport is not None and transport.get_write_buffer_size() > 0

    _transport: asyncio.WriteTransport | None = None
    #: The longest text a send writes without any chance of waiting for the drain, when the buffer is empty: its
    #: frame (UTF-8, at most 4 bytes a character) stays under the transport's high-water mark, so the write cannot
    #: pause the protocol. 0 without a transport: every send is then bounded.
    _quick_chars = 0
    _send_timeout = SEND_TIMEOUT_S
    #: The transport's ``get_write_buffer_size``; without a transport, a stand-in that always reports bytes waiting.
    _buffered: Callable[[], int]
    #: :meth:`abort` ran: nothing more is sent, and the socket counts as dropped.
    _aborted = False

    def _set_transport(self, transport: asyncio.WriteTransport | None, send_timeout: float) -> None:
        self._transport, self._send_timeout = transport, send_timeout
        if transport is not None:
            self._buffered = transport.get_write_buffer_size  # bound once: send() reads it per message
            self._quick_chars = max(0, (transport.get_write_buffer_limits()[1] - _FRAME_HEADER_MAX) // 4)
        else:
            self._buffered = _unknown_buffer

    async def _write(self, text: str) -> None:
        """The transport's own send (may wait for the drain); AgentClosed for a socket that is going."""
        raise NotImplementedError

    def _close_info(self) -> tuple[int | None, str]:
        raise NotImplementedError

    async def _send_waiting(self, text: str) -> None:
        """A send that may have to wait for the drain, bounded by ``send_timeout``. Not done in time: the socket is
        dead to us (a blackholed link, an agent that stopped reading), so it is aborted and AgentClosed raised. A send
        released by an abort (this one's, or :meth:`abort` from another task, e.g. a discard after a keepalive
        timeout) raises AgentClosed too: both libraries let a drain that the socket's loss ended return normally,
        though the bytes never left."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._write(text)
        except TimeoutError:
            self.abort()
            raise AgentClosed(None, "") from None
        transport = self._transport
        if self._aborted or (transport is not None and transport.is_closing()):
            raise AgentClosed(*self._close_info())

    def abort(self) -> None:
        """Drop the socket now, without a close handshake: bytes still queued are discarded, the file descriptor is
        released, and a send waiting for the drain returns (raising AgentClosed). For a socket that is dead to us: a
        send or a close that did not finish in time, a socket being discarded. Harmless once closed."""
        self._aborted = True
        if (transport := self._transport) is not None:
            transport.abort()

    def _release(self) -> None:
        """After a close: abort the transport if the close left it open or holding unsent bytes (a close that timed
        out, or aiohttp's own close timeout, which only calls ``transport.close()``: that waits for the buffer to
        drain, forever for a peer that does not read)."""
        transport = self._transport
        if transport is not None and (transport.get_write_buffer_size() or not transport.is_closing()):
            self.abort()

    async def end(self, timeout: float) -> bool:
        """End the session cleanly: ``session.end`` (billing stops at once,
        docs/architecture/agent-api.md#connecting), read until
        ``session.ended`` for at most ``timeout`` s (events still in flight are nobody's any more), then the agent's
        close, which follows it at once; close. Returns True if ``session.ended`` was seen. Never raises for a peer
        that is already gone."""
        ended = False
        try:
            async with asyncio.timeout(timeout):
                if self.open_:
                    await self.send(session_end())
                    while not isinstance(await self.recv(), SessionEnded):
                        pass
                    ended = True
                    # Read the agent's close frame, so that its code is what close_code reports. Closing first
                    # reported 1006 on aiohttp after a cancelled read (a call's teardown cancels its agent reader
                    # first): that marks the socket abnormally closed, and its close() then skips the peer's frame.
                    async with asyncio.timeout(CLOSE_TIMEOUT_S):
                        while True:
                            await self.recv()
        except (TimeoutError, AgentClosed, AgentProtocolError, OSError):
            pass
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT_S):
                await self.close()
        except (TimeoutError, OSError):
            pass
        self._release()  # never leave the socket and its unsent input.audio behind the call
        return ended


# ---------------------------------------------------------------------------------------------------- aiohttp
class _AiohttpConnection(AgentConnection):
    __slots__ = ("_ws", "endpoint", "_rcvd", "_dropped", "_transport", "_quick_chars", "_send_timeout", "_aborted",
                 "_buffered")  # fmt: skip

    def __init__(
        self, ws: aiohttp.ClientWebSocketResponse, endpoint: AgentEndpoint, send_timeout: float = SEND_TIMEOUT_S
    ) -> None:
        self._ws = ws
        self.endpoint = endpoint
        # The peer's close frame, once seen. aiohttp reports a FIN without one as close code 1000, so the
        # transport keeps its own record: only a close frame counts as a close (else AgentClosed(None, "")).
        self._rcvd: tuple[int, str] | None = None
        self._dropped = False
        self._aborted, self._quick_chars = False, 0
        # The socket's transport, for backlogged(): the writer's, as aiohttp exposes no public accessor for it
        # (tests/integration/test_agent_transport.py fails if an aiohttp upgrade moves it).
        self._set_transport(getattr(getattr(ws, "_writer", None), "transport", None), send_timeout)

    @classmethod
    async def connect(
        cls, endpoint: AgentEndpoint, *, timeout: float, max_size: int, send_timeout: float
    ) -> _AiohttpConnection:
        if endpoint.http is None:
            raise ValueError("the aiohttp agent transport needs the app's shared ClientSession (AgentEndpoint.http)")
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        try:
            async with asyncio.timeout(timeout):
                ws = await endpoint.http.ws_connect(
                    endpoint.url,
                    headers=headers,
                    timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=CLOSE_TIMEOUT_S),
                    max_msg_size=max_size,
                    compress=0,  # audio is base64 in JSON: deflate costs CPU per frame for little gain
                    heartbeat=AIOHTTP_HEARTBEAT_S,
                    autoping=True,
                    autoclose=True,
                )
        except aiohttp.WSServerHandshakeError as exc:
            raise AgentUnavailable(
                f"cannot connect to agent {endpoint.url}: handshake rejected, HTTP {exc.status} {exc.message}"
            ) from None
        except (OSError, TimeoutError, aiohttp.ClientError, ValueError) as exc:
            raise AgentUnavailable(f"cannot connect to agent {endpoint.url}: {exc!r}") from None
        return cls(ws, endpoint, send_timeout)

    async def send(self, text: str) -> None:
        if self._ws.closed or self._rcvd is not None or self._dropped:
            raise AgentClosed(*self._close_info())  # never write to a socket known to be going
        if self._buffered() or len(text) > self._quick_chars:
            return await self._send_waiting(text)  # it may wait for the drain: bounded
        try:
            await self._ws.send_str(text)  # cannot wait for the drain (see _quick_chars): no timer
        except (ConnectionError, aiohttp.ClientError):  # ClientConnectionResetError: the transport is closing
            raise AgentClosed(*self._close_info()) from None

    async def _write(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except (ConnectionError, aiohttp.ClientError):
            raise AgentClosed(*self._close_info()) from None

    def abort(self) -> None:
        self._dropped = True  # a drop (1006), as the reader will see it
        super().abort()

    async def recv(self) -> ServerEvent:
        msg = await self._ws.receive()
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:  # binary: parsed like websockets does
            return parse_server_event(msg.data)
        if msg.type is WSMsgType.CLOSE:
            self._rcvd = (int(msg.data), str(msg.extra or ""))
        elif self._rcvd is None:  # CLOSED or ERROR without a close frame: a drop
            self._dropped = True
        raise AgentClosed(*self._close_info())

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code=code, message=reason.encode())

    def _close_info(self) -> tuple[int | None, str]:
        return self._rcvd if self._rcvd is not None else (None, "")

    @property
    def close_code(self) -> int | None:
        if self._rcvd is not None:
            return self._rcvd[0]
        if not self._ws.closed:
            return None
        return 1006 if self._dropped else self._ws.close_code  # else: the peer answered our own close

    @property
    def close_reason(self) -> str:
        return self._rcvd[1] if self._rcvd is not None else ""

    @property
    def open_(self) -> bool:
        return not self._ws.closed and self._rcvd is None and not self._dropped


# ------------------------------------------------------------------------------------------------- websockets
class _WebsocketsConnection(AgentConnection):
    def __init__(self, ws: ClientConnection, endpoint: AgentEndpoint, send_timeout: float = SEND_TIMEOUT_S) -> None:
        self._ws = ws
        self.endpoint = endpoint
        self._set_transport(ws.transport, send_timeout)

    @classmethod
    async def connect(
        cls, endpoint: AgentEndpoint, *, timeout: float, max_size: int, send_timeout: float
    ) -> _WebsocketsConnection:
        headers = {"Authorization": f"Bearer {endpoint.api_key}"} if endpoint.api_key else {}
        try:
            ws = await connect(
                endpoint.url,
                additional_headers=headers,
                open_timeout=timeout,
                max_size=max_size,
                compression=None,  # audio is base64 in JSON: deflate costs CPU per frame for little gain
                ping_interval=WEBSOCKETS_PING_INTERVAL_S,  # the library default (20 s + 20 s) could take 40 s
                ping_timeout=WEBSOCKETS_PING_TIMEOUT_S,
                close_timeout=CLOSE_TIMEOUT_S,
                user_agent_header=USER_AGENT,
            )
        except (TimeoutError, OSError, InvalidHandshake, InvalidURI) as exc:
            raise AgentUnavailable(f"cannot connect to agent {endpoint.url}: {exc!r}") from None
        return cls(ws, endpoint, send_timeout)

    async def send(self, text: str) -> None:
        if self._aborted:
            raise AgentClosed(*self._close_info())  # its transport is gone: a write would be dropped silently
        if self._buffered() or len(text) > self._quick_chars:
            return await self._send_waiting(text)  # it may wait for the drain: bounded
        try:
            await self._ws.send(text)  # cannot wait for the drain (see _quick_chars): no timer
        except ConnectionClosed as exc:
            raise AgentClosed(*_close_info(exc)) from None

    async def _write(self, text: str) -> None:
        try:
            await self._ws.send(text)
        except ConnectionClosed as exc:
            raise AgentClosed(*_close_info(exc)) from None

    def _close_info(self) -> tuple[int | None, str]:
        rcvd = self._ws.protocol.close_rcvd
        return (rcvd.code, rcvd.reason) if rcvd is not None else (None, "")

    async def recv(self) -> ServerEvent:
        try:
            data = await self._ws.recv()
        except ConnectionClosed as exc:
            raise AgentClosed(*_close_info(exc)) from None
        return parse_server_event(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._ws.close(code, reason)

    @property
    def close_code(self) -> int | None:
        return self._ws.close_code

    @property
    def close_reason(self) -> str:
        return self._ws.close_reason or ""

    @property
    def open_(self) -> bool:
        return self._ws.state is websockets.protocol.State.OPEN and not self._aborted


def _unknown_buffer() -> int:
    """``_buffered`` of a connection whose transport is unknown: assume bytes wait, so every send is bounded."""
    return 1


def _close_info(exc: ConnectionClosed) -> tuple[int | None, str]:
    if exc.rcvd is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return None, ""

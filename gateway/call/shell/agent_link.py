"""The call's agent socket: connect, resume after a drop, hand over to / take over from a parked session, end it.
Not pure: asyncio (docs/architecture/failure-behaviour.md#agent-faults; the transport itself is
:mod:`gateway.agent.client`).

- connect: ``agent.connect_attempts`` attempts with exponential backoff from 250 ms; a socket that closes before
  ``session.ready``, no ready in ``agent.ready_timeout_s``, or a retryable ``session.error``
  (``RETRYABLE_CONNECT_CODES``) is a failed attempt; any other fatal ``session.error`` ends the call at once.
- resume (:meth:`AgentLink.resume`): after an UNCLEAN drop (socket closed without ``session.ended``),
  ``session.resume`` on a new socket with fresh auth, backoff 0, 0.25, 0.5 … 2 s, within ``RESUME_WINDOW_S``
  (inside the server's 30 s window). A server that just carries on (no ``session.ready`` within ``RESUME_QUIET_S``,
  or another event first) is accepted too. ``FINAL_RESUME_CODES`` (any non-retryable ``session.error``) or a spent
  window end the call with the apology.
- end (:meth:`AgentLink.end`): ``session.end``, then ``session.ended`` awaited for ``agent.end_timeout_s``. A call that
  ends while its dropped session is being resumed (``resuming``) has no socket that can carry it: the session is
  resumed on a new socket only to be ended, connect included within ``agent.end_timeout_s`` (then the close's own
  bound), so the teardown takes no longer than any other end; if the agent cannot be reached in that time the
  session is left to the server's resume window, as before.

The link only moves messages and owns these timeouts; what they mean for the call is the core's
(:mod:`gateway.call.core`), and the session (:mod:`gateway.call.shell.session`) connects the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog

from ...agent import protocol as ap
from ...agent.client import AgentClosed, AgentConnection, AgentEndpoint
from ...config import AgentSettings
from ...errors import AgentSessionError, AgentUnavailable

__all__ = ["RESUME_QUIET_S", "RESUME_WINDOW_S", "AgentLink"]

#: How long to keep trying to resume a dropped agent session: inside the server's 30 s window, with margin for the
#: last attempt's handshake (SDK-DI gives up after about 25 s too).
RESUME_WINDOW_S = 25.0
#: After ``session.resume``, how long to wait for ``session.ready`` before assuming a server that just carries on.
RESUME_QUIET_S = 1.0

log = structlog.get_logger("gateway.call")


class AgentLink:
    """One call's agent connection (at most one at a time). ``conn`` is the live socket, if any."""

    __slots__ = ("_settings", "broken_conn", "conn", "endpoint", "resume_window_s", "resuming", "sending")

    def __init__(
        self, endpoint: AgentEndpoint, settings: AgentSettings, *, resume_window_s: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self._settings = settings
        self.resume_window_s = RESUME_WINDOW_S if resume_window_s is None else resume_window_s
        self.conn: AgentConnection | None = None
        #: An ``input.audio`` send is in flight (the carrier reader's or the sender's): newer frames queue behind.
        self.sending = False
        #: A send found this socket going: nothing more is sent on it (the reader notices the drop and resumes).
        self.broken_conn: AgentConnection | None = None
        #: The id of a dropped session being resumed (set by the call when it notices the drop, cleared once the
        #: session is back or given up): a call ending meanwhile still ends it (:meth:`end`).
        self.resuming: str | None = None

    # ---- sending --------------------------------------------------------------------------------------------------
    def sendable(self) -> AgentConnection | None:
        """The socket, unless a send already found it going."""
        conn = self.conn
        return conn if conn is not self.broken_conn else None

    def broken(self, conn: AgentConnection) -> None:
        """A send on ``conn`` failed: the reader will notice the drop and resume; don't spin on it meanwhile."""
        self.broken_conn = conn

    async def send(self, text: str) -> bool:
        """Send a control message; False if there is no usable socket (the message is not sent)."""
        conn = self.sendable()
        if conn is None:
            return False
        try:
            await conn.send(text)
        except AgentClosed:
            self.broken_conn = conn
            return False
        return True

    # ---- opening --------------------------------------------------------------------------------------------------
    async def open_session(
        self, first_message: str, on_event: Callable[[ap.ServerEvent], Awaitable[None]]
    ) -> ap.SessionReady:
        """Connect and configure a new session (``first_message``: its ``session.update``); events before
        ``session.ready`` go to ``on_event``."""
        cfg = self._settings
        delay = 0.25
        for attempt in range(1, cfg.connect_attempts + 1):
            try:
                conn = await AgentConnection.open(
                    self.endpoint, timeout=cfg.connect_timeout_s, send_timeout=cfg.send_timeout_s
                )
                self._adopt(conn)
                return await self._await_ready(conn, first_message, on_event)
            except AgentUnavailable as exc:
                if isinstance(exc, AgentSessionError) and exc.code not in ap.RETRYABLE_CONNECT_CODES:
                    raise
                log.warning("agent.connect_failed", attempt=attempt, error=str(exc))
                if attempt == cfg.connect_attempts:
                    raise
                await self.discard()
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _await_ready(
        self, conn: AgentConnection, first_message: str, on_event: Callable[[ap.ServerEvent], Awaitable[None]]
    ) -> ap.SessionReady:
        try:
            try:
                await conn.send(first_message)
            except AgentClosed:
                pass  # the server may have refused us on open (session.error, then 1008): read why below
            async with asyncio.timeout(self._settings.ready_timeout_s):
                while True:
                    ev = await conn.recv()
                    if isinstance(ev, ap.SessionReady):
                        return ev
                    if isinstance(ev, ap.SessionEnded):
                        raise AgentUnavailable("session.ended before session.ready")
                    await on_event(ev)  # session.updated, session.error …
                    if isinstance(ev, ap.SessionError) and ev.fatal:
                        raise AgentSessionError(ev.code, ev.message)
        except TimeoutError:
            raise AgentUnavailable("no session.ready in time") from None
        except AgentClosed as exc:
            raise AgentUnavailable(f"agent closed before ready ({exc.code} {exc.reason})") from None

    async def reopen(self, session_id: str, remaining_s: float) -> ap.ServerEvent | None:
        """One resume attempt: a new socket, ``session.resume``, and its answer: ``session.ready`` (expected),
        another event (a server that just continues), or None (silence for ``RESUME_QUIET_S``: assume it
        continues). A ``session.error`` raises :class:`AgentSessionError` (the caller decides whether it is final);
        a failed connect AgentUnavailable, a drop AgentClosed."""
        timeout = max(0.1, min(self._settings.connect_timeout_s, remaining_s))
        conn = await AgentConnection.open(self.endpoint, timeout=timeout, send_timeout=self._settings.send_timeout_s)
        self._adopt(conn)
        await conn.send(ap.session_resume(session_id))
        try:
            async with asyncio.timeout(RESUME_QUIET_S):
                ev = await conn.recv()
        except TimeoutError:
            return None
        if isinstance(ev, ap.SessionError):
            raise AgentSessionError(ev.code, ev.message)
        return ev

    def _adopt(self, conn: AgentConnection) -> None:
        self.conn = conn
        self.broken_conn = None

    def adopt(self, conn: AgentConnection) -> None:
        """Carry on with a live session's socket (a parked one, gateway.reattach)."""
        self._adopt(conn)

    def detach(self) -> AgentConnection | None:
        """Hand the socket over (to be parked): this call no longer owns it."""
        conn, self.conn = self.conn, None
        return conn

    # ---- closing --------------------------------------------------------------------------------------------------
    async def discard(self) -> None:
        """Let go of a socket that failed, without ending its session: close it (bounded) if a close frame can still
        get through, then abort its transport. The socket is known bad, and a close alone waits for its buffer to
        drain (forever on a blackholed link): the abort releases it, its unsent bytes, and a send still waiting on it
        (which then hands its frames back, gateway.call.shell.inbound)."""
        conn, self.conn = self.conn, None
        if conn is not None:
            if conn.open_ and not conn.backlogged():
                try:
                    async with asyncio.timeout(2):
                        await conn.close()
                except (TimeoutError, OSError):
                    pass
            conn.abort()

    async def end(self, *, already_ended: bool) -> bool:
        """``session.end``, wait briefly for ``session.ended``, close (just close if the agent already ended the
        session). True if ``session.ended`` was seen. A session being resumed whose socket cannot carry the
        ``session.end`` (none yet, or the dropped one) is ended on a new socket (:meth:`_end_dropped`)."""
        conn = self.conn
        if self.resuming is not None and not already_ended and (conn is None or not conn.open_):
            session_id, self.resuming = self.resuming, None
            return await self._end_dropped(session_id)
        if conn is None:
            return already_ended
        if already_ended:
            await conn.end(0)
            ended = True
        else:
            ended = await conn.end(self._settings.end_timeout_s)
        return ended

    async def _end_dropped(self, session_id: str) -> bool:
        """End a dropped session the call no longer has a socket for: the server keeps it (billed) for its resume
        window otherwise. A new socket, ``session.resume``, then ``session.end`` at once (frames keep their order, so
        the server takes the resume first); connect and ``session.ended`` within ``agent.end_timeout_s`` together,
        the close within its own bound. True if ``session.ended`` was seen."""
        cfg = self._settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + cfg.end_timeout_s
        await self.discard()  # the dropped socket, if it is still here
        try:
            conn = await AgentConnection.open(self.endpoint, timeout=cfg.end_timeout_s, send_timeout=cfg.send_timeout_s)
        except AgentUnavailable:
            return False  # unreachable: the server's resume window ends it, as if the call had not tried
        self._adopt(conn)
        try:
            await conn.send(ap.session_resume(session_id))
        except AgentClosed:
            pass  # conn.end finds it closed
        # A budget spent by the connect still sends session.end (a fresh socket's send does not wait), then gives up.
        return await conn.end(max(0.0, deadline - loop.time()))

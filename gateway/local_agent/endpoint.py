"""``GET /v1/ws``: the local agent's WebSocket endpoint. Not pure (the asyncio shell around :mod:`.handshake`).

:func:`handle_websocket` upgrades the socket, checks its credentials, runs the :class:`~.handshake.Handshake` to a
session (a new one, or one resumed and taken over from a socket that still holds it), then serves it on a
:class:`~.connection.Connection` until the connection ends, and reports how it ended.

Error tree (what ends a connection, and how it is reported; docs/reference/local-agent-api.md#implemented):

- :class:`~.protocol.ProtocolError` (a :class:`~gateway.errors.RemoteProtocolError`): the client broke the
  protocol. One ``session.error``; fatal ones close 1008, the others keep the session open.
- :class:`~.endings.ConnectionDone`: the connection ends as it should (``session.end``, peer gone, idle, server
  shutdown, taken over).
- :class:`~.brain.IntentsError`, :class:`~.settings.SettingsError` (:class:`~gateway.errors.ConfigError`): config
  invalid, raised at start-up only.
- LLM endpoint failures: upstream unavailable; handled inside the LLM engine (logged, apology spoken).
- Anything else is our bug: logged once here, at the session boundary (``local_agent.session_failed``), then
  ``session.error{internal_error}`` and close 1011.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from . import protocol as proto
from .connection import Connection
from .endings import EndReason
from .handshake import Action, Close, Handshake, LoadAgent, OpenSession, Phase, ResumeSession, Send
from .runtime import AgentRuntime
from .session import Session

__all__ = ["handle_websocket"]

log = structlog.get_logger("local_agent")

_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
#: How long a resume waits for the socket it takes the session over from to let go of it.
TAKE_OVER_S = 5.0


async def handle_websocket(runtime: AgentRuntime, request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/ws``: auth on open, the first message, then the session (docs/reference/local-agent-api.md#auth)."""
    s = runtime.settings
    ws = web.WebSocketResponse(heartbeat=s.heartbeat_s, max_msg_size=1 << 20, timeout=2.0)
    await ws.prepare(request)
    try:
        grant = proto.authenticate(
            request.headers.get("Authorization"),
            request.query.get("token"),
            api_key=runtime.api_key,
            secret=runtime.token_secret,
            now=time.time(),
        )
        if runtime.closing:
            await ws.close(code=1001, message=b"server shutting down")
            return ws
        if grant is None:
            log.info("local_agent.auth_failed", remote=request.remote)
        hs = Handshake(voices=s.voices)
        actions = hs.authenticate(grant, now=time.time())
        if hs.phase is Phase.AWAITING_FIRST:
            runtime.purge_expired(asyncio.get_running_loop().time())
        opened = await _run_handshake(runtime, ws, hs, actions)
        if opened is not None:
            session, new = opened
            await _serve(runtime, ws, session, greet=new)
    except (ConnectionError, TimeoutError):
        pass  # the peer went away before a session existed
    finally:
        if not ws.closed:
            await ws.close()
    return ws


async def _run_handshake(
    runtime: AgentRuntime, ws: web.WebSocketResponse, hs: Handshake, actions: list[Action]
) -> tuple[Session, bool] | None:
    """Carry out the handshake's actions and feed it the socket's messages until it is over: the session to serve
    and whether it is new, or ``None`` (the socket is closed or closing)."""
    s = runtime.settings
    pending: deque[Action] = deque(actions)
    session: Session | None = None
    new = False
    while True:
        while pending:
            action = pending.popleft()
            if isinstance(action, Send):
                await _send(ws, action.event, s.send_timeout_s)
            elif isinstance(action, Close):
                await ws.close(code=action.code, message=action.message)
            elif isinstance(action, LoadAgent):
                store = runtime.store
                fields = await store.agent_fields(action.agent_id) if store is not None else None
                pending.extend(hs.agent_loaded(action.agent_id, fields, now=time.time()))
            elif isinstance(action, OpenSession):
                session, new = runtime.open_session(action.config, now=time.time()), True
                pending.extend(
                    hs.opened(
                        session.id,
                        session.config,
                        expires_at=session.expires_at,
                        resume_token=session.resume_token,
                        now=time.time(),
                    )
                )
            else:
                session = await _take_back(runtime, action)
                if session is None:
                    pending.extend(hs.resume_failed(action.session_id, now=time.time()))
                else:
                    pending.extend(
                        hs.resumed(
                            session.id,
                            session.config,
                            expires_at=session.expires_at,
                            resume_token=session.resume_token,
                            now=time.time(),
                        )
                    )
        if hs.phase is Phase.READY:
            assert session is not None and hs.grant is not None
            _log_ready(session, hs.grant, new)
            return session, new
        if hs.phase is Phase.CLOSED:
            return None
        try:
            msg = await ws.receive(timeout=s.first_message_timeout_s)
        except TimeoutError:
            pending.extend(hs.timed_out())
            continue
        if msg.type in _CLOSED:
            pending.extend(hs.peer_closed())
        else:
            pending.extend(hs.receive(msg.data if msg.type is WSMsgType.TEXT else None, now=time.time()))


async def _send(ws: web.WebSocketResponse, event: dict[str, Any], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        await ws.send_str(proto.json_dumps(event))


async def _take_back(runtime: AgentRuntime, action: ResumeSession) -> Session | None:
    """The session to resume, detached from any socket that still holds it; ``None``: gone, or not let go."""
    session = runtime.sessions.get(action.session_id)
    if session is None or session.ended:
        return None
    old = session.connection
    if old is not None:
        # The old socket may not have noticed the drop yet (half-open TCP): the new one wins.
        await old.take_over()
        try:
            async with asyncio.timeout(TAKE_OVER_S):
                await session.detached.wait()
        except TimeoutError:
            return None
    return session


def _log_ready(session: Session, grant: proto.Grant, new: bool) -> None:
    if not new:
        log.info("local_agent.session_resumed", session_id=session.id)
        return
    config = session.config
    log.info(
        "local_agent.session_ready",
        session_id=session.id,
        input_format=config.input_format.encoding,
        output_format=config.output_format.encoding,
        tools=len(config.tools),
        greeting=bool(config.greeting),
        auth=grant.kind,
    )


async def _serve(runtime: AgentRuntime, ws: web.WebSocketResponse, session: Session, *, greet: bool) -> None:
    conn = Connection(runtime, ws, session)
    session.connection = conn
    session.detached_at = None
    session.detached.clear()
    runtime.connections.add(conn)
    reason = EndReason.PEER_GONE
    try:
        reason = await conn.run(greet=greet)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the peer's connection is lost (with handler_cancellation, as its
        # test server runs), or the server is going down: the session is detached, resumable, and the
        # cancellation goes on.
        _log_closed(conn, conn.server_close or EndReason.PEER_GONE)
        raise
    except Exception:
        # Our bug: logged once, here at the session boundary, with the session's context.
        log.exception("local_agent.session_failed", session_id=session.id)
        session.ended = True
        runtime.sessions.pop(session.id, None)
        runtime.session_closed(session, None)
        await conn.flush_final(
            [proto.session_error("internal_error", "Internal error", now=time.time(), session_id=session.id)]
        )
        await ws.close(code=1011, message=b"internal error")
        return
    finally:
        runtime.connections.discard(conn)
        session.connection = None
        session.detached_at = asyncio.get_running_loop().time()
        session.detached.set()
    duration = time.time() - session.created_at
    if reason in (EndReason.CLIENT_END, EndReason.IDLE):
        session.ended = True
        runtime.sessions.pop(session.id, None)
        await conn.flush_final(
            [
                proto.server_event(
                    "session.ended",
                    time.time(),
                    session_duration_seconds=round(duration, 3),
                    audio_duration_seconds=None,  # always null live
                )
            ]
        )
        await ws.close(code=1000)
    elif reason is EndReason.SHUTDOWN:
        session.ended = True
        runtime.sessions.pop(session.id, None)
    _log_closed(conn, reason)


def _log_closed(conn: Connection, reason: EndReason) -> None:
    session = conn.session
    conn.rt.session_closed(session, reason)
    log.info(
        "local_agent.session_closed",
        session_id=session.id,
        reason=reason.value,
        duration_s=round(time.time() - session.created_at, 1),
        input_audio_s=round(session.input_audio_s, 1),
        turns=conn.turns,
        input_frames_dropped=conn.frames_dropped,
        resumable=not session.ended,
    )

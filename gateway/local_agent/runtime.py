"""What the local agent shares across sessions in one process: settings, models, the one worker pool, the reply
engine, credentials, the synthesis cache and the registry of sessions. Not pure.

Every blocking model call (VAD, Whisper, Piper, the embedder) runs in the one bounded pool (``threads``), never on
the event loop (docs/architecture/local-agent.md#concurrency). The app builds one :class:`AgentRuntime`
at start-up and closes it at shutdown (:mod:`.app`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import structlog

from . import protocol as proto
from .brain import ReplyEngine
from .endings import EndReason
from .session import Session
from .settings import LocalAgentSettings
from .synth_cache import SynthCache

if TYPE_CHECKING:
    from .connection import Connection
    from .speech import SpeechModels
    from .store.service import SessionStore

__all__ = ["AgentRuntime"]

#: ``public_close_reason`` of a session that ended on its connection (docs/reference/local-agent-api.md#sessions).
_CLOSE_REASONS = {
    EndReason.CLIENT_END: "client_end",
    EndReason.IDLE: "idle_timeout",
    EndReason.SHUTDOWN: "server_shutdown",
}

log = structlog.get_logger("local_agent")
T = TypeVar("T")


class AgentRuntime:
    """Everything the local agent shares across sessions in one process: settings, models, the worker pool,
    the reply engine, credentials and the registry of sessions (attached or waiting to be resumed)."""

    def __init__(
        self,
        settings: LocalAgentSettings,
        models: SpeechModels,
        engine: ReplyEngine,
        executor: ThreadPoolExecutor,
        *,
        api_key: str,
        token_secret: bytes,
        split_sentences: Callable[[str], list[str]],
        store: SessionStore | None = None,
    ) -> None:
        self.settings = settings
        self.models = models
        self.engine = engine
        self.executor = executor
        self.api_key = api_key
        self.token_secret = token_secret
        self.split_sentences = split_sentences
        self.sessions: dict[str, Session] = {}
        self.connections: set[Connection] = set()
        self.synth_cache = SynthCache()
        self.closing = False
        #: Stored agents and session records (:mod:`.store`); ``None`` records nothing.
        self.store = store

    async def run_blocking(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking model call in the shared, bounded worker pool (never on the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, functools.partial(fn, *args))

    @property
    def live_sessions(self) -> int:
        """Sessions with a socket attached right now."""
        return sum(1 for s in self.sessions.values() if s.connection is not None)

    def open_session(self, config: proto.SessionConfig, *, now: float) -> Session:
        """A new session with ``config`` (``now``: wall clock), registered so it can be resumed."""
        sid = proto.new_session_id()
        expires_at = now + self.settings.session_expiry_s
        session = Session(
            sid,
            config,
            now=now,
            expires_at=expires_at,
            resume_token=proto.mint_resume_token(self.token_secret, session_id=sid, expires_at=expires_at),
        )
        self.sessions[sid] = session
        if self.store is not None:
            session.recorder = self.store.session_opened(session)
        return session

    def session_closed(self, session: Session, reason: EndReason | None) -> None:
        """A connection of ``session`` ended (``reason``; ``None``: our bug ended it). An ended session's record
        gets its status and close reason (docs/reference/local-agent-api.md#sessions); a detached one stays
        ``active`` until it is resumed or its resume window runs out."""
        if self.store is None or not session.ended:
            return
        if reason is None:
            self.store.session_ended(session, status="failed", reason="internal_error")
        else:
            self.store.session_ended(session, status="completed", reason=_CLOSE_REASONS.get(reason, reason.value))

    def purge_expired(self, now_mono: float) -> None:
        window = self.settings.resume_window_s
        for sid, s in list(self.sessions.items()):
            if s.connection is None and s.detached_at is not None and now_mono - s.detached_at > window:
                del self.sessions[sid]
                s.ended = True
                if self.store is not None:
                    self.store.session_ended(s, status="completed", reason="resume_timeout")
                log.info("local_agent.session_expired", session_id=sid)

    async def close_all(self) -> None:
        """Server shutdown: close every live socket (1001) and forget every session."""
        self.closing = True
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.close_from_server() for c in conns), return_exceptions=True)
        for s in self.sessions.values():
            s.ended = True
            self.session_closed(s, EndReason.SHUTDOWN)
        self.sessions.clear()

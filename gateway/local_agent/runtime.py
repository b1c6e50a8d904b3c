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
from .session import Session
from .settings import LocalAgentSettings
from .synth_cache import SynthCache

if TYPE_CHECKING:
    from .connection import Connection
    from .speech import SpeechModels

__all__ = ["AgentRuntime"]

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
        return session

    def purge_expired(self, now_mono: float) -> None:
        window = self.settings.resume_window_s
        for sid, s in list(self.sessions.items()):
            if s.connection is None and s.detached_at is not None and now_mono - s.detached_at > window:
                del self.sessions[sid]
                log.info("local_agent.session_expired", session_id=sid)

    async def close_all(self) -> None:
        """Server shutdown: close every live socket (1001) and forget every session."""
        self.closing = True
        conns = list(self.connections)
        if conns:
            await asyncio.gather(*(c.close_from_server() for c in conns), return_exceptions=True)
        self.sessions.clear()

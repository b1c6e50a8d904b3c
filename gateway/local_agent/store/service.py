"""The local agent's store as the app uses it: the data directory, its one worker thread, the session records and
recorders. Not pure (asyncio, threads, files).

Every blocking call (SQLite, files) runs on one dedicated thread, never on the event loop and never in the speech
models' pool, so a slow disk cannot delay a reply. One thread also orders the writes: a session's record is
written before its recording is flushed, and its end before a REST read that comes after it.

Once a second :meth:`SessionStore._tick` flushes each live session's recorder; every ``HEARTBEAT_S`` it marks this
process's active sessions as seen, and ends as ``failed``/``server_lost`` the active sessions of a process that
stopped without ending them (docs/reference/local-agent-api.md#sessions). When a session ends its recorder is
flushed and closed, its record gets its status, close reason and config, and the oldest ended sessions beyond
``keep_sessions`` are deleted with their files.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import structlog

from .. import protocol as proto
from ..settings import SettingsError
from .agents import agent_session_fields, is_agent_id
from .db import Database
from .recorder import NULL_RECORDER, Recorder

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["DB_NAME", "HEARTBEAT_S", "SessionStore", "is_session_id"]

log = structlog.get_logger("local_agent")
T = TypeVar("T")

DB_NAME: Final = "local_agent.sqlite3"
FLUSH_S: Final = 1.0
HEARTBEAT_S: Final = 30.0
#: An active session of another process not seen for this long belongs to a process that died.
STALE_S: Final = 4 * HEARTBEAT_S
_SESSION_ID: Final = re.compile(r"sess_[0-9a-f]{32}")


def is_session_id(value: str) -> bool:
    """The shape of the ids the agent hands out; anything else never names a file in the data directory."""
    return _SESSION_ID.fullmatch(value) is not None


class SessionStore:
    """Stored agents and session records in ``data_dir`` (see the module docstring)."""

    def __init__(self, data_dir: Path, *, keep_sessions: int, record_audio: bool) -> None:
        self.data_dir = data_dir
        self.keep_sessions = keep_sessions
        self.record_audio = record_audio
        self.owner = secrets.token_hex(8)  # this process, in the session records it writes
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-agent-store")
        self._db: Database | None = None
        self._recorders: dict[str, Recorder] = {}
        self._ticker: asyncio.Task[None] | None = None

    # ---- life

    async def start(self) -> None:
        """Open (or create) the data directory's database; :class:`~..settings.SettingsError` naming ``data_dir``
        when it cannot be, so a bad directory stops start-up with a clear message."""
        try:
            self._db = await self.run(Database, self.data_dir / DB_NAME)
        except (OSError, sqlite3.Error) as e:
            raise SettingsError(f"data_dir: cannot keep the local agent's data in {self.data_dir}: {e}") from None
        await self.run(self._heartbeat)
        self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="local_agent_store")

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            try:
                await self._ticker
            except asyncio.CancelledError:
                pass
        for rec in list(self._recorders.values()):  # sessions nobody ended (should be none after close_all)
            rec.closed = True
            await self.run(rec.flush, final=True)
        self._recorders.clear()
        if self._db is not None:
            await self.run(self._db.close)
        self._executor.shutdown(wait=True)

    @property
    def db(self) -> Database:
        assert self._db is not None, "the store has not started"
        return self._db

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking call on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    def _submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        """Queue a blocking call on the store's thread without waiting; a failure is logged, never raised."""

        def call() -> None:
            try:
                fn(*args, **kwargs)
            except Exception:
                log.exception("local_agent.store_failed", call=getattr(fn, "__name__", "?"))

        try:
            self._executor.submit(call)
        except RuntimeError:  # the store has closed (shutdown): nothing more is written
            log.info("local_agent.store_closed", call=getattr(fn, "__name__", "?"))

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + HEARTBEAT_S
        while True:
            await asyncio.sleep(FLUSH_S)
            for rec in list(self._recorders.values()):
                if not rec.closed:
                    self._submit(rec.flush)
            if loop.time() >= next_beat:
                next_beat = loop.time() + HEARTBEAT_S
                self._submit(self._heartbeat)

    def _heartbeat(self) -> None:
        now = time.time()
        for sid in self.db.heartbeat(self.owner, now=now, stale_before=now - STALE_S):
            log.info("local_agent.session_lost", session_id=sid)

    # ---- agents

    async def agent_fields(self, agent_id: str) -> dict[str, Any] | None:
        """The ``session.update`` fields of stored agent ``agent_id``; ``None`` if there is none."""
        if not is_agent_id(agent_id):
            return None
        agent = await self.run(self.db.get_agent, agent_id)
        return None if agent is None else agent_session_fields(agent)

    # ---- sessions (called on the loop; the work is queued on the store's thread)

    def session_opened(self, session: Session) -> Recorder:
        """Record a new session; its recorder (the hooks' target)."""
        rec = Recorder(
            session,
            self.data_dir / "sessions" / session.id,
            loop=asyncio.get_running_loop(),
            record_audio=self.record_audio,
        )
        self._recorders[session.id] = rec
        self._submit(
            self.db.open_session,
            session.id,
            agent_id=session.config.agent_id,
            created_at=session.created_at,
            config=proto.config_echo(session.config, session.id),
            owner=self.owner,
            rate=rec.rate if self.record_audio else None,
        )
        self._submit(rec.open)
        return rec

    def session_ended(self, session: Session, *, status: str, reason: str) -> None:
        """The session is over (idempotent): final flush, then its record's status and close reason."""
        rec = self._recorders.pop(session.id, None)
        if rec is None:
            return
        rec.closed = True
        # The session lets go of its recorder (whose final flush still reads the session, on the store's thread):
        # the two pointing at each other would wait for a full collection (docs/architecture/performance.md).
        session.recorder = NULL_RECORDER
        self._submit(rec.flush, final=True)
        self._submit(
            self.db.end_session,
            session.id,
            status=status,
            reason=reason,
            ended_at=time.time(),
            config=proto.config_echo(session.config, session.id),
        )
        self._submit(self._prune)
        log.info("local_agent.session_recorded", session_id=session.id, status=status, reason=reason)

    def _prune(self) -> None:
        for sid in self.db.prune_sessions(self.keep_sessions):
            shutil.rmtree(self.data_dir / "sessions" / sid, ignore_errors=True)

    def session_dir(self, session_id: str) -> Path:
        if not is_session_id(session_id):
            raise ValueError(f"not a session id: {session_id!r}")
        return self.data_dir / "sessions" / session_id

    def is_live(self, session_id: str) -> bool:
        return session_id in self._recorders

    async def delete_session(self, session_id: str) -> bool:
        """Forget an ended session and delete its files; ``False`` if there is no such record."""
        if not is_session_id(session_id):
            return False
        found = await self.run(self.db.delete_session, session_id)
        if found:
            await self.run(shutil.rmtree, self.session_dir(session_id), ignore_errors=True)
        return bool(found)

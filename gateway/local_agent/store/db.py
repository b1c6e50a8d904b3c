"""The local agent's SQLite file: stored agents and the session records. Not pure (blocking file I/O).

Every method blocks, so the store calls them on its one worker thread, never on the event loop
(:mod:`.service`); one :class:`Database` (one connection) belongs to that thread. Why SQLite rather than JSON files
(docs/reference/local-agent-api.md#data-directory): an update is one atomic transaction, a page of sessions newest
first with filters is one indexed query, and with ``serve --workers N`` every worker process shares the one file
(WAL mode; readers never wait for a writer) so an agent created through one worker opens sessions on all of them.
Audio stays out of it: recordings are plain files beside it.

Timestamps are epoch seconds here; :mod:`.http` renders them as ISO 8601.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Database", "SessionRow"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS agents (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS agents_by_time ON agents (created_at, id);
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    agent_id TEXT,
    status TEXT NOT NULL,
    public_close_reason TEXT,
    created_at REAL NOT NULL,
    ended_at REAL,
    config TEXT,
    owner TEXT NOT NULL,
    seen_at REAL NOT NULL,
    sample_rate INTEGER
);
CREATE INDEX IF NOT EXISTS sessions_by_time ON sessions (created_at, id);
"""


@dataclass(frozen=True, slots=True)
class SessionRow:
    id: str
    agent_id: str | None
    status: str
    public_close_reason: str | None
    created_at: float
    ended_at: float | None
    config: dict[str, Any] | None
    sample_rate: int | None


def _session(row: sqlite3.Row) -> SessionRow:
    return SessionRow(
        row["id"],
        row["agent_id"],
        row["status"],
        row["public_close_reason"],
        row["created_at"],
        row["ended_at"],
        json.loads(row["config"]) if row["config"] else None,
        row["sample_rate"],
    )


class Database:
    """One connection to ``path`` (created with its tables if missing)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # ---- agents

    def put_agent(self, agent_id: str, body: dict[str, Any], *, now: float, create: bool) -> dict[str, Any] | None:
        """Create (``create``) or replace an agent; the stored record, or ``None`` when replacing an unknown id."""
        text = json.dumps(body, separators=(",", ":"))
        with self._tx() as db:
            if create:
                db.execute("INSERT INTO agents VALUES (?, ?, ?, ?)", (agent_id, text, now, now))
            elif db.execute("UPDATE agents SET body=?, updated_at=? WHERE id=?", (text, now, agent_id)).rowcount == 0:
                return None
        return self.get_agent(agent_id)

    def get_agent(self, agent_id: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT * FROM agents WHERE id=?", (agent_id,)).fetchone()
        return None if row is None else self._agent(row)

    @staticmethod
    def _agent(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            **json.loads(row["body"]),
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
        }

    def delete_agent(self, agent_id: str) -> bool:
        return self._db.execute("DELETE FROM agents WHERE id=?", (agent_id,)).rowcount > 0

    def list_agents(self, *, limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], bool]:
        rows = self._page("agents", limit, cursor, "", ())
        return [self._agent(r) for r in rows[:limit]], len(rows) > limit

    # ---- sessions

    def _page(self, table: str, limit: int, cursor: str | None, where: str, args: tuple[Any, ...]) -> list[sqlite3.Row]:
        """Newest first; ``cursor`` is the id of the last row of the previous page. One row more than ``limit`` tells
        whether there is a next page."""
        clauses = [where] if where else []
        params: list[Any] = list(args)
        if cursor:
            clauses.append(f"(created_at, id) < (SELECT created_at, id FROM {table} WHERE id=?)")
            params.append(cursor)
        sql = f"SELECT * FROM {table}"  # noqa: S608 - table names are ours, values are parameters
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        sql += " ORDER BY created_at DESC, id DESC LIMIT ?"
        params.append(limit + 1)
        return list(self._db.execute(sql, params).fetchall())

    def open_session(
        self, session_id: str, *, agent_id: str | None, created_at: float, config: dict[str, Any], owner: str, rate: int
    ) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO sessions VALUES (?, ?, 'active', NULL, ?, NULL, ?, ?, ?, ?)",
            (session_id, agent_id, created_at, json.dumps(config), owner, created_at, rate),
        )

    def end_session(
        self, session_id: str, *, status: str, reason: str, ended_at: float, config: dict[str, Any]
    ) -> None:
        self._db.execute(
            "UPDATE sessions SET status=?, public_close_reason=?, ended_at=?, config=?, seen_at=? "
            "WHERE id=? AND status='active'",
            (status, reason, ended_at, json.dumps(config), ended_at, session_id),
        )

    def heartbeat(self, owner: str, *, now: float, stale_before: float) -> list[str]:
        """Mark this process's active sessions as seen; end every other active session not seen since
        ``stale_before`` (its process died: ``failed``/``server_lost``). The ids ended."""
        with self._tx() as db:
            db.execute("UPDATE sessions SET seen_at=? WHERE owner=? AND status='active'", (now, owner))
            stale = [
                r["id"]
                for r in db.execute(
                    "SELECT id FROM sessions WHERE status='active' AND seen_at<? AND owner<>?", (stale_before, owner)
                )
            ]
            db.execute(
                "UPDATE sessions SET status='failed', public_close_reason='server_lost', ended_at=seen_at "
                "WHERE status='active' AND seen_at<? AND owner<>?",
                (stale_before, owner),
            )
        return stale

    def get_session(self, session_id: str) -> SessionRow | None:
        row = self._db.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
        return None if row is None else _session(row)

    def list_sessions(
        self, *, limit: int, cursor: str | None, status: str | None, agent_id: str | None
    ) -> tuple[list[SessionRow], bool]:
        clauses, args = [], []
        if status:
            clauses.append("status=?")
            args.append(status)
        if agent_id:
            clauses.append("agent_id=?")
            args.append(agent_id)
        rows = self._page("sessions", limit, cursor, " AND ".join(clauses), tuple(args))
        return [_session(r) for r in rows[:limit]], len(rows) > limit

    def delete_session(self, session_id: str) -> bool:
        return self._db.execute("DELETE FROM sessions WHERE id=?", (session_id,)).rowcount > 0

    def prune_sessions(self, keep: int) -> list[str]:
        """Forget the oldest ended sessions beyond the newest ``keep`` ended ones; their ids (to delete files)."""
        rows = self._db.execute(
            "SELECT id FROM sessions WHERE status<>'active' ORDER BY created_at DESC, id DESC LIMIT -1 OFFSET ?",
            (keep,),
        ).fetchall()
        ids = [r["id"] for r in rows]
        for sid in ids:
            self._db.execute("DELETE FROM sessions WHERE id=?", (sid,))
        return ids

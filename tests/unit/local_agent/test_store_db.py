"""The store's SQLite file (a real one in a temporary directory): agents, session records, pages newest first,
pruning, and sessions of a process that died (docs/reference/local-agent-api.md#data-directory)."""

from __future__ import annotations

from pathlib import Path

from gateway.local_agent.store.db import Database


def test_agents_are_created_replaced_listed_newest_first_and_deleted(tmp_path: Path) -> None:
    db = Database(tmp_path / "a.sqlite3")
    for i in range(3):
        db.put_agent(f"agent_{i}", {"name": f"n{i}"}, now=100.0 + i, create=True)
    assert db.put_agent("agent_9", {"name": "x"}, now=200.0, create=False) is None
    replaced = db.put_agent("agent_0", {"name": "new"}, now=300.0, create=False)
    assert replaced == {"id": "agent_0", "name": "new", "created_at": 100.0, "updated_at": 300.0}
    page, more = db.list_agents(limit=2, cursor=None)
    assert [a["id"] for a in page] == ["agent_2", "agent_1"] and more
    page, more = db.list_agents(limit=2, cursor="agent_1")
    assert [a["id"] for a in page] == ["agent_0"] and not more
    assert db.delete_agent("agent_0") and not db.delete_agent("agent_0")
    db.close()
    # Another connection (a restart, another worker process) sees the same file.
    assert Database(tmp_path / "a.sqlite3").get_agent("agent_1") == {
        "id": "agent_1",
        "name": "n1",
        "created_at": 101.0,
        "updated_at": 101.0,
    }


def test_sessions_end_once_filter_and_prune_the_oldest_ended(tmp_path: Path) -> None:
    db = Database(tmp_path / "s.sqlite3")
    for i in range(4):
        db.open_session(
            f"sess_{i}", agent_id="agent_a" if i % 2 else None, created_at=10.0 + i, config={}, owner="p", rate=8000
        )
    db.end_session("sess_0", status="completed", reason="client_end", ended_at=20.0, config={"id": "sess_0"})
    db.end_session("sess_0", status="failed", reason="internal_error", ended_at=30.0, config={})  # already ended
    row = db.get_session("sess_0")
    assert row is not None and (row.status, row.public_close_reason, row.ended_at, row.config) == (
        "completed",
        "client_end",
        20.0,
        {"id": "sess_0"},
    )
    rows, _ = db.list_sessions(limit=10, cursor=None, status="active", agent_id="agent_a")
    assert [r.id for r in rows] == ["sess_3", "sess_1"]
    for sid in ("sess_1", "sess_2"):
        db.end_session(sid, status="completed", reason="client_end", ended_at=40.0, config={})
    assert sorted(db.prune_sessions(keep=1)) == ["sess_0", "sess_1"]
    assert [r.id for r in db.list_sessions(limit=10, cursor=None, status=None, agent_id=None)[0]] == [
        "sess_3",
        "sess_2",
    ]


def test_the_active_sessions_of_a_process_that_stopped_are_marked_lost(tmp_path: Path) -> None:
    db = Database(tmp_path / "h.sqlite3")
    db.open_session("sess_dead", agent_id=None, created_at=10.0, config={}, owner="gone", rate=None)
    db.open_session("sess_mine", agent_id=None, created_at=10.0, config={}, owner="me", rate=None)
    assert db.heartbeat("me", now=500.0, stale_before=380.0) == ["sess_dead"]
    dead, mine = db.get_session("sess_dead"), db.get_session("sess_mine")
    assert dead is not None and (dead.status, dead.public_close_reason, dead.ended_at) == (
        "failed",
        "server_lost",
        10.0,
    )
    assert mine is not None and mine.status == "active"
    assert db.heartbeat("me", now=900.0, stale_before=780.0) == []  # its own sessions are kept alive

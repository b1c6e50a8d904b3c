"""The post-call webhook: a durable outbox in SQLite and the task that delivers it. Not pure: a file and the
network, never on the media path.

Every event (``call.ended``, and ``call.started`` when ``webhooks.call_started``) is first written to
``<storage.data_dir>/outbox.sqlite3`` (WAL, synchronous=FULL: on disk before the call's teardown goes on), with its
``webhook-id``; only then is it sent. So a restart, a crash or a receiver down for hours loses nothing: delivery is
*at least once*, and the id lets the receiver drop a duplicate (docs/how-to/call-records.md#webhooks).

Retries: exponential backoff from ``webhooks.backoff_s`` doubling to at most :data:`MAX_BACKOFF_S` (with ±20 %
jitter), for ``webhooks.retry_for_h`` hours after the event; then the event is *dead* (``webhook.dead_letter`` logged,
``voice_gateway_webhook_dead_letters_total`` counted, kept in the outbox for an operator). An answer of 4xx other
than 408 (timeout) and 429 (slow down) means the receiver refuses this event: it is dead after
:data:`PERMANENT_ATTEMPTS` such answers, not retried for hours. A restarted gateway retries every pending event at
once, but those another live process has claimed. Each attempt first claims its one event, right before sending
it: a lease of the attempt's timeout + :data:`LEASE_MARGIN_S`, and a claim token its outcome is written under; an
outcome whose claim is gone (the lease ran out and another process claimed the event) is not written. So processes
sharing the data directory (``serve --workers N``) do not send an event twice at once, and a late attempt never
undoes a newer one's outcome. The sender outlives a failing outbox (locked, disk full): ``webhook.outbox_error``
logged, the pass retried after a bounded backoff. All SQLite work runs on one thread of its own (the connection is
not shared across threads).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import structlog

from .signing import signed_headers

__all__ = ["MAX_BACKOFF_S", "PERMANENT_ATTEMPTS", "Delivery", "Outbox", "WebhookSender"]

#: The longest wait between two attempts.
MAX_BACKOFF_S = 1800.0
#: Attempts answered with a permanent refusal (4xx but 408/429) before the event is dead.
PERMANENT_ATTEMPTS = 3
#: Rows delivered longer ago than this are removed (the outbox is not an archive).
KEEP_DELIVERED_S = 7 * 86400
#: A claim lasts one attempt's timeout and this much more (the outcome's write after the attempt).
LEASE_MARGIN_S = 5.0
#: The sender's wait after a pass the outbox failed (locked by another process, disk full), doubling to at most
#: OUTBOX_ERROR_MAX_BACKOFF_S while it keeps failing.
OUTBOX_ERROR_BACKOFF_S = 0.5
OUTBOX_ERROR_MAX_BACKOFF_S = 30.0

log = structlog.get_logger("gateway.records")

#: ``claim``: the token of the attempt that holds the event ('' when none does); its lease is ``next_at``.
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS outbox (
    id TEXT PRIMARY KEY,
    url TEXT NOT NULL,
    event TEXT NOT NULL,
    call_sid TEXT NOT NULL,
    body BLOB NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    refusals INTEGER NOT NULL DEFAULT 0,
    next_at REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    last_error TEXT NOT NULL DEFAULT '',
    claim TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at)",
)


@dataclass(frozen=True)
class Delivery:
    id: str
    url: str
    event: str
    call_sid: str
    body: bytes
    created: float
    attempts: int
    refusals: int
    claim: str  # the claim token this attempt's outcome is written under


class Outbox:
    """The SQLite outbox. Every method runs its statement on the outbox's own thread."""

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        #: How long a statement waits for another process's write lock before it fails ("database is locked").
        self.busy_timeout_s = busy_timeout_s
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")
        self._db: sqlite3.Connection | None = None

    async def open(self, now: float) -> None:
        await self._run(self._open, now)

    def _open(self, now: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = self._db = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("BEGIN IMMEDIATE")  # one process at a time creates or upgrades the file
        try:
            for statement in _SCHEMA:
                db.execute(statement)
            if "claim" not in {row[1] for row in db.execute("PRAGMA table_info(outbox)")}:
                # An outbox from before claims: its rows keep their state, none of them claimed.
                db.execute("ALTER TABLE outbox ADD COLUMN claim TEXT NOT NULL DEFAULT ''")
            # A restart is a good moment to try again: every pending event is due now, but those another process
            # holds a claim on (it is sending them) stay its own until their lease ends.
            db.execute(
                "UPDATE outbox SET next_at = ? WHERE state = 'pending' AND claim = '' AND next_at > ?", (now, now)
            )
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise

    async def close(self) -> None:
        if self._db is not None:
            await self._run(self._db.close)
            self._db = None
        self._pool.shutdown(wait=True)

    async def _run(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _conn(self) -> sqlite3.Connection:
        assert self._db is not None, "Outbox.open() first"
        return self._db

    async def add(self, url: str, event: str, call_sid: str, payload: dict[str, Any], now: float) -> str:
        """Keep one event for delivery; returns its webhook-id. On disk when this returns."""
        msg_id = f"msg_{uuid.uuid4().hex}"
        body = json.dumps(
            {"type": event, "timestamp": _iso(now), "data": payload}, separators=(",", ":"), ensure_ascii=False
        ).encode()
        await self._run(
            lambda: self._conn().execute(
                "INSERT INTO outbox (id, url, event, call_sid, body, created, next_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (msg_id, url, event, call_sid, body, now, now),
            )
        )
        return msg_id

    async def claim(self, now: float, lease_s: float) -> Delivery | None:
        """Claim the event due first, for ``lease_s`` (its next_at moves past the attempt) under a token of its own,
        or None when nothing is due. Claim right before the attempt, one event at a time, so that two processes on
        one data directory (``serve --workers N``) never send the same event at once."""
        result: Delivery | None = await self._run(self._claim, now, lease_s)
        return result

    def _claim(self, now: float, lease_s: float) -> Delivery | None:
        db = self._conn()
        token = uuid.uuid4().hex
        # One statement: SQLite runs it under the write lock, so no other process can claim the same row meanwhile.
        cur = db.execute(
            "UPDATE outbox SET next_at = ?, claim = ? WHERE id = "
            "(SELECT id FROM outbox WHERE state = 'pending' AND next_at <= ? ORDER BY next_at LIMIT 1)",
            (now + lease_s, token, now),
        )
        if cur.rowcount != 1:
            return None
        msg_id, url, event, call_sid, body, created, attempts, refusals = db.execute(
            "SELECT id, url, event, call_sid, body, created, attempts, refusals FROM outbox WHERE claim = ?", (token,)
        ).fetchone()
        return Delivery(msg_id, url, event, call_sid, body, created, attempts, refusals, claim=token)

    async def next_due(self) -> float | None:
        row: tuple[float | None] | None = await self._run(
            lambda: self._conn().execute("SELECT MIN(next_at) FROM outbox WHERE state = 'pending'").fetchone()
        )
        return None if row is None or row[0] is None else float(row[0])

    async def delivered(self, d: Delivery, now: float) -> bool:
        """The attempt of ``d`` was taken. False (nothing written) when ``d``'s claim is gone: its lease ran out and
        another attempt holds the event, or wrote its outcome."""
        return await self._outcome(
            "UPDATE outbox SET state = 'delivered', attempts = attempts + 1, next_at = ?, last_error = '', claim = '' "
            "WHERE id = ? AND claim = ? AND state = 'pending'",
            (now, d.id, d.claim),
        )

    async def failed(self, d: Delivery, error: str, *, permanent: bool, next_at: float | None) -> bool:
        """An attempt failed: retry at ``next_at``, or dead (``next_at`` None). False (nothing written) when ``d``'s
        claim is gone, as in :meth:`delivered`."""
        return await self._outcome(
            "UPDATE outbox SET state = ?, attempts = attempts + 1, refusals = refusals + ?, next_at = ?, "
            "last_error = ?, claim = '' WHERE id = ? AND claim = ? AND state = 'pending'",
            (
                "dead" if next_at is None else "pending",
                1 if permanent else 0,
                next_at if next_at is not None else 0.0,
                error[:500],
                d.id,
                d.claim,
            ),
        )

    async def _outcome(self, sql: str, params: tuple[Any, ...]) -> bool:
        """Write an attempt's outcome under its claim; True when it was written."""
        written: bool = await self._run(lambda: self._conn().execute(sql, params).rowcount == 1)
        return written

    async def counts(self) -> dict[str, int]:
        rows = await self._run(
            lambda: self._conn().execute("SELECT state, COUNT(*) FROM outbox GROUP BY state").fetchall()
        )
        return {state: n for state, n in rows}

    async def forget_delivered(self, before: float) -> None:
        await self._run(
            lambda: self._conn().execute("DELETE FROM outbox WHERE state = 'delivered' AND next_at < ?", (before,))
        )


def backoff_s(attempts: int, base_s: float, rand: Callable[[], float] = random.random) -> float:
    """The wait after the ``attempts``-th failed attempt: base × 2^(attempts-1), at most MAX_BACKOFF_S, ±20 %."""
    wait: float = min(MAX_BACKOFF_S, base_s * 2.0 ** max(0, attempts - 1))
    return wait * (0.8 + 0.4 * rand())


@dataclass
class WebhookSender:
    """Delivers the outbox, forever (a task of the app). ``key``: the signing key; ``on_result(event, result)``
    counts attempts (delivered | failed | dead)."""

    outbox: Outbox
    key: bytes
    http: aiohttp.ClientSession
    base_backoff_s: float
    retry_for_s: float
    timeout_s: float
    on_result: Callable[[str, str], None]
    clock: Callable[[], float] = time.time

    def __post_init__(self) -> None:
        self.wake = asyncio.Event()

    async def run(self) -> None:
        failures = 0  # passes in a row that raised
        while True:
            self.wake.clear()
            try:
                # One event claimed at a time, right before its attempt: the lease covers that attempt only.
                while (d := await self.outbox.claim(self.clock(), lease_s=self.timeout_s + LEASE_MARGIN_S)) is not None:
                    await self._attempt(d)
                nxt = await self.outbox.next_due()
            except Exception as exc:  # noqa: BLE001 - the outbox's trouble (locked, disk full) or a bad row: not the end
                # Nothing but cancellation ends this task: the events are on disk, and a later pass sends them.
                failures += 1
                wait = min(OUTBOX_ERROR_MAX_BACKOFF_S, OUTBOX_ERROR_BACKOFF_S * 2.0 ** min(failures - 1, 16))
                log.error("webhook.outbox_error", error=f"{type(exc).__name__}: {exc}"[:300], retry_in_s=wait)
                await asyncio.sleep(wait)  # not woken by new events: they would only find the outbox as it is
                continue
            failures = 0
            wait = 5.0 if nxt is None else min(5.0, max(0.0, nxt - self.clock()))
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    async def _attempt(self, d: Delivery) -> None:
        now = self.clock()
        headers = signed_headers(self.key, d.id, int(now), d.body)
        status: int | None = None
        try:
            async with self.http.post(
                d.url, data=d.body, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout_s)
            ) as resp:
                status = resp.status
                await resp.read()
            error = "" if 200 <= status < 300 else f"HTTP {status}"
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            error = f"{type(exc).__name__}: {exc}"[:300]
        if not error:
            await self.outbox.delivered(d, self.clock())  # not written if the claim is gone: sent again, at least once
            self.on_result(d.event, "delivered")
            log.info("webhook.delivered", webhook_id=d.id, call_sid=d.call_sid, attempts=d.attempts + 1)
            return
        permanent = status is not None and 400 <= status < 500 and status not in (408, 429)
        attempts = d.attempts + 1
        refusals = d.refusals + (1 if permanent else 0)
        next_at: float | None = self.clock() + backoff_s(attempts, self.base_backoff_s)
        if refusals >= PERMANENT_ATTEMPTS or next_at > d.created + self.retry_for_s:  # type: ignore[operator]
            next_at = None
        if not await self.outbox.failed(d, error, permanent=permanent, next_at=next_at):
            # The lease ran out: another attempt holds the event and its outcome stands; this one is only counted.
            self.on_result(d.event, "failed")
            return
        if next_at is None:
            self.on_result(d.event, "dead")
            log.error(
                "webhook.dead_letter",
                webhook_id=d.id,
                call_sid=d.call_sid,
                webhook_event=d.event,
                attempts=attempts,
                error=error,
                host=urlsplit(d.url).hostname or "",  # the URL's path or query may hold a token
            )
        else:
            self.on_result(d.event, "failed")
            log.warning(
                "webhook.retry",
                webhook_id=d.id,
                call_sid=d.call_sid,
                attempts=attempts,
                error=error,
                retry_in_s=round(next_at - self.clock(), 1),
            )


def _iso(epoch_s: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")

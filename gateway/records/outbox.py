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
undoes a newer one's outcome.

Receivers are kept apart (each profile may have a webhook URL of its own, one outbox for all): up to
:data:`MAX_IN_FLIGHT` attempts run at once, at most :data:`PER_HOST` per receiver (the URL's host:port), so a
receiver that hangs holds up its own events only. Within a receiver events go one at a time in the order they are
due, as before. A receiver that timed out or refused the connection is backed off as a whole (its own exponential
backoff, like an event's): its other events wait for the next try instead of each timing out in turn, so a dead
receiver costs one attempt per backoff, not one per event; its events already past ``webhooks.retry_for_h`` still
get their last attempt (and die). The sender outlives a failing outbox (locked, disk full): ``webhook.outbox_error``
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

__all__ = [
    "MAX_BACKOFF_S",
    "MAX_IN_FLIGHT",
    "PER_HOST",
    "PERMANENT_ATTEMPTS",
    "Delivery",
    "Outbox",
    "WebhookSender",
    "host_of",
]

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
#: Attempts in flight at once, over all receivers.
MAX_IN_FLIGHT = 8
#: Attempts in flight at once to one receiver (host:port): 1 keeps its events in the order they are due.
PER_HOST = 1

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


def host_of(url: str) -> str:
    """The receiver a URL names, ``host:port`` (the scheme's port when none is given): attempts are kept apart by it."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    except ValueError:
        return url
    return f"{(parts.hostname or '').lower()}:{port}"


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
        db.create_function("host_of", 1, host_of, deterministic=True)
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

    async def claim(
        self,
        now: float,
        lease_s: float,
        busy: frozenset[str] = frozenset(),
        down: frozenset[str] = frozenset(),
        expired_before: float = 0.0,
    ) -> Delivery | None:
        """Claim the event due first, for ``lease_s`` (its next_at moves past the attempt) under a token of its own,
        or None when nothing is due. Claim right before the attempt, one event at a time, so that two processes on
        one data directory (``serve --workers N``) never send the same event at once. Events for a host (host_of)
        in ``busy`` are left; so are those for a host in ``down``, but the ones created before ``expired_before``
        (past their retry window: their next failed attempt is their last)."""
        result: Delivery | None = await self._run(self._claim, now, lease_s, busy, down, expired_before)
        return result

    def _claim(
        self, now: float, lease_s: float, busy: frozenset[str], down: frozenset[str], expired_before: float
    ) -> Delivery | None:
        db = self._conn()
        token = uuid.uuid4().hex
        where, params = _due(now, busy, down, expired_before)
        # One statement: SQLite runs it under the write lock, so no other process can claim the same row meanwhile.
        cur = db.execute(
            f"UPDATE outbox SET next_at = ?, claim = ? WHERE id = (SELECT id FROM outbox WHERE {where} LIMIT 1)",
            (now + lease_s, token, *params),
        )
        if cur.rowcount != 1:
            return None
        msg_id, url, event, call_sid, body, created, attempts, refusals = db.execute(
            "SELECT id, url, event, call_sid, body, created, attempts, refusals FROM outbox WHERE claim = ?", (token,)
        ).fetchone()
        return Delivery(msg_id, url, event, call_sid, body, created, attempts, refusals, claim=token)

    async def next_due(
        self,
        busy: frozenset[str] = frozenset(),
        down: frozenset[str] = frozenset(),
        expired_before: float = 0.0,
    ) -> float | None:
        """When the next event :meth:`claim` would take (with the same hosts left out) is due; None when none."""
        where, params = _due(None, busy, down, expired_before)
        row: tuple[float | None] | None = await self._run(
            lambda: self._conn().execute(f"SELECT MIN(next_at) FROM outbox WHERE {where}", params).fetchone()
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


def _due(
    now: float | None, busy: frozenset[str], down: frozenset[str], expired_before: float
) -> tuple[str, tuple[Any, ...]]:
    """The WHERE (and ORDER BY) of the pending events a claim may take: due by ``now`` (any time when None), not for
    a ``busy`` host, nor for a ``down`` one unless created before ``expired_before``."""
    where = "state = 'pending'"
    params: list[Any] = []
    if now is not None:
        where += " AND next_at <= ?"
        params.append(now)
    if busy:
        where += f" AND host_of(url) NOT IN ({','.join('?' * len(busy))})"
        params.extend(sorted(busy))
    if down:
        where += f" AND (host_of(url) NOT IN ({','.join('?' * len(down))}) OR created < ?)"
        params.extend([*sorted(down), expired_before])
    return where + " ORDER BY next_at", tuple(params)


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
        #: The attempts in flight, and the host each is for.
        self._in_flight: dict[asyncio.Task[None], str] = {}
        #: Per host that timed out or refused the connection: (such attempts in a row, not tried again before).
        self._host_backoff: dict[str, tuple[int, float]] = {}

    async def run(self) -> None:
        try:
            await self._run()
        finally:
            # Cancelled (the gateway's shutdown): every attempt in flight ends with the sender. Their events stay
            # pending under a lease that runs out; the next start (or another worker) sends them again.
            tasks = list(self._in_flight)
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._in_flight.clear()

    async def _run(self) -> None:
        failures = 0  # passes in a row that raised
        while True:
            self.wake.clear()
            try:
                self._reap()
                now = self.clock()
                busy, down = self._busy(), self._down(now)
                # One event claimed at a time, right before its attempt: the lease covers that attempt only.
                while len(self._in_flight) < MAX_IN_FLIGHT:
                    d = await self.outbox.claim(
                        now, self.timeout_s + LEASE_MARGIN_S, busy, down, expired_before=now - self.retry_for_s
                    )
                    if d is None:
                        break
                    host = host_of(d.url)
                    task = asyncio.create_task(self._attempt(d), name=f"webhook_attempt:{host}")
                    self._in_flight[task] = host
                    task.add_done_callback(lambda _t: self.wake.set())  # a slot is free: claim again
                    busy = self._busy()
                    now = self.clock()
                nxt = None
                if len(self._in_flight) < MAX_IN_FLIGHT:  # else: woken when an attempt ends
                    nxt = await self.outbox.next_due(busy, down, expired_before=now - self.retry_for_s)
                    # A backed-off host's events become due again when its backoff ends.
                    ends = [until for until in (u for _n, u in self._host_backoff.values()) if until > now]
                    if ends:
                        nxt = min(ends) if nxt is None else min(nxt, min(ends))
            except Exception as exc:  # noqa: BLE001 - the outbox's trouble (locked, disk full) or a bad row: not the end
                # Nothing but cancellation ends this task: the events are on disk, and a later pass sends them.
                failures += 1
                wait = min(OUTBOX_ERROR_MAX_BACKOFF_S, OUTBOX_ERROR_BACKOFF_S * 2.0 ** min(failures - 1, 16))
                log.error("webhook.outbox_error", error=f"{type(exc).__name__}: {exc}"[:300], retry_in_s=wait)
                await asyncio.sleep(wait)  # not woken by new events: they would only find the outbox as it is
                continue
            failures = 0
            wait = 5.0 if nxt is None else min(5.0, max(0.0, nxt - self.clock()))
            if wait > 0 and not self.wake.is_set():
                try:
                    async with asyncio.timeout(wait):
                        await self.wake.wait()
                except TimeoutError:
                    pass

    def _reap(self) -> None:
        """Forget the attempts that ended; one that raised (its outcome could not be written: the outbox's trouble)
        is raised here, for the pass to log and back off."""
        error: BaseException | None = None
        for task in [t for t in self._in_flight if t.done()]:
            del self._in_flight[task]
            if not task.cancelled() and task.exception() is not None and error is None:
                error = task.exception()
        if error is not None:
            raise error

    def _busy(self) -> frozenset[str]:
        hosts = list(self._in_flight.values())
        return frozenset(h for h in hosts if hosts.count(h) >= PER_HOST)

    def _down(self, now: float) -> frozenset[str]:
        return frozenset(h for h, (_n, until) in self._host_backoff.items() if until > now)

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
        host = host_of(d.url)
        if status is None:
            # No answer (timeout, connection refused or reset): the receiver, not this event, is in trouble. Its
            # other events wait for its backoff rather than each spending a timeout on it.
            n = self._host_backoff.get(host, (0, 0.0))[0] + 1
            self._host_backoff[host] = (n, self.clock() + backoff_s(n, self.base_backoff_s))
        else:
            self._host_backoff.pop(host, None)
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

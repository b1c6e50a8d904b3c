"""The app's call records: one :class:`Records` per app, subscribed to the calls like metrics are. Not pure.

- ``CallRegistry.on_accept``: an admitted call is about to run: its :class:`~gateway.records.recorder.CallTap`
  goes on the call's outbound queue (what the carrier writer sent, and clears) and, when its profile records, on
  the carrier reader (caller audio); the recording file is opened; the consent prompt is queued before the greeting.
- ``CallRegistry.listeners``: every typed call event goes to that call's
  :class:`~gateway.records.record.RecordBuilder`.
- ``CallRegistry.on_record``: the call is over: a task (off the call's teardown) closes the recording, uploads it
  (S3), puts the webhook in the outbox, and stores the record. Storage failures are logged (``record.failed``),
  counted, and retried :data:`STORE_ATTEMPTS` times; they never touch a call. A record (or recording) still not
  stored stays in ``<data_dir>/spool/`` and the sweep stores it later.

Plus three app tasks: the recording tick (:data:`~gateway.records.recorder.FLUSH_S`), the webhook sender, and the
retention sweep (at start-up, then hourly: records and recordings older than ``storage.retention_days`` are
deleted, and what the spool holds is stored).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from ..audio import g711
from ..call import events as ev
from ..call.sounds import prompt_frames
from ..errors import ConfigError
from .outbox import KEEP_DELIVERED_S, Outbox, WebhookSender
from .record import RecordBuilder
from .recorder import FLUSH_S, TICK_PARTS, CallTap, RecordingResult, RecordingWriter
from .settings import secret_key, storage_url
from .storage import Storage, StorageUnavailable, open_storage, safe_id

if TYPE_CHECKING:
    import aiohttp

    from ..call.setup import CallSetup
    from ..call.shell.accepted import AcceptedCall
    from ..call.stats import CallSummary
    from ..config import Settings
    from ..metrics import GatewayMetrics

__all__ = ["STORE_ATTEMPTS", "Records"]

#: Attempts to store one record (or upload one recording), 1 s, 2 s, 4 s apart.
STORE_ATTEMPTS = 4
#: How often the retention sweep runs.
SWEEP_S = 3600.0
#: Call sids remembered to tell a later stream of the same call (re-attach) from a new call.
SEEN_CALLS = 10000
#: A spooled recording (S3) not written for this long belongs to no live call: the sweep uploads it.
ORPHAN_S = 120.0
#: Records kept in the spool (their store failed) for the sweep to store later, at most; beyond, one is lost (logged).
SPOOL_RECORDS = 10000
_ANNOUNCEMENT = "__announcement__"

log = structlog.get_logger("gateway.records")


@dataclass
class _Call:
    builder: RecordBuilder
    tap: CallTap
    started_at: float
    recording: Path | None  # the file being written, when the profile records
    webhook_url: str
    key: str  # the storage name: the call sid, or <call_sid>-<stream_sid> for a later stream of the same call


class Records:
    """Call records of one app (see the module docstring)."""

    def __init__(
        self,
        settings: Settings,
        metrics: GatewayMetrics,
        *,
        storage: Storage | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.metrics = metrics
        self.storage = storage if storage is not None else open_storage(storage_url(settings))
        self.data_dir = Path(settings.storage.data_dir).resolve()
        self._clock, self._wall = clock, wall
        self.writer = RecordingWriter(
            on_drop=metrics.recording_batches_dropped.inc,
            on_failure=lambda reason: metrics.recordings.labels("failed").inc(),
        )
        self.outbox = Outbox(self.data_dir / "outbox.sqlite3")
        self.sender: WebhookSender | None = None
        self._calls: dict[int, _Call] = {}  # by id(CallSummary): on_record hands the summary back
        #: Live calls by call sid, newest stream last (events carry only the call sid: the newest stream gets them).
        self._by_sid: dict[str, list[_Call]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._announcements = {
            name: _announcement(p.record_announcement, settings.config_dir)
            for name, p in settings.profiles.items()
            if p.record and p.record_announcement
        }
        self._seen: dict[str, None] = {}  # call sids accepted lately, oldest first
        #: call_sid → where its record and recording went (the simulator and the softphone show it).
        self.stored: dict[str, dict[str, Any]] = {}
        self._sweeping = asyncio.Lock()

    # ---- the app's life ----------------------------------------------------------------------------------------
    async def run(self, http: aiohttp.ClientSession) -> AsyncIterator[None]:
        """cleanup_ctx body: start the writer thread, the outbox, and the app tasks; on shutdown finish them."""
        try:
            await self.outbox.open(self._wall())
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"storage.data_dir: cannot keep the webhook outbox at {self.outbox.path}: {exc}") from exc
        self.writer.start()
        wh = self.settings.webhooks
        key = secret_key(self.settings.secrets.webhook_secret) or b""
        self.sender = WebhookSender(
            self.outbox,
            key,
            http,
            base_backoff_s=wh.backoff_s,
            retry_for_s=wh.retry_for_h * 3600,
            timeout_s=wh.timeout_s,
            on_result=lambda event, result: self.metrics.webhook_deliveries.labels(event, result).inc(),
        )
        tasks = [
            asyncio.create_task(self._tick(), name="records_tick"),
            asyncio.create_task(self._sweep(), name="records_sweep"),
            asyncio.create_task(self.sender.run(), name="webhook_sender"),
        ]
        try:
            yield
        finally:
            await self.drain(timeout_s=10.0)
            await self._cancel_pending()  # while the outbox is open: a cancelled record still queues its webhook
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self.writer.stop)
            await self.outbox.close()

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for the records of calls that ended to be stored."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    async def _cancel_pending(self) -> None:
        """Shutdown, after the bounded drain: cancel what is still storing (storage down or slow) and wait for it.
        A cancelled record task first puts its ``call.ended`` in the outbox (the next start delivers it)."""
        pending = [t for t in self._tasks if not t.done()]
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _tick(self) -> None:
        part = 0
        while True:
            await asyncio.sleep(FLUSH_S / TICK_PARTS)
            self.writer.tick(self._clock(), part, TICK_PARTS)
            part = (part + 1) % TICK_PARTS

    async def _sweep(self) -> None:
        while True:
            await self.sweep(self._wall())
            await asyncio.sleep(SWEEP_S)

    async def sweep(self, now: float) -> int:
        """Delete records and recordings older than ``storage.retention_days``; returns how many. Also forgets
        delivered webhooks and stores what the spool holds (records whose store failed; recordings, S3).

        Each step is guarded on its own: a locked outbox, a spool file that vanished or storage that is down is
        logged (``record.sweep_failed``, its ``error`` naming the step) and counted, and the other steps still run;
        nothing but a cancellation leaves here, so the hourly task outlives every failure."""
        days = self.settings.storage.retention_days
        deleted = 0

        async def retention() -> None:
            nonlocal deleted
            cutoff = now - days * 86400
            for obj in await self.storage.list():
                if obj.modified < cutoff:
                    await self.storage.delete(obj.key)
                    deleted += 1

        async with self._sweeping:  # one sweep at a time: the spool is never uploaded twice at once
            await self._sweep_step("outbox", self.outbox.forget_delivered(now - KEEP_DELIVERED_S))
            await self._sweep_step("spool", self._upload_orphans(now))
            if days > 0:
                await self._sweep_step("retention", retention())
        if deleted:
            log.info("record.retention_sweep", deleted=deleted, retention_days=days)
        return deleted

    async def _sweep_step(self, step: str, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:  # noqa: BLE001 - sqlite3 (locked), OSError, storage down: the next hour retries
            log.warning("record.sweep_failed", error=f"{step}: {type(exc).__name__}: {exc}")
            self.metrics.storage_errors.labels("sweep").inc()

    async def _upload_orphans(self, now: float) -> None:
        """Store what the spool holds: the records whose store failed (any backend), and (S3) the recordings whose
        upload failed or that belong to calls a killed process lost (untouched for ORPHAN_S). Each file is removed
        once stored, so it is stored once. A file that cannot be read or removed is logged and skipped; storage down
        ends the step (the next sweep tries again)."""
        spool = self.data_dir / "spool"
        if not spool.is_dir():
            return
        for path in sorted(spool.glob("*.json")):
            if not safe_id(path.stem):
                continue
            try:
                data = await asyncio.to_thread(path.read_bytes)
                await self.storage.put(path.name, data, "application/json")
                await asyncio.to_thread(path.unlink, True)
            except FileNotFoundError:
                continue  # another worker stored it
            except OSError as exc:
                self._spool_file_failed(path, exc)
                continue
            log.info("record.stored", call_sid=_call_sid_of(data, path.stem), record=self.storage.location(path.name))
        if self.storage.local_path("x.wav") is not None:
            return  # file storage: recordings are written in place, never spooled
        for path in sorted(spool.glob("*.wav")):
            try:
                if path.stat().st_mtime > now - ORPHAN_S:
                    continue  # maybe a live call's, in this process or another worker's
                await self.storage.put_file(path.name, path, "audio/wav")
                path.unlink(missing_ok=True)
            except FileNotFoundError:
                continue  # another worker took it
            except OSError as exc:
                self._spool_file_failed(path, exc)
                continue
            log.info("record.orphan_uploaded", recording=self.storage.location(path.name))

    def _spool_file_failed(self, path: Path, exc: OSError) -> None:
        """A spooled file the sweep could not read, store or remove: logged and counted, the others go on."""
        log.warning("record.sweep_failed", error=f"spool: {path.name}: {type(exc).__name__}: {exc}")
        self.metrics.storage_errors.labels("sweep").inc()

    # ---- hooks -------------------------------------------------------------------------------------------------
    def on_accept(self, call: AcceptedCall, setup: CallSetup) -> None:
        try:
            self._accept(call, setup)
        except Exception as exc:  # noqa: BLE001 - a bug of ours in records must never end a call: logged, counted
            self._internal_error("accept", setup.start.call_id, exc)

    def _internal_error(self, where: str, call_sid: str, exc: BaseException) -> None:
        log.error("record.internal_error", where=where, call_sid=call_sid, error=repr(exc))
        self.metrics.storage_errors.labels("internal").inc()

    def _accept(self, call: AcceptedCall, setup: CallSetup) -> None:
        start, profile = setup.start, setup.profile
        sid = start.call_id
        # A call carried by several streams (re-attach) keeps one record per stream: a later one must not overwrite.
        name = f"{sid}-{start.stream_id}" if sid in self._seen else sid
        self._seen[sid] = None
        for old in list(self._seen)[:-SEEN_CALLS] if len(self._seen) > 2 * SEEN_CALLS else ():
            del self._seen[old]
        bytes_per_s = start.sample_rate * (2 if start.encoding == "audio/pcm" else 1)
        started_at = call.core.started_at
        tap = CallTap(started_at, record=profile.record, bytes_per_s=bytes_per_s)
        call.core.outbound.observer = tap
        path: Path | None = None
        if profile.record and safe_id(name):
            key = f"{name}.wav"
            path = self.storage.local_path(key) or self.data_dir / "spool" / key
            call.inbound.tap = tap.caller_audio
            self.writer.open(tap, path, start.encoding, start.sample_rate)
            announcement = self._announcements.get(setup.profile_name)
            if announcement:
                call.core.outbound.put_audio(
                    _ANNOUNCEMENT, prompt_frames(announcement, start, call.dialect.frame_bytes)
                )
        params = start.custom_parameters
        state = _Call(
            RecordBuilder(
                call_sid=sid,
                stream_sid=start.stream_id,
                carrier=call.dialect.carrier,
                profile=setup.profile_name,
                from_=params.get("from", ""),
                to=params.get("to", ""),
                started_epoch_s=self._wall() - (self._clock() - started_at),
                mask_rule=self.settings.storage.mask_numbers,
            ),
            tap,
            started_at,
            path,
            profile.webhook_url or self.settings.webhooks.url,
            name,
        )
        self._calls[id(call.core.summary)] = state
        self._by_sid.setdefault(sid, []).append(state)
        if state.webhook_url and self.settings.webhooks.call_started:
            started = state.builder.header()
            self._spawn(self._enqueue(state.webhook_url, "call.started", sid, started), f"call_started:{sid}")

    def on_event(self, call_sid: str, event: ev.CallEvent) -> None:
        states = self._by_sid.get(call_sid)
        if states:
            try:
                states[-1].builder.event(event)
            except Exception as exc:  # noqa: BLE001 - never into the call's pumps: logged, counted
                self._internal_error("event", call_sid, exc)

    def on_summary(self, summary: CallSummary) -> None:
        state = self._calls.pop(id(summary), None)
        if state is None:
            return
        states = [x for x in self._by_sid.get(summary.call_sid, []) if x is not state]
        if states:
            self._by_sid[summary.call_sid] = states
        else:
            self._by_sid.pop(summary.call_sid, None)
        self._spawn(self._finish_safely(state, summary), f"record:{summary.call_sid}")

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- after the call ------------------------------------------------------------------------------------
    async def _finish_safely(self, state: _Call, s: CallSummary) -> None:
        try:
            await self._finish(state, s)
        except Exception as exc:  # noqa: BLE001 - the task's end: nobody else would see it
            self._internal_error("finish", s.call_sid, exc)

    async def _finish(self, state: _Call, s: CallSummary) -> None:
        """Close the recording and upload it, put ``call.ended`` in the outbox, then store the record.

        The event goes to the outbox as soon as its content is known (it says whether the recording was uploaded),
        before the record's own store and its retries: a crash or a shutdown while storage is down loses no event.
        Cancelled before that (shutdown, after its bounded drain), it is queued with what is known then (a recording
        not uploaded is ``complete: false``, its location the spool file the next start uploads)."""
        recording = self._recording_info(state, s.duration_s) if state.recording is not None else None
        queuing: asyncio.Future[None] | None = None
        try:
            if recording is not None:
                result = await self.writer.close(state.tap, state.started_at + s.duration_s)
                await self._store_recording(recording, result)
            doc = self._document(state, s, recording)
            queuing = asyncio.ensure_future(self._queue_ended(state, s.call_sid, doc, recording, wake=False))
            await asyncio.shield(queuing)  # a cancel now must neither lose the insert nor make a second one
        except asyncio.CancelledError:
            if queuing is None:
                await self._queue_ended(state, s.call_sid, self._document(state, s, recording), recording, wake=True)
            else:
                await queuing
            raise
        try:
            await self._store_record(state, s.call_sid, doc, recording)
        finally:  # the event is on disk: send it once the record is readable (or given up, or cancelled)
            if state.webhook_url and self.sender is not None:
                self.sender.wake.set()

    def _document(self, state: _Call, s: CallSummary, recording: dict[str, Any] | None) -> dict[str, Any]:
        doc = state.builder.finish(
            s.log_fields(),
            duration_s=s.duration_s,
            first_sent=state.tap.first_sent,
            play_end=state.tap.play_end,
            clear_latencies_ms=list(s.clear_latencies_ms),
            recording=recording,
        )
        if s.session_id and not doc["session_id"]:
            doc["session_id"] = s.session_id
        return doc

    async def _queue_ended(
        self, state: _Call, sid: str, doc: dict[str, Any], recording: dict[str, Any] | None, *, wake: bool
    ) -> None:
        if not state.webhook_url:
            return
        payload = dict(doc)
        if recording is not None and recording.get("complete") is not None:
            payload["recording"] = {**recording, "url": await self._recording_url(state.key)}
        await self._enqueue(state.webhook_url, "call.ended", sid, payload, wake=wake)

    async def _store_record(
        self, state: _Call, sid: str, doc: dict[str, Any], recording: dict[str, Any] | None
    ) -> None:
        """Store the record, retried; given up (or cancelled by shutdown), it is kept in the spool, where the sweep
        stores it once the storage is back (like a recording whose upload failed)."""
        key = f"{state.key}.json"
        data = json.dumps(doc, ensure_ascii=False).encode()
        try:
            stored = safe_id(state.key) and await self._retry(
                "record", lambda: self.storage.put(key, data, "application/json")
            )
        except asyncio.CancelledError:
            if safe_id(state.key):
                await self._spool_record(key, data)
            raise
        spooled = None if stored or not safe_id(state.key) else await self._spool_record(key, data)
        self.metrics.records.labels("written" if stored else "failed").inc()
        where = {"record": self.storage.location(key) if stored else None}
        if recording is not None:
            where["recording"] = recording.get("location")
        self.stored[state.key] = where
        del_list = list(self.stored)[:-1000]
        for old in del_list:
            self.stored.pop(old, None)
        if stored:
            log.info("record.stored", call_sid=sid, **where)
        else:  # record: the spool file the sweep stores later, or None when even the spool could not keep it
            log.error("record.failed", call_sid=sid, **{**where, "record": spooled})

    async def _spool_record(self, key: str, data: bytes) -> str | None:
        """Keep a record its store gave up on in ``<data_dir>/spool/``; its path, or None when the spool already
        holds :data:`SPOOL_RECORDS` records or cannot be written (then the record is lost: ``record.failed`` says
        so with a null ``record``)."""
        try:
            return await asyncio.to_thread(_spool_write, self.data_dir / "spool", key, data)
        except OSError:
            return None

    def _recording_info(self, state: _Call, duration_s: float) -> dict[str, Any]:
        """The recording's entry in the record, as it stands before the file is closed and uploaded: the call's
        length, not complete, where it is being written (the spool file with S3). :meth:`_store_recording` fills in
        the outcome."""
        assert state.recording is not None
        key = f"{state.key}.wav"
        local = self.storage.local_path(key) is not None
        return {
            "key": key,
            "format": "audio/wav",
            "channels": ["caller", "agent"],
            "sample_rate": 8000,
            "seconds": round(duration_s, 3),  # the recording is padded to the call's length
            "complete": False,
            "location": self.storage.location(key) if local else str(state.recording),
            "path": f"/calls/{state.key}/recording",
        }

    async def _store_recording(self, info: dict[str, Any], result: RecordingResult) -> None:
        """The recording is closed: upload it (S3) and record the outcome in ``info``, as each step is done."""
        key = info["key"]
        info["seconds"] = round(result.seconds, 3)
        if result.ok:
            self.metrics.recordings.labels("complete").inc()
        if self.storage.local_path(key) is not None:
            info["complete"] = result.ok
            return
        # S3: upload the spool file, then forget it; if it fails it stays in the spool (complete false, its path) and
        # the sweep uploads it later.
        ok = await self._retry("recording", lambda: self.storage.put_file(key, result.path, "audio/wav"))
        if ok:
            info["complete"], info["location"] = result.ok, self.storage.location(key)
            result.path.unlink(missing_ok=True)

    async def _recording_url(self, name: str) -> str:
        try:
            signed = await self.storage.presign(f"{name}.wav", self.settings.storage.presign_s)
        except StorageUnavailable:
            signed = None
        if signed:
            return signed
        base = self.settings.server.public_url
        return f"{base}/calls/{name}/recording" if base else f"/calls/{name}/recording"

    async def _retry(self, what: str, op: Callable[[], Any]) -> bool:
        for attempt in range(STORE_ATTEMPTS):
            try:
                await op()
                return True
            except StorageUnavailable as exc:
                self.metrics.storage_errors.labels(what).inc()
                log.warning("record.store_retry", what=what, attempt=attempt + 1, error=str(exc))
                if attempt + 1 < STORE_ATTEMPTS:
                    await asyncio.sleep(2**attempt)
        return False

    async def _enqueue(self, url: str, event: str, sid: str, payload: dict[str, Any], *, wake: bool = True) -> None:
        try:
            msg_id = await self.outbox.add(url, event, sid, payload, self._wall())
        except Exception as exc:  # noqa: BLE001 - sqlite3 errors (disk full): logged and counted, the call is over
            log.error("webhook.outbox_failed", call_sid=sid, webhook_event=event, error=repr(exc))
            self.metrics.webhook_deliveries.labels(event, "not_queued").inc()
            return
        log.info("webhook.queued", call_sid=sid, webhook_event=event, webhook_id=msg_id)
        if wake and self.sender is not None:
            self.sender.wake.set()


def _spool_write(spool: Path, key: str, data: bytes) -> str | None:
    """Write ``spool/key`` whole (a temporary name, then a rename: the sweep never reads half a record); None when
    the spool already holds SPOOL_RECORDS records."""
    spool.mkdir(parents=True, exist_ok=True)
    if sum(1 for _ in spool.glob("*.json")) >= SPOOL_RECORDS:
        return None
    tmp = spool / f"{key}.part"
    tmp.write_bytes(data)
    os.replace(tmp, spool / key)
    return str(spool / key)


def _call_sid_of(data: bytes, fallback: str) -> str:
    try:
        sid = json.loads(data).get("call_sid")
    except (ValueError, AttributeError):
        return fallback
    return sid if isinstance(sid, str) else fallback


def _announcement(path_text: str, config_dir: Path) -> bytes:
    """The consent prompt as 8 kHz μ-law (checked at start-up: gateway.records.settings)."""
    path = Path(path_text)
    path = path if path.is_absolute() else config_dir / path
    with wave.open(str(path), "rb") as w:
        if (w.getframerate(), w.getnchannels(), w.getsampwidth()) != (8000, 1, 2):
            raise ConfigError(f"record_announcement: {path} must be 8 kHz mono 16-bit")
        return g711.pcm16_to_ulaw(w.readframes(w.getnframes()))

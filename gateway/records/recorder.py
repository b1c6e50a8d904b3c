"""Recording a call: the per-call taps on the event loop, and the one writer thread that mixes and writes. Not pure.

**On the loop** (the media path), :class:`CallTap` only appends references: each caller payload and its arrival
time (from :meth:`gateway.call.shell.inbound.CarrierReader.caller_audio`), and each message the carrier
writer sent with where the playout model places it, and each ``clear``
(:class:`gateway.call.outbound_queue.OutboundQueue`'s observer). No I/O, no lock, no decoding there.

**Off the loop**, once a second :meth:`RecordingWriter.tick` hands each call's batch to the writer thread through
one FIFO whose audio is bounded (:data:`QUEUE_BATCHES`). The thread decodes, places both channels on one sample clock
(:class:`gateway.records.mixer.Mixer`) and appends to the WAV (:class:`gateway.records.wav.StereoWav`), whose
header is valid after every append. Backpressure: a full queue drops that call's batch (a gap of silence in its
recording, never a delay on the call) and counts it (``voice_gateway_recording_batches_dropped_total``); a full
or failing disk ends that recording (logged ``recording.failed``, counted), never the call. Nothing on the loop ever
waits for the thread: a call's open and close (tiny) always go in, and its last batch has room of its own.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from .mixer import HOLD_S, RATE, Mixer, pcm8k_decoder
from .wav import StereoWav

__all__ = ["FLUSH_S", "QUEUE_BATCHES", "TICK_PARTS", "CallTap", "RecordingResult", "RecordingWriter"]

#: How often each call's audio goes to the writer thread (and so how much a killed process can lose).
FLUSH_S = 1.0
#: The calls are handed over in this many parts spread over FLUSH_S, not all at once: at 100 calls one hand-over of
#: them all held the event loop for milliseconds once a second, which showed in the p99 of every call's media.
TICK_PARTS = 10
#: Batches (one call-second each) the writer thread's queue holds; beyond, a batch is dropped and counted.
QUEUE_BATCHES = 512
#: Beyond QUEUE_BATCHES, room kept for the last batch of each call that ends (its final second or so): a busy moment
#: does not cut calls' ends, and a disk that stays hung still holds a bounded amount of audio in memory.
_END_BATCHES = QUEUE_BATCHES

log = structlog.get_logger("gateway.records")


@dataclass
class RecordingResult:
    """What a finished recording is: its file, its length, and whether it is whole."""

    path: Path
    seconds: float = 0.0
    ok: bool = True
    error: str = ""
    batches_dropped: int = 0


class CallTap:
    """One call's observer: caller audio in, agent audio sent, clears; per-reply send and play times. Loop side.

    ``started_at``: the stream's start on the monotonic clock; ``record``: keep the audio (else only the per-reply
    timing, for the call record's latencies)."""

    def __init__(self, started_at: float, *, record: bool, bytes_per_s: float) -> None:
        self.started_at = started_at
        self.record = record
        self._bytes_per_s = bytes_per_s
        self.caller_payloads: list[bytes] = []
        self.caller_times: list[float] = []
        self.agent_items: list[tuple[bytes | None, float]] = []  # (payload, plays_at) or (None, cleared_at)
        self._tag: object = object()
        #: tag (the reply id) → (first sent at, first plays at), seconds since the stream started
        self.first_sent: dict[str | None, tuple[float, float]] = {}
        #: tag → when its last audio stops playing (cut at a clear), seconds since the stream started
        self.play_end: dict[str | None, float] = {}

    # ---- the media path: appends only --------------------------------------------------------------------------
    def caller_audio(self, payload: bytes, now: float) -> None:
        if self.record:
            self.caller_payloads.append(payload)
            self.caller_times.append(now)

    def sent(self, tag: str | None, payload: bytes, now: float, plays_at: float) -> None:
        """The carrier writer sent ``payload`` at ``now``; the playout model says it starts playing at ``plays_at``."""
        t0 = self.started_at
        if tag != self._tag:  # once per reply (or prompt), not per frame
            self._tag = tag
            if tag not in self.first_sent:
                self.first_sent[tag] = (now - t0, plays_at - t0)
        self.play_end[tag] = plays_at - t0 + len(payload) / self._bytes_per_s
        if self.record:
            self.agent_items.append((payload, plays_at))

    def cleared(self, now: float) -> None:
        t = now - self.started_at
        for tag, end in self.play_end.items():
            if end > t:
                self.play_end[tag] = t
        if self.record:
            self.agent_items.append((None, now))

    # ---- off the media path ------------------------------------------------------------------------------------
    def take(self) -> tuple[list[bytes], list[float], list[tuple[bytes | None, float]]]:
        """Everything since the last take (the lists are swapped, not copied)."""
        batch = (self.caller_payloads, self.caller_times, self.agent_items)
        self.caller_payloads, self.caller_times, self.agent_items = [], [], []
        return batch


@dataclass
class _Open:
    key: int
    path: Path
    encoding: str
    sample_rate: int
    started_at: float


@dataclass
class _Batch:
    key: int
    caller: list[bytes]
    caller_t: list[float]
    agent: list[tuple[bytes | None, float]]
    upto_s: float  # commit everything before this (seconds since the stream started)


@dataclass
class _Close:
    key: int
    end_s: float
    done: Callable[[RecordingResult], None]
    end_dropped: bool = False  # the call's last batch found no room: the file's end is silence, not what was said


@dataclass
class _Recording:
    wav: StereoWav | None
    mixer: Mixer
    started_at: float
    result: RecordingResult
    dropped: int = 0


@dataclass
class RecordingWriter:
    """The process's recording writer: one thread, one queue, every recording call's WAV.
    ``on_drop`` counts a dropped batch; ``on_failure`` a recording that could not be written.

    One FIFO carries every call's open, batches and close, so each call's are handled in that order. It never makes
    the loop wait (no blocking put, nothing parked in an executor): a full queue drops a tick's batch, but an open
    or a close always goes in (a few bytes each, one per call), and a call's last batch may use _END_BATCHES more.
    The batches waiting are ``_queued - _taken``: each counter has one writer (the loop, the thread), so no lock."""

    on_drop: Callable[[], None] = lambda: None
    on_failure: Callable[[str], None] = lambda reason: None
    _queue: queue.SimpleQueue[Any] = field(default_factory=queue.SimpleQueue)
    _queued: int = 0  # batches put, by the loop
    _taken: int = 0  # batches got, by the thread
    _active: dict[int, CallTap] = field(default_factory=dict)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recording-writer", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Let the thread finish what is queued, then end it (the app's cleanup)."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout=10.0)
            self._thread = None

    # ---- loop side -------------------------------------------------------------------------------------------
    def open(self, tap: CallTap, path: Path, encoding: str, sample_rate: int) -> None:
        key = id(tap)
        self._active[key] = tap
        self._queue.put(_Open(key, path, encoding, sample_rate, tap.started_at))

    def tick(self, now: float, part: int = 0, parts: int = 1) -> None:
        """Hand the new audio of the recordings in ``part`` of ``parts`` to the thread (a task of the app calls this
        FLUSH_S / parts apart, cycling ``part``, so each recording goes about once every FLUSH_S)."""
        for i, (key, tap) in enumerate(list(self._active.items())):
            if i % parts != part:
                continue
            caller, times, agent = tap.take()
            if not self._put_batch(_Batch(key, caller, times, agent, now - tap.started_at - HOLD_S), QUEUE_BATCHES):
                self.on_drop()

    async def close(self, tap: CallTap, end: float) -> RecordingResult:
        """The call ended at ``end`` (monotonic): write the rest, pad both channels to the call's length, close."""
        key = id(tap)
        self._active.pop(key, None)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[RecordingResult] = loop.create_future()

        def done(result: RecordingResult) -> None:
            loop.call_soon_threadsafe(_resolve, fut, result)

        caller, times, agent = tap.take()
        end_s = end - tap.started_at
        kept = self._put_batch(_Batch(key, caller, times, agent, end_s), QUEUE_BATCHES + _END_BATCHES)
        if not kept:
            self.on_drop()
        self._queue.put(_Close(key, end_s, done, end_dropped=not kept))
        return await fut

    def _put_batch(self, batch: _Batch, limit: int) -> bool:
        """Queue ``batch`` unless ``limit`` batches wait already; never blocks (loop side)."""
        if self._queued - self._taken >= limit:
            return False
        self._queued += 1
        self._queue.put(batch)
        return True

    # ---- the thread ------------------------------------------------------------------------------------------
    def _run(self) -> None:
        recordings: dict[int, _Recording] = {}
        while (item := self._queue.get()) is not None:
            if isinstance(item, _Batch):
                self._taken += 1
            try:
                self._handle(item, recordings)
            except Exception as exc:  # noqa: BLE001 - the thread must outlive one bad recording; logged once
                log.error("recording.writer_error", error=repr(exc))
            # Give the GIL back between batches: the event loop waiting for it would otherwise wait out the
            # interpreter's switch interval (5 ms) whenever this thread is busy, and the calls' media with it.
            time.sleep(0)

    def _handle(self, item: Any, recordings: dict[int, _Recording]) -> None:
        if isinstance(item, _Open):
            bytes_per_s = item.sample_rate * (2 if item.encoding == "audio/pcm" else 1)
            decoder = pcm8k_decoder
            mixer = Mixer(
                decoder(item.encoding, item.sample_rate), decoder(item.encoding, item.sample_rate), bytes_per_s
            )
            result = RecordingResult(item.path)
            wav: StereoWav | None = None
            try:
                wav = StereoWav(item.path, RATE)
            except OSError as exc:
                self._fail(result, exc)
            recordings[item.key] = _Recording(wav, mixer, item.started_at, result)
            return
        rec = recordings.get(item.key)
        if rec is None:
            return
        if isinstance(item, _Batch):
            m, t0 = rec.mixer, rec.started_at
            m.add_caller(item.caller, [t - t0 for t in item.caller_t])
            m.add_agent([(data, t - t0) for data, t in item.agent])
            self._write(rec, m.commit(max(m.committed, int(item.upto_s * RATE))).tobytes())
        elif isinstance(item, _Close):
            del recordings[item.key]
            self._write(rec, rec.mixer.commit(round(item.end_s * RATE)).tobytes())
            if rec.wav is not None:
                try:
                    rec.wav.close()
                except OSError as exc:
                    self._fail(rec.result, exc)
                rec.result.seconds = rec.wav.seconds
            if item.end_dropped and rec.result.ok:  # its end is silence where the call had audio: not whole
                self._failed(rec.result, "the writer's queue was full: the call's last batch was dropped", "dropped")
            item.done(rec.result)

    def _write(self, rec: _Recording, data: bytes) -> None:
        if rec.wav is None or not data:
            return
        try:
            rec.wav.append(data)
        except OSError as exc:  # disk full, unwritable: this recording ends here; the call goes on
            self._fail(rec.result, exc)
            try:
                rec.wav.close()
            except OSError:
                pass
            rec.result.seconds = rec.wav.seconds
            rec.wav = None

    def _fail(self, result: RecordingResult, exc: OSError) -> None:
        self._failed(result, f"{type(exc).__name__}: {exc.strerror or exc}", "write")

    def _failed(self, result: RecordingResult, error: str, reason: str) -> None:
        result.ok, result.error = False, error
        log.warning("recording.failed", path=str(result.path), error=error)
        self.on_failure(reason)


def _resolve(fut: asyncio.Future[RecordingResult], result: RecordingResult) -> None:
    if not fut.done():
        fut.set_result(result)

"""One session's recorder: the hooks the connection and the speaker call, and the files it writes. Not pure.

The hooks run on the event loop and only append to a deque (no I/O, no lock: ``deque.append`` and ``popleft`` are
atomic), with the loop's clock:

- :meth:`Recorder.client_event`: every parsed client event (``input.audio`` for the caller's track, ``tool.result``
  and ``reply.create`` for the timeline);
- :meth:`Recorder.server_event`: every server event the connection sends (the outbox's tap);
- :meth:`Recorder.reply_trigger` and :meth:`Recorder.agent_audio`: from the speaker, what started a reply and each
  chunk of its audio with the time the client plays it.

:meth:`Recorder.flush`, on the store's worker thread (:mod:`.service`), decodes and places the audio
(:class:`~.recording.StereoRecording`), appends the frames to ``recording.wav`` (its header rewritten each time, so
the file is a valid WAV while the session runs) and the events to ``timeline.jsonl``. A failing disk ends the
recording of that session (logged once, ``local_agent.recording_failed``); the call goes on.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Final

import structlog

from gateway.audio.g711 import alaw_to_pcm16, ulaw_to_pcm16
from gateway.audio.resample import StreamResampler

from .. import protocol as proto
from .recording import StereoRecording, audible_pcm
from .timeline import LOGGED_CLIENT_EVENTS, LOGGED_SERVER_EVENTS, log_fields

if TYPE_CHECKING:
    from ..session import Session

__all__ = ["NULL_RECORDER", "NullRecorder", "Recorder", "WavFile"]

log = structlog.get_logger("local_agent")

_USER, _AGENT, _LOG, _CUT = 0, 1, 2, 3
#: Entries a flush takes at most (the rest wait for the next one), so one flush stays short.
_FLUSH_MAX: Final = 20000
#: The most items the hooks queue for the store's thread: about 5 minutes of a session's audio (both sides) and
#: events. A thread stuck on a hung disk must not grow the agent's memory without end: past this, items are dropped
#: and counted (``dropped``), and the recording says so once (``local_agent.recording_behind``).
_PENDING_MAX: Final = 30000


class NullRecorder:
    """The recorder of a session nothing is recorded for (and of a session before the store knows it)."""

    closed = True

    def client_event(self, event: proto.ClientEvent) -> None:
        pass

    def server_event(self, event: dict[str, Any]) -> None:
        pass

    def reply_trigger(self, reply_id: str, trigger: str) -> None:
        pass

    def agent_audio(self, reply_id: str, frame: bytes, plays_at: float) -> None:
        pass


NULL_RECORDER: Final = NullRecorder()


class WavFile:
    """A PCM16 WAV file written in pieces; the header's sizes are rewritten after each piece."""

    def __init__(self, path: Path, rate: int, channels: int = 2) -> None:
        self._f: BinaryIO = open(path, "wb")  # noqa: SIM115 - held open for the session
        self.rate, self.channels = rate, channels
        self.data_bytes = 0
        self._f.write(self._header())

    def _header(self) -> bytes:
        block = 2 * self.channels
        return (
            b"RIFF"
            + struct.pack("<I", 36 + self.data_bytes)
            + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, self.channels, self.rate, self.rate * block, block, 16)
            + b"data"
            + struct.pack("<I", self.data_bytes)
        )

    def append(self, frames: bytes) -> None:
        if not frames:
            return
        self._f.seek(0, 2)
        self._f.write(frames)
        self.data_bytes += len(frames)
        self._f.seek(0)
        self._f.write(self._header())
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def _to_pcm16(data: bytes, encoding: str) -> bytes:
    if encoding == "audio/pcmu":
        return ulaw_to_pcm16(data)
    if encoding == "audio/pcma":
        return alaw_to_pcm16(data)
    return data[: len(data) // 2 * 2]


class Recorder:
    """Records one session into ``directory`` (``recording.wav``, ``timeline.jsonl``); see the module docstring."""

    def __init__(
        self, session: Session, directory: Path, *, loop: asyncio.AbstractEventLoop, record_audio: bool
    ) -> None:
        self._session = session
        self.directory = directory
        self.rate = session.config.output_format.sample_rate
        self._loop = loop  # its clock is the speaker's playout clock
        self._t0 = loop.time()
        self._record_audio = record_audio
        self._pending: deque[tuple[Any, ...]] = deque()
        self.closed = False  # set on the loop when the session is over: hooks stop queueing
        self.failed = False
        self.dropped = 0  # items the hooks dropped because the store's thread fell _PENDING_MAX behind
        # Owned by the store's thread from here on.
        self._mix = StereoRecording(self.rate)
        self._wav: WavFile | None = None
        self._log: Any = None
        self._resampler: tuple[int, StreamResampler] | None = None
        self._heard: set[str] = set()  # replies whose first audible chunk was seen

    @property
    def queued(self) -> int:
        """Items the hooks queued that the store's thread has not written yet."""
        return len(self._pending)

    # ---- hooks (event loop)

    def _put(self, item: tuple[Any, ...]) -> None:
        if len(self._pending) < _PENDING_MAX:
            self._pending.append(item)
            return
        self.dropped += 1
        if self.dropped == 1:
            log.warning("local_agent.recording_behind", session_id=self._session.id, pending=_PENDING_MAX)

    def _now(self) -> float:
        return self._loop.time() - self._t0

    def client_event(self, event: proto.ClientEvent) -> None:
        if self.closed:
            return
        if isinstance(event, proto.InputAudio):
            if self._record_audio and event.audio:
                self._put((_USER, event.audio, self._session.config.input_format, self._now()))
        elif isinstance(event, proto.ToolResult):
            keep = LOGGED_CLIENT_EVENTS["tool.result"]
            fields = {"call_id": event.call_id, "result": event.result, "is_error": event.is_error}
            self._put((_LOG, self._now(), "tool.result", log_fields(fields, keep)))
        elif isinstance(event, proto.ReplyCreate):
            self._put((_LOG, self._now(), "reply.create", {"instructions": event.instructions}))

    def server_event(self, event: dict[str, Any]) -> None:
        if self.closed:
            return
        keep = LOGGED_SERVER_EVENTS.get(event["type"])
        if keep is not None:
            self._put((_LOG, self._now(), event["type"], log_fields(event, keep)))
            if event.get("status") == "interrupted":  # reply.done: the client flushes what it had not played
                self._put((_CUT, self._now()))

    def reply_trigger(self, reply_id: str, trigger: str) -> None:
        if not self.closed:
            self._put((_LOG, self._now(), "reply.trigger", {"reply_id": reply_id, "trigger": trigger}))

    def agent_audio(self, reply_id: str, frame: bytes, plays_at: float) -> None:
        """``plays_at``: the event loop's time (monotonic) the client starts playing ``frame``."""
        if not self.closed:
            self._put((_AGENT, frame, reply_id, plays_at - self._t0))

    # ---- the store's thread

    def open(self) -> None:
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if self._record_audio:
                self._wav = WavFile(self.directory / "recording.wav", self.rate)
            self._log = open(self.directory / "timeline.jsonl", "a", encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            self._fail(e)

    def _fail(self, e: OSError) -> None:
        self.failed = True
        self._pending.clear()
        log.warning("local_agent.recording_failed", session_id=self._session.id, error=str(e))
        self._close_files()

    def flush(self, *, final: bool = False) -> None:
        """Write what the hooks queued; ``final``: everything, then close the files."""
        if self.failed:
            self._pending.clear()
            return
        try:
            self._write(final)
        except OSError as e:
            self._fail(e)
            return
        if final:
            self._close_files()

    def _write(self, final: bool) -> None:
        lines: list[str] = []
        for _ in range(len(self._pending) if not final else 10**9):
            if len(lines) > _FLUSH_MAX and not final:
                break
            try:
                item = self._pending.popleft()
            except IndexError:
                break
            kind = item[0]
            if kind == _LOG:
                _, at, type_, fields = item
                lines.append(json.dumps({"t": round(at * 1000), "e": type_, **fields}, separators=(",", ":")))
            elif kind == _CUT:
                self._mix.agent_cut(item[1])
            elif kind == _USER:
                _, data, fmt, at = item
                self._mix.user(self._user_pcm(data, fmt), at)
            else:
                _, frame, reply_id, at = item
                pcm = _to_pcm16(frame, self._session.config.output_format.encoding)
                self._mix.agent(pcm, at)
                if reply_id not in self._heard and audible_pcm(pcm):
                    self._heard.add(reply_id)
                    lines.append(json.dumps({"t": round(at * 1000), "e": "reply.first_audio", "reply_id": reply_id}))
        if self._log is not None and lines:
            self._log.write("\n".join(lines) + "\n")
            self._log.flush()
        if self._wav is not None:
            self._wav.append(self._mix.take(None if final else self._now()))

    def _user_pcm(self, data: bytes, fmt: proto.AudioFormat) -> bytes:
        pcm = _to_pcm16(data, fmt.encoding)
        if fmt.sample_rate == self.rate:
            return pcm
        if self._resampler is None or self._resampler[0] != fmt.sample_rate:
            self._resampler = (fmt.sample_rate, StreamResampler(fmt.sample_rate, self.rate))
        return self._resampler[1].process(pcm)

    def _close_files(self) -> None:
        for f in (self._wav, self._log):
            if f is not None:
                try:
                    f.close()
                except OSError:
                    pass
        self._wav = self._log = None

    @property
    def recorded_s(self) -> float:
        return self._wav.data_bytes / 4 / self.rate if self._wav is not None else 0.0

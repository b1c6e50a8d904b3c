"""One live local-agent session over one WebSocket: the async shell around the pure cores. Not pure.

:func:`handle_websocket` authenticates the upgrade (spec §1.2), waits for the first ``session.update`` or
``session.resume`` (§1.4, §4.3) and then runs a :class:`Connection`: the only object that holds the socket, the
output encoder and the reply in progress. The caller's side (inbound queue, input decoder, VAD stream, turn
detector, utterance audio, speculation) is the session's :class:`Hearing`, so a turn cut by a dropped socket goes
on after ``session.resume``. A connection owns its tasks in one ``asyncio.TaskGroup``:

- ``reader``: socket → parsed client events; ``input.audio`` goes to a bounded inbound queue.
- ``listener``: inbound audio → 16 kHz → VAD (in the worker pool) → :class:`~.turns.TurnDetector` → speech
  events, barge-in, and finished turns queued as jobs.
- ``replier``: runs jobs one at a time (greeting, user turn = STT + brain + speech, ``reply.create``, tool
  answers) and fires tool-call timeouts. Each job runs as its own task so a barge-in can cancel just the reply.
- ``writer``: bounded outbound queue → socket. Reply audio is paced at real time by the reply itself.

When any of them ends the connection (close, ``session.end``, idle, send failure) the group cancels the rest;
no task outlives the socket. A :class:`Session` (config, conversation, pending tool calls, queued jobs, the
:class:`Hearing`) outlives an *unclean* disconnect for ``resume_window_s`` so ``session.resume`` can pick it up
(§4.3).

Every wait is bounded with ``async with asyncio.timeout(...)``, never ``asyncio.wait_for``: on Python 3.11
``wait_for`` loses a cancellation that arrives as its inner operation completes (fixed in 3.12), which left a
cancelled reply task waiting forever on its next queue read.

Backpressure: inbound audio queue 250 messages (~5 s of 20 ms frames); when it stays full for 5 s the newest
frame is dropped and counted (``input_frames_dropped`` in ``local_agent.session_closed``). Outbound queue 200
events; producers wait (with ``send_timeout_s``), a socket that cannot drain in time ends the connection. Jobs:
32 per session; a full job queue drops the new job (logged). A socket taken over by ``session.resume`` hands on
the frames it had received but not read (past the inbound bound, bounded by ``DRAIN_MAX_S``) before it closes.

Error tree (what ends a connection, and how it is reported):

- :class:`~.protocol.ProtocolError`: the client broke the protocol (peer misbehaved). One ``session.error``;
  fatal ones close 1008, the others keep the session open.
- :class:`ConnectionDone`: the connection ends as it should (``session.end``, peer gone, idle, server shutdown).
- :class:`~.brain.IntentsError`, :class:`~.settings.SettingsError`: config invalid (raised at start-up only).
- LLM endpoint failures: upstream unavailable; handled inside the LLM engine (logged, apology spoken).
- Anything else is our bug: logged once at the session boundary (``local_agent.session_failed``), then
  ``session.error{internal_error}`` and close 1011.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import functools
import time
from collections import OrderedDict, deque
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeAlias, TypeVar

import numpy as np
import structlog
from aiohttp import WSMsgType, web

from gateway.audio.framing import Reframer
from gateway.audio.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from gateway.audio.resample import StreamResampler

from . import protocol as proto
from .brain import (
    BrainContext,
    CallTool,
    CreateRequest,
    Decided,
    ReplyEngine,
    Say,
    Step,
    ToolOutcome,
    ToolsAnswered,
    Trigger,
    UserTurn,
    first_speech_chunks,
)
from .conversation import Conversation
from .settings import LocalAgentSettings
from .turns import (
    SAMPLE_RATE as VAD_RATE,
    BargeIn,
    SpeechDiscarded,
    SpeechStarted,
    TurnDetector,
    TurnEnded,
    TurnKnobs,
    TurnPausing,
    UtteranceBuffer,
    pause_verdict,
)

if TYPE_CHECKING:
    from .speech import SpeechModels

__all__ = ["AgentRuntime", "Connection", "ConnectionDone", "EndReason", "Session", "handle_websocket"]

log = structlog.get_logger("local_agent")
T = TypeVar("T")

TTS_RATE = 24000  # Synthesizer.SAMPLE_RATE: PCM16 out of the speech stack
INBOUND_MAX = 250
#: Taking over a socket whose reader had fallen behind: read what it had already received until no message has
#: come for DRAIN_GAP_S (the client has moved to the new socket), for at most DRAIN_MAX_S.
DRAIN_GAP_S = 0.05
DRAIN_MAX_S = 2.0
OUTBOUND_MAX = 200
JOBS_MAX = 32
#: Audio kept before the detector's speech start / after its end when a turn is cut out for STT.
PREROLL_SAMPLES = VAD_RATE * 200 // 1000
POSTROLL_SAMPLES = VAD_RATE * 100 // 1000
#: Speech that starts again this soon after a turn's speech ended continues that turn (its reply is held and the
#: two are answered together); later speech is a new turn. Longer than any end-of-turn silence (early 400 ms,
#: min_silence 600 ms, late 1000 ms) plus a Whisper run on time (~0.3 s), so an end of turn called too early is
#: still caught, while a caller who paused for seconds is not merged just because the agent was slow.
CONTINUE_SAMPLES = VAD_RATE * 1500 // 1000
#: How long a turn transcribed late waits for the caller's new turn to end before it is answered anyway.
MAX_WAIT_FOR_TURN_S = 30.0


# --------------------------------------------------------------------------------------------------------------
# Process-wide state


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


class SynthCache:
    """Synthesized audio of *fixed* text (the greeting, the intent table's replies: ``Say.fixed``), bounded LRU.

    Keyed by the chunk's text alone: the runtime has one Piper voice, always run with the voice's default
    synthesis settings, and everything per session (output format, volume) is applied after synthesis. Piper's
    defaults are randomised per run (``noise_scale`` 0.667, ``noise_w_scale`` 0.8: each rendering differs
    slightly in timbre and timing), so the cache does not reproduce what a fresh synthesis would give: it keeps
    the first rendering and replays it, as a recorded prompt would be. That is a fair rendering of the same text,
    and the one thing a cache changes is that a caller who hears a sentence twice hears the same take twice.
    Variable text (LLM output, ``{result}`` answers, ``reply.create`` instructions) is never cached.
    Used from the event loop only.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._items: OrderedDict[str, list[tuple[str, bytes]]] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> list[tuple[str, bytes]] | None:
        found = self._items.get(text)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(text)
        self.hits += 1
        return found

    def put(self, text: str, pieces: list[tuple[str, bytes]]) -> None:
        size = sum(len(pcm) for _, pcm in pieces)
        if text in self._items or size > self._max // 4:
            return
        self._items[text] = pieces
        self._bytes += size
        while self._bytes > self._max:
            _, old = self._items.popitem(last=False)
            self._bytes -= sum(len(pcm) for _, pcm in old)

    def __len__(self) -> int:
        return len(self._items)


# --------------------------------------------------------------------------------------------------------------
# Session state that survives a disconnect


@dataclass(slots=True)
class PendingCall:
    call_id: str
    name: str
    arguments: dict[str, Any]
    context: dict[str, Any]
    group: str  # reply_id of the reply that emitted it
    deadline: float  # loop time
    result: str | None = None
    is_error: bool = False
    timed_out: bool = False
    answered: bool = False

    @property
    def resolved(self) -> bool:
        return self.answered or self.timed_out


@dataclass(frozen=True, slots=True)
class GreetJob:
    text: str


@dataclass(frozen=True, slots=True)
class Prepared:
    """A turn worked out ahead while the caller paused (TurnPausing): its text and, for a deterministic engine,
    the reply's steps and the first sentence already synthesized."""

    text: str
    steps: tuple[Step, ...] | None = None
    first_sentence: tuple[str, list[tuple[str, bytes]]] | None = None


@dataclass(frozen=True, slots=True)
class TurnJob:
    audio16k: bytes
    ended_at: float  # loop time the end of turn was decided
    #: Preparation started when the caller paused (TurnPausing) over exactly this audio.
    prepared: asyncio.Task[Prepared] | None = None
    #: TurnEnded.reason: "silence", "early"/"late" (adaptive), "max_silence", "max_turn".
    end_reason: str = "silence"
    #: Where the turn's speech ended (the detector's sample clock); -1: unknown.
    end_sample: int = -1


@dataclass(frozen=True, slots=True)
class CreateJob:
    instructions: str | None


@dataclass(frozen=True, slots=True)
class ToolsJob:
    outcomes: tuple[ToolOutcome, ...]


Job: TypeAlias = GreetJob | TurnJob | CreateJob | ToolsJob


class Session:
    """A configured session: lives from ``session.ready`` to ``session.end`` (or the resume window running out)."""

    def __init__(
        self, session_id: str, config: proto.SessionConfig, *, now: float, expires_at: float, resume_token: str
    ) -> None:
        self.id = session_id
        self.config = config
        self.created_at = now  # wall clock, for session_duration_seconds
        self.expires_at = expires_at
        self.resume_token = resume_token
        self.conversation = Conversation()
        self.jobs: asyncio.Queue[Job] = asyncio.Queue(maxsize=JOBS_MAX)
        self.calls: dict[str, PendingCall] = {}
        self.finished_calls: deque[str] = deque(maxlen=256)
        self.connection: Connection | None = None
        self.detached_at: float | None = None
        self.detached = asyncio.Event()
        self.ended = False
        self.input_audio_s = 0.0
        self.hearing: Hearing | None = None  # created by the first connection (it needs the runtime's models)
        self.job_running = False  # a job taken off ``jobs`` is being run (by whichever connection is attached)

    @property
    def settled(self) -> bool:
        """Everything the caller said so far has been dealt with: all audio received has been heard, the caller
        is not mid-utterance, no turn is held, and no job is queued or running. A snapshot (the next frame may
        change it); tests and tools use it to wait for the agent, which can run seconds behind real time."""
        h = self.hearing
        return (h is None or h.caught_up) and self.jobs.empty() and not self.job_running

    def enqueue(self, job: Job) -> None:
        try:
            self.jobs.put_nowait(job)
        except asyncio.QueueFull:
            log.warning("local_agent.job_dropped", session_id=self.id, job=type(job).__name__)

    def next_deadline(self) -> float | None:
        pending = [c.deadline for c in self.calls.values() if not c.resolved]
        return min(pending) if pending else None

    def resolve_calls(self, now_loop: float) -> None:
        """Time out overdue calls, and queue the answer reply of every group whose calls are all resolved."""
        for c in self.calls.values():
            if not c.resolved and now_loop >= c.deadline:
                c.timed_out = True
                log.info("local_agent.tool_timeout", session_id=self.id, tool=c.name, call_id=c.call_id)
        groups: dict[str, list[PendingCall]] = {}
        for c in self.calls.values():
            groups.setdefault(c.group, []).append(c)
        for calls in groups.values():
            if all(c.resolved for c in calls):
                for c in calls:
                    del self.calls[c.call_id]
                    self.finished_calls.append(c.call_id)
                self.enqueue(
                    ToolsJob(
                        tuple(
                            ToolOutcome(c.call_id, c.name, c.context, c.result, c.is_error, c.timed_out)
                            for c in calls
                        )
                    )
                )


@dataclass(slots=True)
class Speculation:
    """Work started at a pause (TurnPausing) on the turn ``[start, end)`` so far: its audio and the task."""

    start: int
    end: int
    audio: bytes
    task: asyncio.Task[Prepared] | None = None


class Hearing:
    """The caller's side of a session: everything between inbound audio and a finished turn. Per session, not
    per socket, so a socket that drops mid-utterance and comes back with ``session.resume`` continues the same
    turn (§4.3): the frames received but not yet heard, the input decoder, the VAD stream (Silero's recurrent
    state and context), the turn detector and its clock, the audio of the utterance so far, the speculative
    preparation, a VAD call still running when the socket closed, turn events not yet handled, and a turn held
    for merging. Only the :class:`Connection` attached to the session touches it; it runs no tasks itself (the
    speculation task belongs to a connection's task group and is restarted on resume)."""

    def __init__(self, decoder: _InputDecoder, vad: Any, detector: TurnDetector) -> None:
        #: Bounded at INBOUND_MAX by the reader (:meth:`Connection._enqueue_audio`), not by the queue itself, so a
        #: socket being taken over can hand on everything it had received (:meth:`Connection.take_over`).
        self.inbound: asyncio.Queue[bytes] = asyncio.Queue()
        self.room = asyncio.Event()  # set when inbound is below INBOUND_MAX (or a take-over wakes the reader)
        self.room.set()
        self.decoder = decoder
        self.vad = vad
        self.detector = detector
        self.utterance = UtteranceBuffer()
        self.spec: Speculation | None = None
        #: A VAD call (in the pool) whose probabilities the detector has not seen yet: set while it runs, and
        #: left set when the socket closed during it, so the next connection feeds them in first.
        self.vad_pending: asyncio.Future[list[float]] | None = None
        #: Turn events decided but not yet fully handled (a socket that closes mid-event leaves the rest here).
        self.backlog: deque[SpeechStarted | BargeIn | TurnEnded | TurnPausing | SpeechDiscarded] = deque()
        self.held_text: str | None = None  # a turn whose reply was held because the caller kept talking
        self.early_text: str | None = None  # the last turn, if an early verdict ended it (see BargeIn.continuation)
        self.turn_over = asyncio.Event()  # set whenever the detector is seen outside a caller's turn

    @property
    def caught_up(self) -> bool:
        """No audio waiting to be heard, no turn event or speculation pending, no speech in progress, nothing
        held."""
        return (
            self.inbound.empty()
            and self.vad_pending is None
            and not self.backlog
            and self.spec is None
            and not self.detector.caller_speaking
            and self.held_text is None
        )


# --------------------------------------------------------------------------------------------------------------
# Audio transcoding (thin wrappers over gateway.audio)


class _InputDecoder:
    """Client audio in its ``input.format`` → 16 kHz PCM16 for the VAD and STT."""

    def __init__(self, fmt: proto.AudioFormat) -> None:
        self.format = fmt
        self._resampler = StreamResampler(fmt.sample_rate, VAD_RATE)

    def decode(self, data: bytes) -> bytes:
        if self.format.encoding == "audio/pcmu":
            data = ulaw_to_pcm16(data)
        elif self.format.encoding == "audio/pcma":
            data = alaw_to_pcm16(data)
        return self._resampler.process(data)


class _OutputEncoder:
    """24 kHz PCM16 from the TTS → fixed-size ``reply.audio`` chunks in the session's ``output.format``."""

    def __init__(self, fmt: proto.AudioFormat, chunk_ms: float | None) -> None:
        self.rate = fmt.sample_rate
        self.encoding = fmt.encoding
        pcm = fmt.encoding == "audio/pcm"
        # Live chunking (§2.2 `reply.audio`): 10 ms / 480 B of PCM, 37.5 ms / 300 B of G.711.
        ms = chunk_ms if chunk_ms is not None else (10.0 if pcm else 37.5)
        self.bytes_per_sample = 2 if pcm else 1
        samples = max(1, round(self.rate * ms / 1000))
        self.chunk_s = samples / self.rate
        self._pad = 0 if pcm else (ULAW_SILENCE if fmt.encoding == "audio/pcmu" else ALAW_SILENCE)
        self._framer = Reframer(samples * self.bytes_per_sample)
        self._resampler = StreamResampler(TTS_RATE, self.rate) if self.rate != TTS_RATE else None

    def _encode(self, pcm16: bytes) -> bytes:
        if self.encoding == "audio/pcmu":
            return pcm16_to_ulaw(pcm16)
        if self.encoding == "audio/pcma":
            return pcm16_to_alaw(pcm16)
        return pcm16

    def push(self, pcm24k: bytes) -> tuple[list[bytes], float]:
        """Frames ready to send, and the duration (s) of audio this input added to the reply."""
        pcm = self._resampler.process(pcm24k) if self._resampler else pcm24k
        data = self._encode(pcm)
        return self._framer.push(data), len(data) / self.bytes_per_sample / self.rate

    def flush(self) -> list[bytes]:
        tail = self._encode(self._resampler.flush()) if self._resampler else b""
        return self._framer.push(tail) + self._framer.flush(self._pad)


def _apply_volume(pcm: bytes, volume: float | None) -> bytes:
    if volume is None or volume >= 100:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (volume / 100.0)
    return x.astype("<i2").tobytes()


# --------------------------------------------------------------------------------------------------------------
# One connection


class EndReason(enum.Enum):
    CLIENT_END = "client_end"  # session.end: session.ended, close 1000, session gone
    PEER_GONE = "peer_gone"  # socket closed/failed without session.end: keep the session for resume
    IDLE = "idle"  # nothing received for idle_timeout_s: session.ended, close 1000
    SHUTDOWN = "shutdown"  # server shutting down
    TAKEN_OVER = "taken_over"  # the session was resumed on another socket


class ConnectionDone(Exception):
    """Control flow: the connection ends for ``reason`` (raised by whichever task notices first)."""

    def __init__(self, reason: EndReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


@dataclass(slots=True)
class _Reply:
    reply_id: str
    item_id: str
    interruptible: bool
    transcript: proto.ReplyTranscript = field(default_factory=proto.ReplyTranscript)
    sent_s: float = 0.0  # reply audio handed to the socket so far
    audio_started: bool = False
    finished: bool = False
    cut_text: str | None = None  # set on interruption: what the caller heard
    first_audio_at: float | None = None  # loop time of the first non-silent chunk
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


class Connection:
    """One socket attached to one :class:`Session` (see the module docstring for the task layout)."""

    def __init__(self, runtime: AgentRuntime, ws: web.WebSocketResponse, session: Session) -> None:
        self.rt = runtime
        self.ws = ws
        self.session = session
        cfg = session.config
        self._outbound: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOUND_MAX)
        if session.hearing is None:
            session.hearing = Hearing(
                _InputDecoder(cfg.input_format), runtime.models.vad.stream(), TurnDetector(self._knobs(cfg))
            )
        self._h = session.hearing  # survives this socket (resume continues the caller's turn)
        self._reply: _Reply | None = None
        self._job_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._play_end = 0.0  # loop time the client will have played everything sent so far
        self._server_close: EndReason | None = None
        self._receiving = False  # the reader is waiting in ws.receive() (the socket has nothing unread)
        self._draining = False  # taken over: the reader reads what the socket already holds, then ends
        self._reader_done = asyncio.Event()
        self._reader_saw_end = False  # the reader itself saw the socket close (nothing left unread)
        self._listener_task: asyncio.Task[None] | None = None
        self.frames_dropped = 0
        self.turns = 0

    # ---- config

    def _knobs(self, cfg: proto.SessionConfig) -> TurnKnobs:
        s = self.rt.settings
        td = cfg.turn_detection or proto.TurnDetection()
        min_silence = td.min_silence if td.min_silence is not None else s.min_silence_ms
        max_silence = td.max_silence if td.max_silence is not None else max(s.max_silence_ms, min_silence)
        return TurnKnobs(
            vad_threshold=td.vad_threshold if td.vad_threshold is not None else s.vad_threshold,
            min_silence_ms=min_silence,
            max_silence_ms=max(max_silence, min_silence),
            interrupt_response=td.interrupt_response if td.interrupt_response is not None else True,
            backchannel_max_ms=s.backchannel_max_ms,
            speculate_ms=s.speculate_ms,
        )

    def _interruptible(self, kind: str) -> bool:
        td = self.session.config.turn_detection
        return not (td and td.uninterruptible_turns and kind in td.uninterruptible_turns)

    # ---- sending

    async def emit(self, type_: str, **fields: Any) -> None:
        await self._put(proto.server_event(type_, time.time(), **fields))

    async def emit_error(self, err: proto.ProtocolError) -> None:
        await self._put(
            proto.session_error(err.code, err.message, now=time.time(), param=err.param, session_id=self.session.id)
        )

    async def _put(self, event: dict[str, Any]) -> None:
        try:
            async with asyncio.timeout(self.rt.settings.send_timeout_s):
                await self._outbound.put(proto.json_dumps(event))
        except TimeoutError:
            raise ConnectionDone(EndReason.PEER_GONE) from None

    async def _writer(self) -> None:
        timeout = self.rt.settings.send_timeout_s
        while True:
            try:
                async with asyncio.timeout(60.0):
                    text = await self._outbound.get()
            except TimeoutError:
                continue  # nothing to send; loop so this wait stays bounded
            try:
                async with asyncio.timeout(timeout):
                    await self.ws.send_str(text)
            except (TimeoutError, ConnectionError, RuntimeError):
                # RuntimeError/ConnectionError: aiohttp's "closing transport"; the reader sees the close too.
                raise ConnectionDone(EndReason.PEER_GONE) from None

    # ---- running

    async def run(self, *, greet: bool) -> EndReason:
        """Serve the session on this socket until the connection ends; return why."""
        if greet and self.session.config.greeting:
            self.session.enqueue(GreetJob(self.session.config.greeting))
        reason = EndReason.PEER_GONE
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._writer(), name="writer")
                tg.create_task(self._reader(), name="reader")
                self._listener_task = tg.create_task(self._listener(), name="listener")
                tg.create_task(self._replier(), name="replier")
        except* ConnectionDone as eg:
            reason = _first_reason(eg.exceptions)
        if (self._server_close or reason) is EndReason.PEER_GONE and not self._reader_saw_end:
            # Gone as another task saw it (a failed send, a full outbound queue) while the reader was behind:
            # what the socket had already received is still the caller's audio, sent before the drop, and the
            # client will not send it again. Hand it on as a take-over does (bounded the same way).
            self._draining = True
            try:
                await self._read()
            except (ConnectionDone, ConnectionError, RuntimeError):
                pass
        return self._server_close or reason

    async def close_from_server(self) -> None:
        self._server_close = EndReason.SHUTDOWN
        await self.ws.close(code=1001, message=b"server shutdown")

    async def take_over(self) -> None:
        """Another socket resumed this session: close this one (1001) so it detaches.

        Closing at once would throw away what the socket had received but the reader had not read yet (aiohttp's
        ``receive()`` returns "closed" straight after ``close()``, and ``close()`` itself discards what it reads
        while waiting for the peer's close frame). That is only ever anything when the reader is busy with a
        message, i.e. blocked on a full inbound queue because the agent fell behind real time. Then the reader
        first reads everything the socket already holds into the session's inbound queue, past its bound and in
        order, ahead of anything the new socket brings (it attaches only once this one has detached), and ends
        the connection itself; bounded by ``DRAIN_MAX_S``. This connection's listener stops now, so the turn
        events of that audio are sent on the new socket, not on this dead one."""
        self._server_close = EndReason.TAKEN_OVER
        if not self._receiving and not self._reader_done.is_set():
            self._draining = True
            if self._listener_task is not None:
                self._listener_task.cancel()  # its state lives on in the Hearing, as on any disconnect
            self._h.room.set()  # wake a reader waiting for room in the inbound queue
            try:
                async with asyncio.timeout(DRAIN_MAX_S + 0.5):
                    await self._reader_done.wait()
            except TimeoutError:
                pass
        await self.ws.close(code=1001, message=b"session resumed elsewhere")

    async def flush_final(self, events: Iterable[dict[str, Any]]) -> None:
        """After the task group ended: send the last events straight to the socket (best effort)."""
        for event in events:
            try:
                async with asyncio.timeout(self.rt.settings.send_timeout_s):
                    await self.ws.send_str(proto.json_dumps(event))
            except (TimeoutError, ConnectionError, RuntimeError):
                return

    # ---- reader

    async def _reader(self) -> None:
        try:
            await self._read()
        finally:
            self._reader_done.set()

    async def _read(self) -> None:
        s = self.rt.settings
        loop = asyncio.get_running_loop()
        drain_until: float | None = None
        while True:
            if self._draining:
                # Taken over: only what the socket already holds (see take_over).
                drain_until = drain_until or loop.time() + DRAIN_MAX_S
                try:
                    async with asyncio.timeout(max(0.0, min(DRAIN_GAP_S, drain_until - loop.time()))):
                        msg = await self.ws.receive()
                except TimeoutError:
                    raise ConnectionDone(EndReason.TAKEN_OVER) from None
            else:
                self._receiving = True
                try:
                    msg = await self.ws.receive(timeout=s.idle_timeout_s)
                except TimeoutError:
                    raise ConnectionDone(EndReason.IDLE) from None
                finally:
                    self._receiving = False
            if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
                self._reader_saw_end = True
                raise ConnectionDone(self._server_close or EndReason.PEER_GONE)
            if msg.type is not WSMsgType.TEXT:
                # §2.0: JSON text frames only.
                await self.emit_error(proto.ProtocolError("invalid_format", "Invalid JSON format."))
                continue
            try:
                event = proto.parse_client_event(msg.data)
                await self._dispatch(event)
            except proto.ProtocolError as e:
                await self.emit_error(e)

    async def _dispatch(self, event: proto.ClientEvent) -> None:
        session = self.session
        if isinstance(event, proto.InputAudio):
            if not event.audio:
                return
            fmt = session.config.input_format
            session.input_audio_s += len(event.audio) / (fmt.sample_rate * (2 if fmt.encoding == "audio/pcm" else 1))
            await self._enqueue_audio(event.audio)
        elif isinstance(event, proto.SessionUpdate):
            new = proto.apply_session_update(session.config, event.session, voices=self.rt.settings.voices)
            if new.input_format != session.config.input_format:
                self._h.decoder = _InputDecoder(new.input_format)
            session.config = new
            self._h.detector.knobs = self._knobs(new)
            await self.emit("session.updated", config=proto.config_echo(new, session.id))
        elif isinstance(event, proto.ToolResult):
            call = session.calls.get(event.call_id)
            if call is None:
                if event.call_id in session.finished_calls:
                    log.info("local_agent.late_tool_result", session_id=session.id, call_id=event.call_id)
                    return
                raise proto.ProtocolError(
                    "invalid_value", f"Unknown call_id '{event.call_id}'", param="call_id"
                )
            if call.resolved:
                return
            # Accepted at any time, even before the reply that made the call is done (§3.2, live finding).
            call.answered, call.result, call.is_error = True, event.result, event.is_error
            session.resolve_calls(asyncio.get_running_loop().time())
        elif isinstance(event, proto.ReplyCreate):
            session.enqueue(CreateJob(event.instructions))
        elif isinstance(event, proto.SessionEnd):
            raise ConnectionDone(EndReason.CLIENT_END)
        elif isinstance(event, proto.SessionResume):
            raise proto.ProtocolError(
                "invalid_format", "session.resume must be the first message on a new connection", param="type"
            )
        elif isinstance(event, proto.ConversationMessage):
            # Validated, then ignored: live, the content never reached the model (§2.1).
            log.debug("local_agent.conversation_message_ignored", session_id=session.id, role=event.role)

    async def _enqueue_audio(self, audio: bytes) -> None:
        """Queue a frame for the listener; wait (up to 5 s, then drop it) while INBOUND_MAX frames are queued,
        except when draining a socket that was taken over (bounded by what the socket holds, see take_over)."""
        h = self._h
        try:
            async with asyncio.timeout(5.0):
                while h.inbound.qsize() >= INBOUND_MAX and not self._draining:
                    h.room.clear()
                    await h.room.wait()
        except TimeoutError:
            self.frames_dropped += 1
            return
        except asyncio.CancelledError:
            h.inbound.put_nowait(audio)  # the connection ends: the frame it had already received is still heard
            raise
        h.inbound.put_nowait(audio)

    # ---- listener: audio → VAD → turns

    async def _listener(self) -> None:
        h = self._h
        await self._catch_up()
        while True:
            try:
                async with asyncio.timeout(30.0):
                    first = await h.inbound.get()
            except TimeoutError:
                continue
            chunks = [first]
            while not h.inbound.empty() and len(chunks) < 50:
                chunks.append(h.inbound.get_nowait())
            if h.inbound.qsize() < INBOUND_MAX:
                h.room.set()
            pcm = b"".join(h.decoder.decode(c) for c in chunks)
            if not pcm:
                continue
            h.utterance.push(pcm)
            # The VAD stream's state advances in the pool whether or not we are still here to read the result, so
            # the call is shielded and kept on the session: if this socket closes during it, the next connection
            # feeds its probabilities to the detector first and the detector's clock stays in step with the audio.
            h.vad_pending = asyncio.get_running_loop().run_in_executor(self.rt.executor, h.vad.push, pcm)
            probs = await asyncio.shield(h.vad_pending)
            h.vad_pending = None
            self._detect(probs)
            await self._handle_backlog()

    async def _catch_up(self) -> None:
        """On a resumed session: finish what the previous socket left (a VAD result, turn events, speculation)."""
        h = self._h
        if h.vad_pending is not None:
            probs = await asyncio.shield(h.vad_pending)
            h.vad_pending = None
            self._detect(probs)
        spec = h.spec
        if spec is not None and (spec.task is None or spec.task.cancelled()):
            # Cancelled with the previous socket's task group: start it again on this one.
            self._start_preparation(spec)
        await self._handle_backlog()

    def _detect(self, probs: list[float]) -> None:
        reply = self._reply
        speaking = reply is not None and not reply.finished
        h = self._h
        h.backlog.extend(
            h.detector.push(probs, agent_speaking=speaking, interruptible=bool(reply and reply.interruptible))
        )
        if not h.detector.caller_has_turn:
            h.turn_over.set()

    async def _handle_backlog(self) -> None:
        # An event leaves the backlog only once handled: one interrupted by the socket closing (say, while its
        # event was being queued for a socket that is gone) is handled again, whole, on the resumed connection.
        backlog = self._h.backlog
        while backlog:
            await self._on_turn_event(backlog[0])
            backlog.popleft()

    async def _on_turn_event(self, ev: SpeechStarted | BargeIn | TurnEnded | TurnPausing | SpeechDiscarded) -> None:
        if isinstance(ev, SpeechStarted):
            await self.emit("input.speech.started")
        elif isinstance(ev, BargeIn):
            if ev.continuation and self._h.early_text:
                # The caller went on after a turn ended early: answer both parts together, as when they go on
                # before the reply starts (held_text, _user_turn).
                self._h.held_text, self._h.early_text = self._h.early_text, None
            if not await self._interrupt():
                await self.emit("input.speech.started")
        elif isinstance(ev, TurnPausing):
            # Start Whisper (~0.3 s) and, for a deterministic engine, the reply's first sentence now, so they are
            # ready when the silence timer confirms the end of turn; thrown away if the caller speaks again.
            self._drop_speculation()
            spec = Speculation(ev.start_sample, ev.end_sample, self._turn_audio(ev.start_sample, ev.end_sample))
            self._h.spec = spec
            self._start_preparation(spec)
        elif isinstance(ev, TurnEnded):
            await self.emit("input.speech.stopped")
            now = asyncio.get_running_loop().time()
            spec, self._h.spec = self._h.spec, None
            if spec is not None and (spec.start, spec.end) == (ev.start_sample, ev.end_sample):
                self.session.enqueue(
                    TurnJob(spec.audio, now, prepared=spec.task, end_reason=ev.reason, end_sample=ev.end_sample)
                )
            else:
                if spec is not None and spec.task is not None:
                    spec.task.cancel()
                self.session.enqueue(
                    TurnJob(
                        self._turn_audio(ev.start_sample, ev.end_sample),
                        now,
                        end_reason=ev.reason,
                        end_sample=ev.end_sample,
                    )
                )
        else:
            log.debug("local_agent.backchannel", session_id=self.session.id, voiced_ms=ev.voiced_ms)

    def _start_preparation(self, spec: Speculation) -> None:
        assert self._tg is not None
        spec.task = self._tg.create_task(self._prepare(spec.audio), name="turn:prepare")
        spec.task.add_done_callback(functools.partial(self._judge_pause, spec))

    def _judge_pause(self, spec: Speculation, task: asyncio.Task[Prepared]) -> None:
        """Adaptive end of turn: once the pause's words are known, move the end of this turn earlier (a finished,
        confidently understood request) or later (words that stop mid-sentence). Only when the client left
        ``min_silence``/``max_silence`` unset: live, setting either turns adaptive waiting off (spec §2.1). Sends
        nothing: the turn still ends through the detector, so events and their order are as without it."""
        if self._h.spec is not spec or task.cancelled() or task.exception() is not None:
            return
        td = self.session.config.turn_detection
        if td is not None and (td.min_silence is not None or td.max_silence is not None):
            return
        prepared = task.result()
        s = self.rt.settings
        knobs = self._h.detector.knobs
        decided = next((st for st in prepared.steps or () if isinstance(st, Decided)), None)
        ms = pause_verdict(
            prepared.text,
            decided.intent if decided is not None else None,
            decided.score if decided is not None else None,
            min_silence_ms=knobs.min_silence_ms,
            early_ms=s.early_silence_ms or knobs.min_silence_ms,
            late_ms=s.late_silence_ms,
            confident=s.early_min_score,
        )
        if ms is not None:
            self._h.detector.set_pause_verdict(spec.end, ms)

    async def _prepare(self, audio: bytes) -> Prepared:
        text = await self.rt.run_blocking(self.rt.models.stt.transcribe, audio)
        engine = self.rt.engine
        if not text or not getattr(engine, "deterministic", False):
            return Prepared(text)
        cfg = self.session.config
        # A deterministic engine's reply depends only on the text and the declared tools, not on history.
        ctx = BrainContext(cfg.system_prompt, cfg.tools, Conversation())
        async with aclosing(engine.reply(UserTurn(text), ctx)) as gen:
            steps = tuple([step async for step in gen])
        first = next((st for st in steps if isinstance(st, Say)), None)
        sentences = self.rt.split_sentences(first.text) if first else []
        if not sentences:
            return Prepared(text, steps)
        chunk = first_speech_chunks(sentences[0])[0]
        pieces = await self._synth(chunk, fixed=first.fixed if first else False)
        return Prepared(text, steps, (chunk, pieces))

    async def _synth(self, chunk: str, *, fixed: bool) -> list[tuple[str, bytes]]:
        """Synthesize one chunk in the pool; a chunk of fixed text comes from (and goes to) the runtime's cache."""
        cache = self.rt.synth_cache
        if fixed:
            hit = cache.get(chunk)
            if hit is not None:
                return hit
        pieces = await self.rt.run_blocking(_synth_all, self.rt.models.tts, chunk)
        if fixed:
            cache.put(chunk, pieces)
        return pieces

    def _turn_audio(self, start: int, end: int) -> bytes:
        return self._h.utterance.slice(start - PREROLL_SAMPLES, end + POSTROLL_SAMPLES)

    def _drop_speculation(self) -> None:
        spec, self._h.spec = self._h.spec, None
        if spec is not None and spec.task is not None:
            spec.task.cancel()

    async def _interrupt(self) -> bool:
        """Barge-in (§4.1): stop the reply now and report it, three events back to back."""
        reply = self._reply
        if reply is None or reply.finished or not reply.interruptible:
            return False
        reply.cut_text = reply.transcript.heard(self._heard_s(reply) * 1000)
        reply.finished = True
        task = self._job_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        await self.emit("input.speech.started")
        await self.emit(
            "transcript.agent", reply_id=reply.reply_id, item_id=reply.item_id, text=reply.cut_text, interrupted=True
        )
        await self.emit("reply.done", reply_id=reply.reply_id, status="interrupted")
        # The client flushes its playback on an interrupted reply.done (§4.2); nothing is buffered any more.
        self._play_end = asyncio.get_running_loop().time()
        log.info(
            "local_agent.barge_in",
            session_id=self.session.id,
            reply_id=reply.reply_id,
            heard_chars=len(reply.cut_text),
            full_chars=len(reply.transcript.text),
        )
        return True

    def _heard_s(self, reply: _Reply) -> float:
        ahead = max(0.0, self._play_end - asyncio.get_running_loop().time())
        return max(0.0, reply.sent_s - ahead)

    # ---- replier: jobs, one at a time

    async def _replier(self) -> None:
        session = self.session
        loop = asyncio.get_running_loop()
        while True:
            deadline = session.next_deadline()
            timeout = 60.0 if deadline is None else max(0.0, min(60.0, deadline - loop.time()))
            try:
                async with asyncio.timeout(timeout):
                    job = await session.jobs.get()
            except TimeoutError:
                session.resolve_calls(loop.time())
                continue
            assert self._tg is not None
            task = self._tg.create_task(self._run_job(job), name=f"job:{type(job).__name__}")
            self._job_task = task
            session.job_running = True
            try:
                await asyncio.wait({task})
            finally:
                self._job_task = None
                session.job_running = False
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                # ConnectionDone ends the connection; anything else is our bug, logged once at the boundary.
                raise exc

    async def _run_job(self, job: Job) -> None:
        session = self.session
        if isinstance(job, GreetJob):
            # The greeting goes straight to TTS, word for word, not through the brain (§2.1 `greeting` row).
            await self._speak(_steps([Say(job.text, fixed=True)]), kind="greeting")
        elif isinstance(job, TurnJob):
            await self._user_turn(job)
        elif isinstance(job, CreateJob):
            await self._respond(CreateRequest(job.instructions), kind="reply_create")
        else:
            for o in job.outcomes:
                content = "error: the tool timed out" if o.timed_out else (o.result or "")
                if o.is_error and not o.timed_out:
                    content = f"error: {content}"
                session.conversation.add_tool_result(o.call_id, content)
            await self._respond(ToolsAnswered(job.outcomes), kind="tool_result")

    async def _user_turn(self, job: TurnJob) -> None:
        session = self.session
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # A preparation cancelled with an earlier socket (the turn was queued before a drop) is redone here.
        usable = job.prepared is not None and not job.prepared.cancelled()
        prepared = await job.prepared if usable and job.prepared is not None else None
        if prepared is not None:
            text = prepared.text
        else:
            text = await self.rt.run_blocking(self.rt.models.stt.transcribe, job.audio16k)
        stt_s = loop.time() - t0  # time the turn waited for its text (less than Whisper's run when speculated)
        if not text:
            log.info("local_agent.turn_empty", session_id=session.id, stt_ms=round(stt_s * 1000))
            return
        self.turns += 1
        item_id = proto.new_item_id()
        # Whisper is not streaming: one delta carrying the whole (final) text, then the final (§2.2).
        await self.emit("transcript.user.delta", item_id=item_id, text=text)
        await self.emit("transcript.user", item_id=item_id, text=text)
        session.conversation.add_user(text)
        h = self._h
        if h.held_text:
            text = f"{h.held_text} {text}"
            h.held_text = None
        start = h.detector.turn_start
        if start is not None and (job.end_sample < 0 or start - job.end_sample < CONTINUE_SAMPLES):
            # The caller went on talking soon after this turn's speech ended: the end of turn was called too
            # early. Hold this reply and answer both parts together at the end of the new turn (live behaviour,
            # §2.2 notes).
            h.held_text = text
            log.info("local_agent.turn_held", session_id=session.id)
            return
        if start is not None:
            # The caller paused well past the end of turn and only then started a new one: it is a turn of its
            # own, merely transcribed late (the agent fell behind real time). Answer it on its own, once the new
            # turn is over (so the reply is not spoken over the caller), and that new turn after it. Holding it
            # instead left a finished utterance unanswered until the caller's next turn ended, then merged.
            try:
                async with asyncio.timeout(MAX_WAIT_FOR_TURN_S):
                    while h.detector.turn_start == start:
                        h.turn_over.clear()
                        await h.turn_over.wait()
            except TimeoutError:
                pass
            log.info("local_agent.turn_deferred", session_id=session.id)
        h.early_text = text if job.end_reason == "early" else None
        merged = text != (prepared.text if prepared else None)
        await self._respond(
            UserTurn(text),
            kind="user_speech",
            turn_ended_at=job.ended_at,
            end_reason=job.end_reason,
            stt_s=stt_s,
            prepared=None if merged else prepared,
        )

    async def _respond(
        self,
        trigger: Trigger,
        *,
        kind: str,
        turn_ended_at: float | None = None,
        end_reason: str | None = None,
        stt_s: float | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        session = self.session
        ctx = BrainContext(session.config.system_prompt, session.config.tools, session.conversation)
        decided: list[Decided] = []
        planned = prepared.steps if prepared is not None else None

        async def steps() -> AsyncIterator[Step]:
            source = _steps(planned) if planned is not None else self.rt.engine.reply(trigger, ctx)
            async with aclosing(source) as engine_steps:
                async for step in engine_steps:
                    if isinstance(step, Decided):
                        decided.append(step)
                        continue
                    yield step

        presynth = prepared.first_sentence if prepared is not None else None
        replies: list[_Reply] = []
        try:
            await self._speak(steps(), kind=kind, presynth=presynth, started=replies.append)
        finally:
            # Logged even when the reply was interrupted or the connection went away mid-reply.
            if kind == "user_speech":
                reply = replies[0] if replies else None
                d = decided[0] if decided else None
                first_audio = reply.first_audio_at if reply is not None else None
                log.info(
                    "local_agent.turn",
                    session_id=session.id,
                    engine=self.rt.engine.name,
                    intent=d.intent if d else None,
                    score=round(d.score, 3) if d and d.score is not None else None,
                    end_reason=end_reason,
                    stt_wait_ms=round(stt_s * 1000) if stt_s is not None else None,
                    # From the end-of-turn decision (min_silence after the VAD's last speech window).
                    first_audio_ms=round((first_audio - turn_ended_at) * 1000)
                    if first_audio is not None and turn_ended_at is not None
                    else None,
                    tool_calls=len(reply.tool_calls) if reply else 0,
                    interrupted=bool(reply and reply.cut_text is not None),
                    prepared=planned is not None,
                    system_prompt_set=bool(session.config.system_prompt),
                )

    # ---- speaking one reply

    async def _speak(
        self,
        steps: AsyncIterator[Step],
        *,
        kind: str,
        presynth: tuple[str, list[tuple[str, bytes]]] | None = None,
        started: Callable[[_Reply], None] | None = None,
    ) -> _Reply:
        """One reply: reply.started, audio paced at real time (TTS sentence by sentence in the pool), word
        deltas per sentence, tool.calls, transcript.agent, reply.done (§2.2, §8 item 3)."""
        session = self.session
        reply = _Reply(proto.new_reply_id(), proto.new_item_id(), self._interruptible(kind))
        self._reply = reply
        if started is not None:
            started(reply)
        try:
            await self.emit("reply.started", reply_id=reply.reply_id, item_id=reply.item_id)
            queue: asyncio.Queue[tuple[str, bytes] | CallTool | None] = asyncio.Queue(maxsize=3)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._synthesize(steps, queue, presynth))
                tg.create_task(self._pace(reply, queue))
            # Normal end.
            reply.finished = True
            text = reply.transcript.text
            if text:
                await self.emit(
                    "transcript.agent", reply_id=reply.reply_id, item_id=reply.item_id, text=text, interrupted=False
                )
            await self.emit("reply.done", reply_id=reply.reply_id, status="completed")
            session.conversation.add_assistant(text, reply.tool_calls)
            return reply
        except asyncio.CancelledError:
            # Barge-in (events already sent by _interrupt) or the connection went away (a reply cut by a
            # disconnect is ended, not replayed: §4.3). Record what the caller heard.
            reply.finished = True
            heard = reply.cut_text
            if heard is None:
                heard = reply.transcript.heard(self._heard_s(reply) * 1000)
            session.conversation.add_assistant(heard, reply.tool_calls)
            raise
        finally:
            if self._reply is reply:
                self._reply = None

    async def _synthesize(
        self,
        steps: AsyncIterator[Step],
        queue: asyncio.Queue[tuple[str, bytes] | CallTool | None],
        presynth: tuple[str, list[tuple[str, bytes]]] | None = None,
    ) -> None:
        first = True
        try:
            async for step in steps:
                if isinstance(step, CallTool):
                    await queue.put(step)
                    continue
                if not isinstance(step, Say):
                    continue
                # Our own sentence split, one pool call per sentence (the first one cut at a comma when long),
                # so the first audio is ready early and no generator is ever shared between threads.
                for sentence in self.rt.split_sentences(step.text):
                    chunks = first_speech_chunks(sentence) if first else [sentence]
                    first = False
                    for chunk in chunks:
                        if presynth is not None and presynth[0] == chunk:
                            pieces, presynth = presynth[1], None  # synthesized while the caller paused
                        else:
                            pieces = await self._synth(chunk, fixed=step.fixed)
                        for piece in pieces:
                            await queue.put(piece)
        finally:
            aclose = getattr(steps, "aclose", None)
            if aclose is not None:
                await aclose()
        await queue.put(None)

    async def _pace(self, reply: _Reply, queue: asyncio.Queue[tuple[str, bytes] | CallTool | None]) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.session.config
        enc = _OutputEncoder(cfg.output_format, self.rt.settings.reply_chunk_ms)
        audio_s = 0.0  # reply audio produced so far (the transcript timeline)
        while True:
            async with asyncio.timeout(60.0):
                item = await queue.get()
            if item is None:
                break
            if isinstance(item, CallTool):
                await self._emit_tool_call(reply, item)
                continue
            sentence, pcm24k = item
            pcm24k = _apply_volume(pcm24k, self.session.config.volume)
            frames, dur = enc.push(pcm24k)
            words = reply.transcript.add_sentence(sentence, audio_s * 1000, (audio_s + dur) * 1000)
            audio_s += dur
            # transcript.agent.delta comes in bursts (§2.2): one per sentence, as its audio starts.
            for w in words:
                await self.emit(
                    "transcript.agent.delta",
                    reply_id=reply.reply_id,
                    item_id=reply.item_id,
                    delta=w.delta,
                    start_ms=w.start_ms,
                    end_ms=w.end_ms,
                )
            for frame in frames:
                await self._send_audio(reply, frame, enc.chunk_s, loop)
        for frame in enc.flush():
            await self._send_audio(reply, frame, enc.chunk_s, loop)

    async def _send_audio(self, reply: _Reply, frame: bytes, chunk_s: float, loop: asyncio.AbstractEventLoop) -> None:
        # Real-time pacing with a lead of at most reply_lead_ms over the client's playout clock (§6: live sends
        # at real-time pace; the client's jitter buffer absorbs the lead).
        lead = self.rt.settings.reply_lead_ms / 1000.0
        wait = self._play_end - lead - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)
        now = loop.time()
        self._play_end = max(self._play_end, now) + chunk_s
        reply.sent_s += chunk_s
        if reply.first_audio_at is None and _audible(frame, self.session.config.output_format.encoding):
            reply.first_audio_at = now
        await self.emit("reply.audio", reply_id=reply.reply_id, data=base64.b64encode(frame).decode("ascii"))

    async def _emit_tool_call(self, reply: _Reply, call: CallTool) -> None:
        session = self.session
        tool = session.config.tool(call.name)
        timeout = tool.timeout_seconds if tool else 120
        call_id = proto.new_call_id()
        args = dict(call.arguments)
        session.calls[call_id] = PendingCall(
            call_id, call.name, args, dict(call.context), reply.reply_id, asyncio.get_running_loop().time() + timeout
        )
        reply.tool_calls.append((call_id, call.name, args))
        await self.emit("tool.call", call_id=call_id, name=call.name, arguments=args)
        log.info("local_agent.tool_call", session_id=session.id, tool=call.name, call_id=call_id)


def _synth_all(tts: Any, sentence: str) -> list[tuple[str, bytes]]:
    """Runs in the pool: synthesize one sentence completely (the generator never leaves this thread)."""
    return list(tts.synthesize(sentence))


async def _steps(items: Iterable[Step]) -> AsyncGenerator[Step, None]:
    for item in items:
        yield item


def _audible(frame: bytes, encoding: str, threshold: int = 300) -> bool:
    """A chunk with any sample above ``threshold`` (about -40 dBFS): used for the first-audio latency figure."""
    if encoding == "audio/pcm":
        pcm = frame
    elif encoding == "audio/pcmu":
        pcm = ulaw_to_pcm16(frame)
    else:
        pcm = alaw_to_pcm16(frame)
    return bool(pcm) and int(np.abs(np.frombuffer(pcm, dtype="<i2")).max()) > threshold


def _first_reason(excs: Iterable[BaseException]) -> EndReason:
    for e in excs:
        if isinstance(e, ConnectionDone):
            return e.reason
        if isinstance(e, BaseExceptionGroup):
            return _first_reason(e.exceptions)
    return EndReason.PEER_GONE


# --------------------------------------------------------------------------------------------------------------
# The WebSocket endpoint


async def handle_websocket(runtime: AgentRuntime, request: web.Request) -> web.WebSocketResponse:
    """``GET /v1/ws``: auth on open (§1.2), first message (§1.4, §4.3), then the session."""
    s = runtime.settings
    ws = web.WebSocketResponse(heartbeat=s.heartbeat_s, max_msg_size=1 << 20, timeout=2.0)
    await ws.prepare(request)

    async def send(event: dict[str, Any]) -> None:
        async with asyncio.timeout(s.send_timeout_s):
            await ws.send_str(proto.json_dumps(event))

    async def fail(err: proto.ProtocolError, session_id: str | None = None) -> None:
        await send(proto.session_error(err.code, err.message, now=time.time(), param=err.param, session_id=session_id))
        if err.fatal:
            await ws.close(code=1008, message=err.message.encode()[:120])

    try:
        grant = proto.authenticate(
            request.headers.get("Authorization"),
            request.query.get("token"),
            api_key=runtime.api_key,
            secret=runtime.token_secret,
            now=time.time(),
        )
        if runtime.closing:
            await ws.close(code=1001, message=b"server shutting down")
            return ws
        if grant is None:
            # Live (§1.2): the upgrade succeeds, then session.error{unauthorized} and close 1008, before any
            # client message.
            log.info("local_agent.auth_failed", remote=request.remote)
            await fail(proto.ProtocolError("unauthorized", "Authentication failed", fatal=True))
            return ws
        runtime.purge_expired(asyncio.get_running_loop().time())
        opened = await _first_message(runtime, ws, grant, send, fail)
        if opened is None:
            return ws
        session, greet = opened
        await _serve(runtime, ws, session, greet=greet)
    except (ConnectionError, TimeoutError):
        pass  # the peer went away before a session existed
    finally:
        if not ws.closed:
            await ws.close()
    return ws


async def _first_message(
    runtime: AgentRuntime,
    ws: web.WebSocketResponse,
    grant: proto.Grant,
    send: Callable[[dict[str, Any]], Any],
    fail: Callable[..., Any],
) -> tuple[Session, bool] | None:
    """Read until a session exists: a valid first ``session.update`` or a ``session.resume``. ``None``: closed."""
    s = runtime.settings
    while True:
        try:
            msg = await ws.receive(timeout=s.first_message_timeout_s)
        except TimeoutError:
            await ws.close(code=1008, message=b"no session.update received")
            return None
        if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return None
        if msg.type is not WSMsgType.TEXT:
            await fail(proto.ProtocolError("invalid_format", "Invalid JSON format."))
            continue
        try:
            event = proto.parse_client_event(msg.data)
            if isinstance(event, proto.SessionUpdate):
                if grant.kind == "resume":
                    # A resume token only resumes its session (§4.3).
                    await fail(proto.ProtocolError("unauthorized", "Authentication failed", fatal=True))
                    return None
                config = proto.apply_session_update(None, event.session, voices=s.voices)
                return await _open_session(runtime, ws, config, grant, send), True
            if isinstance(event, proto.SessionResume):
                session = await _resume_session(runtime, event.session_id, grant, fail)
                if session is None:
                    return None
                await send(
                    proto.server_event(
                        "session.ready",
                        time.time(),
                        session_id=session.id,
                        config=proto.config_echo(session.config, session.id),
                        expires_at=int(session.expires_at),
                        resume_token=session.resume_token,
                    )
                )
                log.info("local_agent.session_resumed", session_id=session.id)
                return session, False
            if isinstance(event, proto.SessionEnd):
                await send(
                    proto.server_event(
                        "session.ended", time.time(), session_duration_seconds=0.0, audio_duration_seconds=None
                    )
                )
                await ws.close(code=1000)
                return None
            # §2.1 `input.audio`: audio (or anything else) before the session is configured is invalid_format.
            raise proto.ProtocolError(
                "invalid_format", "Session not ready: the first message must be session.update or session.resume"
            )
        except proto.ProtocolError as e:
            await fail(e)
            if e.fatal:
                return None


async def _open_session(
    runtime: AgentRuntime,
    ws: web.WebSocketResponse,
    config: proto.SessionConfig,
    grant: proto.Grant,
    send: Callable[[dict[str, Any]], Any],
) -> Session:
    now = time.time()
    sid = proto.new_session_id()
    expires_at = now + runtime.settings.session_expiry_s
    session = Session(
        sid,
        config,
        now=now,
        expires_at=expires_at,
        resume_token=proto.mint_resume_token(runtime.token_secret, session_id=sid, expires_at=expires_at),
    )
    runtime.sessions[sid] = session
    echo = proto.config_echo(config, sid)
    # Live sends session.updated then session.ready (§1.4).
    await send(proto.server_event("session.updated", time.time(), config=echo))
    await send(
        proto.server_event(
            "session.ready",
            time.time(),
            session_id=sid,
            config=echo,
            expires_at=int(expires_at),
            resume_token=session.resume_token,
        )
    )
    log.info(
        "local_agent.session_ready",
        session_id=sid,
        input_format=config.input_format.encoding,
        output_format=config.output_format.encoding,
        tools=len(config.tools),
        greeting=bool(config.greeting),
        auth=grant.kind,
    )
    return session


async def _resume_session(
    runtime: AgentRuntime, session_id: str, grant: proto.Grant, fail: Callable[..., Any]
) -> Session | None:
    if grant.kind == "resume" and grant.session_id != session_id:
        await fail(proto.ProtocolError("session_forbidden", "Session belongs to another credential", fatal=True))
        return None
    session = runtime.sessions.get(session_id)
    if session is None or session.ended:
        await fail(proto.ProtocolError("session_not_found", f"Session '{session_id}' not found", fatal=True))
        return None
    old = session.connection
    if old is not None:
        # The old socket may not have noticed the drop yet (half-open TCP): the new one wins.
        await old.take_over()
        try:
            async with asyncio.timeout(5.0):
                await session.detached.wait()
        except TimeoutError:
            await fail(proto.ProtocolError("session_not_found", f"Session '{session_id}' not found", fatal=True))
            return None
    return session


async def _serve(runtime: AgentRuntime, ws: web.WebSocketResponse, session: Session, *, greet: bool) -> None:
    conn = Connection(runtime, ws, session)
    session.connection = conn
    session.detached_at = None
    session.detached.clear()
    runtime.connections.add(conn)
    reason = EndReason.PEER_GONE
    try:
        reason = await conn.run(greet=greet)
    except asyncio.CancelledError:
        # aiohttp cancels the handler when the peer's connection is lost (with handler_cancellation, as its
        # test server runs), or the server is going down: the session is detached, resumable, and the
        # cancellation goes on.
        _log_closed(conn, conn._server_close or EndReason.PEER_GONE)
        raise
    except Exception:
        # Our bug: logged once, here at the session boundary, with the session's context.
        log.exception("local_agent.session_failed", session_id=session.id)
        session.ended = True
        runtime.sessions.pop(session.id, None)
        await conn.flush_final(
            [proto.session_error("internal_error", "Internal error", now=time.time(), session_id=session.id)]
        )
        await ws.close(code=1011, message=b"internal error")
        return
    finally:
        runtime.connections.discard(conn)
        session.connection = None
        session.detached_at = asyncio.get_running_loop().time()
        session.detached.set()
    duration = time.time() - session.created_at
    if reason in (EndReason.CLIENT_END, EndReason.IDLE):
        session.ended = True
        runtime.sessions.pop(session.id, None)
        await conn.flush_final(
            [
                proto.server_event(
                    "session.ended",
                    time.time(),
                    session_duration_seconds=round(duration, 3),
                    audio_duration_seconds=None,  # always null live (§2.2)
                )
            ]
        )
        await ws.close(code=1000)
    elif reason is EndReason.SHUTDOWN:
        session.ended = True
        runtime.sessions.pop(session.id, None)
    _log_closed(conn, reason)


def _log_closed(conn: Connection, reason: EndReason) -> None:
    session = conn.session
    log.info(
        "local_agent.session_closed",
        session_id=session.id,
        reason=reason.value,
        duration_s=round(time.time() - session.created_at, 1),
        input_audio_s=round(session.input_audio_s, 1),
        turns=conn.turns,
        input_frames_dropped=conn.frames_dropped,
        resumable=not session.ended,
    )

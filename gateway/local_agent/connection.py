"""One socket attached to one session: the only object that holds the socket. Not pure (the asyncio shell).

A :class:`Connection` owns its tasks in one ``asyncio.TaskGroup``:

- ``reader``: socket → parsed client events (:mod:`.protocol`); ``input.audio`` goes to the session's bounded
  inbound queue (:class:`~.hearing.Hearing`).
- ``listener``: inbound audio → VAD → turn detector → speech events, barge-ins, turns (:mod:`.listener`).
- ``replier``: runs the session's jobs one at a time and fires tool-call timeouts (:mod:`.replier`); replies are
  spoken by the connection's :class:`~.speaker.Speaker`, paced at real time.
- ``writer``: the bounded outbound queue (:mod:`.outbox`) → socket.

When any of them ends the connection (close, ``session.end``, idle, send failure: :class:`~.endings.ConnectionDone`)
the group cancels the rest; no task outlives the socket. The session and its caller's side outlive an unclean
disconnect, for ``session.resume``.

Every wait is bounded with ``async with asyncio.timeout(...)``, never ``asyncio.wait_for``: on Python 3.11
``wait_for`` loses a cancellation that arrives as its inner operation completes (fixed in 3.12), which left a
cancelled reply task waiting forever on its next queue read.

Backpressure (docs/reference/local-agent-api.md#limits): inbound audio queue
:data:`~.hearing.INBOUND_MAX` messages (~5 s of 20 ms frames); when it stays full for 5 s the newest frame is
dropped and counted (``input_frames_dropped`` in ``local_agent.session_closed``). A socket taken over by
``session.resume`` hands on the frames it had received but not read (past the inbound bound, bounded by
:data:`DRAIN_MAX_S`) before it closes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from ..errors import release_frames
from . import protocol as proto
from .codec import InputDecoder
from .endings import ConnectionDone, EndReason, first_reason
from .hearing import INBOUND_MAX, Hearing, turn_knobs
from .jobs import CreateJob, GreetJob
from .listener import Listener
from .outbox import Outbox
from .replier import Replier
from .runtime import AgentRuntime
from .session import Session
from .speaker import Speaker
from .tool_calls import ResultStatus
from .turns import TurnDetector

__all__ = ["DRAIN_GAP_S", "DRAIN_MAX_S", "Connection"]

log = structlog.get_logger("local_agent")

#: Taking over a socket whose reader had fallen behind: read what it had already received until no message has
#: come for DRAIN_GAP_S (the client has moved to the new socket), for at most DRAIN_MAX_S.
DRAIN_GAP_S = 0.05
DRAIN_MAX_S = 2.0
_CLOSED = (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)


class Connection:
    """One socket attached to one :class:`~.session.Session` (see the module docstring for the task layout)."""

    def __init__(self, runtime: AgentRuntime, ws: web.WebSocketResponse, session: Session) -> None:
        self.rt = runtime
        self.ws = ws
        self.session = session
        cfg = session.config
        if session.hearing is None:
            session.hearing = Hearing(
                InputDecoder(cfg.input_format),
                runtime.models.vad.stream(),
                TurnDetector(turn_knobs(runtime.settings, cfg)),
            )
        self._h = session.hearing  # survives this socket (resume continues the caller's turn)
        self.outbox = Outbox(
            session.id, send_timeout_s=runtime.settings.send_timeout_s, tap=session.recorder.server_event
        )
        self.speaker = Speaker(runtime, session, self.outbox)
        self.replier = Replier(runtime, session, self._h, self.outbox, self.speaker)
        self.listener = Listener(runtime, session, self._h, self.outbox, self.speaker, self.replier)
        self._server_close: EndReason | None = None
        self._receiving = False  # the reader is waiting in ws.receive() (the socket has nothing unread)
        self._draining = False  # taken over: the reader reads what the socket already holds, then ends
        self._reader_done = asyncio.Event()
        self._reader_saw_end = False  # the reader itself saw the socket close (nothing left unread)
        self._listener_task: asyncio.Task[None] | None = None
        self.frames_dropped = 0

    @property
    def turns(self) -> int:
        """Caller turns answered on this connection."""
        return self.replier.turns

    @property
    def server_close(self) -> EndReason | None:
        """Why the server closed this socket (shutdown, take-over), if it did."""
        return self._server_close

    # ---- running

    async def run(self, *, greet: bool) -> EndReason:
        """Serve the session on this socket until the connection ends; return why."""
        if greet and self.session.config.greeting:
            self.session.enqueue(GreetJob(self.session.config.greeting))
        reason = EndReason.PEER_GONE
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._writer(), name="writer")
                tg.create_task(self._reader(), name="reader")
                self._listener_task = tg.create_task(self.listener.run(tg), name="listener")
                tg.create_task(self.replier.run(tg), name="replier")
        except* ConnectionDone as eg:
            reason = first_reason(eg.exceptions)
            release_frames(eg)  # else the group holds this connection in cycles (gateway.errors.release_frames)
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

    # ---- writer

    async def _writer(self) -> None:
        timeout = self.rt.settings.send_timeout_s
        while True:
            try:
                async with asyncio.timeout(60.0):
                    text = await self.outbox.get()
            except TimeoutError:
                continue  # nothing to send; loop so this wait stays bounded
            try:
                async with asyncio.timeout(timeout):
                    await self.ws.send_str(text)
            except (TimeoutError, ConnectionError, RuntimeError):
                # RuntimeError/ConnectionError: aiohttp's "closing transport"; the reader sees the close too.
                raise ConnectionDone(EndReason.PEER_GONE) from None

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
            if msg.type in _CLOSED:
                self._reader_saw_end = True
                raise ConnectionDone(self._server_close or EndReason.PEER_GONE)
            if msg.type is not WSMsgType.TEXT:
                # JSON text frames only.
                await self.outbox.emit_error(proto.ProtocolError("invalid_format", "Invalid JSON format."))
                continue
            try:
                event = proto.parse_client_event(msg.data)
                await self._dispatch(event)
            except proto.ProtocolError as e:
                await self.outbox.emit_error(e)

    async def _dispatch(self, event: proto.ClientEvent) -> None:
        session = self.session
        session.recorder.client_event(event)  # recording and timeline: docs/reference/local-agent-api.md#sessions
        if isinstance(event, proto.InputAudio):
            if not event.audio:
                return
            fmt = session.config.input_format
            session.input_audio_s += len(event.audio) / (fmt.sample_rate * (2 if fmt.encoding == "audio/pcm" else 1))
            await self._enqueue_audio(event.audio)
        elif isinstance(event, proto.SessionUpdate):
            new = proto.apply_session_update(session.config, event.session, voices=self.rt.settings.voices)
            if new.input_format != session.config.input_format:
                self._h.decoder = InputDecoder(new.input_format)
            session.config = new
            self._h.detector.knobs = turn_knobs(self.rt.settings, new)
            await self.outbox.emit("session.updated", config=proto.config_echo(new, session.id))
        elif isinstance(event, proto.ToolResult):
            # Accepted at any time, even before the reply that made the call is done
            # (docs/reference/local-agent-api.md#implemented).
            status = session.tool_calls.answer(event.call_id, event.result, is_error=event.is_error)
            if status is ResultStatus.UNKNOWN:
                raise proto.ProtocolError("invalid_value", f"Unknown call_id '{event.call_id}'", param="call_id")
            if status is ResultStatus.LATE:
                log.info("local_agent.late_tool_result", session_id=session.id, call_id=event.call_id)
            elif status is ResultStatus.RECORDED:
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
            # Validated, then ignored: live, the content never reached the model
            # (docs/reference/local-agent-api.md#not-implemented).
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

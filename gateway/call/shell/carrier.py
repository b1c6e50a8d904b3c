"""The carrier's socket, and the one writer that paces everything the caller hears. Not pure: asyncio + aiohttp.

:class:`CarrierTransport` is what the call needs of a carrier connection, whatever carries it: a WebSocket
(:class:`CarrierLink`, every cloud carrier) or a plain TCP stream (Asterisk AudioSocket,
:mod:`gateway.audiosocket_server`). The dialect makes sense of what arrives; the transport only moves it.

:class:`CarrierLink` only moves messages: ``str`` for a text frame, ``bytes`` for a binary one (Vonage audio), and
turns the socket's end into :class:`~gateway.errors.CallEnded` (``carrier_closed``) or, for an over-long message,
:class:`~gateway.errors.CarrierProtocolError`.

:class:`CarrierWriter` is the call's single pacing loop (docs/architecture/performance.md;
docs/architecture/decisions/0008-paced-playout-and-marks.md): it pulls from the core
(:meth:`~gateway.call.core.CallCore.carrier_data`) whatever is due, sends it, and sleeps until the core says more may go
(:attr:`~gateway.call.outbound_queue.OutboundQueue.wake_at`). Agent audio, marks, ``clear``, the gateway's own
prompts and keypad tones all leave through it, in the core's order. Fast path: :meth:`CarrierWriter.flush` lets
the agent reader send what is due itself (sparing a task wake-up per 20 ms frame) when the writer is idle and the
carrier socket is not backed up; :meth:`CarrierWriter.send_audio` is the same for a reply's steady state, without
the queue's round trip (docs/architecture/call-core.md#agent-fast-lane). A send to a backed-up socket may wait for the
drain, and the agent reader must never wait on the carrier (it would stop reading barge-ins, tools and errors): then
the writer task sends instead, and while it waits the core's queue fills, which is what stops the agent reader
(:attr:`~gateway.call.core.CallCore.outbound_has_room`).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMessage, WSMsgType, web

from ...errors import CallEnded, CarrierProtocolError, Outcome
from ..outbound_queue import OutboundQueue

if TYPE_CHECKING:
    from ...audio.fir_message import FusedFirMessages

__all__ = [
    "CARRIER_CLOSE_TIMEOUT_S",
    "IDLE_WAIT_S",
    "CarrierLink",
    "CarrierTransport",
    "CarrierWriter",
    "after_send",
    "wait_or_wake",
]

#: At hang-up, how long the carrier's close handshake may take before the connection is dropped.
CARRIER_CLOSE_TIMEOUT_S = 2.0
#: The longest sleep of the call's waiting loops (the writer, agent_sender, the watchdog) before they look again:
#: each is woken when there is something to do.
IDLE_WAIT_S = 1.0


class CarrierTransport(Protocol):
    """A carrier connection as the call uses it (see :class:`CarrierLink` for what each member promises)."""

    @property
    def closed(self) -> bool: ...

    async def receive(self) -> str | bytes: ...

    async def send(self, data: str | bytes) -> None: ...

    def backlogged(self) -> bool: ...

    async def close(self, code: int, message: bytes = b"") -> None: ...


class CarrierLink:
    """The call's carrier WebSocket (an aiohttp ``WebSocketResponse``, prepared)."""

    __slots__ = ("_max_message_bytes", "transport", "ws")

    def __init__(self, ws: web.WebSocketResponse, max_message_bytes: int) -> None:
        self.ws = ws
        self._max_message_bytes = max_message_bytes
        #: The socket's transport, for :meth:`backlogged`: aiohttp keeps it on the prepared response's writer and
        #: exposes no public accessor there (tests/integration/test_reliability_limits.py fails if that moves).
        self.transport: asyncio.WriteTransport | None = getattr(getattr(ws, "_writer", None), "transport", None)

    @property
    def closed(self) -> bool:
        return bool(self.ws.closed)

    async def receive(self) -> str | bytes:
        """The next message: ``str`` for a text frame, ``bytes`` for a binary one; the dialect decides whether its
        carrier may send binary (Twilio's refuses it). No timeout per receive (a timer per message, 50 a second
        per call): the call's clock ends a line without media."""
        return self.data_of(await self.ws.receive())

    def reader(self) -> tuple[Callable[[], Awaitable[WSMessage]], Callable[[WSMessage], str | bytes]]:
        """:meth:`receive` in two halves, for the call's carrier reader, whose loop reads every message: the socket's
        own read (no coroutine of ours around it), and :meth:`data_of` for what it gives (the reader takes a text
        frame's data itself)."""
        return self.ws.receive, self.data_of

    def data_of(self, msg: WSMessage) -> str | bytes:
        """The data of a message the socket gave, or why the call cannot go on (raises)."""
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            data: str | bytes = msg.data
            return data
        if msg.type is WSMsgType.ERROR:
            exc = self.ws.exception()
            # aiohttp's WebSocketError carries close code 1009 (message too big) for max_msg_size.
            if getattr(exc, "code", None) == 1009 or "message size" in str(exc).lower():
                raise CarrierProtocolError(f"message over {self._max_message_bytes} bytes")
        raise CallEnded(Outcome.CARRIER_CLOSED)  # CLOSE / CLOSING / CLOSED, or a transport error

    async def send(self, data: str | bytes) -> None:
        try:
            if type(data) is str:
                await self.ws.send_str(data)
            else:
                await self.ws.send_bytes(data)  # type: ignore[arg-type]  # bytes: Vonage audio
        except ConnectionError:
            raise CallEnded(Outcome.CARRIER_CLOSED) from None

    def text_sender(self) -> Callable[[bytes], Awaitable[None]]:
        """The socket's own send of a text frame already encoded as UTF-8 (the compiled message lane's media
        message): what :meth:`send` of its ``str`` would send, without the encoding and with no coroutine of ours
        around it. It raises ``ConnectionError`` where ``send`` raises ``CallEnded`` (the writer maps it)."""
        return functools.partial(self.ws.send_frame, opcode=WSMsgType.TEXT)

    def backlogged(self) -> bool:
        """Bytes wait in user space for the socket (its send buffer is full: the carrier or the network is not
        keeping up). A send now may wait for the drain."""
        transport = self.transport
        return transport is not None and transport.get_write_buffer_size() > 0

    async def close(self, code: int, message: bytes = b"") -> None:
        """Close, bounded. A carrier that reads nothing (its socket backed up) cannot take a close frame, and
        aiohttp's close would wait for the drain: drop the connection instead, which ends the call at the carrier
        just the same. aiohttp's close cut short by the bound closes the transport itself, but it can surface as
        CancelledError rather than TimeoutError; unless this task really is being cancelled, that is the bound too,
        and must not skip the call's summary (call.ended)."""
        transport = self.transport
        if transport is not None and self.backlogged():
            transport.abort()
            return
        try:
            async with asyncio.timeout(CARRIER_CLOSE_TIMEOUT_S):
                await self.ws.close(code=code, message=message)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        if transport is not None and not transport.is_closing():
            transport.abort()


class CarrierWriter:
    """Sends what the core has for the carrier (its :class:`~gateway.call.outbound_queue.OutboundQueue`), paced.
    ``after_send`` runs after every burst of sends (the session wakes what waits for room in the queue, and re-arms
    its clock for marks the clock model resolves). :meth:`send_audio` runs it only when it handed out such a mark:
    its caller, the agent reader, is the one task that waits for room."""

    __slots__ = ("_after_send", "_busy", "_carrier", "_clock", "_lane", "_queue", "_send_text", "_until", "_wake")

    def __init__(
        self,
        queue: OutboundQueue,
        carrier: CarrierTransport,
        clock: Callable[[], float],
        after_send: Callable[[], None],
    ) -> None:
        self._queue = queue
        self._carrier = carrier
        self._clock = clock
        self._after_send = after_send
        self._wake = asyncio.Event()
        self._busy = False  # a burst is being sent (by the writer task or a reader's flush)
        self._until: float | None = None  # the clock time the writer sleeps until (pacing), None otherwise
        self._lane: FusedFirMessages | None = None  # the compiled message lane (steady_lane), and how it sends
        self._send_text: Callable[[bytes], Awaitable[None]] | None = None

    def wake(self) -> None:
        """Something may be due sooner than the writer planned. Only wake it when that can be so: a pacing writer
        sleeping until its deadline would find the same deadline again (the agent's 10 ms chunks would otherwise wake
        it ~100 times a second per call for nothing, docs/architecture/performance.md)."""
        q, until = self._queue, self._until
        if q.urgent or until is None or (q.wake_at is not None and q.wake_at < until):
            self._wake.set()

    async def run(self) -> None:
        """The writer task: forever (until its call's task group ends)."""
        q, wake, clock = self._queue, self._wake, self._clock
        while True:
            wake.clear()
            if not self._busy:
                await self._send_due(inline=False)
            if wake.is_set():
                continue
            at = q.wake_at if (q.urgent or q.items) else None
            if at is None:
                await wait_or_wake(wake, IDLE_WAIT_S)
                continue
            self._until = at
            try:
                await wait_or_wake(wake, max(0.0, at - clock()))
            finally:
                self._until = None

    async def flush(self) -> None:
        """Fast path, from a reader: send what is due now unless the writer is busy or the socket backed up (then
        the writer task does it)."""
        if self._busy or self._carrier.backlogged():
            self._wake.set()
            return
        await self._send_due(inline=True)
        q = self._queue
        if q.urgent or q.items:
            self.wake()  # held back for pacing, or the socket backed up: the writer takes over

    def steady_lane(
        self, lane: FusedFirMessages | None, convert: Callable[[bytes], list[bytes]]
    ) -> tuple[Callable[[bytes], bytes | list[bytes]], Callable[[str | None, bytes | list[bytes]], Awaitable[None]]]:
        """How the agent reader sends a chunk of a reply's steady state (:meth:`~gateway.call.core.CallCore.steady`):
        a conversion, and when it gives something, a send. The compiled message lane ``lane``
        (:meth:`~gateway.call.core.CallCore.message_lane`; its ``message`` and :meth:`send_message`) when this call
        has one and its carrier connection can send its messages (text frames given as UTF-8 bytes:
        :meth:`CarrierLink.text_sender`); else ``convert``, the chunk's frames, and :meth:`send_audio`."""
        text_sender = getattr(self._carrier, "text_sender", None)
        if lane is not None and lane.has_template and text_sender is not None:
            self._lane, self._send_text = lane, text_sender()
            return lane.message, self.send_message
        return convert, self.send_audio  # type: ignore[return-value]  # convert gives frames, send_audio takes them

    async def send_message(self, tag: str | None, out: bytes | list[bytes]) -> None:
        """The compiled lane's send (:meth:`steady_lane`): ``out`` is what the lane's ``message`` gave for a chunk,
        frames or the whole media message of a lone frame. That message goes as it is when the queue would send its
        frame at once as a message of its own (:meth:`~gateway.call.outbound_queue.OutboundQueue.send_one`);
        otherwise the frame, or the frames, take :meth:`send_audio`. The same messages, moments and state as
        ``send_audio`` of the chunk's frames (tests/unit/test_call_shell_writer.py)."""
        if type(out) is not bytes:
            await self.send_audio(tag, out)  # type: ignore[arg-type]  # not bytes: the frames
            return
        q, carrier = self._queue, self._carrier
        marks, now = len(q.clock_marks), self._clock()  # (marks before send_one: it may hand out a clock-resolved one)
        if self._busy or carrier.backlogged() or not q.send_one(tag, now):
            await self.send_audio(tag, [self._lane.frame()])  # type: ignore[union-attr]  # a lane gave it
            return
        self._busy = True
        try:
            await self._send_text(out)  # type: ignore[misc]  # set with the lane
        except ConnectionError:  # the socket is going (as CarrierLink.send)
            raise CallEnded(Outcome.CARRIER_CLOSED) from None
        finally:
            self._busy = False
        if q.urgent or q.items or len(q.clock_marks) != marks:
            await self._after_take(marks, now)

    async def send_audio(self, tag: str | None, frames: list[bytes]) -> None:
        """The agent reader's fast lane (the steady state of a reply, :meth:`~gateway.call.core.CallCore.steady`):
        ``frames`` joins the queue and what is due goes out, as ``put_audio`` then :meth:`flush` would; when nothing
        waits before them they leave at once (:meth:`~gateway.call.outbound_queue.OutboundQueue.take`)."""
        q, carrier = self._queue, self._carrier
        if self._busy or carrier.backlogged():
            q.put_audio(tag, frames)
            self._wake.set()
            return
        marks, now = len(q.clock_marks), self._clock()
        msg = q.take(tag, frames, now)
        if msg is not None:  # (None: held back for pacing, queued for the writer task)
            self._busy = True
            try:
                await carrier.send(msg)
            finally:
                self._busy = False
        if q.urgent or q.items or len(q.clock_marks) != marks:
            await self._after_take(marks, now, msg is not None)

    async def _after_take(self, marks: int, now: float, sent: bool = True) -> None:
        """What a lane's send leaves: the rest of the burst (a mark after the frame), the clock's new deadline,
        the writer task woken for what is held back."""
        q = self._queue
        if sent and (q.urgent or q.items) and not self._carrier.backlogged():
            await self._send_due(inline=True, now=now)  # the rest of the burst: a mark after this frame
        if len(q.clock_marks) != marks:  # a clock-resolved mark was handed out: the call's clock learns its deadline
            self._after_send()  # (not for room: the agent reader, sending here, is all that waits for it)
        if q.urgent or q.items:
            self.wake()  # held back for pacing, or the socket backed up: the writer takes over

    async def _send_due(self, *, inline: bool, now: float | None = None) -> None:
        """Pull and send until nothing is due. ``inline`` (a reader's fast path, whose sends do not wait): one clock
        reading for the burst (``now``, if the burst began before), and stop as soon as the socket backs up; the
        writer task reads the clock per message (a send of its may have waited for the drain)."""
        self._busy = True
        q = self._queue
        pull, send, clock, backlogged = q.pull, self._carrier.send, self._clock, self._carrier.backlogged
        marks = len(q.clock_marks)
        if now is None:
            now = clock()
        sent = False
        try:
            while (msg := pull(now)) is not None:
                await send(msg)  # the queue counted it as sent: it goes before the next pull
                sent = True
                if not inline:
                    now = clock()
                elif backlogged():
                    break  # a reader must not wait for the drain: the writer task sends the rest
        finally:
            self._busy = False
        # A mark the carrier cannot echo resolves from the clock: even when it was all this burst handed out (a
        # hang-up mark queued after the last frame went), the call's clock must learn its deadline.
        if sent or len(q.clock_marks) != marks:
            self._after_send()


def after_send(
    queue: OutboundQueue, clock_changed: Callable[[], bool], room: asyncio.Event, clock_wake: asyncio.Event
) -> Callable[[], None]:
    """A call's :class:`CarrierWriter` ``after_send``: the queue may have room again (``room``), and the core's clock
    may have a new deadline (``clock_wake``). A closure, not a method of the call: the writer then holds no reference
    back to the call, which an ended call would otherwise wait in for a full garbage collection
    (docs/architecture/performance.md#call-garbage)."""

    def after() -> None:
        if queue.frames < queue.max_frames:
            room.set()
        if clock_changed():
            clock_wake.set()

    return after


async def wait_or_wake(wake: asyncio.Event, delay: float) -> None:
    """Until ``wake`` is set or ``delay`` seconds have passed. A timer that sets the event rather than
    ``asyncio.timeout``: a timeout expires by cancelling the task and raising through the wait, which costs about
    twice as much (3.3 against 6.9 µs on uvloop), and the pacing loop sleeps out up to 50 times a second per call."""
    if wake.is_set():
        return
    timer = asyncio.get_running_loop().call_later(delay, wake.set)
    try:
        await wake.wait()
    finally:
        timer.cancel()

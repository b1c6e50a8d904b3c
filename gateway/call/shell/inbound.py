"""The carrier reader and the caller's audio on its way to the agent: the call's two inbound tasks,
``carrier_reader`` and ``agent_sender``. Not pure: asyncio (the rules are the core's, :meth:`CallCore.caller_audio`).

The steady state, one 20 ms caller frame 50 times a second per call, takes the shortest road there is: the reader
reads the carrier's socket itself (:meth:`~gateway.call.shell.carrier.CarrierLink.reader`), the dialect's fast road
gives the frame's payload without an event (``audio_frame``), and the frame goes to the agent from the reader when
nothing waits before it (no send in flight, the agent socket not backed up); otherwise it waits in the core's
bounded buffer for ``agent_sender``. Anything else the carrier sends is parsed into events, which the accepted call
hands to the core (``events``). docs/architecture/performance.md#inbound-lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from aiohttp import WSMsgType

from ...agent import protocol as ap
from ...agent.client import AgentClosed
from ...carriers.base import Dialect
from ...config import Settings
from ..core import CallCore
from .agent_link import AgentLink
from .carrier import IDLE_WAIT_S, CarrierTransport, wait_or_wake

__all__ = ["CarrierReader"]

log = structlog.get_logger("gateway.call")


async def _no_events(data: str | bytes, now: float) -> None:
    """``events`` once the call is over (:meth:`CarrierReader.release`)."""


class CarrierReader:
    """One call's carrier reader and caller-audio sender. ``events(data, now)`` takes a carrier message that is not a
    steady caller frame (the accepted call parses it and runs the core's actions); ``tap``, when set, is told of
    every caller payload and when it arrived (the call's recording: gateway.records.recorder)."""

    __slots__ = ("_agent", "_carrier", "_clock", "_core", "_events", "_frame_of", "_settings", "_started_at", "tap",
                 "wake")  # fmt: skip

    def __init__(
        self,
        core: CallCore,
        carrier: CarrierTransport,
        dialect: Dialect,
        agent: AgentLink,
        *,
        events: Callable[[str | bytes, float], Awaitable[None]],
        clock: Callable[[], float],
        started_at: float,
        settings: Settings,
    ) -> None:
        self._core, self._carrier, self._agent, self._events = core, carrier, agent, events
        self._frame_of: Callable[[str | bytes], bytes | None] | None = getattr(dialect, "audio_frame", None)
        self._clock, self._started_at, self._settings = clock, started_at, settings
        self.tap: Callable[[bytes, float], None] | None = None
        self.wake = asyncio.Event()  # buffered caller audio may go: wakes agent_sender

    def release(self) -> None:
        """The call is over: drop ``events`` (the accepted call's own method), so the call is not kept alive by a
        reference cycle through this reader (docs/architecture/performance.md#call-garbage)."""
        self._events = _no_events

    async def run(self) -> None:
        """``carrier_reader``: every carrier message until the carrier's ``stop``. :meth:`on_message` inline, and the
        socket read directly where the transport allows it: two coroutines fewer per caller frame."""
        core, reader = self._core, getattr(self._carrier, "reader", None)
        if reader is None:  # a transport without it (AudioSocket's TCP link)
            receive = self._carrier.receive
            while not core.carrier_stopped:
                await self.on_message(await receive())
            return
        read, data_of = reader()
        clock, frame_of, caller_audio, events = self._clock, self._frame_of, self.caller_audio, self._events
        text = WSMsgType.TEXT
        while not core.carrier_stopped:
            msg = await read()
            data = msg.data if msg.type is text else data_of(msg)
            now = clock()
            if frame_of is not None and (payload := frame_of(data)) is not None:
                await caller_audio(payload, now)  # the steady state: one whole frame, and no event built for it
            else:
                await events(data, now)
        # 'stop' while our REST hang-up/transfer is under way: that task ends the call once the carrier answered.

    async def on_message(self, data: str | bytes) -> None:
        """What the reader does with one carrier message (also the benchmark's seam: bench/session_overhead.py)."""
        now = self._clock()
        if (frame_of := self._frame_of) is not None and (payload := frame_of(data)) is not None:
            await self.caller_audio(payload, now)
        else:
            await self._events(data, now)

    async def caller_audio(self, payload: bytes, now: float) -> None:
        """One frame of caller audio, from either road. It goes to the agent from here when nothing waits before it,
        no send is in flight and the agent socket is not backed up (a send could then wait for the drain, and this
        reader must never wait on the agent: its marks and ``stop`` would too); else it waits in the core's buffer."""
        core, link = self._core, self._agent
        if (tap := self.tap) is not None:
            tap(payload, now)
        conn = link.conn
        send_now = conn is not None and not link.sending and conn is not link.broken_conn and not conn.backlogged()
        frame = core.caller_audio(payload, now, send_now)
        if frame is not None and conn is not None:  # (send_now implies conn)
            link.sending = True  # newer frames queue behind this one, so the order holds
            try:
                await conn.send(ap.input_audio(frame))
            except AgentClosed:
                core.agent_audio_unsent([frame])  # kept for the resumed session (as in the sender)
                link.broken(conn)
            finally:
                link.sending = False
        elif core.rate_limit_notice:  # the first frame over the inbound rate limit: say so once
            core.rate_limit_notice = False
            server = self._settings.server
            log.warning(
                "call.inbound_rate_limited",
                rate_limit=server.inbound_rate_limit,
                burst_s=server.inbound_burst_s,
                after_s=round(now - self._started_at, 3),
            )
        elif core.live:
            self.wake.set()  # it waits in the core's buffer: the sender delivers it

    async def sender(self) -> None:
        """``agent_sender``: buffered caller audio (before ready, during a resume, behind a backed-up socket),
        coalesced into ≤ 100 ms messages. While one is in flight newer frames queue behind it, so the order holds."""
        core, wake, link = self._core, self.wake, self._agent
        while True:
            wake.clear()
            while (conn := link.sendable()) is not None and (frames := core.agent_audio(5)):
                link.sending = True
                try:
                    await conn.send(ap.input_audio(frames[0] if len(frames) == 1 else b"".join(frames)))
                except AgentClosed:
                    # Not sent (both transports raise before writing once the socket is going, and a send that
                    # waited for the drain in vain had its bytes discarded by the abort): keep the frames for the
                    # resumed session. agent_runner notices the drop too; don't spin on this dead socket meanwhile.
                    core.agent_audio_unsent(frames)
                    link.broken(conn)
                finally:
                    link.sending = False
            await wait_or_wake(wake, IDLE_WAIT_S)

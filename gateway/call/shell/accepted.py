"""An accepted call, running: its core and the tasks that serve it. Not pure: this is where the carrier socket and
the agent socket meet (:mod:`gateway.call.shell.session` accepts the stream and tears the call down).

Tasks (one ``asyncio.TaskGroup`` per call; when one ends the call by raising, the group cancels the rest, so nothing
outlives the call):

- ``carrier_reader``: carrier messages → dialect → core. Caller audio goes to the agent from here when nothing waits
  before it (the fast path), else it waits in the core's bounded buffer for ``agent_sender``
  (:mod:`gateway.call.shell.inbound`, both).
- ``agent_runner``: opens (or adopts) the agent session, then reads agent events into the core; resumes a dropped
  session (:mod:`gateway.call.shell.agent_link`). Agent audio for the caller goes out from here when it is due and
  the carrier writer is idle (the fast path), else the writer sends it.
- ``agent_sender``: sends buffered caller audio (coalesced, ≤ 100 ms per message) once the session is live.
- ``carrier_writer``: the one pacing loop for everything the caller hears (:mod:`gateway.call.shell.carrier`).
- ``watchdog``: the call's clock: calls ``core.tick`` at the core's next deadline (maximum duration, a line without
  media, end-of-call waits, keypress runs, the prompt's echo, clock-resolved marks, a drain request).
- per tool call a ``tool:<name>`` task; per carrier call-control request (REST hang-up, transfer) a
  ``call_control`` task (:mod:`gateway.call.shell.tools`).

Every wait is bounded: by the core's deadlines, ``agent.*`` timeouts, ``audio.outbound_buffer_s`` (a carrier that
stops reading ends the call as ``carrier_stalled``), or the idle re-check of a waiting loop. The sockets' reads
have no timeout of their own (a timer per message, 50 a second per call): a silent carrier is ended by the clock
(``server.no_media_timeout_s``), a dead agent socket by its transport's keepalive, or by a send to it that cannot
finish within ``agent.send_timeout_s`` (then it is resumed; gateway.agent.client).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

import structlog

from ...agent import protocol as ap
from ...agent.client import AgentClosed
from ...carriers.base import Dialect
from ...carriers.events import AudioReceived
from ...config import Settings
from ...errors import AgentSessionError, AgentUnavailable, CallEnded, Outcome
from ...hold_sound import hold_sound_for
from ...prompts import prompt_ulaw
from ...reattach import HandedOver, ParkedAgent, ParkedAgents
from ...tools.registry import ToolRegistry
from .. import events as ev
from ..actions import (
    Action,
    ControlRequest,
    EndAgentSession,
    EndCall,
    LogLine,
    MarkHeard,
    Publish,
    RunTool,
    SendAgent,
    WakeAt,
)
from ..core import CallCore
from ..phase import Phase
from ..setup import CallSetup, stored_agent_update
from ..stats import CallSummary
from .agent_link import AgentLink
from .carrier import IDLE_WAIT_S, CarrierTransport, CarrierWriter, after_send, wait_or_wake
from .carrier_control import CarrierControl
from .inbound import CarrierReader
from .tools import ToolPort, publish_nothing

if TYPE_CHECKING:
    from ...warm_transfer_http import WarmDialer

__all__ = ["AcceptedCall"]

#: At teardown, the most the agent session's end may take (session.end, session.ended, close) beyond its own bound.
AGENT_END_SLACK_S = 2.5

log = structlog.get_logger("gateway.call")


class AcceptedCall:
    """A call whose stream's ``start`` was authorized (``setup``): complete from the start, nothing optional."""

    __slots__ = ("_agent_ending", "_agent_sender", "_agent_task", "_clock", "_clock_wake", "_context", "_control",
                 "_emit", "_handover", "_log", "_outbound", "_parked", "_room", "_settings", "_started_at",
                 "_steady", "_stream_stopping", "_tg", "_tool_port", "_tools", "_update_unsent", "_writer", "agent",
                 "carrier", "core", "dialect", "inbound")  # fmt: skip

    def __init__(
        self,
        setup: CallSetup,
        *,
        settings: Settings,
        carrier: CarrierTransport,
        dialect: Dialect,
        agent: AgentLink,
        tools: ToolRegistry,
        control: CarrierControl,
        clock: Callable[[], float],
        started_at: float,
        emit: Callable[[ev.CallEvent], None],
        parked: ParkedAgents | None = None,
        stream_stopping: Callable[[str], bool] | None = None,
        warm: WarmDialer | None = None,
        handover: Callable[[], Awaitable[HandedOver | None]] | None = None,
    ) -> None:
        self._settings, self._control, self._handover, self._tools = settings, control, handover, tools
        self.carrier, self.dialect, self.agent = carrier, dialect, agent
        self._clock, self._started_at, self._emit, self._log = clock, started_at, emit, log
        self._parked, self._stream_stopping = parked, stream_stopping
        self.core = CallCore(
            setup,
            settings,
            dialect,
            clock(),
            started_at=started_at,
            prompt_audio=prompt_ulaw,
            control_available=control.available,
            hold_audio=hold_sound_for(
                setup.profile, settings.config_dir, warm_transfers="transfer_call" in setup.profile.tools
            ),
        )
        self._outbound = self.core.outbound
        self._clock_wake = asyncio.Event()  # the core's next deadline may have moved: wakes the watchdog
        self._room = asyncio.Event()  # the outbound queue has room again
        done = after_send(self._outbound, self.core.clock_changed, self._room, self._clock_wake)
        self._writer = CarrierWriter(self._outbound, carrier, clock, done)
        self._steady = self._writer.steady_lane(self.core.message_lane(), self.core.convert_out)
        self.inbound = CarrierReader(
            self.core, carrier, dialect, agent,
            events=self._carrier_events, clock=clock, started_at=started_at, settings=settings,
        )  # fmt: skip
        self._tool_port = ToolPort(
            self.core,
            tools,
            control,
            execute=self._execute,
            wake_writer=self._writer.wake,
            emit=emit,
            clock=clock,
            warm=warm,
            on_warm_result=self.warm_result,
        )
        self._tg = asyncio.TaskGroup()
        self._agent_task: asyncio.Task[None] | None = None
        self._agent_sender: asyncio.Task[None] | None = None
        self._agent_ending: asyncio.Task[None] | None = None
        #: A stored agent's profile update whose send found the socket dropped: sent first on the resumed socket.
        self._update_unsent: str | None = None
        self._context = contextvars.copy_context()

    @property
    def summary(self) -> CallSummary:
        return self.core.summary

    async def run(self, refusal: Outcome | None = None) -> None:
        """Serve the call until it ends: raises CallEnded (or what ended it). ``refusal``: admission turned the call
        away after all; it hears the apology, then ends with that outcome."""
        core = self.core
        self._context = contextvars.copy_context()  # the call's log context, for work started from outside it
        try:
            async with self._tg as tg:
                tg.create_task(self.inbound.run(), name="carrier_reader")
                tg.create_task(self._writer.run(), name="carrier_writer")
                tg.create_task(self._watchdog(core), name="watchdog")
                if refusal is not None:
                    await self._execute(core.end(refusal, self._clock()))
                else:
                    self._agent_task = tg.create_task(self._agent_runner(core), name="agent_runner")
                    self._agent_sender = tg.create_task(self.inbound.sender(), name="agent_sender")
        finally:  # a cancelled task keeps its cancellation, whose frames hold this call (gateway.errors)
            self._agent_task = self._agent_sender = None

    def request_end(self, outcome: Outcome) -> None:
        """End the call at the core's next tick (drain, the carrier's completed callback)."""
        self.core.request_end(outcome)
        self._clock_wake.set()

    def machine_detected(self, answered_by: str) -> None:
        """Twilio's answering-machine verdict (docs/how-to/conversation.md#voicemail): acted on in the call's task
        group, like a tool's result, so what it ends unwinds the call the usual way."""
        actions = self.core.machine_detected(answered_by, self._clock())
        try:
            self._tg.create_task(self._execute(actions), name="amd", context=self._context)
        except RuntimeError:
            pass  # the call is already over

    def warm_result(self, result: str) -> None:
        """Twilio's word on a warm transfer's human leg (gateway.warm_transfer_http), acted on in the call's task
        group like the answering-machine verdict."""
        actions = self.core.warm_result(result, self._clock())
        try:
            self._tg.create_task(self._execute(actions), name="warm_transfer", context=self._context)
        except RuntimeError:
            pass  # the call is already over

    async def say(self, instructions: str) -> bool:
        """``POST /calls/{call_sid}/say`` (gateway.cluster.control): the agent replies now, following
        ``instructions`` (``reply.create``). False if the session is not live."""
        if not self.core.live:
            return False
        return await self.agent.send(ap.reply_create(instructions))

    async def transfer(self, destination: str, announcement: str) -> str | None:
        """``POST /calls/{call_sid}/transfer``: as ``transfer_call`` (destination already allow-listed), the agent
        saying ``announcement`` first if given. Returns why not, or None."""
        if not self._control.available:
            return f"no call control for this call ({self._control.unavailable_reason})"
        why, actions = self.core.request_transfer(destination, self._clock())
        await self._execute(actions)
        if why is None and announcement:
            await self.agent.send(ap.reply_create(f"Tell the caller, in these words: {announcement}"))
        self._clock_wake.set()
        return why

    def release(self) -> None:
        """Over and reported: drop the callbacks that point back at the call or its session (gateway.errors)."""
        self._tool_port.release()
        self.inbound.release()
        self._emit, self._stream_stopping = publish_nothing, None

    async def finish(self, outcome: Outcome, error: str) -> CallSummary:
        """The call's tasks are over (``outcome``): settle the core, park or end the agent session."""
        core = self.core
        await self._tool_port.warm_abandon()  # a human leg still ringing for this call: stop it
        for action in core.end(outcome, self._clock(), error, farewell=False):  # only its log lines are left
            if isinstance(action, LogLine):
                getattr(self._log, action.level)(action.event, **action.fields)
        await self._finish_agent(core, outcome)
        core.summary.stale_mark_echoes = core.playout.stale_echoes
        return core.summary

    # ============================================================================================ per message
    async def _carrier_events(self, data: str | bytes, now: float) -> None:
        """A carrier message that is not a steady caller frame (:class:`CarrierReader` reads them): parsed, and each
        event to the core in order."""
        core = self.core
        for event in self.dialect.parse(data):
            if type(event) is AudioReceived:
                await self.inbound.caller_audio(event.payload, now)
            elif actions := core.carrier_event(event, now):
                await self._execute(actions)

    async def on_agent_event(self, event: ap.ServerEvent) -> None:
        """What the agent reader does with one event (also the benchmark's seam; :meth:`_read_agent` inlines it)."""
        core, q = self.core, self._outbound
        if type(event) is ap.ReplyAudio and core.steady(event.reply_id):
            convert, send = self._steady  # the fast lane: a reply's steady state
            if out := convert(event.data):
                await send(event.reply_id, out)
                if q.frames >= q.max_frames:
                    await self._wait_for_room(core)
        else:
            await self._agent_event(core, event)

    async def _agent_event(self, core: CallCore, event: ap.ServerEvent) -> None:
        """Any other agent event: the core's rules, their actions, then what is due for the carrier."""
        if actions := core.agent_event(event, self._clock()):
            await self._execute(actions)
        q = self._outbound
        if q.items or q.urgent:
            await self._writer.flush()  # fast path: send what is due from here
            if q.frames >= q.max_frames:
                await self._wait_for_room(core)

    # =================================================================================================== tasks
    async def _watchdog(self, core: CallCore) -> None:
        """The call's clock: one timer, re-armed whenever the core's next deadline may have moved."""
        wake = self._clock_wake
        while True:
            wake.clear()
            deadline = core.next_deadline()
            await wait_or_wake(wake, IDLE_WAIT_S if deadline is None else max(0.0, deadline - self._clock()))
            actions = core.tick(self._clock())
            if actions:
                await self._execute(actions)

    async def _wait_for_room(self, core: CallCore) -> None:
        """The agent speaks faster than the carrier takes audio: stop reading the agent until the queue has room,
        for at most ``audio.outbound_buffer_s`` (the agent sends in real time, so this only bites if the carrier
        stopped draining); then the call ends (carrier_stalled) rather than hold a billed line with a dead carrier."""
        try:
            async with asyncio.timeout(self._settings.audio.outbound_buffer_s):
                while not core.outbound_has_room:
                    self._room.clear()
                    await self._room.wait()
        except TimeoutError:
            await self._execute(core.end(Outcome.CARRIER_STALLED, self._clock()))

    # ================================================================================================ agent side
    async def _agent_runner(self, core: CallCore) -> None:
        try:
            if not await self._adopt_parked(core):
                await self._open_agent(core)
            self.inbound.wake.set()
            await self._read_agent(core)
        except AgentUnavailable as exc:  # unreachable, refused, or not resumable (AgentSessionError: fatal code)
            await self._execute(core.agent_failed(exc, self._clock()))

    async def _open_agent(self, core: CallCore) -> None:
        tools = self._tools.declarations(core.profile)
        update = ap.session_update(core.session_config(tools))

        async def before_ready(event: ap.ServerEvent) -> None:
            await self._execute(core.agent_event(event, self._clock()))

        ready = await self.agent.open_session(update, before_ready)
        now = self._clock()
        structlog.contextvars.bind_contextvars(session_id=ready.session_id)
        endpoint = self.agent.endpoint
        self._log.info(
            "agent.session_ready",
            session_id=ready.session_id,
            endpoint=endpoint.name,
            url=endpoint.url,
            ready_ms=round((now - self._started_at) * 1000, 1),
        )
        if (on_top := stored_agent_update(core.profile, self._settings.audio.agent_format, tools)) is not None:
            # A stored agent: the profile's fields on top. A socket that drops just now is resumed by the reader,
            # and the update goes to the resumed session before anything else (_resume): it may set the input format.
            update = ap.session_update(on_top)
            if not await self.agent.send(update):
                self._update_unsent = update
        await self._execute(core.agent_ready(ready.session_id, now))

    async def _read_agent(self, core: CallCore) -> None:
        # on_agent_event inline and the connection read directly: two coroutines fewer per agent message (100/s).
        link, q, steady, ReplyAudio = self.agent, self._outbound, core.steady, ap.ReplyAudio
        convert, send = self._steady
        while core.agent_wanted:
            try:
                if (conn := link.conn) is None:
                    raise AgentClosed(None, "")
                event = await conn.recv()
            except AgentClosed as exc:
                if core.phase is not Phase.LIVE:
                    return  # the call is ending anyway
                # No session.ended before the close (that ends the call in the core): a network drop.
                link.resuming = core.summary.session_id  # a call ending before the resume is done still ends it
                await self._execute(core.agent_dropped(exc.code, exc.reason, self._clock()))
                await self._resume(core)
                continue
            if type(event) is ReplyAudio and steady(event.reply_id):  # the fast lane: a reply's steady state
                if out := convert(event.data):  # (no actions, no queue round trip)
                    await send(event.reply_id, out)
                    if q.frames >= q.max_frames:
                        await self._wait_for_room(core)
            else:
                await self._agent_event(core, event)

    async def _resume(self, core: CallCore) -> None:
        """Resume the dropped session on a new socket, with backoff, inside the window. Raises AgentSessionError
        (a final code) or AgentUnavailable (the window is spent). ``agent.resuming`` stays set until the session is
        back or given up: if the call ends meanwhile (this task cancelled), the teardown still ends the session
        (:meth:`AgentLink.end`: on a new socket if the call has none that can carry ``session.end``) instead of
        leaving it to the server's resume window, billed. A socket whose ``session.resume`` is not answered yet is
        never parked: the core's phase is still RESUMING, so the session does not count as live (``was_live``)."""
        try:
            await self._resume_attempts(core)
        except asyncio.CancelledError:
            raise  # the call is ending: agent.resuming stays set for the teardown (_end_agent)
        except BaseException:
            self.agent.resuming = None
            raise
        self.agent.resuming = None

    async def _resume_attempts(self, core: CallCore) -> None:
        link, t0 = self.agent, self._clock()
        session_id = core.summary.session_id
        await link.discard()
        deadline, delay, attempt, error = t0 + link.resume_window_s, 0.0, 0, ""
        while (remaining := deadline - self._clock()) > 0:
            if delay:
                await asyncio.sleep(min(delay, remaining))
            delay = min(2.0, delay * 2) if delay else 0.25
            attempt += 1
            try:
                first = await link.reopen(session_id, remaining)
            except AgentSessionError as exc:
                error = f"{exc.code}: {exc.message}"
                if exc.code not in ap.RETRYABLE_CONNECT_CODES:
                    self._resume_failed(core, attempt, t0, error, final=True)
                    raise
            except (AgentUnavailable, AgentClosed) as exc:
                error = str(exc)
            else:
                now = self._clock()
                if isinstance(first, ap.SessionEnded):  # the server ended the session instead
                    await self._execute(core.agent_event(first, now))
                    return
                if (update := self._update_unsent) is not None and await link.send(update):
                    self._update_unsent = None  # before the core goes live again: before any caller audio
                ready = first.session_id if isinstance(first, ap.SessionReady) else None
                await self._execute(core.agent_resumed(ready, attempt, (now - t0) * 1000, now))
                self.inbound.wake.set()
                if first is not None and ready is None:
                    await self.on_agent_event(first)  # a server that just carries on: its first event counts
                return
            await link.discard()
        self._resume_failed(core, attempt, t0, error or "resume window spent", final=False)
        raise AgentUnavailable(f"agent session not resumed within {link.resume_window_s:g} s: {error}")

    def _resume_failed(self, core: CallCore, attempts: int, t0: float, error: str, *, final: bool) -> None:
        self._log.error(
            "agent.resume_failed",
            attempts=attempts,
            gap_ms=round((self._clock() - t0) * 1000, 1),
            session_id=core.summary.session_id,
            error=error,
            final_code=final,
            buffered_frames=core.to_agent_pending,
        )

    # ---- re-attach (gateway.reattach) ---------------------------------------------------------------------------
    async def _adopt_parked(self, core: CallCore) -> bool:
        """At the start of a stream: take over this call's parked agent session, if there is one."""
        parked = self._parked
        if parked is None or not parked.enabled:
            return False
        call_sid, stopping = core.summary.call_sid, self._stream_stopping
        found = await parked.claim(
            call_sid, wait_s=2.0, stopping=(lambda: stopping(call_sid)) if stopping else (lambda: False)
        )
        if found is None:
            return await self._adopt_remote(core)
        self.agent.adopt(found.agent)
        structlog.contextvars.bind_contextvars(session_id=found.session_id)
        now = self._clock()
        gap_ms = round((now - found.parked_at) * 1000, 1)
        await self._execute(
            core.agent_adopted(found.session_id, found.profile_name, found.profile, found.stream_sid, gap_ms, now)
        )
        return True

    async def _adopt_remote(self, core: CallCore) -> bool:
        """The call's agent session is parked on another replica (docs/architecture/scale-out.md#re-attach): that
        replica lets go of its socket without ``session.end``, and this one resumes the session by id. Caller audio
        meanwhile waits in the core's buffer (``audio.preready_buffer_ms``), so none after this stream's start is
        lost. If the session cannot be resumed, the call starts a new one."""
        if self._handover is None:
            return False
        t0 = self._clock()
        found = await self._handover()
        if found is None:
            return False
        link = self.agent
        try:
            first = await link.reopen(found.session_id, self._settings.agent.connect_timeout_s)
        except (AgentUnavailable, AgentClosed) as exc:  # AgentSessionError too: session_not_found …
            self._log.warning("call.reattach_failed", session_id=found.session_id, error=str(exc))
            await link.discard()
            return False
        if isinstance(first, ap.SessionEnded):
            await link.discard()
            return False
        structlog.contextvars.bind_contextvars(session_id=found.session_id)
        now = self._clock()
        gap_ms = round(found.parked_ms + (now - t0) * 1000, 1)
        await self._execute(
            core.agent_adopted(found.session_id, found.profile_name, core.profile, found.stream_sid, gap_ms, now)
        )
        if first is not None and not isinstance(first, ap.SessionReady):
            await self.on_agent_event(first)  # a server that just carries on: its first event counts
        return True

    def _park(self, core: CallCore, outcome: Outcome) -> bool:
        """At teardown after a 'stop': hold the live agent session for a new stream of this call instead of ending
        it. Only for a stream the carrier stopped (the caller hung up or a redirect replaced the TwiML: 'stop' does
        not say which) with a healthy, live session."""
        parked, s, conn = self._parked, core.summary, self.agent.conn
        if (
            parked is None
            or not parked.enabled
            or outcome != Outcome.CALLER_HANGUP
            or core.agent_ended
            or not core.was_live
            or conn is None
            or not conn.open_
            or not s.session_id
            or not s.call_sid
        ):
            return False
        self.agent.detach()
        parked.park(
            ParkedAgent(
                call_sid=s.call_sid,
                agent=conn,
                session_id=s.session_id,
                profile_name=s.profile,
                profile=core.profile,
                stream_sid=s.stream_sid,
                parked_at=self._clock(),
            )
        )
        self._log.info("call.agent_parked", session_id=s.session_id, window_s=parked.window_s)
        return True

    def _stop_agent(self, core: CallCore) -> None:
        """The call ends with the gateway's own prompt: stop reading the agent, and end its session now (billing
        stops with session.end) while the prompt plays. The end runs outside the task group, so the group's end
        does not cut it short; the teardown waits for it."""
        current = asyncio.current_task()
        for task in (self._agent_task, self._agent_sender):
            if task is not None and task is not current:
                task.cancel()
        if self._agent_ending is None:
            self._agent_ending = asyncio.get_running_loop().create_task(self._end_agent(core), name="agent_end")

    async def _end_agent(self, core: CallCore) -> None:
        """End the agent session (bounded: :meth:`AgentLink.end`), also one still being resumed, which has no socket
        or an unanswered new one at this moment."""
        link = self.agent
        if link.conn is None and link.resuming is None:
            return
        if await link.end(already_ended=core.agent_ended):
            core.agent_ended = True
        conn = link.conn
        if conn is None:  # the dropped session could not be reached to end it: the server's window ends it
            return
        s = core.summary
        s.agent_close_code = conn.close_code
        self._log.info(
            "agent.closed",
            close_code=conn.close_code,
            reason=conn.close_reason,
            session_id=s.session_id or None,
            endpoint=conn.endpoint.name,
        )

    # ================================================================================================== actions
    async def _execute(self, actions: Sequence[Action]) -> None:
        """Do what the core said, in order. A clear the core just queued (barge-in) goes first: the caller hears the
        agent until the carrier has it, and logging and publishing the barge-in cost more than the send."""
        core = self.core
        if self._outbound.urgent:
            await self._writer.flush()
        for action in actions:
            match action:
                case Publish():
                    self._emit(action.event)
                case LogLine():
                    getattr(self._log, action.level)(action.event, **action.fields)
                case SendAgent():
                    if not await self.agent.send(action.text) and action.keep:
                        core.agent_message_unsent(action.text)  # the agent is being resumed: sent once it is back
                case WakeAt():
                    self._clock_wake.set()
                case RunTool():
                    self._tg.create_task(self._tool_port.run_tool(action.call), name=f"tool:{action.call.name}")
                case ControlRequest():
                    self._tg.create_task(self._tool_port.carry_out(action), name="call_control")
                case MarkHeard():
                    self._tool_port.heard(action.tag)
                case EndAgentSession():
                    self._stop_agent(core)
                case EndCall():
                    raise CallEnded(action.outcome)
        if core.carrier_pending:
            self._writer.wake()

    async def _finish_agent(self, core: CallCore, outcome: Outcome) -> None:
        """Park the agent session (re-attach) or end it; wait (bounded) for an end already under way."""
        if self._agent_ending is None and not self._park(core, outcome):
            self._agent_ending = asyncio.get_running_loop().create_task(self._end_agent(core), name="agent_end")
        if self._agent_ending is not None:
            bound = self._settings.agent.end_timeout_s + AGENT_END_SLACK_S
            try:
                async with asyncio.timeout(bound):
                    await asyncio.shield(self._agent_ending)
            except TimeoutError:
                pass

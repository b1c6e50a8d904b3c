"""One phone call's asyncio shell: the only place where the carrier socket and the agent socket meet. It reads the
sockets, runs the timers and executes what the call's pure core (:mod:`gateway.call.core`) decides.

Tasks (one ``asyncio.TaskGroup`` per call; when one ends the call by raising, the group cancels the rest, so nothing
outlives the call):

- ``carrier_reader``: carrier messages → dialect → core. Caller audio goes to the agent from here when nothing waits
  before it (the fast path), else it waits in the core's bounded buffer for ``agent_sender``.
- ``agent_runner``: opens (or adopts) the agent session, then reads agent events into the core; resumes a dropped
  session (:mod:`gateway.call.shell.agent_link`). Agent audio for the caller goes out from here when it is due and
  the carrier writer is idle (the fast path), else the writer sends it.
- ``agent_sender``: sends buffered caller audio (coalesced, ≤ 100 ms per message) once the session is live.
- ``carrier_writer``: the one pacing loop for everything the caller hears (:mod:`gateway.call.shell.carrier`).
- ``watchdog``: the call's clock: calls ``core.tick`` at the core's next deadline (maximum duration, a line without
  media, end-of-call waits, keypress runs, the prompt's echo, clock-resolved marks, a drain request).
- per tool call a ``tool:<name>`` task; per carrier call-control request (REST hang-up, transfer) a
  ``call_control`` task.

Every wait is bounded: by the core's deadlines, ``agent.*`` timeouts, ``audio.outbound_buffer_s`` (a carrier that
stops reading ends the call as ``carrier_stalled``), or the idle re-check of a waiting loop.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import structlog
from aiohttp import web

from ...agent import protocol as ap
from ...agent.client import AgentClosed, AgentConnection, AgentEndpoint
from ...carriers.base import Dialect
from ...carriers.events import AudioReceived
from ...carriers.registry import TwilioDialect
from ...config import Settings
from ...errors import (
    AgentProtocolError,
    AgentSessionError,
    AgentUnavailable,
    CallEnded,
    CarrierProtocolError,
    Outcome,
    UnauthorizedStream,
)
from ...logs import mask_number
from ...prompts import prompt_ulaw
from ...reattach import ParkedAgent, ParkedAgents
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
from ..setup import CallSetup
from ..stats import CallSummary
from .accept import authorize, await_start
from .agent_link import AgentLink
from .carrier import CarrierLink, CarrierWriter
from .carrier_control import CarrierControl, NoCarrierControl
from .tools import ToolPort

__all__ = ["CallSession"]

#: The longest sleep of a waiting loop before it looks again (they are woken when there is something to do).
IDLE_WAIT_S = 1.0
#: At teardown, the most the agent session's end may take (session.end, session.ended, close) beyond its own bound.
AGENT_END_SLACK_S = 2.5


class CallSession:
    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        settings: Settings,
        endpoint: AgentEndpoint,
        tools: ToolRegistry,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_summary: Callable[[CallSummary], None] | None = None,
        on_event: Callable[[ev.CallEvent], None] | None = None,
        admit: Callable[[str, str], str | None] | None = None,
        resume_window_s: float | None = None,
        dialect: Dialect | None = None,
        call_control: CarrierControl | None = None,
        parked: ParkedAgents | None = None,
        stream_stopping: Callable[[str], bool] | None = None,
        token_scope: str | None = None,
    ) -> None:
        """``admit(call_sid, token)``: called once the stream's token verified; returns None to admit the call or
        a refusal (gateway.admission). ``call_control``: the carrier's own (gateway.call.shell.carrier_control:
        Twilio REST at the twilio door when configured, else none). ``parked``: the re-attach registry
        (gateway.reattach); ``stream_stopping(call_sid)`` says whether another stream of that call is still winding
        down here (its agent session may be about to park)."""
        self.carrier = CarrierLink(ws, settings.server.max_message_bytes)
        self._settings = settings
        self._tools = tools
        self._clock = clock
        self._wall = wall_clock
        self._on_summary = on_summary
        self._on_event = on_event
        self._admit = admit
        #: The carrier's protocol (gateway.carriers.base.Dialect); Twilio unless the route says otherwise.
        self.dialect: Dialect = dialect if dialect is not None else TwilioDialect()
        # The stream door this socket came in through: its token must have been minted for that door
        # (gateway.security; the softphone speaks Twilio's dialect at a door of its own).
        self._scope = token_scope or self.dialect.carrier
        self._control: CarrierControl = call_control or NoCarrierControl(self._scope, "not_on_this_carrier")
        self._parked = parked
        self._stream_stopping = stream_stopping
        #: The call's agent socket (gateway.call.shell.agent_link).
        self.agent = AgentLink(endpoint, settings.agent, resume_window_s=resume_window_s)
        self._log = structlog.get_logger("gateway.call")
        self._started_at = clock()
        self._summary = CallSummary()  # until the call has a core (then: the core's)
        self._core: CallCore | None = None
        self._tg = asyncio.TaskGroup()
        self._agent_wake = asyncio.Event()  # buffered caller audio may go: wakes agent_sender
        self._clock_wake = asyncio.Event()  # the core's next deadline may have moved: wakes the watchdog
        self._room = asyncio.Event()  # the outbound queue has room again
        self._agent_task: asyncio.Task[None] | None = None
        self._agent_sender: asyncio.Task[None] | None = None
        self._agent_ending: asyncio.Task[None] | None = None
        self._end_requested = False
        self._close_task: asyncio.Task[None] | None = None

    # ================================================================================================ surface
    @property
    def summary(self) -> CallSummary:
        """The call's statistics so far (``call.ended`` reports them)."""
        return self._core.summary if self._core is not None else self._summary

    @property
    def core(self) -> CallCore | None:
        """The call's core, once its stream was accepted."""
        return self._core

    @property
    def started(self) -> bool:
        """'start' was received and authorized: the call's tasks run."""
        return self._core is not None

    async def run(self) -> CallSummary:
        """Serve the call until it ends for any reason. Never raises (except cancellation)."""
        outcome, error = Outcome.CARRIER_CLOSED, ""
        try:
            start = await await_start(self.carrier, self.dialect, self._settings.server.start_timeout_s)
            self._summary.call_sid, self._summary.stream_sid = start.call_id, start.stream_id
            acceptance = authorize(start, self._settings, scope=self._scope, now=self._wall(), admit=self._admit)
            core = self.begin(acceptance.setup, admitted=acceptance.refusal is None)
            async with self._tg as tg:
                tg.create_task(self._carrier_reader(core), name="carrier_reader")
                tg.create_task(self._writer.run(), name="carrier_writer")
                tg.create_task(self._watchdog(core), name="watchdog")
                if acceptance.refusal is not None:  # authorized, but no slot: the apology, then the end
                    await self._execute(core.end(acceptance.refusal, self._clock()))
                else:
                    self._agent_task = tg.create_task(self._agent_runner(core), name="agent_runner")
                    self._agent_sender = tg.create_task(self._send_agent_audio(core), name="agent_sender")
        except* CallEnded as eg:
            outcome = Outcome(_first(eg, CallEnded).reason)
        except* UnauthorizedStream as eg:
            outcome, error = Outcome.REFUSED, str(_first(eg, UnauthorizedStream))
            self._log.warning("call.refused", reason=error)
        except* CarrierProtocolError as eg:
            outcome, error = Outcome.PROTOCOL_ERROR, str(_first(eg, CarrierProtocolError))
            self._log.warning("call.protocol_error", side="carrier", error=error)
            self._emit(ev.ProtocolViolation("carrier", t=self._t()))
        except* AgentProtocolError as eg:
            outcome, error = Outcome.PROTOCOL_ERROR, str(_first(eg, AgentProtocolError))
            self._log.warning("call.protocol_error", side="agent", error=error)
            self._emit(ev.ProtocolViolation("agent", t=self._t()))
        except* Exception as eg:  # noqa: BLE001 - our bug: log once, at the boundary, with the call's context
            outcome, error = Outcome.INTERNAL_ERROR, repr(eg.exceptions[0])
            self._log.error("call.internal_error", exc_info=eg.exceptions[0])
        finally:
            await asyncio.shield(self._teardown(outcome, error))
        return self.summary

    def begin(self, setup: CallSetup, *, admitted: bool = True) -> CallCore:
        """The stream's ``start`` was authorized: the call's core, and the writer that speaks for it.
        ``admitted``: False when admission turned the call away after all (it only hears the apology)."""
        now = self._clock()
        core = self._core = CallCore(setup, self._settings, self.dialect, now, started_at=self._started_at,
                                     prompt_audio=prompt_ulaw, control_available=self._control.available)
        self._outbound = core.outbound
        self._writer = CarrierWriter(core.outbound, self.carrier, self._clock, self._after_carrier_send)
        self._tool_port = ToolPort(core, self._tools, self._control, execute=self._execute, wake_writer=self._writer.wake,
                                   emit=self._emit, clock=self._clock)
        if not admitted:
            return core
        start, audio = setup.start, self._settings.audio
        self._log.info("call.started", carrier=self.dialect.carrier, account_sid=start.account_id,
                       from_=mask_number(start.custom_parameters.get("from")),
                       to=mask_number(start.custom_parameters.get("to")), profile=setup.profile_name,
                       agent_format=audio.agent_format, endpoint=self.agent.endpoint.name)
        self._emit(ev.CallStarted(start.call_id, setup.profile_name, t=core.t(now)))
        return core

    def request_end(self, reason: str = "drained") -> None:
        """End the call from outside (the process drains; ``call_completed``: the carrier says the call is over,
        nobody to say goodbye to): a live call says the goodbye prompt and hangs up; a stream still waiting for
        ``start`` is closed at once. Idempotent; returns immediately."""
        if self._end_requested:
            return
        self._end_requested = True
        self._log.info("call.end_requested", reason=reason)
        core = self._core
        if core is not None:
            core.request_end(Outcome.CALL_COMPLETED if reason == "call_completed" else Outcome.DRAINED)
            self._clock_wake.set()
        elif not self.carrier.closed:
            # No call yet (so nothing to say): closing the socket makes the acceptance see CLOSE. The task is held so
            # it cannot be collected mid-flight; it ends with the close handshake (bounded by aiohttp's timeout).
            self._close_task = asyncio.get_running_loop().create_task(self.shutdown(), name="close_unstarted")

    async def shutdown(self) -> None:
        """The process is shutting down now: close the carrier socket (1001) so the call's handler finishes."""
        if not self.carrier.closed:
            await self.carrier.ws.close(code=1001, message=b"server shutdown")

    # ============================================================================================ per message
    async def on_carrier_message(self, data: str | bytes) -> None:
        """What the carrier reader does with one message (also the benchmark's seam: bench/session_overhead.py)."""
        core = self._core
        assert core is not None  # the reader runs only once the call was accepted
        link = self.agent
        for event in self.dialect.parse(data):
            if type(event) is AudioReceived:
                # Fast path, the steady state: the frame goes to the agent from here (instead of waking
                # agent_sender 50 times a second) when nothing waits before it, no send is in flight and the agent
                # socket is not backed up (a send could then wait for the drain, and this reader must never wait on
                # the agent: its marks and its 'stop' would wait too).
                conn = link.conn
                send_now = (conn is not None and not link.sending and conn is not link.broken_conn
                            and not conn.backlogged())
                frame = core.caller_audio(event.payload, send_now)
                if frame is not None and conn is not None:  # (send_now implies conn)
                    await self._send_frame(core, conn, frame)
                elif core.live:
                    self._agent_wake.set()  # it waits in the core's buffer: agent_sender delivers it
            else:
                actions = core.carrier_event(event, self._clock())
                if actions:
                    await self._execute(actions)

    async def on_agent_event(self, event: ap.ServerEvent) -> None:
        """What the agent reader does with one event (also the benchmark's seam)."""
        core = self._core
        assert core is not None
        actions = core.agent_event(event, self._clock())
        if actions:
            await self._execute(actions)
        q = self._outbound
        if q.items or q.urgent:
            await self._writer.flush()  # fast path: send what is due from here
            if q.frames >= q.max_frames:
                await self._wait_for_room(core)

    async def _send_frame(self, core: CallCore, conn: AgentConnection, frame: bytes) -> None:
        """The carrier reader's fast path: one frame, one ``input.audio``."""
        link = self.agent
        link.sending = True
        try:
            await conn.send(ap.input_audio(frame))
        except AgentClosed:
            core.agent_audio_unsent([frame])  # kept for the resumed session (see _send_audio)
            link.broken(conn)
        finally:
            link.sending = False

    async def _send_audio(self, core: CallCore, conn: AgentConnection, frames: list[bytes]) -> None:
        """One ``input.audio`` (from the carrier reader's fast path or agent_sender). While it is in flight newer
        frames queue behind it, so the order holds; frames whose send failed go back to the core's buffer."""
        link = self.agent
        link.sending = True
        try:
            await conn.send(ap.input_audio(frames[0] if len(frames) == 1 else b"".join(frames)))
        except AgentClosed:
            # Not sent (both transports raise before writing once the socket is going): keep the frames for the
            # resumed session. agent_runner notices the drop too; don't spin on this dead socket meanwhile.
            core.agent_audio_unsent(frames)
            link.broken(conn)
        finally:
            link.sending = False

    # =================================================================================================== tasks
    async def _carrier_reader(self, core: CallCore) -> None:
        receive = self.carrier.receive
        while not core.carrier_stopped:
            await self.on_carrier_message(await receive())
        # 'stop' while our REST hang-up/transfer is under way: that task ends the call once the carrier answered.

    async def _send_agent_audio(self, core: CallCore) -> None:
        """agent_sender: buffered caller audio (before ready, during a resume, behind a backed-up socket), coalesced
        into ≤ 100 ms messages."""
        wake, link = self._agent_wake, self.agent
        while True:
            wake.clear()
            while (conn := link.sendable()) is not None and (frames := core.agent_audio(5)):
                await self._send_audio(core, conn, frames)
            await _wait(wake, IDLE_WAIT_S)

    async def _watchdog(self, core: CallCore) -> None:
        """The call's clock: one timer, re-armed whenever the core's next deadline may have moved."""
        wake = self._clock_wake
        while True:
            wake.clear()
            deadline = core.next_deadline()
            await _wait(wake, IDLE_WAIT_S if deadline is None else max(0.0, deadline - self._clock()))
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

    def _after_carrier_send(self) -> None:
        core = self._core
        assert core is not None
        q = self._outbound
        if q.frames < q.max_frames:
            self._room.set()
        if core.clock_changed():
            self._clock_wake.set()

    # ================================================================================================ agent side
    async def _agent_runner(self, core: CallCore) -> None:
        try:
            if not await self._adopt_parked(core):
                await self._open_agent(core)
            self._agent_wake.set()
            await self._read_agent(core)
        except AgentUnavailable as exc:  # unreachable, refused, or not resumable (AgentSessionError: fatal code)
            await self._execute(core.agent_failed(exc, self._clock()))

    async def _open_agent(self, core: CallCore) -> None:
        update = ap.session_update(core.session_config(self._tools.declarations(core.profile)))

        async def before_ready(event: ap.ServerEvent) -> None:
            await self._execute(core.agent_event(event, self._clock()))

        ready = await self.agent.open_session(update, before_ready)
        now = self._clock()
        structlog.contextvars.bind_contextvars(session_id=ready.session_id)
        endpoint = self.agent.endpoint
        self._log.info("agent.session_ready", session_id=ready.session_id, endpoint=endpoint.name, url=endpoint.url,
                       ready_ms=round((now - self._started_at) * 1000, 1))
        await self._execute(core.agent_ready(ready.session_id, now))

    async def _read_agent(self, core: CallCore) -> None:
        link = self.agent
        while core.agent_wanted:
            try:
                event = await link.recv()
            except AgentClosed as exc:
                if core.phase is not Phase.LIVE:
                    return  # the call is ending anyway
                # No session.ended before the close (that ends the call in the core): a network drop.
                await self._execute(core.agent_dropped(exc.code, exc.reason, self._clock()))
                await self._resume(core)
                continue
            await self.on_agent_event(event)

    async def _resume(self, core: CallCore) -> None:
        """Resume the dropped session on a new socket, with backoff, inside the window. Raises AgentSessionError
        (a final code) or AgentUnavailable (the window is spent)."""
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
                ready = first.session_id if isinstance(first, ap.SessionReady) else None
                await self._execute(core.agent_resumed(ready, attempt, (now - t0) * 1000, now))
                self._agent_wake.set()
                if first is not None and ready is None:
                    await self.on_agent_event(first)  # a server that just carries on: its first event counts
                return
            await link.discard()
        self._resume_failed(core, attempt, t0, error or "resume window spent", final=False)
        raise AgentUnavailable(f"agent session not resumed within {link.resume_window_s:g} s: {error}")

    def _resume_failed(self, core: CallCore, attempts: int, t0: float, error: str, *, final: bool) -> None:
        self._log.error("agent.resume_failed", attempts=attempts, gap_ms=round((self._clock() - t0) * 1000, 1),
                        session_id=core.summary.session_id, error=error, final_code=final,
                        buffered_frames=core.to_agent_pending)

    # ---- re-attach (gateway.reattach) ---------------------------------------------------------------------------
    async def _adopt_parked(self, core: CallCore) -> bool:
        """At the start of a stream: take over this call's parked agent session, if there is one."""
        parked = self._parked
        if parked is None or not parked.enabled:
            return False
        call_sid, stopping = core.summary.call_sid, self._stream_stopping
        found = await parked.claim(call_sid, wait_s=2.0,
                                   stopping=(lambda: stopping(call_sid)) if stopping else (lambda: False))
        if found is None:
            return False
        self.agent.adopt(found.agent)
        structlog.contextvars.bind_contextvars(session_id=found.session_id)
        now = self._clock()
        await self._execute(core.agent_adopted(found.session_id, found.profile_name, found.profile,
                                               found.stream_sid, round((now - found.parked_at) * 1000, 1), now))
        return True

    def _park(self, core: CallCore, outcome: Outcome) -> bool:
        """At teardown after a 'stop': hold the live agent session for a new stream of this call instead of ending
        it. Only for a stream the carrier stopped (the caller hung up or a redirect replaced the TwiML: 'stop' does
        not say which) with a healthy, live session."""
        parked, s, conn = self._parked, core.summary, self.agent.conn
        if (parked is None or not parked.enabled or outcome != Outcome.CALLER_HANGUP or core.agent_ended
                or not core.was_live or conn is None or not conn.open_ or not s.session_id or not s.call_sid):
            return False
        self.agent.detach()
        parked.park(ParkedAgent(call_sid=s.call_sid, agent=conn, session_id=s.session_id, profile_name=s.profile,
                                profile=core.profile, stream_sid=s.stream_sid, parked_at=self._clock()))
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
        conn = self.agent.conn
        if conn is None:
            return
        if await self.agent.end(already_ended=core.agent_ended):
            core.agent_ended = True
        s = core.summary
        s.agent_close_code = conn.close_code
        self._log.info("agent.closed", close_code=conn.close_code, reason=conn.close_reason,
                       session_id=s.session_id or None, endpoint=conn.endpoint.name)

    # ================================================================================================== actions
    async def _execute(self, actions: Sequence[Action]) -> None:
        """Do what the core said, in order."""
        core = self._core
        assert core is not None
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

    def _emit(self, event: ev.CallEvent) -> None:
        """Per-call timeline for live viewers and metrics (gateway.call.events). Never per frame."""
        if self._on_event is not None:
            self._on_event(event)

    def _t(self) -> float:
        return round(self._clock() - self._started_at, 3)

    # ================================================================================================= teardown
    async def _teardown(self, outcome: Outcome, error: str) -> None:
        core = self._core
        now = self._clock()
        if core is None:
            s = self._summary
            s.end(outcome, error)
        else:
            s = core.summary
            for action in core.end(outcome, now, error, farewell=False):  # only its log lines are left to do
                if isinstance(action, LogLine):
                    getattr(self._log, action.level)(action.event, **action.fields)
            await self._finish_agent(core, outcome)
            s.stale_mark_echoes = core.playout.stale_echoes
        s.duration_s = self._clock() - self._started_at
        if not self.carrier.closed:
            # Under <Connect><Stream> closing the socket ends the call.
            await self.carrier.close(1008 if outcome == Outcome.REFUSED else 1000)
        if s.session_id:  # bound in agent_runner's task context only; the summary line must carry it too
            structlog.contextvars.bind_contextvars(session_id=s.session_id)
        self._log.info("call.ended", **s.log_fields())
        self._emit(ev.CallEnd(s.log_fields(), t=self._t()))
        if self._on_summary is not None:
            self._on_summary(s)

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


async def _wait(event: asyncio.Event, timeout: float) -> None:
    """Wait for ``event``, at most ``timeout`` seconds."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        pass


def _first(eg: BaseExceptionGroup[Any], kind: type[BaseException]) -> Any:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
        elif isinstance(exc, kind):
            return exc
    return eg.exceptions[0]

"""One carrier media stream, from its WebSocket's first message to the call's summary. Not pure: asyncio.

:class:`CallSession` accepts the stream (:mod:`gateway.call.shell.accept`: the ``start``, its token, the call's
slot), hands the accepted call to :class:`~gateway.call.shell.accepted.AcceptedCall` (its core and its tasks), and
tears it down: the agent session parked or ended, the carrier socket closed, ``call.ended`` logged once with the
call's outcome and statistics. An error that escapes a call is logged once, here, with the call's context.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import structlog
from aiohttp import web

from ...agent.client import AgentEndpoint
from ...carriers.base import Dialect
from ...carriers.registry import TwilioDialect
from ...config import Settings
from ...errors import (
    AgentProtocolError,
    CallEnded,
    CarrierProtocolError,
    Outcome,
    UnauthorizedStream,
    release_frames,
)
from ...logs import mask_number
from ...reattach import ParkedAgents
from ...tools.registry import ToolRegistry
from .. import events as ev
from ..core import CallCore
from ..setup import CallSetup
from ..stats import CallSummary
from .accept import Handover, SharedAdmit, admit_shared, authorize, await_start
from .accepted import AcceptedCall
from .agent_link import AgentLink
from .carrier import CarrierLink, CarrierTransport
from .carrier_control import CarrierControl, NoCarrierControl

if TYPE_CHECKING:
    from ...warm_transfer_http import WarmDialer

__all__ = ["CallSession"]


class CallSession:
    def __init__(
        self,
        *,
        ws: web.WebSocketResponse | None = None,
        carrier: CarrierTransport | None = None,
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
        on_accept: Callable[[AcceptedCall, CallSetup], None] | None = None,
        warm: WarmDialer | None = None,
        shared_admit: SharedAdmit | None = None,
    ) -> None:
        """``admit(call_sid, token)``: called once the stream's token verified; returns None to admit the call or
        a refusal (gateway.admission). ``call_control``: the carrier's own (gateway.call.shell.carrier_control:
        Twilio REST at the twilio door when configured, else none). ``parked``: the re-attach registry
        (gateway.reattach); ``stream_stopping(call_sid)`` says whether another stream of that call is still winding
        down here (its agent session may be about to park). ``on_accept(call, setup)``: an admitted call is about to run
        (gateway.records installs its recording taps).
        ``shared_admit``: the cluster's half of admission
        (gateway.call.shell.accept.SharedAdmit); None: this process alone decides.
        The carrier connection: ``ws`` (a prepared WebSocket) or, for a carrier that is not a WebSocket,
        ``carrier`` (AudioSocket's TCP stream)."""
        if carrier is None:
            assert ws is not None, "a call needs a carrier connection: ws or carrier"
            carrier = CarrierLink(ws, settings.server.max_message_bytes)
        self.carrier: CarrierTransport = carrier
        self._settings = settings
        self._tools = tools
        self._clock = clock
        self._wall = wall_clock
        self._on_summary = on_summary
        self._on_event = on_event
        self._on_accept = on_accept
        self._admit = admit
        #: The carrier's protocol (gateway.carriers.base.Dialect); Twilio unless the route says otherwise.
        self.dialect: Dialect = dialect if dialect is not None else TwilioDialect()
        # The stream door this socket came in through: its token must have been minted for that door
        # (gateway.security; the softphone speaks Twilio's dialect at a door of its own).
        self._scope = token_scope or self.dialect.carrier
        self._control: CarrierControl = call_control or NoCarrierControl(self._scope, "not_on_this_carrier")
        self._parked = parked
        self._stream_stopping = stream_stopping
        self._warm = warm  # warm transfers (gateway.warm_transfer_http)
        self._shared_admit = shared_admit
        #: The call's agent socket (gateway.call.shell.agent_link).
        self.agent = AgentLink(endpoint, settings.agent, resume_window_s=resume_window_s)
        self._log = structlog.get_logger("gateway.call")
        self._started_at = clock()
        self._summary = CallSummary()  # until the stream is accepted (then: its call's)
        self._call: AcceptedCall | None = None
        self._end_requested = False
        self._close_task: asyncio.Task[None] | None = None

    # ================================================================================================ surface
    @property
    def summary(self) -> CallSummary:
        """The call's statistics so far (``call.ended`` reports them)."""
        return self._call.summary if self._call is not None else self._summary

    @property
    def call(self) -> AcceptedCall | None:
        """The call, once its stream was accepted."""
        return self._call

    @property
    def core(self) -> CallCore | None:
        """The call's core, once its stream was accepted."""
        return self._call.core if self._call is not None else None

    @property
    def started(self) -> bool:
        """'start' was received and authorized: the call's tasks run."""
        return self._call is not None

    async def run(self) -> CallSummary:
        """Serve the call until it ends for any reason. Never raises (except cancellation)."""
        outcome, error = Outcome.CARRIER_CLOSED, ""
        ended: BaseException | None = None  # what ended the call, if raised (its frames are cleared at the end)
        try:
            try:
                start = await await_start(self.carrier, self.dialect, self._settings.server.start_timeout_s)
                self._summary.call_sid, self._summary.stream_sid = start.call_id, start.stream_id
                acceptance = authorize(start, self._settings, scope=self._scope, now=self._wall(), admit=self._admit)
                handover: Handover | None = None
                if acceptance.refusal is None and self._shared_admit is not None:
                    handover = await admit_shared(start, acceptance, self._shared_admit)
                call = self.begin(acceptance.setup, admitted=acceptance.refusal is None, handover=handover)
                await call.run(acceptance.refusal)
            except BaseException as exc:
                ended = exc
                raise
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
            teardown = self._teardown(outcome, error, ended)
            ended = None  # the teardown has it: held here, it would keep this frame in a cycle with its traceback
            await asyncio.shield(teardown)  # (a cancelled handler leaves the teardown running to its end)
        return self.summary

    def _release(self) -> None:
        """Reported: let go of the callbacks that point back at this session (its owner's closures) and of the
        call's links back to itself, so that the ended call is freed by reference counting."""
        self._on_event = self._stream_stopping = None
        if self._call is not None:
            self._call.release()

    def begin(self, setup: CallSetup, *, admitted: bool = True, handover: Handover | None = None) -> AcceptedCall:
        """The stream's ``start`` was authorized: the call. ``admitted``: False when admission turned the call away
        after all (it only hears the apology). ``handover``: the call's agent session is parked on another replica."""
        call = self._call = AcceptedCall(
            setup,
            settings=self._settings,
            carrier=self.carrier,
            dialect=self.dialect,
            agent=self.agent,
            tools=self._tools,
            control=self._control,
            clock=self._clock,
            started_at=self._started_at,
            emit=self._emit,
            parked=self._parked,
            stream_stopping=self._stream_stopping,
            warm=self._warm,
            handover=handover,
        )
        if admitted:
            if self._on_accept is not None:
                self._on_accept(call, setup)
            start, audio = setup.start, self._settings.audio
            self._log.info(
                "call.started",
                carrier=self.dialect.carrier,
                account_sid=start.account_id,
                from_=mask_number(start.custom_parameters.get("from")),
                to=mask_number(start.custom_parameters.get("to")),
                profile=setup.profile_name,
                agent_format=audio.agent_format,
                endpoint=self.agent.endpoint.name,
            )
            self._emit(ev.CallStarted(start.call_id, setup.profile_name, t=self._t()))
        return call

    def request_end(self, reason: str = "drained") -> None:
        """End the call from outside (the process drains; ``call_completed``: the carrier says the call is over,
        nobody to say goodbye to; ``api_hangup``: POST /calls/{call_sid}/hangup, hung up at once): a live call says
        the goodbye prompt and hangs up; a stream still waiting for ``start`` is closed at once. Idempotent; returns
        immediately."""
        if self._end_requested:
            return
        self._end_requested = True
        self._log.info("call.end_requested", reason=reason)
        if self._call is not None:
            outcome = {"call_completed": Outcome.CALL_COMPLETED, "api_hangup": Outcome.API_HANGUP}.get(reason)
            self._call.request_end(outcome or Outcome.DRAINED)
        elif not self.carrier.closed:
            # No call yet (so nothing to say): closing the socket makes the acceptance see CLOSE. The task is held so
            # it cannot be collected mid-flight; it ends with the close handshake (bounded by aiohttp's timeout).
            self._close_task = asyncio.get_running_loop().create_task(self.shutdown(), name="close_unstarted")

    def machine_detected(self, answered_by: str) -> None:
        """Twilio's answering-machine verdict for this (outbound) call (gateway.amd_http); returns immediately."""
        if self._call is not None:
            self._call.machine_detected(answered_by)

    async def shutdown(self) -> None:
        """The process is shutting down now: close the carrier socket (1001) so the call's handler finishes."""
        if not self.carrier.closed:
            await self.carrier.close(1001, b"server shutdown")

    def _emit(self, event: ev.CallEvent) -> None:
        """Per-call timeline for live viewers and metrics (gateway.call.events). Never per frame."""
        if self._on_event is not None:
            self._on_event(event)

    def _t(self) -> float:
        return round(self._clock() - self._started_at, 3)

    # ================================================================================================= teardown
    async def _teardown(self, outcome: Outcome, error: str, ended: BaseException | None = None) -> None:
        """Settle the call, close the carrier socket, report. ``ended``: what ended the call, if it was raised."""
        if self._call is None:
            s = self._summary
            s.end(outcome, error)
        else:
            s = await self._call.finish(outcome, error)
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
        # Reported: let go of the ended call. What ended it, raised, holds the call's objects in its traceback's
        # frames, and the task group's errors and the session's callbacks point back at them: left as reference
        # cycles, an ended call waits for a full collection, which stops every live call's audio while it walks
        # them (docs/architecture/performance.md#call-garbage; gateway.errors.release_frames).
        if ended is not None:
            release_frames(ended)
        self._release()


def _first(eg: BaseExceptionGroup[Any], kind: type[BaseException]) -> Any:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
        elif isinstance(exc, kind):
            return exc
    return eg.exceptions[0]

"""One phone call: the only place where the carrier socket, the agent socket, the transcoders and the playout
tracker meet. Not pure: this is the asyncio shell around the pure cores.

Tasks (one ``asyncio.TaskGroup`` per call; when any task ends the call by raising, the group cancels the rest,
so nothing outlives the call):

- ``carrier_reader``: carrier messages → dialect → events. Caller audio is transcoded and queued for the agent.
- ``agent_runner``: connects the agent, sends ``session.update``, waits for ``session.ready``, then reads agent
  events: reply audio is transcoded into whole carrier frames and queued for the caller; barge-in, tools, end.
- ``agent_sender``: sends queued caller audio once the session is ready.
- ``carrier_writer``: paces queued agent audio to the carrier so at most ``audio.playout_lead_ms`` sits there,
  and sends marks whose echoes prove what the caller has heard.
- ``watchdog``: ends the call at ``server.max_call_s``, after ``server.no_media_timeout_s`` without caller media,
  or when the process drains (:meth:`CallSession.request_end`).

Fast path (README "Performance"): each queue is bypassed while it is empty. The carrier reader sends
``input.audio`` itself when the agent is ready and nothing waits in the to-agent deque; the agent reader sends
``media`` itself when nothing waits in the outbound deque and the carrier's lead is under target. That saves two
task wake-ups per 20 ms frame; anything that has to wait (a backlog, pacing, marks, barge-in generations,
Exotel's minimum message) still goes through the queue and its task, in order. Neither reader sends while the
other side's socket is backed up (its send buffer full), since a send may then wait for the drain and a reader
must never wait on the other side: the frame goes to the queue, where the backpressure policy below applies.
- per tool call: one task; ``end_call`` adds a hang-up task, ``transfer_call`` a transfer task, inbound DTMF in
  ``dtmf_mode = "reply"`` a delivery task (call control, issue #8: README "Call control").

Backpressure policy (README "Failure behaviour"):
- caller → agent: a deque bounded to ``audio.preready_buffer_ms``; when full (agent not ready, resuming, or slow)
  the OLDEST frame is dropped and ``frames_dropped_to_agent`` counts it. Frames whose send failed because the
  agent socket dropped go back to the front of the deque (or, if it is full, are dropped as the oldest).
- agent → caller: a deque bounded to ``audio.outbound_buffer_s``; when full the agent reader waits (the agent
  sends at real time, so this only bites if the carrier stops draining), and after ``audio.outbound_buffer_s`` of
  waiting the call ends (``carrier_stalled``). Paced by the playout model.

Agent faults (voice-agent-api.md §4.3, §5; README "Failure behaviour"):
- connect: ``agent.connect_attempts`` attempts with exponential backoff from 250 ms; a socket that closes before
  ``session.ready`` or a retryable ``session.error`` (``RETRYABLE_CONNECT_CODES``) counts as a failed attempt.
- an UNCLEAN drop after ready (socket closed without ``session.ended``): ``session.resume`` on a new socket with
  fresh auth, backoff 0, 0.25, 0.5 … 2 s, within ``RESUME_WINDOW_S`` (inside the server's 30 s window). Caller
  audio is buffered meanwhile (policy above) and delivered after ``session.ready``; a server that just carries on
  (no ``session.ready`` within ``RESUME_QUIET_S``, or another event first) is accepted too. A reply cut by the drop
  is treated as ended (the carrier keeps what it already has; held tool results are sent after the resume).
- final: ``FINAL_RESUME_CODES``, any other fatal ``session.error``, or no resume within the window: the call ends
  with the bundled apology (:mod:`gateway.prompts`), played paced and confirmed by a mark echo (with a timeout).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import structlog
from aiohttp import WSMsgType, web

from .agent import protocol as ap
from .agent.client import AgentClosed, AgentConnection, AgentEndpoint
from .call import events
from .call.carrier_control import CarrierControl, NoCarrierControl
from .audio import dtmf as dtmf_tones
from .audio.transcode import InboundAudio, OutboundAudio, agent_format_spec
from .carriers.base import Dialect
from .carriers.events import (
    AudioReceived,
    DtmfReceived,
    PlaybackCheckpoint,
    PlaybackCleared,
    StreamConnected,
    StreamError,
    StreamStarted,
    StreamStopped,
)
from .carriers.registry import TwilioDialect
from .config import Profile, Settings
from .errors import (
    AgentProtocolError,
    AgentSessionError,
    AgentUnavailable,
    CallControlFailed,
    CallEnded,
    CarrierProtocolError,
    Outcome,
    UnauthorizedStream,
)
from .logs import mask_number
from .outbound import OUTBOUND_PARAM, fill_template, token_subject, variables_from_parameters
from .playout import PlayoutTracker
from .prompts import AGENT_UNAVAILABLE, GOODBYE, prompt_ulaw
from .reattach import ParkedAgent, ParkedAgents
from .security import TokenError, verify_call_token
from .tools import call_control as cc
from .tools.gate import PendingResult, ToolResultGate
from .tools.registry import ToolOutcome, ToolRegistry

__all__ = ["CallSession", "CallSummary"]

FRAME_MS = 20
_MARK = object()  # an outbound queue item meaning "send a mark here"
#: How long to keep trying to resume a dropped agent session: inside the server's 30 s window (§4.3), with margin
#: for the last attempt's handshake (SDK-DI gives up after about 25 s too).
RESUME_WINDOW_S = 25.0
#: After ``session.resume``, how long to wait for ``session.ready`` before assuming a server that just carries on.
RESUME_QUIET_S = 1.0
#: A prompt must be confirmed by its mark echo within its own length plus this (carrier round trip, jitter).
PROMPT_ECHO_SLACK_S = 2.0
#: At hang-up, how long the carrier's close handshake may take before the connection is dropped.
CARRIER_CLOSE_TIMEOUT_S = 2.0
#: Which call outcomes the gateway ends with a spoken prompt of its own (README "Failure behaviour").
_PROMPT_FOR_OUTCOME = {
    Outcome.AGENT_UNAVAILABLE: AGENT_UNAVAILABLE,  # unreachable, or lost and not resumable
    Outcome.AGENT_ERROR: AGENT_UNAVAILABLE,  # fatal session.error
    Outcome.AT_CAPACITY: AGENT_UNAVAILABLE,  # authorized stream but no slot left at 'start'
    Outcome.DRAINED: GOODBYE,  # shutdown: the drain budget ran out
    Outcome.MAX_DURATION: GOODBYE,  # server.max_call_s
}


@dataclass
class CallSummary:
    """What ``call.ended`` reports; also what metrics are derived from."""

    call_sid: str = ""
    stream_sid: str = ""
    session_id: str = ""
    profile: str = ""
    outcome: str = ""  # caller_hangup | agent_hangup | agent_ended | refused | protocol_error | agent_unavailable | …
    hung_up_by: str = ""  # caller | agent | gateway
    duration_s: float = 0.0
    turns: int = 0
    replies: int = 0
    interruptions: int = 0
    tool_calls: int = 0
    frames_in: int = 0
    frames_to_agent: int = 0
    frames_dropped_to_agent: int = 0
    frames_out: int = 0
    agent_resumes: int = 0
    resume_gaps_ms: list[float] = field(default_factory=list)  # agent drop noticed → session resumed
    prompt: str = ""  # bundled prompt the gateway played itself (gateway.prompts), if any
    time_to_first_agent_audio_ms: float | None = None
    response_latencies_ms: list[float] = field(default_factory=list)
    clear_latencies_ms: list[float] = field(default_factory=list)
    mark_round_trips_ms: list[float] = field(default_factory=list)  # mark sent → echoed (carrier buffer depth)
    stale_mark_echoes: int = 0
    agent_close_code: int | None = None
    error: str = ""

    def log_fields(self) -> dict[str, Any]:
        lat = sorted(self.response_latencies_ms)
        return {
            "outcome": self.outcome,
            "hung_up_by": self.hung_up_by,
            "duration_s": round(self.duration_s, 3),
            "profile": self.profile,
            "turns": self.turns,
            "replies": self.replies,
            "interruptions": self.interruptions,
            "tool_calls": self.tool_calls,
            "frames_in": self.frames_in,
            "frames_to_agent": self.frames_to_agent,
            "frames_dropped_to_agent": self.frames_dropped_to_agent,
            "frames_out": self.frames_out,
            "agent_resumes": self.agent_resumes,
            **({"prompt": self.prompt} if self.prompt else {}),
            "time_to_first_agent_audio_ms": _r(self.time_to_first_agent_audio_ms),
            "response_latency_median_ms": _r(lat[len(lat) // 2]) if lat else None,
            "stale_mark_echoes": self.stale_mark_echoes,
            "agent_close_code": self.agent_close_code,
            **({"error": self.error} if self.error else {}),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


_HANGUP_BY = {
    Outcome.CALLER_HANGUP: "caller",
    Outcome.CARRIER_CLOSED: "caller",
    Outcome.AGENT_HANGUP: "agent",
    Outcome.AGENT_ENDED: "agent",
    Outcome.TRANSFERRED: "agent",  # transfer_call: the agent handed the caller on
    Outcome.CALL_COMPLETED: "caller",  # Twilio's completed status callback for a stream still live here
}


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
        on_event: Callable[[events.CallEvent], None] | None = None,
        admit: Callable[[str, str], str | None] | None = None,
        resume_window_s: float | None = None,
        dialect: Dialect | None = None,
        call_control: CarrierControl | None = None,
        parked: ParkedAgents | None = None,
        stream_stopping: Callable[[str], bool] | None = None,
        token_scope: str | None = None,
    ) -> None:
        """``admit(call_sid, token)``: called once the stream's token verified; returns None to admit the call or
        a refusal (``gateway.admission``: ``token_in_use`` → refused, ``at_capacity`` → apology and hang-up).
        Call control (issue #8): ``call_control``, the carrier's own (gateway.call.carrier_control: Twilio REST for
        the twilio door when configured, else none) for REST hang-up and transfer;
        ``parked`` the re-attach registry (:mod:`gateway.reattach`); ``stream_stopping(call_sid)`` says whether
        another stream of that call is still winding down here (its agent session may be about to park)."""
        self._ws = ws
        # The carrier socket's transport, for _carrier_backlogged(): aiohttp keeps it on the prepared response's
        # writer and exposes no public accessor there (test_reliability_agent_faults.py fails if that moves).
        self._carrier_transport = getattr(getattr(ws, "_writer", None), "transport", None)
        self._settings = settings
        self._endpoint = endpoint
        self._tools = tools
        self._clock = clock
        self._wall = wall_clock
        self._on_summary = on_summary
        self._on_event = on_event
        self._admit = admit
        self._resume_window_s = RESUME_WINDOW_S if resume_window_s is None else resume_window_s
        self._log = structlog.get_logger("gateway.call")
        # The carrier's protocol (gateway.carriers.base.Dialect); Twilio unless the route says otherwise (issue #9).
        self.dialect: Dialect = dialect if dialect is not None else TwilioDialect()
        # The stream door this socket came in through: its token must have been minted for that door
        # (gateway.security; the softphone speaks Twilio's dialect at a door of its own).
        self._token_scope = token_scope or self.dialect.carrier
        self._stream_format = ("audio/pcmu", 8000)  # the stream's (encoding, rate), from 'start'
        self._clock_marks: list[asyncio.TimerHandle] = []  # marks resolved by the clock (dialects without a checkpoint)
        self.summary = CallSummary()
        self.profile: Profile = settings.profiles["default"]
        audio = settings.audio
        # caller → agent
        self._to_agent: deque[bytes] = deque(maxlen=max(1, audio.preready_buffer_ms // FRAME_MS))
        self._to_agent_wake = asyncio.Event()
        self._agent_sending = False  # an input.audio send is in flight (either path)
        self._agent_ready = asyncio.Event()
        # agent → caller: items are (generation, reply_id, frame bytes | _MARK)
        self._out: deque[tuple[int, str | None, Any]] = deque()
        self._out_max = max(50, int(audio.outbound_buffer_s * 1000 / FRAME_MS))
        self._out_wake = asyncio.Event()
        self._out_space = asyncio.Event()
        self._out_space.set()
        self._send_lock = asyncio.Lock()
        self.playout = PlayoutTracker()
        self._gate = ToolResultGate()
        self._inbound: InboundAudio | None = None
        self._outbound: OutboundAudio | None = None
        self._agent: AgentConnection | None = None
        self._agent_ended = False
        self._deferred_results: list[PendingResult] = []  # tool results to send once a dropped agent is back
        self._tg: asyncio.TaskGroup | None = None
        self.started = False  # 'start' received and authorized: the call's tasks run
        self._authorized = False  # the stream's token verified
        self._close_task: asyncio.Task[bool] | None = None
        self._end_requested = asyncio.Event()  # request_end(): the process is draining
        self._media_at = clock()  # last caller media (the watchdog's no-media deadline)
        # reply state
        self._reply_id: str | None = None
        self._reply_active = False
        self._interrupted: set[str | None] = set()
        self._awaiting_first_audio_since: float | None = None
        self._barge_in_at: float | None = None
        self._ms_since_mark = 0
        # call control
        self._hangup_requested = False
        self._hangup_mark: str | None = None
        self._hangup_mark_echoed = asyncio.Event()
        self._reply_done_event = asyncio.Event()
        self._reply_started_event = asyncio.Event()
        self._started_at = clock()
        self._session_ready_at: float | None = None
        # call control (issue #8)
        self._control: CarrierControl = call_control or NoCarrierControl(self._token_scope, "not_on_this_carrier")
        self._parked = parked
        self._stream_stopping = stream_stopping
        self._end_reason = Outcome.DRAINED  # what request_end() ends the call as
        self._rest_pending = False  # our REST hang-up/redirect is ending the stream: its 'stop' is expected
        self._reattached_from: str | None = None  # stream_sid whose agent session this stream took over
        self._dtmf = cc.DtmfInbox("off")
        self._dtmf_task: asyncio.Task[None] | None = None
        self._mark_waiters: dict[str, asyncio.Event] = {}  # queue tag -> set when its mark is echoed
        self._mark_names: dict[str, asyncio.Event] = {}  # mark name sent -> the waiter of its tag
        self._dtmf_sends = 0

    # ================================================================================================= lifecycle
    async def run(self) -> CallSummary:
        """Serve the call until it ends for any reason. Never raises (except cancellation)."""
        outcome = Outcome.CARRIER_CLOSED
        try:
            start = await self._await_start()
            self._authorize(start)
            self._begin(start)
            self.started = True
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tg.create_task(self._carrier_reader(), name="carrier_reader")
                tg.create_task(self._agent_runner(), name="agent_runner")
                tg.create_task(self._agent_sender(), name="agent_sender")
                tg.create_task(self._carrier_writer(), name="carrier_writer")
                tg.create_task(self._watchdog(), name="watchdog")
        except* CallEnded as eg:
            outcome = _first(eg, CallEnded).reason
        except* UnauthorizedStream as eg:
            outcome = Outcome.REFUSED
            self.summary.error = str(_first(eg, UnauthorizedStream))
            self._log.warning("call.refused", reason=self.summary.error)
        except* CarrierProtocolError as eg:
            outcome = Outcome.PROTOCOL_ERROR
            self.summary.error = str(_first(eg, CarrierProtocolError))
            self._log.warning("call.protocol_error", side="carrier", error=self.summary.error)
            self._emit(events.ProtocolViolation("carrier", t=self._t()))
        except* AgentSessionError as eg:
            err = _first(eg, AgentSessionError)
            outcome = Outcome.AGENT_ERROR
            self.summary.error = f"{err.code}: {err.message}"
            self._log.warning("agent.session_error", code=err.code, message=err.message, fatal=True)
        except* AgentUnavailable as eg:
            outcome = Outcome.AGENT_UNAVAILABLE
            self.summary.error = str(_first(eg, AgentUnavailable))
            self._log.error("agent.unavailable", error=self.summary.error)
        except* AgentProtocolError as eg:
            outcome = Outcome.PROTOCOL_ERROR
            self.summary.error = str(_first(eg, AgentProtocolError))
            self._log.warning("call.protocol_error", side="agent", error=self.summary.error)
            self._emit(events.ProtocolViolation("agent", t=self._t()))
        except* Exception as eg:  # our bug: log once, at the boundary, with the call's context
            outcome = Outcome.INTERNAL_ERROR
            self.summary.error = repr(eg.exceptions[0])
            self._log.error("call.internal_error", exc_info=eg.exceptions[0])
        finally:
            self._tg = None
            await asyncio.shield(self._teardown(outcome))
        return self.summary

    def request_end(self, reason: str = "drained") -> None:
        """End the call from outside (the process drains): a live call says the goodbye prompt and hangs up; a
        stream still waiting for ``start`` is closed at once. Idempotent; returns immediately."""
        if self._end_requested.is_set():
            return
        # The outcome: "call_completed" (Twilio says the call is over: nobody to say goodbye to), else "drained"
        # (the goodbye prompt).
        self._end_reason = Outcome.CALL_COMPLETED if reason == "call_completed" else Outcome.DRAINED
        self._end_requested.set()
        self._log.info("call.end_requested", reason=reason)
        if not self.started and not self._ws.closed:
            # No call yet (so nothing to say): closing the socket makes _await_start see CLOSE. The task is held so
            # it cannot be collected mid-flight; it ends with the close handshake (bounded by aiohttp's timeout).
            self._close_task = asyncio.get_running_loop().create_task(
                self._ws.close(code=1001, message=b"server shutdown"), name="close_unstarted"
            )

    async def _teardown(self, outcome: Outcome | str) -> None:
        for handle in self._clock_marks:
            handle.cancel()
        s = self.summary
        s.outcome = outcome
        s.hung_up_by = _HANGUP_BY.get(outcome, "gateway")
        agent = self._agent
        if agent is not None and not self._park_agent(agent, outcome):
            await self._end_agent_session(agent)
            s.agent_close_code = agent.close_code
            self._log.info(
                "agent.closed",
                close_code=agent.close_code,
                reason=agent.close_reason,
                session_id=s.session_id or None,
                endpoint=agent.endpoint.name,
            )
        prompt = _PROMPT_FOR_OUTCOME.get(outcome)
        if prompt is not None and self._authorized and not self._ws.closed:
            await self._play_prompt(prompt, clear_first=prompt == GOODBYE)
        s.duration_s = self._clock() - self._started_at
        s.stale_mark_echoes = self.playout.stale_echoes
        if not self._ws.closed:
            # Under <Connect><Stream> closing the socket ends the call (telephony.md §A.7).
            await self._close_carrier(1008 if outcome == "refused" else 1000)
        if s.session_id:  # bound in agent_runner's task context only; the summary line must carry it too
            structlog.contextvars.bind_contextvars(session_id=s.session_id)
        self._log.info("call.ended", **s.log_fields())
        self._emit(events.CallEnd(s.log_fields(), t=self._t()))
        if self._on_summary is not None:
            self._on_summary(s)

    async def _close_carrier(self, code: int) -> None:
        """Close the carrier socket, bounded. A carrier that reads nothing (its socket backed up) cannot take a close
        frame, and aiohttp's close would wait for the drain: drop the connection instead, which ends the call at the
        carrier just the same. aiohttp's close cut short by the bound closes the transport itself, but it can
        surface as CancelledError rather than TimeoutError; unless this task really is being cancelled, that is
        the bound too, and must not skip the call's summary (call.ended)."""
        transport = self._carrier_transport
        if transport is not None and self._carrier_backlogged():
            transport.abort()
            return
        try:
            async with asyncio.timeout(CARRIER_CLOSE_TIMEOUT_S):
                await self._ws.close(code=code)
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        if transport is not None and not transport.is_closing():
            transport.abort()

    async def _play_prompt(self, name: str, *, clear_first: bool) -> None:
        """Say a bundled prompt to the caller (no agent involved), paced like agent audio, then wait for the mark
        echo that proves it was heard (telephony.md §D.4: wait for the final mark before hanging up), bounded by
        the prompt's length plus ``PROMPT_ECHO_SLACK_S``. Runs after the call's task group has ended, so it reads
        the carrier socket itself."""
        frames = self._prompt_frames(name)
        per_msg = self._frames_per_message()
        lead_target = self._lead_target_ms()
        heard = False
        self.summary.prompt = name
        try:
            async with asyncio.timeout(len(frames) * FRAME_MS / 1000 + PROMPT_ECHO_SLACK_S):
                now = self._clock()
                if clear_first and self.playout.playing(now):
                    await self._send_carrier(self.dialect.build_clear())  # cut the agent short: goodbye now
                    self.playout.clear(now)
                for i in range(0, len(frames), per_msg):
                    group = self._padded(frames[i : i + per_msg])
                    lead = self.playout.lead_ms(self._clock())
                    if lead > lead_target - FRAME_MS:
                        await asyncio.sleep((lead - lead_target + FRAME_MS) / 1000.0)
                    await self._send_carrier(self.dialect.build_media(b"".join(group)))
                    self.playout.on_sent(FRAME_MS * len(group), self._clock(), "__prompt__")
                    self.summary.frames_out += len(group)
                mark = self.playout.new_mark(self._clock(), "__prompt__")
                built = self.dialect.build_mark(mark)
                if built is None:  # no checkpoint verb: the clock model says when it has played
                    await asyncio.sleep(self.playout.lead_ms(self._clock()) / 1000.0)
                    heard = True
                else:
                    await self._send_carrier(built)
                stopped = False
                while not heard and not stopped:
                    for ev in self.dialect.parse(await self._receive_text()):
                        if isinstance(ev, PlaybackCheckpoint):
                            echo = self.playout.on_mark(ev.name, self._clock())
                            heard = heard or (echo is not None and ev.name == mark)
                        elif isinstance(ev, StreamStopped):
                            stopped = True
        except (TimeoutError, CallEnded, CarrierProtocolError):
            pass  # the caller hung up, the line misbehaves, or the echo is late: hang up anyway
        self._log.info("call.prompt_played", prompt=name, heard=heard, ms=len(frames) * FRAME_MS)

    def _prompt_frames(self, name: str) -> list[bytes]:
        """A bundled prompt (8 kHz μ-law) as whole 20 ms frames in the stream's own encoding and rate."""
        encoding, rate = self._stream_format
        audio = prompt_ulaw(name)
        if (encoding, rate) == ("audio/pcmu", 8000):
            fb = self.dialect.frame_bytes
            return [audio[i : i + fb] for i in range(0, len(audio), fb)]
        conv = OutboundAudio("pcmu", encoding, rate, self.dialect.frame_bytes, "MQ")
        return conv.convert(audio) + conv.flush()

    def _frames_per_message(self) -> int:
        """Frames per outbound media message: the configured count, within the dialect's bounds (Exotel ≥ 100 ms and
        ≥ 3.2 KB, Vonage exactly one 20 ms frame; telephony.md §A.10, §D.2)."""
        lo = max(1, self.dialect.min_message_ms // FRAME_MS)
        hi = max(lo, self.dialect.max_message_ms // FRAME_MS)
        return min(max(self._settings.audio.frames_per_message, lo), hi)

    def _lead_target_ms(self) -> float:
        """Pacing target, never above what the carrier can buffer (Vonage: 3072 messages, §A.10)."""
        target = self._settings.audio.playout_lead_ms
        limit = self.dialect.max_lead_ms
        return target if limit is None else min(target, limit)

    def _padded(self, frames: list[bytes]) -> list[bytes]:
        """Pad a message up to the dialect's minimum with silence frames (the tail of a reply on Exotel)."""
        missing = self.dialect.min_message_ms // FRAME_MS - len(frames)
        if missing <= 0:
            return frames
        return frames + [bytes([self.dialect.silence]) * self.dialect.frame_bytes] * missing

    async def _end_agent_session(self, agent: AgentConnection) -> None:
        """``session.end``, wait briefly for ``session.ended``, close (unless the agent already ended it)."""
        if self._agent_ended:
            await agent.end(0)  # just close
        elif await agent.end(self._settings.agent.end_timeout_s):
            self._agent_ended = True

    def _emit(self, event: events.CallEvent) -> None:
        """Per-call timeline for live viewers and metrics (gateway.call.events). Never per frame."""
        if self._on_event is not None:
            self._on_event(event)

    def _t(self) -> float:
        return round(self._clock() - self._started_at, 3)

    # ================================================================================================ start-up
    async def _await_start(self) -> StreamStarted:
        timeout = self._settings.server.start_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for ev in self.dialect.parse(await self._receive_text()):
                        if isinstance(ev, StreamStarted):
                            return ev
                        if not isinstance(ev, StreamConnected):  # pragma: no cover - dialect raises first
                            raise CarrierProtocolError(f"{type(ev).__name__} before start")
        except TimeoutError:
            raise CallEnded(Outcome.NO_START) from None

    async def _receive_text(self, timeout: float | None = None) -> str | bytes:
        """The next carrier message: ``str`` for a text frame, ``bytes`` for a binary one (Vonage audio); the
        dialect decides whether its carrier may send binary (Twilio's refuses it)."""
        msg = await self._ws.receive(timeout=timeout)
        if msg.type is WSMsgType.TEXT or msg.type is WSMsgType.BINARY:
            return msg.data
        if msg.type is WSMsgType.ERROR:
            exc = self._ws.exception()
            # aiohttp's WebSocketError carries close code 1009 (message too big) for max_msg_size.
            if getattr(exc, "code", None) == 1009 or "message size" in str(exc).lower():
                raise CarrierProtocolError(f"message over {self._settings.server.max_message_bytes} bytes")
            raise CallEnded(Outcome.CARRIER_CLOSED)
        raise CallEnded(Outcome.CARRIER_CLOSED)  # CLOSE / CLOSING / CLOSED

    def _authorize(self, start: StreamStarted) -> None:
        self._stream_format = (start.encoding, start.sample_rate)
        s = self.summary
        s.call_sid, s.stream_sid = start.call_id, start.stream_id
        structlog.contextvars.bind_contextvars(call_sid=start.call_id, stream_sid=start.stream_id)
        params = start.custom_parameters
        token = params.get("token")
        try:
            verify_call_token(self._settings.secrets.token_secret, token,
                              token_subject(params, start.call_id, self._profile_name(params)), self._wall(),
                              scope=self._token_scope)
        except TokenError as exc:
            raise UnauthorizedStream(f"call token {exc}") from None
        assert token is not None  # verified above
        self._authorized = True  # from here on the gateway may speak to this caller (prompts)
        refusal = self._admit(start.call_id, token) if self._admit is not None else None
        if refusal == "token_in_use":
            # A replayed 'start': this token already carries a live call of this process (gateway.admission).
            raise UnauthorizedStream("call token already in use by a live call")
        if refusal is not None:
            self._log.warning("call.refused", reason=refusal)
            raise CallEnded(Outcome(refusal))

    def _profile_name(self, params: Mapping[str, str]) -> str:
        """The profile this stream asks for: an outbound call's ``profile`` parameter (its token covers every
        parameter), else the one its called number maps to (the token covers that name too)."""
        if params.get(OUTBOUND_PARAM) and params.get("profile") in self._settings.profiles:
            return params["profile"]
        return self._settings.profile_for(params.get("to", ""))[0]

    def _begin(self, start: StreamStarted) -> None:
        params = start.custom_parameters
        name = self._profile_name(params)
        self.profile = self._settings.profiles[name]
        if params.get(OUTBOUND_PARAM):
            # An outbound call (POST /calls): its token is bound to these parameters, so they can be trusted.
            variables = variables_from_parameters(params)
            p = self._settings.profiles[name]
            self.profile = dataclasses.replace(p, system_prompt=fill_template(p.system_prompt, variables),
                                               greeting=fill_template(p.greeting, variables))
        self.summary.profile = name
        self._dtmf = cc.DtmfInbox(self.profile.dtmf_mode, self.profile.dtmf_interdigit_ms / 1000.0)
        audio = self._settings.audio
        self._inbound = InboundAudio(
            start.encoding, start.sample_rate, audio.agent_format, audio.inbound_resample_quality
        )
        self._outbound = OutboundAudio(
            audio.agent_format,
            start.encoding,
            start.sample_rate,
            self.dialect.frame_bytes,
            audio.outbound_resample_quality,
        )
        self._log.info(
            "call.started",
            carrier=self.dialect.carrier,
            account_sid=start.account_id,
            from_=mask_number(params.get("from")),
            to=mask_number(params.get("to")),
            profile=name,
            agent_format=audio.agent_format,
            endpoint=self._endpoint.name,
        )
        self._emit(events.CallStarted(start.call_id, name, t=self._t()))

    # =========================================================================================== carrier side
    async def _carrier_reader(self) -> None:
        # No timeout per receive (a timer per message, 50 a second per call): the watchdog ends a line without
        # media (no_media_timeout_s) from self._media_at.
        while True:
            text = await self._receive_text()
            for ev in self.dialect.parse(text):
                if isinstance(ev, AudioReceived):
                    self._media_at = self._clock()
                    await self._on_caller_audio(ev.payload)
                elif isinstance(ev, PlaybackCheckpoint):
                    self._on_mark(ev.name)
                elif isinstance(ev, PlaybackCleared):
                    # Plivo clearedAudio / Vonage websocket:cleared: the clear took effect (the model assumed so).
                    self._emit(events.CarrierCleared(t=self._t()))
                elif isinstance(ev, StreamError):
                    self._log.warning("carrier.stream_error", carrier=self.dialect.carrier, code=ev.code,
                                      detail=ev.detail)
                elif isinstance(ev, DtmfReceived):
                    # Digits can be PINs or card numbers: count them, never log them.
                    self._log.info("call.dtmf")
                    self._on_caller_dtmf(ev.digit)
                elif isinstance(ev, StreamStopped):
                    if self._rest_pending:
                        return  # our REST hang-up/redirect stopped it: that task ends the call once Twilio answered
                    raise CallEnded(Outcome.CALLER_HANGUP)

    async def _on_caller_audio(self, payload: bytes) -> None:
        assert self._inbound is not None
        self.summary.frames_in += 1
        data = self._inbound.convert(payload)
        if not data:
            return
        q = self._to_agent
        agent = self._agent
        if (not q and not self._agent_sending and agent is not None and self._agent_ready.is_set()
                and not agent.backlogged()):
            # Fast path, the steady state: nothing is waiting before this frame, so it goes out from here instead
            # of waking agent_sender 50 times a second. A backlog (before ready, during a resume, or an agent
            # socket whose send buffer is full, where a send could wait for the drain and stall this reader, its
            # marks and its `stop`) goes through the deque and agent_sender, which keep the order, the coalescing
            # and the drop-oldest policy.
            await self._send_audio_to_agent(agent, [data])
            return
        if len(q) == q.maxlen:
            self.summary.frames_dropped_to_agent += 1  # drop-oldest policy (deque maxlen)
        q.append(data)
        self._to_agent_wake.set()

    def _on_mark(self, name: str) -> None:
        echo = self.playout.on_mark(name, self._clock())
        if echo is not None:
            self.summary.mark_round_trips_ms.append(echo.round_trip_s * 1000)
            if name == self._hangup_mark:
                self._hangup_mark_echoed.set()
        waiter = self._mark_names.pop(name, None)
        if waiter is not None and echo is not None:
            waiter.set()

    async def _send_carrier(self, data: str | bytes) -> None:
        try:
            if isinstance(data, bytes):
                await self._ws.send_bytes(data)  # Vonage audio
            else:
                await self._ws.send_str(data)
        except ConnectionError:
            raise CallEnded(Outcome.CARRIER_CLOSED) from None

    async def _carrier_writer(self) -> None:
        lead_target = self._lead_target_ms()
        per_msg = self._frames_per_message()
        min_frames = max(1, self.dialect.min_message_ms // FRAME_MS)
        out = self._out
        short_since: float | None = None  # Exotel: when we started waiting for a whole minimum message
        while True:
            if not out:
                self._out_wake.clear()
                await self._out_wake.wait()
                continue
            now = self._clock()
            lead = self.playout.lead_ms(now)
            if lead > lead_target - FRAME_MS:
                # Pacing: keep at most lead_target ms queued at the carrier (telephony.md §D.1 hybrid policy).
                await asyncio.sleep((lead - lead_target + FRAME_MS) / 1000.0)
                continue
            if min_frames > 1 and out[0][2] is not _MARK:
                # A carrier with a minimum message (Exotel, §D.2): wait for enough audio of this reply, unless it
                # ended (a mark or a new generation follows) or the agent went quiet for two message lengths.
                run = 0
                for g, _r, it in out:
                    if it is _MARK or g != out[0][0] or run >= min_frames:
                        break
                    run += 1
                whole = run >= min_frames or run < len(out) or not self._reply_active
                if not whole:
                    short_since = short_since if short_since is not None else now
                    if now - short_since < 2 * self.dialect.min_message_ms / 1000.0:
                        self._out_wake.clear()
                        try:
                            async with asyncio.timeout(FRAME_MS / 1000.0):
                                await self._out_wake.wait()
                        except TimeoutError:
                            pass
                        continue
                short_since = None
            gen, reply_id, item = out.popleft()
            if item is _MARK:
                async with self._send_lock:
                    if gen == self.playout.generation:
                        await self._send_mark(reply_id, now)
                continue
            frames = [item]
            while len(frames) < per_msg and out and out[0][2] is not _MARK and out[0][0] == gen:
                frames.append(out.popleft()[2])
            if len(out) < self._out_max:
                self._out_space.set()
            async with self._send_lock:
                if gen != self.playout.generation:
                    continue  # cleared by a barge-in while we waited: never send it
                await self._send_media(reply_id, frames)

    async def _send_media(self, reply_id: str | None, frames: list[bytes]) -> None:
        """One ``media`` message of ``frames`` (the caller holds ``_send_lock`` and checked the generation), its
        playout accounting, and a mark every ``audio.mark_interval_ms``."""
        frames = self._padded(frames)
        await self._send_carrier(self.dialect.build_media(b"".join(frames) if len(frames) > 1 else frames[0]))
        dur = FRAME_MS * len(frames)
        self.playout.on_sent(dur, self._clock(), reply_id)
        self.summary.frames_out += len(frames)
        self._ms_since_mark += dur
        if self._ms_since_mark >= self._settings.audio.mark_interval_ms:
            await self._send_mark(reply_id, self._clock())

    async def _play_or_queue(self, reply_id: str | None, frames: list[bytes]) -> None:
        """Agent audio for the caller. Fast path, the steady state: nothing queued before it, the writer not in the
        middle of a send (it pops and takes the lock without yielding, so an unlocked lock means it holds nothing),
        the carrier socket not backed up, and the carrier's lead under target: send from here (the agent reader)
        instead of waking carrier_writer.
        Everything that must wait stays with the writer: paced backlog, marks queued behind audio, carriers with a
        minimum message (Exotel)."""
        if (not self._out and not self._send_lock.locked() and self.dialect.min_message_ms <= FRAME_MS
                and not self._carrier_backlogged()):
            per_msg = self._frames_per_message()
            ceiling = self._lead_target_ms() - FRAME_MS
            sent = 0
            async with self._send_lock:
                while sent < len(frames) and self.playout.lead_ms(self._clock()) <= ceiling:
                    await self._send_media(reply_id, frames[sent : sent + per_msg])
                    sent += per_msg
            frames = frames[sent:]
            if not frames:
                return
        await self._queue_out(reply_id, frames)

    def _carrier_backlogged(self) -> bool:
        """Bytes wait in user space for the carrier socket (its send buffer is full: the carrier or the network is
        not keeping up). A send now may wait for the drain, so the agent reader must not make it itself: the frames
        go to the writer's queue, and the agent reader goes on reading events (barge-in, tools, errors)."""
        transport = self._carrier_transport
        return transport is not None and transport.get_write_buffer_size() > 0

    async def _send_mark(self, reply_id: str | None, now: float) -> str:
        name = self.playout.new_mark(now, reply_id)
        self._ms_since_mark = 0
        built = self.dialect.build_mark(name)
        if built is None:
            # No checkpoint verb at this carrier: resolve the mark when the clock model says the audio before it
            # has played (the handles are cancelled at teardown, so none outlives the call).
            delay = self.playout.lead_ms(now) / 1000.0
            self._clock_marks.append(asyncio.get_running_loop().call_later(delay, self._on_mark, name))
        else:
            await self._send_carrier(built)
        if reply_id == "__hangup__":
            self._hangup_mark = name
        if reply_id is not None and reply_id in self._mark_waiters:
            self._mark_names[name] = self._mark_waiters.pop(reply_id)
        return name

    async def _queue_out(self, reply_id: str | None, frames: list[bytes]) -> None:
        gen = self.playout.generation
        for f in frames:
            if len(self._out) >= self._out_max:
                self._out_space.clear()
                try:
                    async with asyncio.timeout(self._settings.audio.outbound_buffer_s):
                        await self._out_space.wait()
                except TimeoutError:
                    raise CallEnded(Outcome.CARRIER_STALLED) from None
                if gen != self.playout.generation:
                    return  # a barge-in happened while we waited
            self._out.append((gen, reply_id, f))
        self._out_wake.set()

    def _queue_mark(self, reply_id: str | None) -> None:
        self._out.append((self.playout.generation, reply_id, _MARK))
        self._out_wake.set()

    async def _barge_in(self, reply_id: str | None, cause: str) -> None:
        """Flush everything of the interrupted reply, here and at the carrier, before anything else is sent."""
        assert self._outbound is not None
        if reply_id is not None:
            self._interrupted.add(reply_id)
        async with self._send_lock:
            now = self._clock()
            queued_ms = sum(FRAME_MS for *_, item in self._out if item is not _MARK)
            unplayed_ms = self.playout.lead_ms(now)
            if queued_ms or unplayed_ms:
                self._out.clear()
                self._out_space.set()
                await self._send_carrier(self.dialect.build_clear())
                self.playout.clear(now)
            # The converter may hold a tail of the reply (a part frame, the resampler's block) even when nothing
            # of it is queued or playing (its audio stalled): drop it in every case, or it opens the next reply.
            # After the clear, not before: a soxr reset costs ≈ 70 µs, and only this task converts agent audio.
            self._outbound.reset()
        if not queued_ms and not unplayed_ms:
            return  # nothing of it was left at the carrier or in the queue: no clear was needed
        self.summary.interruptions += 1
        if self._barge_in_at is not None:
            self.summary.clear_latencies_ms.append((self._clock() - self._barge_in_at) * 1000)
        self._emit(events.BargeIn(reply_id, cause, round(unplayed_ms), t=self._t()))
        self._log.info(
            "call.barge_in",
            reply_id=reply_id,
            cause=cause,
            dropped_queued_ms=queued_ms,
            dropped_unplayed_ms=round(unplayed_ms),
            heard_ms=self.playout.reply_played_ms.get(reply_id),
        )

    # ============================================================================================== agent side
    def _session_config(self) -> dict[str, Any]:
        p = self.profile
        fmt = agent_format_spec(self._settings.audio.agent_format)
        session: dict[str, Any] = {
            "system_prompt": p.system_prompt,
            "greeting": p.greeting or None,
            "input": {
                "format": fmt,
                "keyterms": list(p.keyterms) or None,
                "turn_detection": dict(p.turn_detection) or None,
            },
            "output": {"voice": p.voice, "format": fmt},
            "tools": self._tools.declarations(p),
        }
        return session

    async def _open_agent_session(self) -> ap.SessionReady:
        """Connect and configure a new session: ``agent.connect_attempts`` attempts, backoff from 250 ms. A socket
        that closes before ``session.ready``, no ready in time, or a retryable ``session.error`` (§5.1
        ``RETRYABLE_CONNECT_CODES``) is a failed attempt; any other fatal ``session.error`` ends the call at once."""
        cfg = self._settings.agent
        delay = 0.25
        for attempt in range(1, cfg.connect_attempts + 1):
            try:
                agent = self._agent = await AgentConnection.open(self._endpoint, timeout=cfg.connect_timeout_s)
                return await self._await_ready(agent, ap.session_update(self._session_config()))
            except AgentUnavailable as exc:
                if isinstance(exc, AgentSessionError) and exc.code not in ap.RETRYABLE_CONNECT_CODES:
                    raise
                self._log.warning("agent.connect_failed", attempt=attempt, error=str(exc))
                if attempt == cfg.connect_attempts:
                    raise
                await self._discard_agent()
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _await_ready(self, agent: AgentConnection, first_message: str) -> ap.SessionReady:
        try:
            try:
                await agent.send(first_message)
            except AgentClosed:
                pass  # the server may have refused us on open (§1.2: session.error, then 1008): read why below
            async with asyncio.timeout(self._settings.agent.ready_timeout_s):
                while True:
                    ev = await agent.recv()
                    if isinstance(ev, ap.SessionReady):
                        return ev
                    if isinstance(ev, ap.SessionEnded):
                        raise AgentUnavailable("session.ended before session.ready")
                    await self._on_agent_event(ev)  # session.updated; a fatal session.error raises here
        except TimeoutError:
            raise AgentUnavailable("no session.ready in time") from None
        except AgentClosed as exc:
            raise AgentUnavailable(f"agent closed before ready ({exc.code} {exc.reason})") from None

    async def _discard_agent(self) -> None:
        agent, self._agent = self._agent, None
        if agent is not None:
            try:
                async with asyncio.timeout(2):
                    await agent.close()
            except (TimeoutError, OSError):
                pass

    async def _agent_runner(self) -> None:
        if await self._adopt_parked_agent():  # re-attach (gateway.reattach): this call's agent session goes on
            agent = self._agent
            assert agent is not None
            self._agent_ready.set()
        else:
            agent = await self._start_agent_session()
        await self._read_agent(agent)

    async def _start_agent_session(self) -> AgentConnection:
        ready = await self._open_agent_session()
        agent = self._agent
        assert agent is not None
        self.summary.session_id = ready.session_id
        self._session_ready_at = self._clock()
        structlog.contextvars.bind_contextvars(session_id=ready.session_id)
        self._log.info(
            "agent.session_ready",
            session_id=ready.session_id,
            endpoint=self._endpoint.name,
            url=self._endpoint.url,
            ready_ms=round((self._session_ready_at - self._started_at) * 1000, 1),
        )
        self._agent_ready.set()
        self._emit(events.AgentSessionReady(ready.session_id, t=self._t()))
        self._awaiting_first_audio_since = self._clock() if self.profile.greeting else None
        return agent

    async def _read_agent(self, agent: AgentConnection) -> None:
        while True:
            try:
                ev = await agent.recv()
            except AgentClosed as exc:
                # No session.ended before the close (that raises CallEnded in _on_agent_event): a network drop.
                agent = await self._resume_agent(exc)
                continue
            await self._on_agent_event(ev)

    # ---------------------------------------------------------------------------------------------- resume
    async def _resume_agent(self, drop: AgentClosed) -> AgentConnection:
        """§4.3: resume the dropped session on a new socket with fresh auth, with backoff, inside the window.
        Returns the new connection, or raises (AgentSessionError: final code; AgentUnavailable: window spent)."""
        t0 = self._clock()
        self._agent_ready.clear()  # the sender buffers caller audio from now on (drop-oldest, counted)
        self.summary.agent_close_code = drop.code
        session_id = self.summary.session_id
        self._log.warning("agent.dropped", close_code=drop.code, reason=drop.reason, session_id=session_id)
        self._emit(events.AgentDrop(drop.code, t=self._t()))
        await self._end_cut_reply()
        await self._discard_agent()
        deadline = t0 + self._resume_window_s
        delay = 0.0
        attempt = 0
        error = ""
        while (remaining := deadline - self._clock()) > 0:
            if delay:
                await asyncio.sleep(min(delay, remaining))
            delay = min(2.0, delay * 2) if delay else 0.25
            attempt += 1
            try:
                agent = self._agent = await AgentConnection.open(
                    self._endpoint, timeout=max(0.1, min(self._settings.agent.connect_timeout_s, remaining))
                )
                first = await self._resume_handshake(agent, session_id)
            except AgentSessionError as exc:
                error = f"{exc.code}: {exc.message}"
                if exc.code not in ap.RETRYABLE_CONNECT_CODES:
                    self._log_resume_failed(attempt, t0, error, final=True)
                    raise
            except (AgentUnavailable, AgentClosed) as exc:
                error = str(exc)
            else:
                gap_ms = (self._clock() - t0) * 1000
                self.summary.agent_resumes += 1
                self.summary.resume_gaps_ms.append(gap_ms)
                new_id = first.session_id if isinstance(first, ap.SessionReady) else session_id
                self._log.info(
                    "agent.resumed",
                    attempts=attempt,
                    gap_ms=round(gap_ms, 1),
                    session_id=session_id,
                    **({"new_session_id": new_id} if new_id != session_id else {}),
                    confirmed=isinstance(first, ap.SessionReady),
                    buffered_frames=len(self._to_agent),
                )
                self._emit(events.AgentResume(attempt, round(gap_ms, 1), t=self._t()))
                self._agent_ready.set()
                pending, self._deferred_results = self._deferred_results, []
                for r in pending:
                    await self._send_tool_result(r)
                if first is not None and not isinstance(first, ap.SessionReady):
                    await self._on_agent_event(first)  # a server that just carries on: its first event counts
                return agent
            await self._discard_agent()
        self._log_resume_failed(attempt, t0, error or "resume window spent", final=False)
        raise AgentUnavailable(f"agent session not resumed within {self._resume_window_s:g} s: {error}")

    async def _resume_handshake(self, agent: AgentConnection, session_id: str) -> ap.ServerEvent | None:
        """Send ``session.resume`` and read the answer: ``session.ready`` (expected), another event (a server
        that just continues), ``None`` (silence for ``RESUME_QUIET_S``: assume it continues). A ``session.error``
        raises :class:`AgentSessionError` (the caller decides whether its code is final)."""
        await agent.send(ap.session_resume(session_id))
        try:
            async with asyncio.timeout(RESUME_QUIET_S):
                ev = await agent.recv()
        except TimeoutError:
            return None
        if isinstance(ev, ap.SessionError):
            raise AgentSessionError(ev.code, ev.message)
        if isinstance(ev, ap.SessionEnded):
            self._agent_ended = True
            raise CallEnded(Outcome.AGENT_ENDED)
        return ev

    def _log_resume_failed(self, attempts: int, t0: float, error: str, *, final: bool) -> None:
        self._log.error(
            "agent.resume_failed",
            attempts=attempts,
            gap_ms=round((self._clock() - t0) * 1000, 1),
            session_id=self.summary.session_id,
            error=error,
            final_code=final,
            buffered_frames=len(self._to_agent),
        )

    async def _end_cut_reply(self) -> None:
        """The drop cut a reply short: treat it as ended. What the carrier already has keeps playing (no clear);
        the transcoder tail is flushed and marked; tool results held for it are sent once the session is back."""
        if not self._reply_active:
            return
        assert self._outbound is not None
        reply_id = self._reply_id
        self._reply_active = False
        tail = self._outbound.flush()
        if tail:
            await self._queue_out(reply_id, tail)
        self._queue_mark(reply_id)
        self._deferred_results.extend(self._gate.on_reply_done(reply_id, "completed"))
        self._reply_done_event.set()
        self._log.info("agent.reply_cut", reply_id=reply_id)

    async def _agent_sender(self) -> None:
        q = self._to_agent
        while True:
            # Bounded: agent_runner either sets ready (connected or resumed) or ends the group within its
            # ready timeout / resume window.
            await self._agent_ready.wait()
            agent = self._agent
            if not q:
                self._to_agent_wake.clear()
                await self._to_agent_wake.wait()
                continue
            if agent is None:  # pragma: no cover - ready implies a connection
                continue
            # Coalesce a backlog (audio buffered before ready or during a resume) into ≤100 ms messages.
            frames = [q.popleft()]
            while q and len(frames) < 5:
                frames.append(q.popleft())
            await self._send_audio_to_agent(agent, frames)

    async def _send_audio_to_agent(self, agent: AgentConnection, frames: list[bytes]) -> None:
        """One ``input.audio`` of ``frames``, from agent_sender (backlog) or the carrier reader (fast path). While
        it is in flight (``_agent_sending``) newer frames queue behind it, so the order holds."""
        self._agent_sending = True
        try:
            await agent.send(ap.input_audio(b"".join(frames)))
        except AgentClosed:
            # Not sent (both transports raise before writing once the socket is going): keep the frames for the
            # resumed session. agent_runner notices the drop too; don't spin on this dead socket meanwhile.
            self._requeue_to_agent(frames)
            if self._agent is agent:
                self._agent_ready.clear()
            return
        finally:
            self._agent_sending = False
        self.summary.frames_to_agent += len(frames)

    def _requeue_to_agent(self, frames: list[bytes]) -> None:
        q = self._to_agent
        for f in reversed(frames):
            if len(q) == q.maxlen:
                self.summary.frames_dropped_to_agent += 1  # these are the oldest frames: drop-oldest policy
            else:
                q.appendleft(f)
        self._to_agent_wake.set()  # the frames may come from the carrier reader's fast path: agent_sender owns them now

    async def _on_agent_event(self, ev: ap.ServerEvent) -> None:
        if isinstance(ev, ap.ReplyAudio):
            await self._on_reply_audio(ev)
        elif isinstance(ev, ap.ReplyStarted):
            self._reply_id = ev.reply_id
            self._reply_active = True
            self.summary.replies += 1
            self._gate.on_reply_started(ev.reply_id)
            self._reply_started_event.set()
            self._emit(events.AgentReplyStarted(ev.reply_id, t=self._t()))
        elif isinstance(ev, ap.ReplyDone):
            await self._on_reply_done(ev)
        elif isinstance(ev, ap.SpeechStarted):
            self._emit(events.CallerSpeechStarted(t=self._t()))
            self._gate.on_speech_started()
            self._barge_in_at = self._clock()
            interruptible = self.profile.turn_detection.get("interrupt_response", True) is not False
            if interruptible and (self._out or self.playout.playing(self._clock())):
                # The caller talks over audio still queued or playing at the carrier: flush it now
                # (voice-agent-api.md §4.2; AssemblyAI's own Twilio example does the same).
                await self._barge_in(self._reply_id if self._reply_active else None, "speech_started")
        elif isinstance(ev, ap.SpeechStopped):
            self._awaiting_first_audio_since = self._clock()
            self._emit(events.CallerSpeechStopped(t=self._t()))
        elif isinstance(ev, ap.UserTranscript):
            self.summary.turns += 1
            self._emit(events.CallerTranscript(ev.text, t=self._t()))
        elif isinstance(ev, ap.ToolCall):
            self._on_tool_call(ev)
        elif isinstance(ev, ap.AgentTranscript):
            self._emit(events.AgentTranscript(ev.reply_id, ev.text, ev.interrupted, t=self._t()))
            if ev.interrupted:
                self._log.info("agent.reply_interrupted", reply_id=ev.reply_id, heard_chars=len(ev.text))
        elif isinstance(ev, ap.SessionError):
            self._emit(events.SessionErrorReport(ev.code, ev.fatal, t=self._t()))
            if ev.fatal:
                raise AgentSessionError(ev.code, ev.message)
            self._log.warning("agent.session_error", code=ev.code, message=ev.message, param=ev.param, fatal=False)
        elif isinstance(ev, ap.SessionEnded):
            self._agent_ended = True
            raise CallEnded(Outcome.AGENT_ENDED)
        elif isinstance(ev, ap.ReplyError):
            self._log.warning("agent.reply_error", reply_id=ev.reply_id, code=ev.code, message=ev.message)
        # SessionUpdated, transcript deltas and unknown event types need nothing from the gateway.

    async def _on_reply_audio(self, ev: ap.ReplyAudio) -> None:
        if ev.reply_id in self._interrupted:
            return  # late audio of an interrupted reply: never to the caller
        assert self._outbound is not None
        if ev.reply_id is not None and ev.reply_id != self._reply_id:
            self._reply_id = ev.reply_id
            self._reply_active = True
        frames = self._outbound.convert(ev.data)
        if not frames:
            return
        if self._awaiting_first_audio_since is not None:
            latency = (self._clock() - self._awaiting_first_audio_since) * 1000
            if self.summary.time_to_first_agent_audio_ms is None:
                self.summary.time_to_first_agent_audio_ms = (self._clock() - self._started_at) * 1000
            else:
                self.summary.response_latencies_ms.append(latency)
            self._awaiting_first_audio_since = None
            self._emit(events.AgentFirstAudio(ev.reply_id, round(latency, 1), t=self._t()))
        elif self.summary.time_to_first_agent_audio_ms is None:
            self.summary.time_to_first_agent_audio_ms = (self._clock() - self._started_at) * 1000
        await self._play_or_queue(ev.reply_id, frames)

    async def _on_reply_done(self, ev: ap.ReplyDone) -> None:
        assert self._outbound is not None
        self._reply_active = False
        if ev.status == "interrupted":
            if ev.reply_id not in self._interrupted:
                await self._barge_in(ev.reply_id, "reply_interrupted")
            self._interrupted.add(ev.reply_id)
        else:
            tail = self._outbound.flush()
            if tail:
                await self._queue_out(ev.reply_id, tail)
            self._queue_mark(ev.reply_id)  # its echo proves the whole reply was heard
        for r in self._gate.on_reply_done(ev.reply_id, ev.status):
            await self._send_tool_result(r)
        self._reply_done_event.set()

    # =================================================================================================== tools
    def _on_tool_call(self, call: ap.ToolCall) -> None:
        self.summary.tool_calls += 1
        self._gate.on_tool_call(call.call_id)
        self._log.info("tool.called", tool=call.name, call_id=call.call_id)
        self._emit(events.ToolCalled(call.name, call.call_id, t=self._t()))
        assert self._tg is not None
        self._tg.create_task(self._run_tool(call), name=f"tool:{call.name}")

    async def _run_tool(self, call: ap.ToolCall) -> None:
        t0 = self._clock()
        outcome = await self._tools.run(call.name, call.arguments, self.profile, self._request_hangup, self)
        sendable = self._gate.submit(PendingResult(call.call_id, outcome.result, outcome.is_error))
        self._log.info(
            "tool.result",
            tool=call.name,
            call_id=call.call_id,
            is_error=outcome.is_error,
            ms=round((self._clock() - t0) * 1000, 1),
            sent=bool(sendable),
            held=self._gate.held > 0,
        )
        for r in sendable:
            await self._send_tool_result(r)

    async def _send_tool_result(self, r: PendingResult) -> None:
        agent = self._agent
        if agent is None or not self._agent_ready.is_set():
            self._deferred_results.append(r)  # the agent is being resumed: send it once it is back
            return
        try:
            await agent.send(ap.tool_result(r.call_id, r.result, r.is_error))
        except AgentClosed:
            self._deferred_results.append(r)  # agent_runner notices the drop and resumes

    async def _request_hangup(self, arguments: Mapping[str, Any]) -> None:
        if self._hangup_requested:
            return
        self._hangup_requested = True
        self._reply_started_event.clear()
        self._reply_done_event.clear()
        assert self._tg is not None
        self._tg.create_task(self._hang_up_after_goodbye(), name="end_call")

    async def _hang_up_after_goodbye(self) -> None:
        """``end_call``: let the goodbye finish playing (proven by a mark echo, with a timeout), then hang up; over
        REST too when closing the stream alone might not end the call (:meth:`_hang_up_via_rest`)."""
        await self._await_last_words_heard()
        if self._control.available and (self.profile.hangup_via_rest or self._reattached_from is not None):
            await self._hang_up_via_rest()
        raise CallEnded(Outcome.AGENT_HANGUP)

    async def _await_last_words_heard(self) -> None:
        """The reply that follows a tool result (goodbye, transfer announcement) has been heard: up to 3 s for it to
        start, then its end, then the echo of a mark queued after it; all within ``end_call_timeout_s``."""
        limit = self.profile.end_call_timeout_s
        try:
            async with asyncio.timeout(limit):
                # The agent usually speaks once more after the tool result (the goodbye); give it a moment to start.
                try:
                    async with asyncio.timeout(3.0):
                        await self._reply_started_event.wait()
                except TimeoutError:
                    pass
                if self._reply_active or self._reply_started_event.is_set():
                    self._reply_done_event.clear()
                    if self._reply_active:
                        await self._reply_done_event.wait()
                self._queue_mark("__hangup__")
                await self._hangup_mark_echoed.wait()
        except TimeoutError:
            self._log.warning("call.end_call_timeout", waited_s=limit)

    # ============================================================================ call control (issue #8)
    # README "Call control"; telephony.md §A.7–§A.9. The tools' pure parts: gateway.tools.call_control.
    async def _hang_up_via_rest(self) -> None:
        """``Status=completed`` over REST (telephony.md §A.7), for TwiML that would go on after ``<Connect>`` (profile
        ``hangup_via_rest``) or a stream re-attached after a redirect we did not write. 20404 = the caller hung up
        first: fine (§C item 9). Twilio's 'stop' for this stream is expected meanwhile (``_rest_pending``)."""
        self._rest_pending = True
        t0 = self._clock()
        try:
            ended_now = await self._control.hang_up(self.summary.call_sid)
        except CallControlFailed as exc:
            self._log.warning("call.hangup_rest_failed", status=exc.status, code=exc.code, error=exc.message[:200])
            self._emit(events.ControlAction("hangup", "failed", t=self._t()))
            return  # closing the stream (teardown) is still the hang-up of last resort
        self._log.info("call.hangup_rest", already_ended=not ended_now, ms=round((self._clock() - t0) * 1000, 1))
        self._emit(events.ControlAction("hangup", "ok" if ended_now else "already_ended", t=self._t()))

    async def transfer_call(self, destination: str, announcement: str) -> ToolOutcome:
        """``transfer_call`` (destination already normalized and allow-listed by the registry): the result asks the
        agent to say the announcement; a task waits until that was heard, then redirects (§A.8)."""
        if not self._control.available:
            # This carrier has no call control here (README "Call control": transfers need Twilio REST at the twilio
            # door): the agent hears it as a tool error and the call goes on.
            self._log.warning("call.transfer_refused", reason=self._control.unavailable_reason)
            self._emit(events.ControlAction("transfer", "refused", t=self._t()))
            return ToolOutcome(cc.error_result("transfers are not available on this carrier"), True)
        if self._hangup_requested:
            self._log.warning("call.transfer_refused", reason="call_ending")
            return ToolOutcome(cc.error_result("the call is already ending"), True)
        self._hangup_requested = True  # one way out at a time: a later end_call or transfer is refused/ignored
        self._reply_started_event.clear()
        self._reply_done_event.clear()
        self._log.info("call.transfer_started", destination=cc.mask_destination(destination))
        assert self._tg is not None
        self._tg.create_task(self._transfer_after_announcement(destination), name="transfer")
        return ToolOutcome(cc.transfer_accepted(announcement))

    async def _transfer_after_announcement(self, destination: str) -> None:
        await self._await_last_words_heard()
        masked = cc.mask_destination(destination)
        self._rest_pending = True  # Twilio may send 'stop' before it answers the redirect
        t0 = self._clock()
        try:
            await self._control.transfer(self.summary.call_sid, destination)
        except CallControlFailed as exc:
            self._rest_pending = False
            self._hangup_requested = False  # the call goes on
            self._log.warning("call.transfer_failed", destination=masked, status=exc.status, code=exc.code,
                              error=exc.message[:200])
            self._emit(events.ControlAction("transfer", "failed", t=self._t()))
            await self._send_to_agent(ap.reply_create(
                "The transfer did not go through. Tell the caller, and offer to help in another way."))
            return
        self._log.info("call.transferred", destination=masked, ms=round((self._clock() - t0) * 1000, 1))
        self._emit(events.ControlAction("transfer", "ok", t=self._t()))
        raise CallEnded(Outcome.TRANSFERRED)

    async def send_dtmf(self, digits: str) -> ToolOutcome:
        """``send_dtmf``: the tones go out as ordinary audio frames in the stream's own format, paced and marked like
        agent audio, so the stream stays up (§A.8). The result waits for the mark after them (bounded)."""
        encoding, rate = self._stream_format
        try:
            frames = dtmf_tones.tones_for_carrier(digits, encoding, rate, self.dialect.frame_bytes)
        except ValueError as exc:
            return ToolOutcome(cc.error_result(str(exc)), True)
        self._dtmf_sends += 1
        tag = f"__dtmf_{self._dtmf_sends}__"
        heard = asyncio.Event()
        self._mark_waiters[tag] = heard
        ms = len(frames) * FRAME_MS
        await self._queue_out(tag, frames)
        self._queue_mark(tag)
        try:
            async with asyncio.timeout(ms / 1000 + self._settings.audio.playout_lead_ms / 1000 + PROMPT_ECHO_SLACK_S):
                await heard.wait()
        except TimeoutError:
            pass
        finally:
            self._mark_waiters.pop(tag, None)
        self._log.info("call.dtmf_sent", digits=len(digits), ms=ms, heard=heard.is_set())
        self._emit(events.TonesSent(len(digits), t=self._t()))
        if not heard.is_set():  # cleared by a barge-in, or the line is not playing out
            return ToolOutcome(cc.error_result("the tones were not confirmed as played"), True)
        return ToolOutcome(json.dumps({"ok": True, "digits": len(digits)}))

    def read_dtmf(self) -> ToolOutcome:
        digits = self._dtmf.read()
        self._log.info("call.dtmf_delivered", mode="buffer", digits=len(digits))
        return ToolOutcome(json.dumps({"digits": digits}))

    def _on_caller_dtmf(self, digit: str) -> None:
        self._emit(events.CallerKeypress(t=self._t()))  # counted (metrics); the digit itself goes nowhere but the agent
        self._dtmf.add(digit, self._clock())
        if self._dtmf.mode == "reply" and (self._dtmf_task is None or self._dtmf_task.done()):
            assert self._tg is not None
            self._dtmf_task = self._tg.create_task(self._deliver_dtmf(), name="dtmf")

    async def _deliver_dtmf(self) -> None:
        """``dtmf_mode = "reply"``: after ``dtmf_interdigit_ms`` without a further digit, one ``reply.create`` whose
        instructions name the digits."""
        while (deadline := self._dtmf.deadline()) is not None:
            await asyncio.sleep(max(0.0, deadline - self._clock()))
            digits = self._dtmf.due(self._clock())
            if digits:
                await self._agent_ready.wait()  # bounded: agent_runner readies the agent or ends the call
                sent = await self._send_to_agent(ap.reply_create(cc.dtmf_instructions(digits)))
                self._log.info("call.dtmf_delivered", mode="reply", digits=len(digits) if sent else 0)

    async def _send_to_agent(self, text: str) -> bool:
        agent = self._agent
        if agent is None or not self._agent_ready.is_set():
            return False
        try:
            await agent.send(text)
        except AgentClosed:
            return False  # a dropped agent: agent_runner resumes it; this message is lost
        return True

    # ---- re-attach (gateway.reattach) ---------------------------------------------------------------------------
    def _park_agent(self, agent: AgentConnection, outcome: Outcome | str) -> bool:
        """At teardown after a 'stop': hold the live agent session for a new stream of this call instead of ending
        it. Only for a stream Twilio stopped (the caller hung up or a redirect replaced the TwiML: 'stop' does not
        say which) with a healthy, ready session."""
        parked = self._parked
        s = self.summary
        if (parked is None or not parked.enabled or outcome != Outcome.CALLER_HANGUP or self._agent_ended
                or not self._agent_ready.is_set() or not agent.open_ or not s.session_id or not s.call_sid):
            return False
        parked.park(ParkedAgent(call_sid=s.call_sid, agent=agent, session_id=s.session_id, profile_name=s.profile,
                                profile=self.profile, stream_sid=s.stream_sid, parked_at=self._clock()))
        self._agent = None
        self._log.info("call.agent_parked", session_id=s.session_id, window_s=parked.window_s)
        return True

    async def _adopt_parked_agent(self) -> bool:
        """At the start of a stream: take over this call's parked agent session, if there is one."""
        if self._parked is None or not self._parked.enabled:
            return False
        call_sid = self.summary.call_sid
        stopping = self._stream_stopping
        parked = await self._parked.claim(call_sid, wait_s=2.0,
                                          stopping=(lambda: stopping(call_sid)) if stopping else (lambda: False))
        if parked is None:
            return False
        s = self.summary
        self._agent = parked.agent
        s.session_id = parked.session_id
        s.profile = parked.profile_name
        self.profile = parked.profile
        self._dtmf = cc.DtmfInbox(self.profile.dtmf_mode, self.profile.dtmf_interdigit_ms / 1000.0)
        self._reattached_from = parked.stream_sid
        structlog.contextvars.bind_contextvars(session_id=parked.session_id)
        gap_ms = round((self._clock() - parked.parked_at) * 1000, 1)
        self._log.info("call.reattached", session_id=parked.session_id, previous_stream_sid=parked.stream_sid,
                       gap_ms=gap_ms)
        self._emit(events.Reattach(parked.session_id, gap_ms, t=self._t()))
        return True

    # ================================================================================================ watchdog
    async def _watchdog(self) -> None:
        """The call's own clock: ``server.max_call_s`` (a hung call must not hold a billed line, telephony.md
        §A.7) or the process draining (:meth:`request_end`), both with the goodbye prompt; and a dead line: Twilio
        sends media every 20 ms even when the caller is silent, so no *media* (marks or not) for
        ``server.no_media_timeout_s`` ends the call rather than keep a billed line open (telephony.md §D.5). One
        timer per call, re-armed when it fires, instead of a timeout on every carrier receive."""
        server = self._settings.server
        call_deadline = self._clock() + server.max_call_s
        self._media_at = self._clock()
        while True:
            now = self._clock()
            media_deadline = self._media_at + server.no_media_timeout_s
            if now >= call_deadline:
                raise CallEnded(Outcome.MAX_DURATION)
            if now >= media_deadline:
                raise CallEnded(Outcome.NO_MEDIA)
            try:
                async with asyncio.timeout(min(call_deadline, media_deadline) - now):
                    await self._end_requested.wait()
            except TimeoutError:
                continue  # a deadline passed, or media came meanwhile: the loop decides which
            raise CallEnded(self._end_reason)


def _first(eg: BaseExceptionGroup, kind: type) -> Any:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
        elif isinstance(exc, kind):
            return exc
    return eg.exceptions[0]

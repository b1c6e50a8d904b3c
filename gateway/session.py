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
- per tool call: one task; ``end_call`` adds a hang-up task.

Backpressure policy (README "Failure behaviour"):
- caller → agent: a deque bounded to ``audio.preready_buffer_ms``; when full (agent not ready or slow) the OLDEST
  frame is dropped and ``frames_dropped_to_agent`` counts it.
- agent → caller: a deque bounded to ``audio.outbound_buffer_s``; when full the agent reader waits (the agent
  sends at real time, so this only bites if the carrier stops draining). Paced by the playout model.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import structlog
from aiohttp import WSMsgType, web

from .agent import protocol as ap
from .agent.client import AgentClosed, AgentConnection, AgentEndpoint
from .audio.transcode import InboundAudio, OutboundAudio, agent_format_spec
from .carriers.events import (
    AudioReceived,
    DtmfReceived,
    PlaybackCheckpoint,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from .carriers.twilio import TwilioStream
from .config import Profile, Settings
from .errors import (
    AgentProtocolError,
    AgentSessionError,
    AgentUnavailable,
    CallEnded,
    CarrierProtocolError,
    UnauthorizedStream,
)
from .logs import mask_number
from .playout import PlayoutTracker
from .security import TokenError, verify_call_token
from .tools.gate import PendingResult, ToolResultGate
from .tools.registry import END_CALL, ToolRegistry

__all__ = ["CallSession", "CallSummary"]

FRAME_MS = 20
_MARK = object()  # an outbound queue item meaning "send a mark here"


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
    time_to_first_agent_audio_ms: float | None = None
    response_latencies_ms: list[float] = field(default_factory=list)
    clear_latencies_ms: list[float] = field(default_factory=list)
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
            "time_to_first_agent_audio_ms": _r(self.time_to_first_agent_audio_ms),
            "response_latency_median_ms": _r(lat[len(lat) // 2]) if lat else None,
            "stale_mark_echoes": self.stale_mark_echoes,
            "agent_close_code": self.agent_close_code,
            **({"error": self.error} if self.error else {}),
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


_HANGUP_BY = {
    "caller_hangup": "caller",
    "carrier_closed": "caller",
    "agent_hangup": "agent",
    "agent_ended": "agent",
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
        on_event: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self._ws = ws
        self._settings = settings
        self._endpoint = endpoint
        self._tools = tools
        self._clock = clock
        self._wall = wall_clock
        self._on_summary = on_summary
        self._on_event = on_event
        self._log = structlog.get_logger("gateway.call")
        self.dialect = TwilioStream()
        self.summary = CallSummary()
        self.profile: Profile = settings.profiles["default"]
        audio = settings.audio
        # caller → agent
        self._to_agent: deque[bytes] = deque(maxlen=max(1, audio.preready_buffer_ms // FRAME_MS))
        self._to_agent_wake = asyncio.Event()
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
        self._tg: asyncio.TaskGroup | None = None
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

    # ================================================================================================= lifecycle
    async def run(self) -> CallSummary:
        """Serve the call until it ends for any reason. Never raises (except cancellation)."""
        outcome = "carrier_closed"
        try:
            start = await self._await_start()
            self._authorize(start)
            self._begin(start)
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
            outcome = "refused"
            self.summary.error = str(_first(eg, UnauthorizedStream))
            self._log.warning("call.refused", reason=self.summary.error)
        except* CarrierProtocolError as eg:
            outcome = "protocol_error"
            self.summary.error = str(_first(eg, CarrierProtocolError))
            self._log.warning("call.protocol_error", side="carrier", error=self.summary.error)
        except* AgentSessionError as eg:
            err = _first(eg, AgentSessionError)
            outcome = "agent_error"
            self.summary.error = f"{err.code}: {err.message}"
            self._log.warning("agent.session_error", code=err.code, message=err.message, fatal=True)
        except* AgentUnavailable as eg:
            outcome = "agent_unavailable"
            self.summary.error = str(_first(eg, AgentUnavailable))
            self._log.error("agent.unavailable", error=self.summary.error)
        except* AgentProtocolError as eg:
            outcome = "protocol_error"
            self.summary.error = str(_first(eg, AgentProtocolError))
            self._log.warning("call.protocol_error", side="agent", error=self.summary.error)
        except* Exception as eg:  # our bug: log once, at the boundary, with the call's context
            outcome = "internal_error"
            self.summary.error = repr(eg.exceptions[0])
            self._log.error("call.internal_error", exc_info=eg.exceptions[0])
        finally:
            self._tg = None
            await asyncio.shield(self._teardown(outcome))
        return self.summary

    async def _teardown(self, outcome: str) -> None:
        s = self.summary
        s.outcome = outcome
        s.hung_up_by = _HANGUP_BY.get(outcome, "gateway")
        s.duration_s = self._clock() - self._started_at
        s.stale_mark_echoes = self.playout.stale_echoes
        agent = self._agent
        if agent is not None:
            await self._end_agent_session(agent)
            s.agent_close_code = agent.close_code
            self._log.info(
                "agent.closed",
                close_code=agent.close_code,
                reason=agent.close_reason,
                session_id=s.session_id or None,
                endpoint=agent.endpoint.name,
            )
        if not self._ws.closed:
            # Under <Connect><Stream> closing the socket ends the call (telephony.md §A.7).
            code = 1008 if outcome == "refused" else 1000
            try:
                async with asyncio.timeout(2):
                    await self._ws.close(code=code)
            except (TimeoutError, ConnectionError):
                pass
        self._log.info("call.ended", **s.log_fields())
        self._emit("call.ended", **s.log_fields())
        if self._on_summary is not None:
            self._on_summary(s)

    async def _end_agent_session(self, agent: AgentConnection) -> None:
        """``session.end`` (so billing stops at once, §2.1), wait briefly for ``session.ended``, close."""
        try:
            async with asyncio.timeout(self._settings.agent.end_timeout_s):
                if not self._agent_ended and agent.open_:
                    await agent.send(ap.session_end())
                    while True:
                        ev = await agent.recv()
                        if isinstance(ev, ap.SessionEnded):
                            self._agent_ended = True
                            break
        except (TimeoutError, AgentClosed, AgentProtocolError, OSError):
            pass
        try:
            async with asyncio.timeout(2):
                await agent.close()
        except (TimeoutError, OSError):
            pass

    def _emit(self, kind: str, **fields: Any) -> None:
        """Per-call timeline for live viewers (the softphone's event feed). Unlike logs it may carry transcript
        text, so it is only exposed where the operator enabled it. Never per frame."""
        if self._on_event is not None:
            fields.setdefault("t", round(self._clock() - self._started_at, 3))
            self._on_event(kind, fields)

    # ================================================================================================ start-up
    async def _await_start(self) -> StreamStarted:
        timeout = self._settings.server.start_timeout_s
        try:
            async with asyncio.timeout(timeout):
                while True:
                    ev = self.dialect.parse(await self._receive_text())
                    if isinstance(ev, StreamStarted):
                        return ev
                    if not isinstance(ev, StreamConnected):  # pragma: no cover - dialect raises first
                        raise CarrierProtocolError(f"{type(ev).__name__} before start")
        except TimeoutError:
            raise CallEnded("no_start") from None

    async def _receive_text(self, timeout: float | None = None) -> str:
        msg = await self._ws.receive(timeout=timeout)
        if msg.type is WSMsgType.TEXT:
            return msg.data
        if msg.type is WSMsgType.BINARY:
            raise CarrierProtocolError("binary frame (Twilio sends JSON text only)")
        if msg.type is WSMsgType.ERROR:
            exc = self._ws.exception()
            if "message size" in str(exc).lower() or "too big" in str(exc).lower():
                raise CarrierProtocolError(f"message over {self._settings.server.max_message_bytes} bytes")
            raise CallEnded("carrier_closed")
        raise CallEnded("carrier_closed")  # CLOSE / CLOSING / CLOSED

    def _authorize(self, start: StreamStarted) -> None:
        s = self.summary
        s.call_sid, s.stream_sid = start.call_id, start.stream_id
        structlog.contextvars.bind_contextvars(call_sid=start.call_id, stream_sid=start.stream_id)
        try:
            verify_call_token(
                self._settings.secrets.token_secret, start.custom_parameters.get("token"), start.call_id, self._wall()
            )
        except TokenError as exc:
            raise UnauthorizedStream(f"call token {exc}") from None

    def _begin(self, start: StreamStarted) -> None:
        params = start.custom_parameters
        name, self.profile = self._settings.profile_for(params.get("to", ""))
        self.summary.profile = name
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
        self._emit("call.started", call_sid=start.call_id, profile=name)

    # =========================================================================================== carrier side
    async def _carrier_reader(self) -> None:
        no_media = self._settings.server.no_media_timeout_s
        while True:
            try:
                text = await self._receive_text(timeout=no_media)
            except TimeoutError:
                raise CallEnded("no_media") from None
            ev = self.dialect.parse(text)
            if isinstance(ev, AudioReceived):
                self._on_caller_audio(ev.payload)
            elif isinstance(ev, PlaybackCheckpoint):
                self._on_mark(ev.name)
            elif isinstance(ev, DtmfReceived):
                # Digits can be PINs or card numbers: count them, never log them.
                self._log.info("call.dtmf")
            elif isinstance(ev, StreamStopped):
                raise CallEnded("caller_hangup")

    def _on_caller_audio(self, payload: bytes) -> None:
        assert self._inbound is not None
        self.summary.frames_in += 1
        data = self._inbound.convert(payload)
        if not data:
            return
        q = self._to_agent
        if len(q) == q.maxlen:
            self.summary.frames_dropped_to_agent += 1  # drop-oldest policy (deque maxlen)
        q.append(data)
        self._to_agent_wake.set()

    def _on_mark(self, name: str) -> None:
        echo = self.playout.on_mark(name, self._clock())
        if echo is not None and name == self._hangup_mark:
            self._hangup_mark_echoed.set()

    async def _send_carrier(self, text: str) -> None:
        try:
            await self._ws.send_str(text)
        except ConnectionError:
            raise CallEnded("carrier_closed") from None

    async def _carrier_writer(self) -> None:
        lead_target = self._settings.audio.playout_lead_ms
        per_msg = self._settings.audio.frames_per_message
        mark_every = self._settings.audio.mark_interval_ms
        out = self._out
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
                await self._send_carrier(self.dialect.build_media(b"".join(frames) if len(frames) > 1 else item))
                dur = FRAME_MS * len(frames)
                self.playout.on_sent(dur, self._clock(), reply_id)
                self.summary.frames_out += len(frames)
                self._ms_since_mark += dur
                if self._ms_since_mark >= mark_every:
                    await self._send_mark(reply_id, self._clock())

    async def _send_mark(self, reply_id: str | None, now: float) -> str:
        name = self.playout.new_mark(now, reply_id)
        self._ms_since_mark = 0
        await self._send_carrier(self.dialect.build_mark(name))
        if reply_id == "__hangup__":
            self._hangup_mark = name
        return name

    async def _queue_out(self, reply_id: str | None, frames: list[bytes]) -> None:
        gen = self.playout.generation
        for f in frames:
            if len(self._out) >= self._out_max:
                self._out_space.clear()
                async with asyncio.timeout(self._settings.audio.outbound_buffer_s):
                    await self._out_space.wait()
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
            if not queued_ms and not unplayed_ms:
                return  # nothing of it is left anywhere: no clear needed
            self._out.clear()
            self._out_space.set()
            self._outbound.reset()
            await self._send_carrier(self.dialect.build_clear())
            self.playout.clear(now)
        self.summary.interruptions += 1
        if self._barge_in_at is not None:
            self.summary.clear_latencies_ms.append((self._clock() - self._barge_in_at) * 1000)
        self._emit("call.barge_in", reply_id=reply_id, cause=cause, dropped_unplayed_ms=round(unplayed_ms))
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

    async def _connect_agent(self) -> AgentConnection:
        cfg = self._settings.agent
        delay = 0.25
        for attempt in range(1, cfg.connect_attempts + 1):
            try:
                return await AgentConnection.open(self._endpoint, timeout=cfg.connect_timeout_s)
            except AgentUnavailable as exc:
                self._log.warning("agent.connect_failed", attempt=attempt, error=str(exc))
                if attempt == cfg.connect_attempts:
                    raise
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")  # pragma: no cover

    async def _agent_runner(self) -> None:
        agent = self._agent = await self._connect_agent()
        try:
            await agent.send(ap.session_update(self._session_config()))
            async with asyncio.timeout(self._settings.agent.ready_timeout_s):
                while True:
                    ev = await agent.recv()
                    if isinstance(ev, ap.SessionReady):
                        break
                    await self._on_agent_event(ev)
        except TimeoutError:
            raise AgentUnavailable("no session.ready in time") from None
        except AgentClosed as exc:
            raise AgentUnavailable(f"agent closed before ready ({exc.code} {exc.reason})") from None
        self.summary.session_id = ev.session_id
        self._session_ready_at = self._clock()
        structlog.contextvars.bind_contextvars(session_id=ev.session_id)
        self._log.info(
            "agent.session_ready",
            session_id=ev.session_id,
            endpoint=self._endpoint.name,
            url=self._endpoint.url,
            ready_ms=round((self._session_ready_at - self._started_at) * 1000, 1),
        )
        self._agent_ready.set()
        self._emit("agent.session_ready", session_id=ev.session_id)
        self._awaiting_first_audio_since = self._clock() if self.profile.greeting else None
        while True:
            try:
                ev = await agent.recv()
            except AgentClosed as exc:
                self.summary.agent_close_code = exc.code
                self._log.warning("agent.dropped", close_code=exc.code, reason=exc.reason)
                raise CallEnded("agent_dropped") from None
            await self._on_agent_event(ev)

    async def _agent_sender(self) -> None:
        await self._agent_ready.wait()  # bounded by agent_runner's ready timeout, which ends the group
        agent = self._agent
        assert agent is not None
        q = self._to_agent
        while True:
            if not q:
                self._to_agent_wake.clear()
                await self._to_agent_wake.wait()
                continue
            # Coalesce a backlog (audio buffered before ready) into ≤100 ms messages; steady state sends 20 ms.
            chunk = q.popleft()
            n = 1
            while q and n < 5:
                chunk += q.popleft()
                n += 1
            self.summary.frames_to_agent += n
            try:
                await agent.send(ap.input_audio(chunk))
            except AgentClosed:
                return  # agent_runner reports the close

    async def _on_agent_event(self, ev: ap.ServerEvent) -> None:
        if isinstance(ev, ap.ReplyAudio):
            await self._on_reply_audio(ev)
        elif isinstance(ev, ap.ReplyStarted):
            self._reply_id = ev.reply_id
            self._reply_active = True
            self.summary.replies += 1
            self._gate.on_reply_started(ev.reply_id)
            self._reply_started_event.set()
            self._emit("agent.reply_started", reply_id=ev.reply_id)
        elif isinstance(ev, ap.ReplyDone):
            await self._on_reply_done(ev)
        elif isinstance(ev, ap.SpeechStarted):
            self._emit("caller.speech_started")
            self._gate.on_speech_started()
            self._barge_in_at = self._clock()
            interruptible = self.profile.turn_detection.get("interrupt_response", True) is not False
            if interruptible and (self._out or self.playout.playing(self._clock())):
                # The caller talks over audio still queued or playing at the carrier: flush it now
                # (voice-agent-api.md §4.2; AssemblyAI's own Twilio example does the same).
                await self._barge_in(self._reply_id if self._reply_active else None, "speech_started")
        elif isinstance(ev, ap.SpeechStopped):
            self._awaiting_first_audio_since = self._clock()
            self._emit("caller.speech_stopped")
        elif isinstance(ev, ap.UserTranscript):
            self.summary.turns += 1
            self._emit("caller.transcript", text=ev.text)
        elif isinstance(ev, ap.ToolCall):
            self._on_tool_call(ev)
        elif isinstance(ev, ap.AgentTranscript):
            self._emit("agent.transcript", reply_id=ev.reply_id, text=ev.text, interrupted=ev.interrupted)
            if ev.interrupted:
                self._log.info("agent.reply_interrupted", reply_id=ev.reply_id, heard_chars=len(ev.text))
        elif isinstance(ev, ap.SessionError):
            if ev.fatal:
                raise AgentSessionError(ev.code, ev.message)
            self._log.warning("agent.session_error", code=ev.code, message=ev.message, param=ev.param, fatal=False)
        elif isinstance(ev, ap.SessionEnded):
            self._agent_ended = True
            raise CallEnded("agent_ended")
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
            self._emit("agent.first_audio", reply_id=ev.reply_id, latency_ms=round(latency, 1))
        elif self.summary.time_to_first_agent_audio_ms is None:
            self.summary.time_to_first_agent_audio_ms = (self._clock() - self._started_at) * 1000
        await self._queue_out(ev.reply_id, frames)

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
        self._emit("tool.called", tool=call.name, call_id=call.call_id)
        assert self._tg is not None
        self._tg.create_task(self._run_tool(call), name=f"tool:{call.name}")

    async def _run_tool(self, call: ap.ToolCall) -> None:
        t0 = self._clock()
        outcome = await self._tools.run(call.name, call.arguments, self.profile, self._request_hangup)
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
        assert self._agent is not None
        await self._agent.send(ap.tool_result(r.call_id, r.result, r.is_error))

    async def _request_hangup(self, arguments: Mapping[str, Any]) -> None:
        if self._hangup_requested:
            return
        self._hangup_requested = True
        self._reply_started_event.clear()
        self._reply_done_event.clear()
        assert self._tg is not None
        self._tg.create_task(self._hang_up_after_goodbye(), name="end_call")

    async def _hang_up_after_goodbye(self) -> None:
        """``end_call``: let the goodbye finish playing (proven by a mark echo, with a timeout), then hang up."""
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
        raise CallEnded("agent_hangup")

    # ================================================================================================ watchdog
    async def _watchdog(self) -> None:
        await asyncio.sleep(self._settings.server.max_call_s)
        raise CallEnded("max_duration")


def _first(eg: BaseExceptionGroup, kind: type) -> Any:
    for exc in eg.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            found = _first(exc, kind)
            if found is not None:
                return found
        elif isinstance(exc, kind):
            return exc
    return eg.exceptions[0]

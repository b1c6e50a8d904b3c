"""The call, sans I/O: one object that takes what arrived (carrier events, agent events, tool results) and the time,
and says what to do. Pure: it reads no clock, no socket and no logger.

Each entry point returns the :mod:`~gateway.call.actions` to execute, in order. Audio is not an action: caller audio
waits in a bounded buffer for the agent (:meth:`CallCore.agent_audio`), everything for the carrier in the
:class:`~gateway.call.outbound_queue.OutboundQueue` (:meth:`CallCore.carrier_data`); the shell pulls exactly what
its sockets can take. The core owns (docs/architecture/call-core.md): the phase (one table,
:mod:`gateway.call.phase`) and the :class:`~gateway.errors.Outcome`; reply state and the barge-in decision (the
caller speaking over audio still queued or playing cuts it at once, and late audio of an interrupted reply never
plays); caller → agent backpressure (a buffer bounded to ``audio.preready_buffer_ms``: when it is full, the OLDEST
frame goes, counted in ``frames_dropped_to_agent``; frames whose send failed go back to its front); the outbound
queue and the playout model; tools and call control (:mod:`gateway.call.tooling`); the gateway's own prompts; the
call's deadlines (``server.max_call_s``, ``server.no_media_timeout_s``); the statistics (``CallSummary``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ..agent import protocol as ap
from ..audio.transcode import InboundAudio, OutboundAudio
from ..carriers.base import FRAME_MS, Dialect
from ..carriers.events import (
    AudioReceived,
    CarrierEvent,
    DtmfReceived,
    MediaFault,
    PlaybackCheckpoint,
    PlaybackCleared,
    StreamError,
    StreamStopped,
)
from ..config import Profile, Settings
from ..errors import AgentSessionError, Outcome
from ..playout import PlayoutTracker
from ..prompts import AGENT_UNAVAILABLE, GOODBYE
from ..ratelimit import InboundAudioBudget, seconds_per_byte
from ..tools import call_control as cc
from ..tools.gate import ToolResultGate
from . import events as ev
from .actions import Action, EndAgentSession, EndCall, MarkHeard, RunTool, WakeAt
from .conversation import ControlAnswers
from .last_words import LastWords, Stage, Step
from .outbound_queue import OutboundQueue
from .phase import Phase, Trigger, next_phase
from .setup import CallSetup, session_config
from .sounds import prompt_frames
from .stats import CallSummary
from .tooling import HANGUP_TAG, NOTHING, PROMPT_ECHO_SLACK_S, TonePlan

if TYPE_CHECKING:
    from ..audio.fir_message import FusedFirMessages

__all__ = ["PROMPT_ECHO_SLACK_S", "PROMPT_FOR_OUTCOME", "CallCore", "TonePlan"]

#: Which outcomes the gateway ends with a spoken prompt of its own (docs/architecture/failure-behaviour.md#prompts).
PROMPT_FOR_OUTCOME: dict[str, str] = {
    Outcome.AGENT_UNAVAILABLE: AGENT_UNAVAILABLE,  # unreachable, or lost and not resumable
    Outcome.AGENT_ERROR: AGENT_UNAVAILABLE,  # fatal session.error
    Outcome.AT_CAPACITY: AGENT_UNAVAILABLE,  # authorized stream but no slot left at 'start'
    Outcome.DRAINED: GOODBYE,  # shutdown: the drain budget ran out
    Outcome.MAX_DURATION: GOODBYE,  # server.max_call_s
}
_PROMPT_TAG = "__prompt__"


class CallCore(ControlAnswers):
    """One call from its authorized ``start`` to its end. ``prompt_audio(name)`` gives a bundled prompt as 8 kHz
    μ-law; ``control_available``: whether the carrier's call control can hang up or transfer (REST)."""

    __slots__ = ("_barge_in_at", "_budget", "_call_deadline", "_clock_marks_seen", "_control_available",
                 "_convert_in", "_dialect", "_end_requested", "_gate", "_hold_sound", "_interrupted", "_live",
                 "_media_at", "_outbound", "_phase", "_prompt", "_prompt_audio", "_reply_active", "_reply_id",
                 "_s_per_byte", "_settings", "_setup", "_started_at", "_to_agent", "_tool_started", "agent_ended",
                 "agent_wanted", "carrier_stopped", "convert_out", "playout", "rate_limit_notice",
                 "was_live")  # fmt: skip

    def __init__(
        self,
        setup: CallSetup,
        settings: Settings,
        dialect: Dialect,
        now: float,
        *,
        prompt_audio: Callable[[str], bytes],
        control_available: bool = False,
        started_at: float | None = None,
        hold_audio: bytes = b"",
    ) -> None:
        super().__init__()
        self._settings = settings
        self._dialect = dialect
        self._prompt_audio = prompt_audio
        self._control_available = control_available
        self._setup = setup
        audio = settings.audio
        start = setup.start
        self.summary = CallSummary(call_sid=start.call_id, stream_sid=start.stream_id, profile=setup.profile_name)
        self.profile: Profile = setup.profile
        self.playout = PlayoutTracker()
        self._started_at = now if started_at is None else started_at  # when the stream opened
        self._phase = Phase.AWAITING_START
        #: The call wants an agent session (connecting, live or resuming): caller audio is kept for it.
        self.agent_wanted = self._live = False
        self._go(Trigger.ACCEPTED)
        # caller → agent. Each conversion is bound once (the converters are the call's for its whole life): a frame
        # then reads one slot here instead of an attribute of a (cold) converter object.
        self._convert_in = InboundAudio(
            start.encoding, start.sample_rate, audio.agent_format, audio.inbound_resample_quality
        ).convert
        # The inbound rate limit (docs/security.md "Inbound audio rate"): a budget of audio duration, in the stream's
        # format. rate_limit_notice: set at the first frame it drops; the shell logs that once and clears it.
        self._budget = InboundAudioBudget(settings.server.inbound_rate_limit, settings.server.inbound_burst_s, now=now)
        self._s_per_byte, self.rate_limit_notice = seconds_per_byte(start.encoding, start.sample_rate), False
        self._to_agent: deque[bytes] = deque(maxlen=max(1, audio.preready_buffer_ms // FRAME_MS))
        # agent → caller
        self._outbound = OutboundAudio(
            audio.agent_format, start.encoding, start.sample_rate, dialect.frame_bytes, audio.outbound_resample_quality
        )
        self.convert_out = self._outbound.convert  # a reply's steady chunk to frames (flush and reset: its own)
        #: Everything for the carrier, in order (the shell's writer pulls from it: :meth:`carrier_data`).
        self.outbound = OutboundQueue(
            dialect,
            self.playout,
            self.summary,
            frames_per_message=audio.frames_per_message,
            lead_target_ms=audio.playout_lead_ms,
            mark_interval_ms=audio.mark_interval_ms,
            max_frames=max(50, int(audio.outbound_buffer_s * 1000 / FRAME_MS)),
        )
        self._clock_marks_seen = 0
        # reply state
        self._reply_id: str | None = None
        self._reply_active = False
        self._interrupted: set[str | None] = set()
        self._awaiting_first_audio_since: float | None = None
        self._barge_in_at: float | None = None
        # tools and call control
        self._gate = ToolResultGate()
        self._tool_started: dict[str, float] = {}
        self._deferred: list[str] = []  # messages to send once a dropped agent is back
        self._dtmf = cc.DtmfInbox(self.profile.dtmf_mode, self.profile.dtmf_interdigit_ms / 1000.0)
        self._dtmf_held = ""  # "reply" digits due while the agent was not live
        self._tones = 0
        self._hold_sound = hold_audio  # 8 kHz μ-law: the profile's hold sound (docs/how-to/conversation.md)
        self._exit: LastWords | None = None
        self._reattached_from: str | None = None
        self.agent_ended = False  # the agent sent session.ended: nothing to end at teardown
        self.carrier_stopped = False  # the carrier sent 'stop': nothing more will be read
        self.was_live = False  # the agent session was live when the call started ending (it may be parked)
        # deadlines
        self._call_deadline = now + settings.server.max_call_s
        self._media_at = now  # the last caller media (carriers send it every 20 ms, even when the caller is silent)
        self._end_requested: Outcome | None = None
        self._prompt: tuple[str, int, float] | None = None  # ENDING: (name, ms, deadline)
        self._conv_setup(now)  # idle caller, hold audio, answering-machine detection

    # ================================================================================================ queries
    @property
    def phase(self) -> Phase:
        return self._phase

    @property
    def live(self) -> bool:
        """The agent session is ready: caller audio may go to it."""
        return self._live

    @property
    def started_at(self) -> float:
        return self._started_at

    @property
    def control_pending(self) -> bool:
        """The carrier's call control is hanging up or transferring the call: its 'stop' is expected."""
        return self._exit is not None and self._exit.stage is Stage.CONTROL

    @property
    def to_agent_pending(self) -> int:
        """Caller audio frames waiting for the agent."""
        return len(self._to_agent)

    @property
    def carrier_pending(self) -> bool:
        return self.outbound.pending

    @property
    def outbound_has_room(self) -> bool:
        return self.outbound.has_room

    @property
    def outbound_queued_ms(self) -> int:
        """Audio for the caller queued here and not yet handed to the carrier."""
        return self.outbound.queued_ms

    def session_config(self, tools: list[dict[str, Any]]) -> dict[str, Any]:
        """The ``session`` of the first ``session.update``: the profile, the agent audio format, the tools."""
        return session_config(self.profile, self._settings.audio.agent_format, tools)

    def next_deadline(self) -> float | None:
        """When :meth:`tick` has something to do next (None once the call ended)."""
        if self._phase is Phase.ENDED:
            return None
        marks = self.outbound.clock_marks
        due = [min(t for t, _ in marks)] if marks else []
        if self._prompt is not None:
            return min([self._prompt[2], *due])
        if self._end_requested is not None:
            return float("-inf")
        due += [self._call_deadline, self._media_at + self._settings.server.no_media_timeout_s]
        if (d := self._dtmf.deadline()) is not None:
            due.append(d)
        if self._exit is not None and (d := self._exit.next_deadline()) is not None:
            due.append(d)
        return min(due + self._conv_deadlines())

    def clock_changed(self) -> bool:
        """Whether :meth:`carrier_data` added a clock-resolved mark since the last call (its deadline is new)."""
        n = len(self.outbound.clock_marks)
        changed, self._clock_marks_seen = n > self._clock_marks_seen, n
        return changed

    # ============================================================================================ carrier side
    def carrier_event(self, event: CarrierEvent, now: float) -> Sequence[Action]:
        """Anything the carrier's dialect parsed (caller audio included: it waits for :meth:`agent_audio`)."""
        match event:
            case AudioReceived():
                self.caller_audio(event.payload, now, False)
            case PlaybackCheckpoint():
                self._on_mark(event.name, now)
            case PlaybackCleared():
                self._publish(ev.CarrierCleared(t=self.t(now)))  # the clear took effect (the model assumed so)
            case StreamError():
                self._log.warning(
                    "carrier.stream_error", carrier=self._dialect.carrier, code=event.code, detail=event.detail
                )
            case MediaFault():  # the first of its reason on this stream; the dialect counts them all
                self.summary.media_faults = getattr(self._dialect, "media_faults", {})
                self._log.warning("carrier.media_fault", carrier=self._dialect.carrier, reason=event.reason,
                                  bytes=event.size, refused=event.refused)  # fmt: skip
            case DtmfReceived():
                self._on_keypress(event.digit, now)
            case StreamStopped():
                self.carrier_stopped = True
                if self._phase is Phase.ENDING:
                    self._prompt_finished(False)
                elif not self.control_pending:  # else: our REST hang-up/transfer stopped it; its answer ends it
                    self._end(Outcome.CALLER_HANGUP, now)  # (or, when that answer keeps the call: ControlAnswers)
        return self._take()

    def caller_audio(self, payload: bytes, now: float, send_now: bool) -> bytes | None:
        """One frame of caller audio. ``send_now``: the shell can send to the agent right away (the carrier reader's
        fast path: nothing in flight, the socket not backed up). Returns the frame converted for the agent when it
        is to be sent now (the agent is live and nothing waits before it; counted as sent: a failed send hands it
        back with :meth:`agent_audio_unsent`); otherwise it waits here for :meth:`agent_audio`."""
        self._media_at = now
        s = self.summary
        s.frames_in += 1
        # The inbound rate limit, before any work is spent on the frame: audio beyond server.inbound_rate_limit ×
        # real time (past the burst of late frames a carrier may deliver at once) is dropped and counted, never
        # converted, buffered or sent (the agent bills per audio second).
        if not self._budget.admit(len(payload) * self._s_per_byte, now):
            s.frames_dropped_rate_limit += 1
            if s.frames_dropped_rate_limit == 1:
                self.rate_limit_notice = True
            return None
        data = self._convert_in(payload)
        q = self._to_agent
        if send_now and self._live and data and not q and not self.amd_pending:
            s.frames_to_agent += 1
            return data
        if not data or not self.agent_wanted:
            return None
        if len(q) == q.maxlen:
            s.frames_dropped_to_agent += 1  # drop-oldest policy (deque maxlen)
        q.append(data)
        return None

    def agent_audio(self, limit: int = 5) -> list[bytes]:
        """Buffered caller audio to send now, oldest first (at most ``limit`` frames: ≤ 100 ms per message),
        counted as sent (a failed send hands it back with :meth:`agent_audio_unsent`)."""
        q = self._to_agent
        if not self._live or not q or self.amd_pending:
            return []
        frames = [q.popleft() for _ in range(min(limit, len(q)))]
        self.summary.frames_to_agent += len(frames)
        return frames

    def agent_audio_unsent(self, frames: list[bytes]) -> None:
        """Frames whose send failed (the agent socket is going): back to the front, for the resumed session."""
        q = self._to_agent
        s = self.summary
        s.frames_to_agent -= len(frames)
        for f in reversed(frames):
            if len(q) == q.maxlen:
                s.frames_dropped_to_agent += 1  # these are the oldest frames: drop-oldest policy
            else:
                q.appendleft(f)

    def carrier_data(self, now: float) -> str | bytes | None:
        """The next message for the carrier, due now; the shell sends it before asking again. None: nothing due
        (``outbound.wake_at``: when something held back for pacing may go)."""
        return self.outbound.pull(now)

    def _on_mark(self, name: str, now: float) -> None:
        echo = self.playout.on_mark(name, now)
        tag = self.outbound.tag_of.pop(name, None)
        if echo is None:
            return  # unknown, or of a cleared generation
        self.summary.mark_round_trips_ms.append(echo.round_trip_s * 1000)
        if tag == _PROMPT_TAG:
            if self._phase is Phase.ENDING:
                self._prompt_finished(True)
        elif tag == HANGUP_TAG:
            if self._exit is not None and self._exit.mark_heard() is Step.LEAVE:
                self._leave(now)
        elif tag is not None:
            self._out.append(MarkHeard(tag))

    def _on_keypress(self, digit: str, now: float) -> None:
        # Digits can be PINs or card numbers: count them, never log them.
        self._log.info("call.dtmf")
        self._publish(ev.CallerKeypress(t=self.t(now)))
        self._conv_caller_active(now, speech=False)
        self._dtmf.add(digit, now)
        if (deadline := self._dtmf.deadline()) is not None:
            self._out.append(WakeAt(deadline))

    # ============================================================================================== agent side
    def agent_event(self, event: ap.ServerEvent, now: float) -> Sequence[Action]:
        """One event from the agent (before ``session.ready`` too: the shell handles ready, ended and fatal errors
        while connecting)."""
        if type(event) is ap.ReplyAudio:  # the hot path: every 10 ms of agent speech
            self._reply_audio(event, now)
            return self._take() if self._out else NOTHING
        match event:
            case ap.ReplyStarted():
                self._reply_id = event.reply_id
                self._set_reply_active(True)
                self.summary.replies += 1
                self._gate.on_reply_started(event.reply_id)
                self._conv_reply_started()
                if self._exit is not None:
                    self._exit.reply_started()
                self._publish(ev.AgentReplyStarted(event.reply_id, t=self.t(now)))
            case ap.ReplyDone():
                self._reply_done(event, now)
            case ap.SpeechStarted():
                self._speech_started(now)
            case ap.SpeechStopped():
                self._awaiting_first_audio_since = now
                self._publish(ev.CallerSpeechStopped(t=self.t(now)))
            case ap.UserTranscript():
                self.summary.turns += 1
                self._publish(ev.CallerTranscript(event.text, t=self.t(now)))
            case ap.ToolCall():
                self.summary.tool_calls += 1
                self._gate.on_tool_call(event.call_id)
                self._tool_started[event.call_id] = now
                self._log.info("tool.called", tool=event.name, call_id=event.call_id)
                self._publish(ev.ToolCalled(event.name, event.call_id, dict(event.arguments), t=self.t(now)))
                self._out.append(RunTool(event))
                self._conv_tool_called(event, now)
            case ap.AgentTranscript():
                self._publish(ev.AgentTranscript(event.reply_id, event.text, event.interrupted, t=self.t(now)))
                if event.interrupted:
                    self._log.info("agent.reply_interrupted", reply_id=event.reply_id, heard_chars=len(event.text))
            case ap.SessionError():
                self._publish(ev.SessionErrorReport(event.code, event.fatal, t=self.t(now)))
                if not event.fatal:
                    self._log.warning(
                        "agent.session_error", code=event.code, message=event.message, param=event.param, fatal=False
                    )
                elif self._phase in (Phase.LIVE, Phase.RESUMING):  # while connecting, the shell decides (retry)
                    return self.agent_failed(AgentSessionError(event.code, event.message), now)
            case ap.SessionEnded():
                self.agent_ended = True
                self._end(Outcome.AGENT_ENDED, now)
            case ap.ReplyError():
                self._log.warning("agent.reply_error", reply_id=event.reply_id, code=event.code, message=event.message)
            case _:
                pass  # session.ready/updated, transcript deltas and unknown events need nothing from the call
        return self._take()

    def steady(self, reply_id: str | None) -> bool:
        """The steady state of a reply, the agent reader's fast lane: whether a chunk of ``reply_id`` needs nothing of
        the call but its conversion (its reply is the current one, not interrupted, its first audio already counted,
        no hold audio to stop, no answering-machine detection holding it, no action pending: none is between the
        core's calls, and a chunk must not carry one past its turn). Then the shell converts it (:attr:`convert_out`,
        or the compiled lane, :meth:`message_lane`) and hands its frames to the queue itself
        (:meth:`OutboundQueue.take`): ``agent_event`` would convert it and queue the same frames, and change nothing
        else. False: :meth:`agent_event` takes the chunk."""
        return not (
            reply_id != self._reply_id
            or self._awaiting_first_audio_since is not None
            or self.summary.time_to_first_agent_audio_ms is None
            or self._hold is not None
            or self.amd_pending
            or self._out
            or reply_id in self._interrupted
        )

    def message_lane(self) -> FusedFirMessages | None:
        """The agent audio converter as the compiled message lane (gateway/audio/fir_message.py), when this call's
        formats use the fused step and its carrier's media message is a template (the dialect's
        ``media_template``, known once the stream started); else None. It shares :attr:`convert_out`'s state: a
        steady chunk may take either."""
        template = getattr(self._dialect, "media_template", None)
        parts = template() if template is not None else None
        return self._outbound.messages(*parts) if parts is not None else None

    def _reply_audio(self, event: ap.ReplyAudio, now: float) -> None:
        reply_id = event.reply_id
        if reply_id in self._interrupted:
            return  # late audio of an interrupted reply: never to the caller
        if reply_id is not None and reply_id != self._reply_id:
            self._reply_id = reply_id
            self._set_reply_active(True)
        frames = self.convert_out(event.data)
        if not frames:
            return
        s = self.summary
        since = self._awaiting_first_audio_since
        if since is not None:
            latency = (now - since) * 1000
            if s.time_to_first_agent_audio_ms is None:
                s.time_to_first_agent_audio_ms = (now - self._started_at) * 1000
            else:
                s.response_latencies_ms.append(latency)
            self._awaiting_first_audio_since = None
            self._publish(ev.AgentFirstAudio(reply_id, round(latency, 1), t=self.t(now)))
        elif s.time_to_first_agent_audio_ms is None:
            s.time_to_first_agent_audio_ms = (now - self._started_at) * 1000
        if self._hold is not None:
            self._hold_stop(now, "agent_audio")  # the agent speaks: hold audio stops at once
        self._to_caller(reply_id, frames)  # held while an outbound call's detection runs (gateway.call.voicemail)

    def _reply_done(self, event: ap.ReplyDone, now: float) -> None:
        self._set_reply_active(False)
        if event.status == "interrupted":
            if event.reply_id not in self._interrupted:
                self._barge_in(event.reply_id, "reply_interrupted", now)
            self._interrupted.add(event.reply_id)
        else:
            tail = self._outbound.flush()
            if tail:
                self._to_caller(event.reply_id, tail)
            self._to_caller(event.reply_id, None)  # its mark: the echo proves the whole reply was heard
            self._conv_reply_done(now)
        for r in self._gate.on_reply_done(event.reply_id, event.status):
            self._send_result(r)
        self._last_reply_done(now)

    def _speech_started(self, now: float) -> None:
        self._publish(ev.CallerSpeechStarted(t=self.t(now)))
        self._conv_caller_active(now, speech=True)
        self._gate.on_speech_started()
        self._barge_in_at = now
        if self.profile.turn_detection.interruptible and (self.outbound.pending or self.playout.playing(now)):
            # The caller talks over audio still queued or playing at the carrier: flush it now
            # (docs/architecture/agent-api.md#client-duties; AssemblyAI's own Twilio example does the same).
            self._barge_in(self._reply_id if self._reply_active else None, "speech_started", now)

    def _barge_in(self, reply_id: str | None, cause: str, now: float) -> None:
        """Flush everything of the interrupted reply, here and at the carrier, before anything else is sent."""
        if reply_id is not None:
            self._interrupted.add(reply_id)
        queued_ms = self.outbound.queued_ms
        unplayed_ms = self.playout.lead_ms(now)
        if queued_ms or unplayed_ms:
            self.outbound.clear(self._dialect.build_clear(), now, self._barge_in_at)
            self.playout.clear(now)
        # The converter may hold a tail of the reply (a part frame, the resampler's block) even when nothing of it
        # is queued or playing (its audio stalled): drop it in every case, or it opens the next reply.
        self._outbound.reset()
        if not queued_ms and not unplayed_ms:
            return  # nothing of it was left at the carrier or in the queue: no clear was needed
        self.summary.interruptions += 1
        self._publish(ev.BargeIn(reply_id, cause, round(unplayed_ms), t=self.t(now)))
        self._log.info(
            "call.barge_in",
            reply_id=reply_id,
            cause=cause,
            dropped_queued_ms=queued_ms,
            dropped_unplayed_ms=round(unplayed_ms),
            heard_ms=self.playout.reply_played_ms.get(reply_id),
        )

    def _set_reply_active(self, active: bool) -> None:
        self._reply_active = self.outbound.reply_active = active

    # ========================================================================================= time and ending
    def tick(self, now: float) -> Sequence[Action]:
        """The time is ``now``: resolve clock-model marks, and act on every deadline that passed."""
        if self._phase is Phase.ENDED:
            return NOTHING
        marks = self.outbound.clock_marks
        if marks and any(t <= now for t, _ in marks):
            self.outbound.clock_marks = [(t, n) for t, n in marks if t > now]
            self._clock_marks_seen = len(self.outbound.clock_marks)
            for _t, name in sorted(m for m in marks if m[0] <= now):
                self._on_mark(name, now)
        phase = self.phase  # a mark echo may have ended the call
        if phase is Phase.ENDING:
            if self._prompt is not None and now >= self._prompt[2]:
                self._prompt_finished(False)
        elif phase is not Phase.ENDED:
            self._deadlines(now)
        return self._take()

    def _deadlines(self, now: float) -> None:
        if self._end_requested is not None:
            self._end(self._end_requested, now)
        elif now >= self._call_deadline:
            # A hung call must not hold a billed line (server.max_call_s).
            self._end(Outcome.MAX_DURATION, now)
        elif now >= self._media_at + self._settings.server.no_media_timeout_s:
            # Carriers send media every 20 ms even when the caller is silent: no media is a dead line.
            self._end(Outcome.NO_MEDIA, now)
        else:
            digits = self._dtmf.due(now)
            if digits:
                self._dtmf_held += digits
                self._deliver_held_digits()
            if self._exit is not None:
                self._exit_timers(self._exit, now)
            self._conv_tick(now)

    def request_end(self, outcome: Outcome) -> Sequence[Action]:
        """End the call from outside (drain, the carrier's completed callback) at the next :meth:`tick`."""
        if self._phase in (Phase.ENDING, Phase.ENDED) or self._end_requested is not None:
            return NOTHING
        self._end_requested = outcome
        return (WakeAt(float("-inf")),)

    def end(self, outcome: Outcome, now: float, error: str = "", *, farewell: bool = True) -> Sequence[Action]:
        """End the call with ``outcome``: with the gateway's own prompt first when the outcome has one
        (``farewell``: the carrier can still hear it), else at once. A call already ending keeps the outcome it is
        ending with, and ends now."""
        self._end(outcome, now, error, farewell=farewell)
        return self._take()

    def _end(self, outcome: Outcome, now: float, error: str = "", *, farewell: bool = True) -> None:
        if self._phase is Phase.ENDED:
            return
        if self._phase is Phase.ENDING:
            self._prompt_finished(False)
            return
        self._hold_stop(now, "call_ending", clear=False)
        self.was_live = self._phase is Phase.LIVE
        self.summary.end(outcome, error)
        prompt = PROMPT_FOR_OUTCOME.get(outcome) if farewell else None
        if prompt is None:
            self._go(Trigger.ENDED)
            self._out.append(EndCall(outcome))
            return
        self._go(Trigger.FAREWELL)
        self._out.append(EndAgentSession())
        self._speak(prompt, now)

    def _speak(self, prompt: str, now: float) -> None:
        """Say a bundled prompt to the caller (no agent involved), paced like agent audio; its mark echo proves it
        was heard (wait for the final mark before hanging up), within its length plus PROMPT_ECHO_SLACK_S."""
        self.summary.prompt = prompt
        q = self.outbound
        q.drop()  # the agent's audio still queued here never plays now
        if prompt == GOODBYE and self.playout.playing(now):
            q.clear(self._dialect.build_clear(), now, None)  # cut the agent short: goodbye now
            self.playout.clear(now)
        self._set_reply_active(False)
        frames = prompt_frames(self._prompt_audio(prompt), self._setup.start, self._dialect.frame_bytes)
        q.put_audio(_PROMPT_TAG, frames)
        q.put_mark(_PROMPT_TAG, waited=True)
        ms = len(frames) * FRAME_MS
        self._prompt = (prompt, ms, now + ms / 1000 + PROMPT_ECHO_SLACK_S)
        self._out.append(WakeAt(self._prompt[2]))

    def _prompt_finished(self, heard: bool) -> None:
        assert self._prompt is not None
        name, ms, _ = self._prompt
        self._prompt = None
        self._log.info("call.prompt_played", prompt=name, heard=heard, ms=ms)
        self._go(Trigger.ENDED)
        self._out.append(EndCall(Outcome(self.summary.outcome)))

    # ================================================================================================ plumbing
    def _go(self, trigger: Trigger) -> None:
        phase = self._phase = next_phase(self._phase, trigger)
        self._live = phase is Phase.LIVE
        self.agent_wanted = phase in (Phase.CONNECTING_AGENT, Phase.LIVE, Phase.RESUMING)

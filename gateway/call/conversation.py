"""The call's conversation rules, sans I/O: the idle caller (:mod:`gateway.call.idle`), hold audio
(:mod:`gateway.call.hold`) and answering-machine detection of outbound calls (:mod:`gateway.call.voicemail`), driven
by the core's events and clock (docs/how-to/conversation.md). Pure.
:class:`ConversationRules` is a base of :class:`gateway.call.core.CallCore`, which owns the state named here and
calls the ``_conv_*`` hooks from its entry points.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..agent import protocol as ap
from ..amd import AMD_PARAM, AmdVerdict, verdict
from ..audio.transcode import OutboundAudio
from ..conference import failed_instructions
from ..errors import CallControlFailed, Outcome
from ..outbound import OUTBOUND_PARAM
from ..playout import PlayoutTracker
from ..tools import call_control as cc
from . import events as ev
from .actions import Action, ControlRequest, SendAgent, WakeAt
from .agent_session import AgentSessionRules
from .hold import HOLD_NO_REPLY_S, HOLD_TAG, HOLD_TOP_UP, HoldLoop
from .idle import IdleStep, IdleWatch
from .last_words import LastWords
from .phase import Phase
from .sounds import prompt_frames
from .voicemail import MachineGate

__all__ = ["WARM_SLACK_S", "ConversationRules"]

#: A warm transfer with no word from Twilio this long after the human's ring timeout counts as no answer.
WARM_SLACK_S = 15.0

#: Hold audio that is due while the agent is still speaking (or its audio still plays) looks again this soon.
_HOLD_RECHECK_S = 0.1


class ConversationRules(AgentSessionRules):
    __slots__ = ("_hold", "_hold_due", "_hold_t0", "_hold_until", "_idle", "_machine", "_warm_human", "_warm_until",
                 "amd_pending", "outbound")  # fmt: skip

    # State owned (and set up) by CallCore.
    playout: PlayoutTracker
    _outbound: OutboundAudio
    _hold_sound: bytes
    _interrupted: set[str | None]

    def _conv_setup(self, now: float) -> None:
        self._idle = IdleWatch(self.profile.idle)
        self._hold: HoldLoop | None = None
        self._hold_due: float | None = None  # when hold audio starts, if the tool still runs
        self._hold_until: float | None = None  # every tool finished: stop if the agent stays silent this long
        self._hold_t0 = 0.0
        params = self._setup.start.custom_parameters
        # An outbound call placed with detection (its token covers the parameter): hold both ways until the verdict.
        amd = bool(params.get(OUTBOUND_PARAM)) and params.get(AMD_PARAM) == "1"
        timeout = self.profile.voicemail.beep_timeout_s
        self._machine = MachineGate(now + timeout, max_frames=int(timeout * 50)) if amd else None
        #: Detection runs: caller audio waits for the agent, agent audio waits for the caller (read per frame).
        self.amd_pending = amd
        # warm transfer (transfer_call mode "warm"): the human's leg being dialled, and when to give up on it
        self._warm_summary = ""
        self._warm_human: str | None = None
        self._warm_until: float | None = None

    # ---- hooks the core calls ------------------------------------------------------------------------------------
    def _conv_deadlines(self) -> list[float]:
        due = [d for d in (self._hold_due, self._hold_until, self._warm_until) if d is not None]
        if self.amd_pending and self._machine is not None:
            due.append(self._machine.deadline)
        if (d := self._idle.deadline(self._conv_busy)) is not None:
            due.append(d)
        return due

    def _conv_tick(self, now: float) -> None:
        if self._warm_until is not None and now >= self._warm_until and self._warm_human is not None:
            human = self._warm_human
            self._warm_failed("no-answer", now)
            self._out.append(ControlRequest("warm_cancel", human))  # stop its ringing: the caller stays here
        if self.amd_pending and self._machine is not None and now >= self._machine.deadline:
            self._log.warning("call.amd", answered_by=None, action="timeout")
            self._amd_release(now)
        if self._hold_until is not None and now >= self._hold_until:
            self._hold_stop(now, "no_reply")
        if self._hold_due is not None and now >= self._hold_due:
            self._hold_start(now)
        if self._live and self._exit is None and (step := self._idle.due(now, self._conv_busy)) is not None:
            self._idle_step(step, now)

    def _conv_reply_started(self) -> None:
        self._idle.agent_speaking()

    def _conv_reply_done(self, now: float) -> None:
        """A reply ended (completed): the caller has heard it once what is queued and at the carrier played."""
        self._idle.agent_finished(now + (self.outbound.queued_ms + self.playout.lead_ms(now)) / 1000.0)
        if (due := self._idle.deadline(self._conv_busy)) is not None:
            self._out.append(WakeAt(due))  # the watchdog sleeps until the deadline it knew

    def _conv_caller_active(self, now: float, *, speech: bool) -> None:
        """The caller spoke (or pressed a key): not idle; their speech stops hold audio at once (a barge-in)."""
        self._idle.caller_active()
        if speech:
            self._hold_stop(now, "barge_in")

    def _conv_tool_called(self, call: ap.ToolCall, now: float) -> None:
        hold = self.profile.hold_audio
        tool = self._settings.tools.get(call.name)
        if not hold.enabled or tool is None or not self._hold_sound:  # built-in tools are quick, or play tones
            return
        start = now if tool.execution_mode == "hold" else now + hold.after_ms / 1000.0
        self._hold_due = start if self._hold_due is None else min(self._hold_due, start)
        self._hold_until = None
        self._out.append(WakeAt(start))

    def tool_done(self, call: ap.ToolCall, result: str, is_error: bool, now: float) -> Sequence[Action]:
        if set(self._tool_started) <= {call.call_id}:  # the last tool running
            self._hold_due = None
            if self._hold is not None:
                self._hold_until = now + HOLD_NO_REPLY_S
                self._out.append(WakeAt(self._hold_until))
        return super().tool_done(call, result, is_error, now)

    # ---- idle ----------------------------------------------------------------------------------------------------
    @property
    def _conv_busy(self) -> bool:
        """The agent is busy, not the caller: a tool runs or hold audio plays (the idle clock pauses)."""
        return (
            bool(self._tool_started)
            or self._hold is not None
            or self._hold_due is not None
            or self.amd_pending
            or self._warm_human is not None
        )

    def _idle_step(self, step: IdleStep, now: float) -> None:
        count = self._idle.prompts
        self._log.info("call.idle_prompt", step=step.value, count=count, after_s=self.profile.idle.after_s)
        self._publish(ev.IdlePrompt(step.value, count, t=self.t(now)))
        self._out.append(SendAgent(ap.reply_create(self._idle.instructions(step))))
        if step is IdleStep.GOODBYE:
            # The goodbye is the agent's last reply: heard (its mark echoed), then the call ends as caller_idle.
            self._wind_down("idle", "", now)

    # ---- hold audio ----------------------------------------------------------------------------------------------
    def _hold_start(self, now: float) -> None:
        self._hold_due = None
        if not self._tool_started or self._phase is not Phase.LIVE or self._exit is not None:
            return
        if self._reply_active or self.outbound.pending or self.playout.playing(now):
            # The agent is still saying something (its pre-amble): hold audio starts once that has played.
            self._hold_due = now + max(_HOLD_RECHECK_S, self.playout.lead_ms(now) / 1000.0)
            self._out.append(WakeAt(self._hold_due))
            return
        self._hold_begin(now)

    def _hold_begin(self, now: float) -> None:
        if self._hold is not None or not self._hold_sound:
            return
        frames = prompt_frames(self._hold_sound, self._setup.start, self._dialect.frame_bytes)
        self._hold, self._hold_t0 = HoldLoop(frames), now
        # The writer pulls it from the queue, paced like agent audio; a few frames at a time are queued.
        self.outbound.loop, self.outbound.loop_ahead = (HOLD_TAG, self._hold.next), HOLD_TOP_UP
        self._log.info("call.hold_audio", started=True)
        self._publish(ev.HoldAudio(True, t=self.t(now)))

    def _hold_stop(self, now: float, cause: str, *, clear: bool = True) -> None:
        """Stop hold audio: drop what is queued here, and ``clear`` what the carrier still holds of it."""
        self._hold_due = self._hold_until = None
        hold, self._hold = self._hold, None
        if hold is None:
            return
        q = self.outbound
        q.loop = None
        q.drop_tag(HOLD_TAG)
        if clear and self.playout.lead_ms(now) > 0:
            q.clear(self._dialect.build_clear(), now, None)
            self.playout.clear(now)
        ms = round((now - self._hold_t0) * 1000)
        self._log.info("call.hold_audio", started=False, cause=cause, ms=ms)
        self._publish(ev.HoldAudio(False, cause, ms, t=self.t(now)))

    # ---- answering-machine detection (outbound calls) ---------------------------------------------------------
    def machine_detected(self, answered_by: str, now: float) -> Sequence[Action]:
        """Twilio's asynchronous AMD result for this call (``AnsweredBy``, gateway.amd)."""
        v = verdict(answered_by)
        if self._machine is None or not self.amd_pending or v is None or self._phase is not Phase.LIVE:
            self._log.info("call.amd", answered_by=answered_by, action="ignored")
            return self._take()
        self._publish(ev.MachineDetection(answered_by, t=self.t(now)))
        if v is AmdVerdict.MACHINE_START:
            self._log.info("call.amd", answered_by=answered_by, action="wait_for_beep")
        elif v is AmdVerdict.HUMAN:
            self._log.info("call.amd", answered_by=answered_by, action="proceed")
            self._amd_release(now)
        else:
            self._amd_machine(answered_by, v, now)
        return self._take()

    def _to_caller(self, reply_id: str | None, frames: list[bytes] | None) -> None:
        """Agent audio (``frames``) or a reply's end mark (None) for the caller: queued, or held while detection
        runs."""
        if self.amd_pending and self._machine is not None:
            if frames is None:
                self._machine.hold_mark(reply_id)
            else:
                self._machine.hold(reply_id, frames)
        elif frames is None:
            self.outbound.put_mark(reply_id)  # its echo proves the whole reply was heard
        else:
            self.outbound.put_audio(reply_id, frames)

    def _amd_release(self, now: float) -> None:
        """A human (or no verdict in time): what was held plays now, and the caller's audio goes to the agent."""
        assert self._machine is not None
        self.amd_pending = False
        for reply_id, frames in self._machine.release():
            self._to_caller(reply_id, frames)
        if not self._reply_active and self.outbound.pending:
            self._conv_reply_done(now)  # a greeting that ended while held: the idle clock counts from its end

    def _amd_machine(self, answered_by: str, v: AmdVerdict, now: float) -> None:
        """A machine at the end of its greeting (or a fax): drop what was held both ways, then leave the message."""
        assert self._machine is not None
        self.amd_pending = False
        cut = self._machine.discard()
        if self._reply_active:
            cut.add(self._reply_id)
            self._set_reply_active(False)
        self._interrupted.update(cut)  # late audio of those replies never plays
        self._outbound.reset()
        self._to_agent.clear()  # the machine's greeting never reaches the agent
        message = self.profile.voicemail.message
        if v is AmdVerdict.MESSAGE_END and message:
            self._log.info("call.amd", answered_by=answered_by, action="leave_message")
            self._out.append(SendAgent(ap.reply_create(message)))
            self._wind_down("voicemail", "", now)  # heard (its mark echoed), then the hang-up: voicemail_left
        else:
            self._log.info("call.amd", answered_by=answered_by, action="hang_up")
            self._end(Outcome.AGENT_HANGUP, now)

    # ---- warm transfer (transfer_call mode "warm") ---------------------------------------------------------------
    @property
    def own_number(self) -> str:
        """This call's number at the carrier (what an inbound caller dialled; an outbound call's ``from``): the
        caller id of the human's leg."""
        params = self._setup.start.custom_parameters
        return params.get("from", "") if params.get(OUTBOUND_PARAM) else params.get("to", "")

    @property
    def warm_summary(self) -> str:
        return self._warm_summary

    def warm_dialled(self, human_sid: str, now: float, failure: CallControlFailed | None = None) -> Sequence[Action]:
        """The human's leg was placed (``human_sid``), or could not be (``failure``): the caller stays, on hold."""
        x, self._exit = self._exit, None  # the call goes on while the human is dialled
        destination = cc.mask_destination(x.destination) if x is not None else None
        if failure is not None:
            self._log.warning(
                "call.transfer_failed",
                destination=destination,
                status=failure.status,
                code=failure.code,
                error=failure.message[:200],
            )
            self._warm_failed("failed", now)
            return self._take()
        self._warm_human = human_sid
        self._warm_until = now + self.profile.warm_transfer.timeout_s + WARM_SLACK_S
        self._log.info("call.warm_transfer", result="dialling", destination=destination)
        self._publish(ev.WarmTransfer("dialling", t=self.t(now)))
        self._hold_begin(now)
        self._out.append(WakeAt(self._warm_until))
        return self._take()

    def warm_result(self, result: str, now: float) -> Sequence[Action]:
        """Twilio's word on the human's leg (gateway.conference.transfer_result): answered (the whisper was heard
        and the human is in the room: join the caller), or why not (the caller stays with the agent, told so)."""
        if self._warm_human is None or self._phase is not Phase.LIVE:
            self._log.info("call.warm_transfer", result=result, ignored=True)
            return self._take()
        if result != "answered":
            self._warm_failed(result, now)
            return self._take()
        self._warm_until = None
        self._log.info("call.warm_transfer", result="answered")
        self._publish(ev.WarmTransfer("answered", t=self.t(now)))
        x = LastWords.begin("transfer", "", now, self.profile.end_call_timeout_s)
        x.leaving(now)  # the carrier acts now: the caller's 'stop' that follows is expected
        self._exit = x
        self._out.append(ControlRequest("warm_join"))
        return self._take()

    def warm_joined(self, now: float, failure: CallControlFailed | None = None) -> Sequence[Action]:
        """The caller's call was redirected into the room (or could not be)."""
        if failure is None:
            self._publish(ev.ControlAction("transfer", "ok", t=self.t(now)))
            self._log.info("call.transferred", destination=None, ms=0.0)
            self._warm_human = None
            self._end(Outcome.TRANSFERRED, now)
            return self._take()
        self._exit = None
        human = self._warm_human
        self._log.warning(
            "call.transfer_failed", destination=None, status=failure.status, code=failure.code, error=failure.message
        )
        self._warm_failed("failed", now)
        if human is not None:
            self._out.append(ControlRequest("warm_cancel", human))
        return self._take()

    def _warm_failed(self, result: str, now: float) -> None:
        """The caller is back with the agent, which is told why."""
        self._warm_human = self._warm_until = None
        self._hold_stop(now, "transfer_" + result.replace("-", "_"))
        self._log.info("call.warm_transfer", result=result)
        self._publish(ev.WarmTransfer(result, t=self.t(now)))
        self._publish(ev.ControlAction("transfer", "failed", t=self.t(now)))
        if self._live:
            self._out.append(SendAgent(ap.reply_create(failed_instructions(result)), keep=True))


class ControlAnswers(ConversationRules):
    """The call control's answers, once the carrier may have gone. A 'stop' while the carrier's call control acts
    (``control_pending``) leaves the call's end to that step's answer: it is usually the step's own doing. An answer
    that keeps the call (a failed transfer; a warm transfer's dial, placed or not; its failed join) counts on the
    carrier still being there, and it is not: the caller hung up."""

    __slots__ = ()

    carrier_stopped: bool  # set by CallCore: the carrier's 'stop' came

    def control_done(
        self, request: ControlRequest, now: float, *, ended_now: bool = True, failure: CallControlFailed | None = None
    ) -> Sequence[Action]:
        return self._unless_stopped(super().control_done(request, now, ended_now=ended_now, failure=failure), now)

    def warm_dialled(self, human_sid: str, now: float, failure: CallControlFailed | None = None) -> Sequence[Action]:
        return self._unless_stopped(super().warm_dialled(human_sid, now, failure), now)

    def warm_joined(self, now: float, failure: CallControlFailed | None = None) -> Sequence[Action]:
        return self._unless_stopped(super().warm_joined(now, failure), now)

    def _unless_stopped(self, actions: Sequence[Action], now: float) -> Sequence[Action]:
        """A control step answered and the call goes on (no way out pending, not ended): if the carrier already sent
        'stop', nothing more will be read from it (no media, no marks, no 'stop' to come), so the call ends now as
        the caller's hang-up, not at ``no_media_timeout_s`` with its agent session billed. The agent is not asked to
        tell the caller (the answer's ``reply.create``): no one is there, and its session ends with the call."""
        if not self.carrier_stopped or self._exit is not None or self._phase is Phase.ENDED:
            return actions
        self._end(Outcome.CALLER_HANGUP, now)
        return [*(a for a in actions if not isinstance(a, SendAgent)), *self._take()]

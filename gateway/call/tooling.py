"""The call's tools and call control, sans I/O: tool results under the timing rule, ``end_call`` and
``transfer_call`` (:mod:`gateway.call.last_words`, then the carrier's control), keypad tones out and keypresses in.
Pure. :class:`CallTools` is the base of :class:`gateway.call.core.CallCore`, which owns the state named here; the
plumbing both share (the action list, log lines as actions) is here too.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..agent import protocol as ap
from ..carriers.base import FRAME_MS, Dialect
from ..config import Profile, Settings
from ..errors import CallControlFailed, Outcome
from ..tools import call_control as cc
from ..tools.gate import PendingResult, ToolResultGate
from . import events as ev
from .actions import Action, ControlRequest, LogLine, Publish, SendAgent, WakeAt
from .last_words import LastWords, Step
from .outbound_queue import OutboundQueue
from .phase import Phase
from .setup import CallSetup
from .sounds import tone_frames
from .stats import CallSummary

__all__ = ["PROMPT_ECHO_SLACK_S", "CallTools", "TonePlan"]

#: A prompt (or keypad tones) must be confirmed by its mark echo within its own length plus this (carrier round
#: trip, jitter).
PROMPT_ECHO_SLACK_S = 2.0
HANGUP_TAG = "__hangup__"
NOTHING: Sequence[Action] = ()
_HANGUP_OUTCOME = {"hangup": Outcome.AGENT_HANGUP, "idle": Outcome.CALLER_IDLE, "voicemail": Outcome.VOICEMAIL_LEFT}


@dataclass(frozen=True, slots=True)
class TonePlan:
    """Keypad tones queued by :meth:`CallTools.play_tones`: their mark's ``tag`` (reported by ``MarkHeard``), their
    length, and how long to wait for that echo."""

    tag: str
    ms: int
    wait_s: float


class _Log:
    """Log lines as actions: ``self._log.info("event", key=value)`` reads like logging, and the shell writes them."""

    def __init__(self, emit: Callable[[Action], None]) -> None:
        self._emit = emit  # the core's own outbox (its list's append: the log neither reaches into nor holds the core)

    def info(self, event: str, **fields: Any) -> None:
        self._emit(LogLine("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self._emit(LogLine("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self._emit(LogLine("error", event, fields))


class CallTools:
    # Slots, not an instance dict: each media message reads the core's attributes, and under load it finds them cold
    # (docs/architecture/performance.md#cold-caches). Each class of the core declares the attributes it sets first.
    __slots__ = ("_dtmf_held", "_exit", "_log", "_out", "_tones", "_warm_summary")

    # State owned (and set up) by CallCore.
    summary: CallSummary
    profile: Profile
    _settings: Settings
    _dialect: Dialect
    _setup: CallSetup
    _started_at: float
    _phase: Phase
    _live: bool
    _reply_active: bool
    outbound: OutboundQueue
    _gate: ToolResultGate
    _tool_started: dict[str, float]
    _deferred: list[str]
    _dtmf: cc.DtmfInbox
    _dtmf_held: str
    _tones: int
    _exit: LastWords | None
    _control_available: bool
    _reattached_from: str | None
    _to_agent: deque[bytes]

    def __init__(self) -> None:
        self._out: list[Action] = []  # never rebound: the log appends to it (no reference back to the core)
        self._log = _Log(self._out.append)

    def _end(self, outcome: Outcome, now: float, error: str = "", *, farewell: bool = True) -> None:
        raise NotImplementedError  # CallCore._end: the call's ending is the core's

    def t(self, now: float) -> float:
        """Seconds since the stream started (call events' ``t``)."""
        return round(now - self._started_at, 3)

    def tool_done(self, call: ap.ToolCall, result: str, is_error: bool, now: float) -> Sequence[Action]:
        """A tool finished: its result goes to the agent when the timing rule allows (gateway.tools.gate)."""
        sendable = self._gate.submit(PendingResult(call.call_id, result, is_error))
        t0 = self._tool_started.pop(call.call_id, now)
        self._log.info(
            "tool.result",
            tool=call.name,
            call_id=call.call_id,
            is_error=is_error,
            ms=round((now - t0) * 1000, 1),
            sent=bool(sendable),
            held=self._gate.held > 0,
        )
        ms = round((now - t0) * 1000, 1)
        self._publish(ev.ToolFinished(call.name, call.call_id, result, is_error, ms, t=self.t(now)))
        for r in sendable:
            self._send_result(r)
        return self._take()

    def _send_result(self, r: PendingResult) -> None:
        if self._live:
            self._out.append(SendAgent(result_text(r), keep=True))
        else:
            self._deferred.append(result_text(r))  # the agent is being resumed: send it once it is back

    def request_hangup(self, now: float) -> Sequence[Action]:
        """``end_call``: once the goodbye was heard, hang up (over the carrier's REST too when closing the stream
        alone might not end the call: profile ``hangup_via_rest``, or a stream re-attached after a redirect)."""
        if self._exit is not None or self._phase in (Phase.ENDING, Phase.ENDED):
            return NOTHING
        self._wind_down("hangup", "", now)
        return self._take()

    def request_transfer(
        self, destination: str, now: float, *, warm_summary: str | None = None
    ) -> tuple[str | None, Sequence[Action]]:
        """``transfer_call`` (destination allow-listed, carrier control available): (why not, or None; actions).
        Accepted: the agent says the announcement, and once it was heard the carrier transfers the call; with
        ``warm_summary`` (mode "warm", gateway.call.warm) the human is dialled and briefed first."""
        if self._exit is not None or self._phase in (Phase.ENDING, Phase.ENDED):
            self._log.warning("call.transfer_refused", reason="call_ending")
            return "the call is already ending", self._take()
        self._log.info(
            "call.transfer_started", destination=cc.mask_destination(destination), warm=warm_summary is not None
        )
        self._warm_summary = warm_summary or ""
        self._wind_down("transfer" if warm_summary is None else "warm", destination, now)
        return None, self._take()

    def _wind_down(self, kind: str, destination: str, now: float) -> None:
        self._exit = LastWords.begin(kind, destination, now, self.profile.end_call_timeout_s)
        self._out.append(WakeAt(self._exit.start_until))

    def _last_reply_done(self, now: float) -> None:
        if self._exit is not None and self._exit.reply_done() is Step.QUEUE_MARK:
            self.outbound.put_mark(HANGUP_TAG, waited=True)

    def _exit_timers(self, x: LastWords, now: float) -> None:
        step = x.due(now, self._reply_active)
        if step is Step.QUEUE_MARK:
            self.outbound.put_mark(HANGUP_TAG, waited=True)
        elif step is Step.TIMED_OUT:
            self._log.warning("call.end_call_timeout", waited_s=self.profile.end_call_timeout_s)
            self._leave(now)

    def _leave(self, now: float) -> None:
        """The last words were heard (or the wait ran out): hang up or transfer."""
        x = self._exit
        assert x is not None
        hangup = x.kind in _HANGUP_OUTCOME  # idle: the goodbye to a silent caller; voicemail: the message left
        if hangup and not (
            self._control_available and (self.profile.hangup_via_rest or self._reattached_from is not None)
        ):
            self._end(_HANGUP_OUTCOME[x.kind], now)
            return
        x.leaving(now)
        if hangup:
            self._out.append(ControlRequest("hangup"))
        else:  # warm: dial the human first (gateway.call.conversation); else hand the call over now
            self._out.append(ControlRequest("warm_dial" if x.kind == "warm" else "transfer", x.destination))

    def control_done(
        self, request: ControlRequest, now: float, *, ended_now: bool = True, failure: CallControlFailed | None = None
    ) -> Sequence[Action]:
        """The carrier's call control answered ``request``. A failed hang-up still ends the call (closing the
        stream is the hang-up of last resort); a failed transfer keeps it, and the agent is told (unless the caller
        hung up meanwhile: the core then ends the call, ``ControlAnswers`` in gateway.call.conversation)."""
        x = self._exit
        ms = round((now - (x.control_at if x is not None else now)) * 1000, 1)
        t = self.t(now)
        if request.action == "hangup":
            if failure is not None:
                self._log.warning(
                    "call.hangup_rest_failed", status=failure.status, code=failure.code, error=failure.message[:200]
                )
                self._publish(ev.ControlAction("hangup", "failed", t=t))
            else:
                self._log.info("call.hangup_rest", already_ended=not ended_now, ms=ms)
                self._publish(ev.ControlAction("hangup", "ok" if ended_now else "already_ended", t=t))
            self._end(_HANGUP_OUTCOME[x.kind] if x is not None else Outcome.AGENT_HANGUP, now)
            return self._take()
        masked = cc.mask_destination(request.destination)
        if failure is None:
            self._log.info("call.transferred", destination=masked, ms=ms)
            self._publish(ev.ControlAction("transfer", "ok", t=t))
            self._end(Outcome.TRANSFERRED, now)
            return self._take()
        self._exit = None  # the call goes on
        self._log.warning(
            "call.transfer_failed",
            destination=masked,
            status=failure.status,
            code=failure.code,
            error=failure.message[:200],
        )
        self._publish(ev.ControlAction("transfer", "failed", t=t))
        if self._live:
            self._out.append(
                SendAgent(
                    ap.reply_create(
                        "The transfer did not go through. Tell the caller, and offer to help in another way."
                    )
                )
            )
        return self._take()

    def play_tones(self, digits: str, now: float) -> TonePlan:
        """``send_dtmf``: keypad tones as ordinary audio in the stream's own format, paced and marked like agent
        audio, so the stream stays up. Raises ValueError for digits the tone generator cannot play."""
        frames = tone_frames(digits, self._setup.start, self._dialect.frame_bytes)
        self._tones += 1
        tag = f"__dtmf_{self._tones}__"
        self.outbound.put_audio(tag, frames)
        self.outbound.put_mark(tag, waited=True)
        ms = len(frames) * FRAME_MS
        return TonePlan(tag, ms, ms / 1000 + self._settings.audio.playout_lead_ms / 1000 + PROMPT_ECHO_SLACK_S)

    def tones_done(self, digits: str, plan: TonePlan, heard: bool, now: float) -> Sequence[Action]:
        self._log.info("call.dtmf_sent", digits=len(digits), ms=plan.ms, heard=heard)
        self._publish(ev.TonesSent(len(digits), t=self.t(now)))
        return self._take()

    def read_dtmf(self, now: float) -> tuple[str, Sequence[Action]]:
        """``read_dtmf`` (profile ``dtmf_mode = "buffer"``): the keypresses since the last read."""
        digits = self._dtmf.read()
        self._log.info("call.dtmf_delivered", mode="buffer", digits=len(digits))
        return digits, self._take()

    def _deliver_held_digits(self) -> None:
        if self._dtmf_held and self._live:
            digits, self._dtmf_held = self._dtmf_held, ""
            self._out.append(SendAgent(ap.reply_create(cc.dtmf_instructions(digits))))
            self._log.info("call.dtmf_delivered", mode="reply", digits=len(digits))

    # ---- plumbing ----------------------------------------------------------------------------------------------
    def _emit(self, action: Action) -> None:
        self._out.append(action)

    def _publish(self, event: ev.CallEvent) -> None:
        self._out.append(Publish(event))

    def _take(self) -> Sequence[Action]:
        out = self._out
        if not out:
            return NOTHING
        taken = out.copy()
        out.clear()
        return taken


def result_text(r: PendingResult) -> str:
    return ap.tool_result(r.call_id, r.result, r.is_error)

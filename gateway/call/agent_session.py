"""The agent session's life as the call core sees it: ready, adopted from a parked stream (re-attach), dropped,
resumed, failed (docs/architecture/call-core.md). Pure. :class:`AgentSessionRules` is a base of
:class:`gateway.call.core.CallCore`, which owns the state named here; each method checks the phase first (an event
that comes too late for it changes nothing) and moves it through the one table in :mod:`gateway.call.phase`."""

from __future__ import annotations

from collections.abc import Sequence

from ..audio.transcode import OutboundAudio
from ..config import Profile
from ..errors import AgentSessionError, AgentUnavailable, Outcome
from ..tools import call_control as cc
from . import events as ev
from .actions import Action, SendAgent
from .phase import Phase, Trigger
from .tooling import NOTHING, CallTools, result_text

__all__ = ["AgentSessionRules"]


class AgentSessionRules(CallTools):
    __slots__ = ("_awaiting_first_audio_since", "_deferred", "_dtmf", "_reattached_from", "profile", "summary")

    # State owned (and set up) by CallCore.
    _reply_id: str | None
    _awaiting_first_audio_since: float | None
    _outbound: OutboundAudio

    def _go(self, trigger: Trigger) -> None:
        raise NotImplementedError  # CallCore._go: the phase table is the core's

    def _set_reply_active(self, active: bool) -> None:
        raise NotImplementedError  # CallCore._set_reply_active

    def agent_ready(self, session_id: str, now: float) -> Sequence[Action]:
        """``session.ready`` of a new session."""
        if self._phase is not Phase.CONNECTING_AGENT:
            return NOTHING  # the call started ending meanwhile
        self._go(Trigger.AGENT_READY)
        self.summary.session_id = session_id
        self._awaiting_first_audio_since = now if self.profile.greeting else None
        self._publish(ev.AgentSessionReady(session_id, t=self.t(now)))
        self._deliver_held_digits()
        return self._take()

    def agent_adopted(
        self, session_id: str, profile_name: str, profile: Profile, previous_stream_sid: str, gap_ms: float, now: float
    ) -> Sequence[Action]:
        """This stream took over the call's parked agent session (gateway.reattach): same session, its profile."""
        if self._phase is not Phase.CONNECTING_AGENT:
            return NOTHING
        self._go(Trigger.AGENT_READY)
        s = self.summary
        s.session_id, s.profile = session_id, profile_name
        self.profile = profile
        self._dtmf = cc.DtmfInbox(profile.dtmf_mode, profile.dtmf_interdigit_ms / 1000.0)
        self._reattached_from = previous_stream_sid
        self._log.info("call.reattached", session_id=session_id, previous_stream_sid=previous_stream_sid, gap_ms=gap_ms)
        self._publish(ev.Reattach(session_id, gap_ms, t=self.t(now)))
        return self._take()

    def agent_dropped(self, close_code: int | None, reason: str, now: float) -> Sequence[Action]:
        """The agent socket closed without ``session.ended``: the shell resumes the session meanwhile. A reply cut
        by the drop is treated as ended: what the carrier has keeps playing, the converter's tail is flushed and
        marked, and tool results held for it are sent after the resume."""
        if self._phase is not Phase.LIVE:
            return NOTHING
        self._go(Trigger.AGENT_DROPPED)
        s = self.summary
        s.agent_close_code = close_code
        self._log.warning("agent.dropped", close_code=close_code, reason=reason, session_id=s.session_id)
        self._publish(ev.AgentDrop(close_code, t=self.t(now)))
        if self._reply_active:
            reply_id = self._reply_id
            self._set_reply_active(False)
            tail = self._outbound.flush()
            if tail:
                self.outbound.put_audio(reply_id, tail)
            self.outbound.put_mark(reply_id)
            self._deferred += [result_text(r) for r in self._gate.on_reply_done(reply_id, "completed")]
            self._last_reply_done(now)
            self._log.info("agent.reply_cut", reply_id=reply_id)
        return self._take()

    def agent_resumed(self, ready_session_id: str | None, attempts: int, gap_ms: float, now: float) -> Sequence[Action]:
        """The dropped session answers again: ``ready_session_id`` from its ``session.ready``, or None for a server
        that just carried on (no ``session.ready``)."""
        if self._phase is not Phase.RESUMING:
            return NOTHING
        self._go(Trigger.AGENT_RESUMED)
        s = self.summary
        s.agent_resumes += 1
        s.resume_gaps_ms.append(gap_ms)
        new_id = ready_session_id if ready_session_id is not None else s.session_id
        self._log.info(
            "agent.resumed",
            attempts=attempts,
            gap_ms=round(gap_ms, 1),
            session_id=s.session_id,
            **({"new_session_id": new_id} if new_id != s.session_id else {}),
            confirmed=ready_session_id is not None,
            buffered_frames=len(self._to_agent),
        )
        self._publish(ev.AgentResume(attempts, round(gap_ms, 1), t=self.t(now)))
        deferred, self._deferred = self._deferred, []
        self._out += [SendAgent(text, keep=True) for text in deferred]
        self._deliver_held_digits()
        return self._take()

    def agent_failed(self, error: AgentUnavailable, now: float) -> Sequence[Action]:
        """The agent could not be reached, refused the session, or could not be resumed: the apology, then the end."""
        if self._phase in (Phase.ENDING, Phase.ENDED):
            return NOTHING
        if isinstance(error, AgentSessionError) and error.code == "agent_not_found":
            # A profile's agent_id the agent does not know (docs/how-to/conversation.md#stored-agents).
            self._log.error("agent.agent_not_found", agent_id=self.profile.agent_id, message=error.message)
            self._end(Outcome.AGENT_ERROR, now, f"{error.code}: {error.message}")
        elif isinstance(error, AgentSessionError):
            self._log.warning("agent.session_error", code=error.code, message=error.message, fatal=True)
            self._end(Outcome.AGENT_ERROR, now, f"{error.code}: {error.message}")
        else:
            self._log.error("agent.unavailable", error=str(error))
            self._end(Outcome.AGENT_UNAVAILABLE, now, str(error))
        return self._take()

    def agent_message_unsent(self, text: str) -> None:
        """A :class:`SendAgent` with ``keep`` found the socket dropped: send it after the resume."""
        self._deferred.append(text)

"""When the simulated caller speaks and when it hangs up. Pure: fed one 20 ms frame at a time, never reads a clock.

The caller behaves like a polite (or, with barge-in, impatient) person on the phone:

- it lets the greeting play out: turn 1 starts once the agent has been audible and then silent for ``pause``
  frames, or after ``greeting_timeout`` frames if the agent says nothing at all;
- after each of its turns it waits for the reply to *start* (agent audio rising after the turn ended) and then to
  *end* (``pause`` frames of agent silence), then speaks its next turn, or hangs up after the last one;
- with ``barge_in_after`` set it starts its next turn that many frames into each reply instead (never into the
  greeting, which an agent may make uninterruptible); agent audio heard after such a turn counts as the answer
  only once the gateway's ``clear`` has ended the interrupted reply (:meth:`TurnTaking.on_clear`), or, if no clear
  comes, once agent audio rises after at least ``pause`` frames of silence (the interrupted reply stopped, or ran
  to its end, and this is the answer);
- if no reply starts within ``reply_timeout`` frames, or one goes on for ``max_reply`` frames, it moves on;
- with ``hangup_after`` it hangs up at that frame whatever it is doing;
- with ``stay_on_line`` it does not hang up when its script is done: it stays on the line saying nothing (a silent
  caller) until the gateway hangs up, or ``hangup_after``.

"Agent audible" is judged by the shell on the frame that plays at that moment (see :func:`frame_audible`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..audio import g711

__all__ = [
    "AUDIBLE_RMS",
    "Action",
    "HangUp",
    "StartTurn",
    "TurnTaking",
    "TurnTakingConfig",
    "frame_audible",
    "frame_rms",
]

#: A 20 ms frame louder than this (PCM16 RMS, about -44 dBFS) counts as someone speaking. μ-law silence decodes
#: to 0; speech from a TTS is in the thousands.
AUDIBLE_RMS = 200.0


def frame_rms(ulaw: bytes) -> float:
    """RMS level (PCM16 units) of a chunk of μ-law."""
    if not ulaw:
        return 0.0
    x = np.frombuffer(g711.ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    return float(np.sqrt(np.mean(x * x)))


def frame_audible(ulaw: bytes, threshold: float = AUDIBLE_RMS) -> bool:
    return frame_rms(ulaw) > threshold


@dataclass(frozen=True)
class TurnTakingConfig:
    """All durations in 20 ms frames."""

    turns: int
    pause: int = 60  # 1.2 s of agent silence ends the greeting / a reply
    greeting_timeout: int = 250  # 5 s without any greeting: speak anyway
    reply_timeout: int = 500  # 10 s without a reply starting: move on
    max_reply: int = 3000  # a reply still going after 60 s: move on
    barge_in_after: int | None = None
    hangup_after: int | None = None
    stay_on_line: bool = False


@dataclass(frozen=True)
class StartTurn:
    index: int  # 0-based
    barge_in: bool = False  # started by the barge-in rule, into a reply that was still going


@dataclass(frozen=True)
class HangUp:
    reason: str  # script_done | hangup_after | no_reply


Action = StartTurn | HangUp | None

_GREETING, _SPEAKING, _AWAIT_REPLY, _SILENT, _DONE = "greeting", "speaking", "awaiting_reply", "silent", "done"


class TurnTaking:
    """The caller's script as a state machine: call :meth:`on_frame` every frame, :meth:`turn_finished` when the
    audio of the turn being spoken has all been sent."""

    def __init__(self, config: TurnTakingConfig) -> None:
        self.config = config
        self.phase = _GREETING
        self.turn = -1  # index of the turn being spoken or awaiting its reply
        self._heard_any = False
        self._last_audible: int | None = None
        self._prev_audible = False
        self._turn_end: int | None = None
        self._reply_start: int | None = None
        self._barged_in = False  # the current turn interrupted a reply and no clear has come yet
        #: Indexes of turns whose reply never started (reply_timeout).
        self.unanswered: list[int] = []

    def on_frame(self, frame: int, agent_audible: bool) -> Action:
        cfg = self.config
        rising = agent_audible and not self._prev_audible
        # Frames of agent silence just before this one (how long the gap was, at a rising edge).
        gap = frame - self._last_audible - 1 if self._last_audible is not None else frame
        self._prev_audible = agent_audible
        if agent_audible:
            self._last_audible = frame
        if self.phase == _DONE:
            return None
        if cfg.hangup_after is not None and frame >= cfg.hangup_after:
            return self._hang_up("hangup_after")
        if self.phase == _SILENT:
            return None
        if self.phase == _GREETING:
            self._heard_any |= agent_audible
            silent_for = frame - self._last_audible if self._last_audible is not None else frame
            if (self._heard_any and silent_for > cfg.pause) or (not self._heard_any and frame >= cfg.greeting_timeout):
                return self._next_turn(barge_in=False)
            return None
        if self.phase == _AWAIT_REPLY:
            assert self._turn_end is not None
            if self._reply_start is None:
                # After a barge-in with no clear (yet), audio that rises after a short gap is still the interrupted
                # reply going on; the answer comes after the agent has fallen silent for a pause.
                if rising and frame >= self._turn_end and (not self._barged_in or gap >= cfg.pause):
                    self._reply_start = frame
                elif frame - self._turn_end >= cfg.reply_timeout:
                    self.unanswered.append(self.turn)
                    return self._next_turn(barge_in=False, after_no_reply=True)
                return None
            has_next = self.turn + 1 < cfg.turns
            if has_next and cfg.barge_in_after is not None and frame - self._reply_start >= cfg.barge_in_after:
                return self._next_turn(barge_in=True)
            assert self._last_audible is not None
            if frame - self._last_audible > cfg.pause or frame - self._reply_start >= cfg.max_reply:
                return self._next_turn(barge_in=False)
        return None

    def turn_finished(self, frame: int) -> None:
        """The caller's audio for the current turn has all been sent; ``frame`` is the first frame after it."""
        if self.phase != _SPEAKING:
            return
        self.phase = _AWAIT_REPLY
        self._turn_end = frame
        self._reply_start = None

    def on_clear(self, frame: int) -> None:
        """The gateway cleared the line. After a barge-in that means the interrupted reply is over: audio heard
        since the caller's turn ended was its tail, not the answer, so wait for the answer from here."""
        if not self._barged_in:
            return
        self._barged_in = False
        if self.phase == _AWAIT_REPLY:
            assert self._turn_end is not None
            self._turn_end = max(self._turn_end, frame)
            self._reply_start = None

    def _next_turn(self, *, barge_in: bool, after_no_reply: bool = False) -> Action:
        if self.turn + 1 >= self.config.turns:
            if self.config.stay_on_line:
                self.phase = _SILENT
                return None
            return self._hang_up("no_reply" if after_no_reply else "script_done")
        self.turn += 1
        self.phase = _SPEAKING
        self._barged_in = barge_in
        return StartTurn(self.turn, barge_in=barge_in)

    def _hang_up(self, reason: str) -> HangUp:
        self.phase = _DONE
        return HangUp(reason)

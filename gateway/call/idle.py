"""The idle caller, sans I/O (docs/how-to/conversation.md#idle-callers). Pure.

Once the agent has finished speaking (its reply played out at the carrier) and the caller says nothing for
``idle.after_s``, the call asks the agent for a reprompt (``reply.create`` with ``idle.instructions``). After
``idle.max_prompts`` reprompts nobody answered, the agent says goodbye (``idle.goodbye``) and the call ends as
``caller_idle`` once that goodbye was heard. Caller speech or a keypress resets the count; a running tool or hold
audio pauses the clock (the agent is busy, not the caller), and the agent speaking stops it until it is done.
"""

from __future__ import annotations

import enum

from ..profile_options import IdleSettings

__all__ = ["IdleStep", "IdleWatch"]


class IdleStep(enum.Enum):
    REPROMPT = "reprompt"  # reply.create with idle.instructions
    GOODBYE = "goodbye"  # reply.create with idle.goodbye, then hang up once it was heard


class IdleWatch:
    """One call's idle clock. ``after_s = 0``: off (never due)."""

    def __init__(self, settings: IdleSettings) -> None:
        self._settings = settings
        self.prompts = 0  # reprompts sent since the caller last spoke
        self._quiet_from: float | None = None  # when the agent's last words finished playing
        self.done = False  # the goodbye was asked for: nothing more

    @property
    def enabled(self) -> bool:
        return self._settings.after_s > 0 and not self.done

    def agent_finished(self, played_out_at: float) -> None:
        """The agent's reply ended; its audio finishes playing at the carrier at ``played_out_at``."""
        if self.enabled:
            self._quiet_from = played_out_at

    def agent_speaking(self) -> None:
        """A reply started: the caller is listening, not idle."""
        self._quiet_from = None

    def caller_active(self) -> None:
        """The caller spoke or pressed a key: they are there. The count starts again after the next reply."""
        self.prompts = 0
        self._quiet_from = None

    def deadline(self, busy: bool) -> float | None:
        """When the next step is due; None while off, not armed, or ``busy`` (a tool runs, hold audio plays)."""
        if busy or self._quiet_from is None or not self.enabled:
            return None
        return self._quiet_from + self._settings.after_s

    def due(self, now: float, busy: bool) -> IdleStep | None:
        """The step due at ``now`` (and it is taken: the clock waits for the agent's next reply)."""
        deadline = self.deadline(busy)
        if deadline is None or now < deadline:
            return None
        self._quiet_from = None
        if self.prompts >= self._settings.max_prompts:
            self.done = True
            return IdleStep.GOODBYE
        self.prompts += 1
        return IdleStep.REPROMPT

    def instructions(self, step: IdleStep) -> str:
        return self._settings.instructions if step is IdleStep.REPROMPT else self._settings.goodbye

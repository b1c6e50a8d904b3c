"""The phase of a call, and every transition between phases, in one table (h11's ``_state.py`` is the model).
Pure.

::

    AWAITING_START ─accepted─▶ CONNECTING_AGENT ─agent_ready─▶ LIVE ─agent_dropped─▶ RESUMING
                                                                ▲                      │
                                                                └────agent_resumed─────┘
    CONNECTING_AGENT, LIVE, RESUMING ──farewell──▶ ENDING (the gateway speaks a prompt of its own)
    every phase but ENDED ──ended──▶ ENDED

The core (:mod:`gateway.call.core`) moves only along this table; anything else is our bug
(:class:`CallPhaseError`), never the peer's. Events that arrive late for their phase (an agent that becomes ready
after the call started ending) are the core's to ignore before asking for a transition.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from ..errors import CallPhaseError

__all__ = ["TRANSITIONS", "Phase", "Trigger", "next_phase"]


class Phase(enum.Enum):
    AWAITING_START = "awaiting_start"  # the socket is open; no authorized 'start' yet
    CONNECTING_AGENT = "connecting_agent"  # authorized; the agent session is being opened (or adopted)
    LIVE = "live"  # the agent session is ready: audio flows both ways
    RESUMING = "resuming"  # the agent socket dropped: caller audio is buffered while the session is resumed
    ENDING = "ending"  # the outcome is decided; the gateway plays its own prompt before hanging up
    ENDED = "ended"  # nothing more happens; the shell tears the call down


class Trigger(enum.Enum):
    ACCEPTED = "accepted"  # the stream's 'start' verified and was admitted
    AGENT_READY = "agent_ready"  # session.ready, or a parked session adopted
    AGENT_DROPPED = "agent_dropped"  # the agent socket closed without session.ended
    AGENT_RESUMED = "agent_resumed"  # session.resume answered (or the server just carried on)
    FAREWELL = "farewell"  # the call ends with a prompt of the gateway's own (apology, goodbye)
    ENDED = "ended"  # the call is over


_ANY_BUT_ENDED = (Phase.AWAITING_START, Phase.CONNECTING_AGENT, Phase.LIVE, Phase.RESUMING, Phase.ENDING)

#: (phase, trigger) → the next phase. The only place a call's phase changes.
TRANSITIONS: Mapping[tuple[Phase, Trigger], Phase] = {
    (Phase.AWAITING_START, Trigger.ACCEPTED): Phase.CONNECTING_AGENT,
    (Phase.CONNECTING_AGENT, Trigger.AGENT_READY): Phase.LIVE,
    (Phase.LIVE, Trigger.AGENT_DROPPED): Phase.RESUMING,
    (Phase.RESUMING, Trigger.AGENT_RESUMED): Phase.LIVE,
    (Phase.CONNECTING_AGENT, Trigger.FAREWELL): Phase.ENDING,
    (Phase.LIVE, Trigger.FAREWELL): Phase.ENDING,
    (Phase.RESUMING, Trigger.FAREWELL): Phase.ENDING,
    **{(phase, Trigger.ENDED): Phase.ENDED for phase in _ANY_BUT_ENDED},
}


def next_phase(phase: Phase, trigger: Trigger) -> Phase:
    """The phase ``trigger`` leads to from ``phase``; :class:`CallPhaseError` if the table has no such move."""
    try:
        return TRANSITIONS[phase, trigger]
    except KeyError:
        raise CallPhaseError(f"no transition from {phase.value} on {trigger.value}") from None

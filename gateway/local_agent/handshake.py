"""Opening a local-agent socket, from the upgrade's credentials to a session: a state machine. Pure.

Like h11's connection: the shell (:mod:`.endpoint`) feeds in what happened (the credentials checked, a client
message, a timeout, the peer gone, the session opened or found) with the time, and gets back the actions to carry
out (:data:`Action`: send an event, close the socket, open a session, look one up to resume). The phase is one enum and
every transition is in :data:`TRANSITIONS`. The rules are the live service's (docs/reference/local-agent-api.md#auth and
#implemented):

- bad credentials: the upgrade succeeds, then ``session.error{unauthorized}`` and close 1008 before any message;
- nothing is sent before the first ``session.update``; then ``session.updated`` and ``session.ready``;
- ``session.resume`` as the first message resumes a session: ``session.ready`` with the same id, or
  ``session_not_found`` (1008) when it is gone; a resume token resumes only its own session
  (``session_forbidden``) and cannot open a new one (``unauthorized``);
- a first ``session.update`` ``{agent_id}`` has the shell look the stored agent up (:class:`LoadAgent`, I/O) and
  opens the session with its config, or answers ``agent_not_found`` (1008);
- ``session.end`` before a session: ``session.ended`` and close 1000;
- anything else first (audio included) is ``invalid_format`` and the socket stays open; a fatal error closes
  it with 1008; no first message within the timeout closes it with 1008.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, TypeAlias

from ..errors import LocalProtocolError
from .protocol import (
    Grant,
    ProtocolError,
    SessionConfig,
    SessionEnd,
    SessionResume,
    SessionUpdate,
    apply_session_update,
    check_agent_binding,
    config_echo,
    parse_client_event,
    server_event,
    session_error,
)

__all__ = [
    "TRANSITIONS",
    "Action",
    "Close",
    "Handshake",
    "HandshakeMisuse",
    "LoadAgent",
    "OpenSession",
    "Phase",
    "ResumeSession",
    "Send",
]


class Phase(enum.Enum):
    AUTHENTICATING = "authenticating"  # the upgrade's credentials are not checked yet
    AWAITING_FIRST = "awaiting_first"  # authenticated: waiting for session.update or session.resume
    LOADING_AGENT = "loading_agent"  # a first session.update {agent_id}: the shell looks the stored agent up
    OPENING = "opening"  # a valid first session.update: the shell opens the session
    RESUMING = "resuming"  # session.resume: the shell looks the session up (and takes it over)
    READY = "ready"  # session.ready sent: the connection serves the session from here on
    CLOSED = "closed"  # the socket is closed or closing: nothing more to do


_P = Phase
#: Every transition: (phase, input) → the phases that input may lead to. An input not listed for the current
#: phase is a misuse of the machine (:class:`HandshakeMisuse`).
TRANSITIONS: Final[Mapping[tuple[Phase, str], frozenset[Phase]]] = {
    (_P.AUTHENTICATING, "authenticate"): frozenset({_P.AWAITING_FIRST, _P.CLOSED}),
    (_P.AWAITING_FIRST, "receive"): frozenset(
        {_P.AWAITING_FIRST, _P.LOADING_AGENT, _P.OPENING, _P.RESUMING, _P.CLOSED}
    ),
    (_P.LOADING_AGENT, "agent_loaded"): frozenset({_P.OPENING, _P.CLOSED}),
    (_P.AWAITING_FIRST, "timed_out"): frozenset({_P.CLOSED}),
    (_P.AWAITING_FIRST, "peer_closed"): frozenset({_P.CLOSED}),
    (_P.OPENING, "opened"): frozenset({_P.READY}),
    (_P.RESUMING, "resumed"): frozenset({_P.READY}),
    (_P.RESUMING, "resume_failed"): frozenset({_P.CLOSED}),
}


@dataclass(frozen=True, slots=True)
class Send:
    """Send this event to the client."""

    event: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Close:
    """Close the socket with this code and reason."""

    code: int
    message: bytes = b""


@dataclass(frozen=True, slots=True)
class OpenSession:
    """Create a session with this config, then report it with :meth:`Handshake.opened`."""

    config: SessionConfig


@dataclass(frozen=True, slots=True)
class LoadAgent:
    """Look up this stored agent's ``session.update`` fields, then report them with :meth:`Handshake.agent_loaded`."""

    agent_id: str


@dataclass(frozen=True, slots=True)
class ResumeSession:
    """Find this session (taking it over from a socket that still holds it), then report :meth:`Handshake.resumed`
    or :meth:`Handshake.resume_failed`."""

    session_id: str


Action: TypeAlias = Send | Close | LoadAgent | OpenSession | ResumeSession


class HandshakeMisuse(LocalProtocolError):
    """An input the current phase does not take: the shell's bug, not the client's."""


class Handshake:
    """One socket's way to a session. Feed it inputs in the order they happen; carry out what it returns."""

    def __init__(self, *, voices: Sequence[str]) -> None:
        self.phase = Phase.AUTHENTICATING
        self.grant: Grant | None = None
        self._voices = voices

    # ---- inputs

    def authenticate(self, grant: Grant | None, *, now: float) -> list[Action]:
        """The upgrade's credentials were checked: ``grant`` is what they allow (``None``: nothing)."""
        self._expect("authenticate")
        if grant is None:
            return self._refuse("authenticate", _unauthorized(), now)
        self.grant = grant
        self._go("authenticate", Phase.AWAITING_FIRST)
        return []

    def receive(self, text: str | None, *, now: float) -> list[Action]:
        """A client message before the session exists: its text (``None``: the frame was not text)."""
        self._expect("receive")
        assert self.grant is not None
        try:
            if text is None:
                raise ProtocolError("invalid_format", "Invalid JSON format.")  # JSON text frames only
            event = parse_client_event(text)
            if isinstance(event, SessionUpdate):
                if self.grant.kind == "resume":
                    raise _unauthorized()  # a resume token only resumes its session
                try:
                    agent_id = check_agent_binding(None, event.session)
                except ProtocolError as e:
                    raise (e.as_fatal() if e.code == "invalid_value" else e) from None
                if agent_id is not None:
                    self._go("receive", Phase.LOADING_AGENT)
                    return [LoadAgent(agent_id)]
                config = apply_session_update(None, event.session, voices=self._voices)
                self._go("receive", Phase.OPENING)
                return [OpenSession(config)]
            if isinstance(event, SessionResume):
                if self.grant.kind == "resume" and self.grant.session_id != event.session_id:
                    raise ProtocolError("session_forbidden", "Session belongs to another credential", fatal=True)
                self._go("receive", Phase.RESUMING)
                return [ResumeSession(event.session_id)]
            if isinstance(event, SessionEnd):
                self._go("receive", Phase.CLOSED)
                ended = server_event("session.ended", now, session_duration_seconds=0.0, audio_duration_seconds=None)
                return [Send(ended), Close(1000)]
            # Audio (or anything else) before the session is configured is invalid_format.
            raise ProtocolError(
                "invalid_format", "Session not ready: the first message must be session.update or session.resume"
            )
        except ProtocolError as e:
            return self._refuse("receive", e, now)

    def agent_loaded(self, agent_id: str, fields: Mapping[str, Any] | None, *, now: float) -> list[Action]:
        """The stored agent asked for by :class:`LoadAgent`: its ``session.update`` fields, ``None`` if unknown."""
        self._expect("agent_loaded")
        try:
            agents = {agent_id: fields} if fields is not None else {}
            config = apply_session_update(None, {"agent_id": agent_id}, voices=self._voices, agents=agents)
        except ProtocolError as e:
            # Always fatal: the session cannot open without its agent (a voice since removed from the settings…).
            return self._refuse("agent_loaded", e if e.fatal else e.as_fatal(), now)
        self._go("agent_loaded", Phase.OPENING)
        return [OpenSession(config)]

    def timed_out(self) -> list[Action]:
        """No first message came within the first-message timeout."""
        self._expect("timed_out")
        self._go("timed_out", Phase.CLOSED)
        return [Close(1008, b"no session.update received")]

    def peer_closed(self) -> list[Action]:
        """The client closed (or lost) the socket before a session existed."""
        self._expect("peer_closed")
        self._go("peer_closed", Phase.CLOSED)
        return []

    def opened(
        self, session_id: str, config: SessionConfig, *, expires_at: float, resume_token: str, now: float
    ) -> list[Action]:
        """The session asked for by :class:`OpenSession` exists. Live sends ``session.updated`` then
        ``session.ready``."""
        self._expect("opened")
        self._go("opened", Phase.READY)
        echo = config_echo(config, session_id)
        return [
            Send(server_event("session.updated", now, config=echo)),
            Send(_ready(session_id, echo, expires_at, resume_token, now)),
        ]

    def resumed(
        self, session_id: str, config: SessionConfig, *, expires_at: float, resume_token: str, now: float
    ) -> list[Action]:
        """The session asked for by :class:`ResumeSession` is this socket's now: the same id and config."""
        self._expect("resumed")
        self._go("resumed", Phase.READY)
        return [Send(_ready(session_id, config_echo(config, session_id), expires_at, resume_token, now))]

    def resume_failed(self, session_id: str, *, now: float) -> list[Action]:
        """The session asked for by :class:`ResumeSession` is gone (ended, expired, never existed) or could not be
        taken over."""
        self._expect("resume_failed")
        return self._refuse(
            "resume_failed", ProtocolError("session_not_found", f"Session '{session_id}' not found", fatal=True), now
        )

    # ---- the table

    def _expect(self, input_: str) -> None:
        if (self.phase, input_) not in TRANSITIONS:
            raise HandshakeMisuse(f"{input_!r} in phase {self.phase.value!r}")

    def _go(self, input_: str, to: Phase) -> None:
        if to not in TRANSITIONS[(self.phase, input_)]:
            raise HandshakeMisuse(f"{input_!r} cannot lead from {self.phase.value!r} to {to.value!r}")
        self.phase = to

    def _refuse(self, input_: str, err: ProtocolError, now: float) -> list[Action]:
        """One ``session.error``; a fatal one closes the socket (1008), any other leaves the phase as it is."""
        actions: list[Action] = [Send(session_error(err.code, err.message, now=now, param=err.param))]
        if err.fatal:
            self._go(input_, Phase.CLOSED)
            actions.append(Close(1008, err.message.encode()[:120]))
        else:
            self._go(input_, self.phase)
        return actions


def _unauthorized() -> ProtocolError:
    return ProtocolError("unauthorized", "Authentication failed", fatal=True)


def _ready(session_id: str, echo: dict[str, Any], expires_at: float, resume_token: str, now: float) -> dict[str, Any]:
    return server_event(
        "session.ready",
        now,
        session_id=session_id,
        config=echo,
        expires_at=int(expires_at),
        resume_token=resume_token,
    )

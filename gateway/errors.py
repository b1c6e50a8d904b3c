"""The gateway's exception tree, in one place.

    GatewayError
    ├── ConfigError            configuration is invalid (raised at start-up; names the bad key)
    ├── RemoteProtocolError    a peer broke its protocol (malformed carrier JSON, unexpected agent event)
    │   ├── CarrierProtocolError
    │   └── AgentProtocolError
    ├── LocalProtocolError     we used a protocol object wrongly (our bug: e.g. sending on a carrier stream before
    │                          its start); also a RuntimeError
    ├── UnauthorizedStream     a media stream failed the per-call token / signature check
    ├── TokenError             a stream token is missing, malformed, expired or forged (gateway.security; ValueError)
    ├── RequestInvalid         a POST /calls body cannot be served (gateway.outbound; ValueError, carries the status)
    ├── AgentClosed            the agent socket closed (gateway.agent.client: resumed if the session allows)
    ├── AgentUnavailable       the agent could not be reached or refused the session (upstream problem)
    │   └── AgentSessionError  the agent ended the session with a fatal ``session.error``
    ├── TwilioRestError        Twilio's REST API answered an error (gateway.control.twilio: status, code)
    │   └── TwilioUnavailable  no answer, a timeout, or an unreadable one
    ├── CallControlFailed      the call's carrier control (REST hang-up, transfer) failed or does not exist here
    ├── StateUnavailable       the shared state store (Redis) did not answer in time or refused (gateway.state)
    ├── ForwardRefused         an internal call-control forward failed its HMAC, window or replay check
    ├── CallPhaseError         we drove the call core along a transition its phase table does not have (our bug)
    └── CallEnded              not an error: the call ended normally (``reason``, an :class:`Outcome`, says how);
                               used to unwind a call's tasks

The embedded local agent (``gateway.local_agent``) raises its own errors in the same tree:

    ConfigError            ← settings.SettingsError, brain.IntentsError (both also ValueError)
    RemoteProtocolError    ← protocol.ProtocolError, protocol.TokenRequestInvalid: its client broke the protocol
    CallEnded              ← endings.ConnectionDone: one of its sockets ended (``reason`` is an ``EndReason``)

The call simulator (``gateway.simulator``, a client of the gateway) raises ``SimulatorError`` and its subclasses,
also in this tree.

Anything else escaping a call is our bug: the call session logs it once, with the call's context, and ends the call
(outcome ``internal_error``).

:class:`Outcome` lists every way a call can end. Its values are the ``outcome`` strings of the ``call.ended`` log
line and of the ``voice_gateway_calls_total`` metric (docs/reference/metrics.md), so they never change.
"""

from __future__ import annotations

import enum
import traceback


class Outcome(enum.StrEnum):
    """How a call ended (``call.ended`` ``outcome``). A ``str``: it compares, formats and serializes as its value."""

    CALLER_HANGUP = "caller_hangup"  # the carrier stopped the stream ('stop')
    CARRIER_CLOSED = "carrier_closed"  # the carrier socket closed without 'stop'
    AGENT_HANGUP = "agent_hangup"  # end_call, after the goodbye was heard
    AGENT_ENDED = "agent_ended"  # the agent sent session.ended
    CALLER_IDLE = "caller_idle"  # idle.max_prompts reprompts unanswered: goodbye, heard, then the hang-up
    VOICEMAIL_LEFT = "voicemail_left"  # an outbound call reached a machine: the message after the beep, then hang-up
    TRANSFERRED = "transferred"  # transfer_call: the carrier took the caller elsewhere
    CALL_COMPLETED = "call_completed"  # the carrier's status callback said the call is over
    API_HANGUP = "api_hangup"  # POST /calls/{call_sid}/hangup (gateway.cluster)
    REFUSED = "refused"  # the stream's token did not verify (or was already in use)
    AT_CAPACITY = "at_capacity"  # authorized, but no slot left at 'start': apology
    DRAINING = "draining"  # authorized, but the process stopped taking calls before 'start'
    DRAINED = "drained"  # the process drained: goodbye
    MAX_DURATION = "max_duration"  # server.max_call_s: goodbye
    NO_MEDIA = "no_media"  # no caller media for server.no_media_timeout_s
    NO_START = "no_start"  # no 'start' within server.start_timeout_s
    CARRIER_STALLED = "carrier_stalled"  # the carrier stopped reading our audio for audio.outbound_buffer_s
    PROTOCOL_ERROR = "protocol_error"  # a peer broke its protocol
    AGENT_UNAVAILABLE = "agent_unavailable"  # the agent could not be reached or resumed: apology
    AGENT_ERROR = "agent_error"  # a fatal session.error: apology
    INTERNAL_ERROR = "internal_error"  # our bug


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""


class ConfigError(GatewayError):
    """Invalid configuration. The message starts with the dotted key at fault."""


class RemoteProtocolError(GatewayError):
    """A peer sent something its protocol does not allow."""


class CarrierProtocolError(RemoteProtocolError):
    """The carrier (Twilio…) sent a malformed or out-of-order media-stream message."""


class AgentProtocolError(RemoteProtocolError):
    """The voice agent sent a malformed event."""


class LocalProtocolError(GatewayError, RuntimeError):
    """We used a protocol object in a way its protocol does not allow (our bug, not the peer's): e.g. building a
    carrier message before the stream's ``start`` named it."""


class AgentClosed(GatewayError):
    """The agent socket closed. ``code``/``reason`` as received (None/'' for a drop without a close frame)."""

    def __init__(self, code: int | None, reason: str) -> None:
        super().__init__(f"agent socket closed: {code} {reason}")
        self.code = code
        self.reason = reason


class UnauthorizedStream(GatewayError):
    """A media stream did not present a valid per-call token (or signature)."""


class AgentUnavailable(GatewayError):
    """The voice agent could not be reached, or refused the session."""


class AgentSessionError(AgentUnavailable):
    """The agent reported a fatal ``session.error`` (code in ``code``)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class CallControlFailed(GatewayError):
    """The carrier's call control could not do what was asked (gateway.call.carrier_control): ``status`` is the
    HTTP status (0: nothing was sent, or no answer), ``code`` the carrier's error code when it gave one."""

    def __init__(self, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


class StateUnavailable(GatewayError):
    """The shared state store did not answer within ``state.op_timeout_s``, or failed (gateway.state): the caller
    falls back to this process's own view (docs/architecture/scale-out.md#failure-behaviour)."""


class ForwardRefused(GatewayError):
    """An internal forward between replicas was refused: bad or missing HMAC, outside the replay window, or a nonce
    seen before (gateway.cluster.forward)."""


class CallPhaseError(GatewayError):
    """Our bug: the call core (gateway.call.core) was asked for a phase transition its table does not have."""


class CallEnded(GatewayError):
    """Raised inside a call's task group to end the call; ``reason`` is the logged outcome."""

    def __init__(self, reason: Outcome | str) -> None:
        super().__init__(str(reason))
        self.reason: Outcome | str = reason


def release_frames(exc: BaseException) -> None:
    """Clear the locals of the finished frames in the traceback of ``exc``, caught in a frame still running: the
    frames it propagated out of, and all those of the group's members, raised out of tasks that have ended. The
    catching frame itself is left alone (clearing a suspended coroutine's frame would close it).

    Why: an exception that ended a task group holds, through its frames, everything those tasks used, and Python
    3.11's ``TaskGroup.__aexit__`` keeps its own exception group in its frame (a cycle by itself). Cleared once the
    exception was handled, what it held is freed by reference counting instead of waiting for a full collection
    of the cyclic collector, which stops the event loop (docs/architecture/performance.md#call-garbage)."""
    tb = exc.__traceback__
    if tb is not None:
        traceback.clear_frames(tb.tb_next)
    todo = list(exc.exceptions) if isinstance(exc, BaseExceptionGroup) else []
    while todo:
        member = todo.pop()
        traceback.clear_frames(member.__traceback__)
        if isinstance(member, BaseExceptionGroup):
            todo.extend(member.exceptions)

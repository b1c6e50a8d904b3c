"""The gateway's exception tree, in one place.

    GatewayError
    ├── ConfigError            configuration is invalid (raised at start-up; names the bad key)
    ├── RemoteProtocolError    a peer broke its protocol (malformed carrier JSON, unexpected agent event)
    │   ├── CarrierProtocolError
    │   └── AgentProtocolError
    ├── UnauthorizedStream     a media stream failed the per-call token / signature check
    ├── AgentUnavailable       the agent could not be reached or refused the session (upstream problem)
    │   └── AgentSessionError  the agent ended the session with a fatal ``session.error``
    ├── TwilioRestError        Twilio's REST API answered an error (gateway.carriers.twilio_rest: status, code)
    │   └── TwilioUnavailable  no answer, a timeout, or an unreadable one
    ├── CallControlFailed      the call's carrier control (REST hang-up, transfer) failed or does not exist here
    └── CallEnded              not an error: the call ended normally (``reason`` says how); used to unwind tasks

Anything else escaping a call is our bug: the call session logs it once, with the call's context, and ends the call.
"""

from __future__ import annotations


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


class CallEnded(GatewayError):
    """Raised inside a call's task group to end the call; ``reason`` is the logged outcome."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason

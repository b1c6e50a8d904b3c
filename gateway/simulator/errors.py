"""The call simulator's exception tree, in one place, with the exit code each one maps to.

    SimulatorError           (exit 1 unless a subclass says otherwise)
    ├── UsageError           exit 2: we were misused: bad flags, unreadable WAV, the speech/plot extra missing
    ├── GatewayProtocolError exit 1: the gateway broke Twilio's protocol (bad TwiML, a malformed or unexpected
    │                        message, media before start, a wrong streamSid…;
    │                        docs/architecture/twilio-media-streams.md)
    └── CallRefused          exit 3: the call never got going: the webhook answered non-200 (e.g. 403 for a bad
                             signature), the TwiML said <Say>/<Hangup>/<Reject>, or the stream upgrade failed

A call that runs to the end of its script, or that the gateway hangs up, is not an error (exit 0).
"""

from __future__ import annotations

from ..errors import GatewayError

__all__ = ["CallRefused", "GatewayProtocolError", "SimulatorError", "UsageError"]


class SimulatorError(GatewayError):
    """Base of every error the simulator raises on purpose."""

    exit_code = 1


class UsageError(SimulatorError):
    """The simulator was asked to do something it cannot (a local problem, not the gateway's)."""

    exit_code = 2


class GatewayProtocolError(SimulatorError):
    """The gateway sent something Twilio would reject (Twilio reports these as 31950/31951 or TwiML errors)."""

    exit_code = 1


class CallRefused(SimulatorError):
    """The gateway did not take the call."""

    exit_code = 3

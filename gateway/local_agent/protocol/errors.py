"""What the local agent says when its client breaks the Voice Agent API. Pure.

Every client mistake raises :class:`ProtocolError`, carrying the wire ``code`` (lower case), ``message``, ``param``
and whether it is ``fatal``: the session is closed with 1008 after the ``session.error`` is sent. Which mistakes are
fatal copies the live service (docs/reference/local-agent-api.md#implemented). In the project's error tree
(:mod:`gateway.errors`) it is a :class:`~gateway.errors.RemoteProtocolError`: the peer misbehaved, not us.
"""

from __future__ import annotations

from gateway.errors import RemoteProtocolError

__all__ = ["ProtocolError", "bad_format"]


class ProtocolError(RemoteProtocolError):
    """The client broke the protocol; becomes one ``session.error``. ``fatal``: close 1008 after sending it."""

    def __init__(self, code: str, message: str, *, param: str | None = None, fatal: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.param = param
        self.fatal = fatal

    def as_fatal(self) -> ProtocolError:
        return ProtocolError(self.code, self.message, param=self.param, fatal=True)


def bad_format(type_: str, param: str | None = None) -> ProtocolError:
    """The live ``invalid_format`` for a message of ``type_`` whose ``param`` has the wrong shape."""
    return ProtocolError("invalid_format", f"Invalid message format for type '{type_}'", param=param)

"""The server side of the Voice Agent API wire protocol, as the local agent speaks it. Pure.

No sockets, no clock, no environment: JSON text goes in (:func:`parse_client_event`), typed client events come out;
session configs are validated and merged (:func:`apply_session_update`) and echoed (:func:`config_echo`); server
events are built as plain dicts (:func:`server_event`, :func:`session_error`), always with the ``timestamp`` the
caller passes; credentials and minted tokens are checked with ``now`` passed in. Where the docs and the live
service differ, this package copies the live service (docs/reference/local-agent-api.md#implemented).

One module per part of the protocol, all re-exported here (``from gateway.local_agent import protocol as proto``):

- :mod:`.events`: client events and :func:`parse_client_event`;
- :mod:`.config`: the resolved :class:`SessionConfig` and its echo;
- :mod:`.session_update`: what a ``session.update`` may set (:func:`apply_session_update`);
- :mod:`.wire`: ids, the server event envelope, ``session.error``, JSON;
- :mod:`.tokens`: credentials, minted and resume tokens, ``GET /v1/token``;
- :mod:`.transcript`: word timing of a reply (:class:`ReplyTranscript`);
- :mod:`.errors`: :class:`ProtocolError`, every client mistake, carrying the wire ``code`` (lower case),
  ``message``, ``param`` and whether it is ``fatal`` (the session is closed with 1008 after sending it).
"""

from __future__ import annotations

from .config import ENCODINGS, AudioFormat, SessionConfig, ToolDef, TurnDetection, config_echo
from .errors import ProtocolError
from .events import (
    ClientEvent,
    ConversationMessage,
    InputAudio,
    ReplyCreate,
    SessionEnd,
    SessionResume,
    SessionUpdate,
    ToolResult,
    parse_client_event,
)
from .session_update import apply_session_update, check_agent_binding
from .tokens import (
    Grant,
    TokenRequestInvalid,
    authenticate,
    mint_resume_token,
    mint_token,
    validate_token_request,
    verify_token,
)
from .transcript import ReplyTranscript, WordSpan
from .wire import json_dumps, new_call_id, new_item_id, new_reply_id, new_session_id, server_event, session_error

__all__ = [
    "ENCODINGS",
    "AudioFormat",
    "ClientEvent",
    "ConversationMessage",
    "Grant",
    "InputAudio",
    "ProtocolError",
    "ReplyCreate",
    "ReplyTranscript",
    "SessionConfig",
    "SessionEnd",
    "SessionResume",
    "SessionUpdate",
    "TokenRequestInvalid",
    "ToolDef",
    "ToolResult",
    "TurnDetection",
    "WordSpan",
    "apply_session_update",
    "authenticate",
    "check_agent_binding",
    "config_echo",
    "json_dumps",
    "mint_resume_token",
    "mint_token",
    "new_call_id",
    "new_item_id",
    "new_reply_id",
    "new_session_id",
    "parse_client_event",
    "server_event",
    "session_error",
    "validate_token_request",
    "verify_token",
]

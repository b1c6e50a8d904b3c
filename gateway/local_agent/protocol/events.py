"""Client events of the Voice Agent API: one JSON text frame in, one typed event out. Pure.

:func:`parse_client_event` checks a message's shape only; what a ``session.update`` may set is
:mod:`.session_update`'s business. The events are frozen dataclasses named after the message types.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TypeAlias

from .errors import ProtocolError, bad_format

__all__ = [
    "ClientEvent",
    "ConversationMessage",
    "InputAudio",
    "ReplyCreate",
    "SessionEnd",
    "SessionResume",
    "SessionUpdate",
    "ToolResult",
    "parse_client_event",
]


@dataclass(frozen=True, slots=True)
class SessionUpdate:
    session: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class InputAudio:
    audio: bytes


@dataclass(frozen=True, slots=True)
class ToolResult:
    call_id: str
    result: str
    is_error: bool = False


@dataclass(frozen=True, slots=True)
class ReplyCreate:
    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class SessionResume:
    session_id: str


@dataclass(frozen=True, slots=True)
class SessionEnd:
    pass


@dataclass(frozen=True, slots=True)
class ConversationMessage:
    """Validated and then ignored, as live: its content never reached the model
    (docs/reference/local-agent-api.md#not-implemented)."""

    role: str
    content: str


ClientEvent: TypeAlias = (
    SessionUpdate | InputAudio | ToolResult | ReplyCreate | SessionResume | SessionEnd | ConversationMessage
)


def parse_client_event(data: str | bytes) -> ClientEvent:
    """One client text frame → a typed event. Raises :class:`ProtocolError` (never fatal) on anything malformed."""
    try:
        msg = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise ProtocolError("invalid_format", "Invalid JSON format.") from None
    if not isinstance(msg, dict) or not isinstance(msg.get("type"), str):
        raise ProtocolError("invalid_format", "Invalid JSON format.", param="type")
    type_ = msg["type"]
    if type_ == "session.update":
        session = msg.get("session")
        if not isinstance(session, dict):
            raise bad_format(type_, "session")
        return SessionUpdate(session)
    if type_ == "input.audio":
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise bad_format(type_, "audio")
        try:
            return InputAudio(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_audio", "Invalid audio data", param="audio") from None
    if type_ == "tool.result":
        call_id, result, is_error = msg.get("call_id"), msg.get("result"), msg.get("is_error", False)
        # `result` must be a string: clients serialise objects themselves.
        if not isinstance(call_id, str) or not call_id:
            raise bad_format(type_, "call_id")
        if not isinstance(result, str):
            raise bad_format(type_, "result")
        if is_error is None:
            is_error = False
        if not isinstance(is_error, bool):
            raise bad_format(type_, "is_error")
        return ToolResult(call_id, result, is_error)
    if type_ == "reply.create":
        instructions = msg.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise bad_format(type_, "instructions")
        return ReplyCreate(instructions or None)
    if type_ == "session.resume":
        session_id = msg.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise bad_format(type_, "session_id")
        return SessionResume(session_id)
    if type_ == "session.end":
        return SessionEnd()
    if type_ == "conversation.message":
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "system"):
            raise bad_format(type_, "role")
        if not isinstance(content, str):
            raise bad_format(type_, "content")
        return ConversationMessage(role, content)
    raise ProtocolError("invalid_format", f"Unknown message type: {type_}", param="type")

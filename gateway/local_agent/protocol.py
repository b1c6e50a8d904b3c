"""The server side of the Voice Agent API wire protocol (spec ``voice-agent-api.md`` §1–§5). Pure.

No sockets, no clock, no environment: JSON text goes in (:func:`parse_client_event`), typed client events come out;
session configs are validated and merged (:func:`apply_session_update`) and echoed (:func:`config_echo`); server
events are built as plain dicts (:func:`server_event`, :func:`session_error`), always with the ``timestamp`` the
caller passes (§2.0); credentials and minted tokens are checked with ``now`` passed in. Where the docs and the live
service differ, this module copies the live service (§8).

Errors: every client mistake raises :class:`ProtocolError` carrying the wire ``code`` (lower case, §5.1),
``message``, ``param`` and whether it is ``fatal`` (the session is closed with 1008 after sending it).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal, TypeAlias

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

# --------------------------------------------------------------------------------------------------------------
# Ids (§2.0). ``rand(n)`` returns n random bytes as hex; tests pass a deterministic one.

RandHex: TypeAlias = Callable[[int], str]


def new_session_id(rand: RandHex = secrets.token_hex) -> str:
    return "sess_" + rand(16)


def new_reply_id(rand: RandHex = secrets.token_hex) -> str:
    return "resp_" + rand(16)


def new_item_id(rand: RandHex = secrets.token_hex) -> str:
    return "msg_" + rand(16)


def new_call_id(rand: RandHex = secrets.token_hex) -> str:
    # The managed-LLM shape (§2.0): chatcmpl-tool-<16 hex>.
    return "chatcmpl-tool-" + rand(8)


# --------------------------------------------------------------------------------------------------------------
# Errors (§5.1)


class ProtocolError(Exception):
    """The client broke the protocol; becomes one ``session.error``. ``fatal``: close 1008 after sending it."""

    def __init__(self, code: str, message: str, *, param: str | None = None, fatal: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.param = param
        self.fatal = fatal

    def as_fatal(self) -> ProtocolError:
        return ProtocolError(self.code, self.message, param=self.param, fatal=True)


def _bad_format(type_: str, param: str | None = None) -> ProtocolError:
    return ProtocolError("invalid_format", f"Invalid message format for type '{type_}'", param=param)


def server_event(type_: str, now: float, **fields: Any) -> dict[str, Any]:
    """One server event; every event carries ``timestamp`` as float epoch seconds (§2.0, live behaviour)."""
    event: dict[str, Any] = {"type": type_}
    event.update(fields)
    event["timestamp"] = float(now)
    return event


def session_error(
    code: str, message: str, *, now: float, param: str | None = None, session_id: str | None = None
) -> dict[str, Any]:
    """``session.error`` in the live shape (§1.2, §5.1): lower-case code; ``param``, ``session_id`` always present."""
    return server_event("session.error", now, code=code.lower(), message=message, param=param, session_id=session_id)


# --------------------------------------------------------------------------------------------------------------
# Client events (§2.1)


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
    """Validated and then ignored, as live (§2.1 "Less-certain client events": content never reached the model)."""

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
            raise _bad_format(type_, "session")
        return SessionUpdate(session)
    if type_ == "input.audio":
        audio = msg.get("audio")
        if not isinstance(audio, str):
            raise _bad_format(type_, "audio")
        try:
            return InputAudio(base64.b64decode(audio, validate=True))
        except (binascii.Error, ValueError):
            raise ProtocolError("invalid_audio", "Invalid audio data", param="audio") from None
    if type_ == "tool.result":
        call_id, result, is_error = msg.get("call_id"), msg.get("result"), msg.get("is_error", False)
        # §2.1: `result` must be a string (clients serialise objects themselves).
        if not isinstance(call_id, str) or not call_id:
            raise _bad_format(type_, "call_id")
        if not isinstance(result, str):
            raise _bad_format(type_, "result")
        if is_error is None:
            is_error = False
        if not isinstance(is_error, bool):
            raise _bad_format(type_, "is_error")
        return ToolResult(call_id, result, is_error)
    if type_ == "reply.create":
        instructions = msg.get("instructions")
        if instructions is not None and not isinstance(instructions, str):
            raise _bad_format(type_, "instructions")
        return ReplyCreate(instructions or None)
    if type_ == "session.resume":
        session_id = msg.get("session_id")
        if not isinstance(session_id, str) or not session_id:
            raise _bad_format(type_, "session_id")
        return SessionResume(session_id)
    if type_ == "session.end":
        return SessionEnd()
    if type_ == "conversation.message":
        role, content = msg.get("role"), msg.get("content")
        if role not in ("user", "system"):
            raise _bad_format(type_, "role")
        if not isinstance(content, str):
            raise _bad_format(type_, "content")
        return ConversationMessage(role, content)
    raise ProtocolError("invalid_format", f"Unknown message type: {type_}", param="type")


# --------------------------------------------------------------------------------------------------------------
# Session config (§2.1 tables, echo shape §2.3)

ENCODINGS: Final = ("audio/pcm", "audio/pcmu", "audio/pcma")
_RATES: Final = {"audio/pcm": 24000, "audio/pcmu": 8000, "audio/pcma": 8000}
_TRANSCRIPTION_MODES: Final = ("min_latency", "balanced", "max_accuracy")
_VOICE_FOCUS: Final = ("near-field", "far-field")
_UNINTERRUPTIBLE: Final = ("greeting", "dtmf_prompt", "tool_refused_ask")
_EXECUTION_MODES: Final = ("interactive", "hold")
_SESSION_KEYS: Final = frozenset(
    {"agent_id", "system_prompt", "greeting", "tools", "input", "output", "llm", "webhook", "pre_connect_requests"}
)
# Input fields the local agent accepts and echoes but has no use for (its STT takes no prompt or keyterms).
_PASSIVE_INPUT_KEYS: Final = (
    "keyterms", "transcription_mode", "transcription_prompt", "language_codes", "voice_focus",
    "voice_focus_threshold", "continuous_partials",
)  # fmt: skip
_INPUT_KEYS: Final = frozenset({"format", "turn_detection", "type", *_PASSIVE_INPUT_KEYS})
_OUTPUT_KEYS: Final = frozenset({"voice", "format", "volume", "type"})
_TURN_KEYS: Final = frozenset(
    {"vad_threshold", "min_silence", "max_silence", "interrupt_response", "interruption_delay",
     "uninterruptible_turns", "type"}
)  # fmt: skip
_TOOL_ECHO_NULLS: Final = ("http", "response_instructions", "deployment_id", "session_update", "image_tag")
_UPDATE = "session.update"


@dataclass(frozen=True, slots=True)
class AudioFormat:
    encoding: str = "audio/pcm"

    @property
    def sample_rate(self) -> int:
        return _RATES[self.encoding]

    def echo(self) -> dict[str, Any]:
        # Live echoes pcmu/pcma with sample_rate 8000 (§2.1 `session.input` table).
        return {"encoding": self.encoding, "sample_rate": self.sample_rate}


@dataclass(frozen=True, slots=True)
class TurnDetection:
    """What the client set in ``input.turn_detection`` (``None`` = unset; the agent applies its own defaults)."""

    vad_threshold: float | None = None
    min_silence: int | None = None
    max_silence: int | None = None
    interrupt_response: bool | None = None
    interruption_delay: int | None = None
    uninterruptible_turns: tuple[str, ...] | None = None
    type: str | None = None

    def echo(self) -> dict[str, Any]:
        return {
            "vad_threshold": self.vad_threshold,
            "min_silence": self.min_silence,
            "max_silence": self.max_silence,
            "interrupt_response": self.interrupt_response,
            "interruption_delay": self.interruption_delay,
            "uninterruptible_turns": list(self.uninterruptible_turns) if self.uninterruptible_turns else None,
            "type": self.type,
        }


@dataclass(frozen=True, slots=True)
class ToolDef:
    """One inline tool (§3.1, flat format). ``extra`` keeps other known fields (``http``…) for the echo."""

    name: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout_seconds: int = 120
    execution_mode: str = "interactive"
    extra: Mapping[str, Any] = field(default_factory=dict)

    def echo(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": dict(self.parameters),
            "timeout_seconds": self.timeout_seconds,
            "execution_mode": self.execution_mode,
        }
        for key in _TOOL_ECHO_NULLS:
            out[key] = self.extra.get(key)
        return out


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """The resolved config of one session: what the client set, with defaults filled in."""

    voice: str
    system_prompt: str | None = None
    greeting: str | None = None
    input_format: AudioFormat = AudioFormat()
    output_format: AudioFormat = AudioFormat()
    volume: float | None = None
    turn_detection: TurnDetection | None = None
    tools: tuple[ToolDef, ...] = ()
    input_extra: Mapping[str, Any] = field(default_factory=dict)
    pre_connect_requests: tuple[Any, ...] = ()

    def tool(self, name: str) -> ToolDef | None:
        for t in self.tools:
            if t.name == name:
                return t
        return None


def config_echo(config: SessionConfig, session_id: str) -> dict[str, Any]:
    """``session.ready.config`` / ``session.updated.config`` in the live shape (§2.3; unset fields are null)."""
    input_: dict[str, Any] = {"type": "audio", "format": config.input_format.echo()}
    for key in _PASSIVE_INPUT_KEYS:
        input_[key] = config.input_extra.get(key)
    input_["turn_detection"] = config.turn_detection.echo() if config.turn_detection else None
    return {
        "id": session_id,
        "system_prompt": config.system_prompt,
        "greeting": config.greeting,
        "input": input_,
        "output": {
            "type": "audio",
            "voice": config.voice,
            "format": config.output_format.echo(),
            "volume": config.volume,
        },
        "tools": [t.echo() for t in config.tools],
        "llm": [],
        "pre_connect_requests": list(config.pre_connect_requests),
    }


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _parse_format(value: object, param: str) -> AudioFormat:
    if not isinstance(value, dict) or not isinstance(value.get("encoding"), str):
        raise _bad_format(_UPDATE, param)
    unknown = set(value) - {"encoding", "sample_rate"}
    if unknown:
        raise _bad_format(_UPDATE, f"{param}.{sorted(unknown)[0]}")
    encoding = value["encoding"]
    if encoding not in ENCODINGS:
        raise ProtocolError(
            "invalid_value",
            f"Invalid encoding '{encoding}'. Must be one of: {', '.join(ENCODINGS)}",
            param=f"{param}.encoding",
        )
    rate = value.get("sample_rate")
    if rate is not None:
        if not _is_int(rate):
            raise _bad_format(_UPDATE, f"{param}.sample_rate")
        # Spec §2.1/§10: only 24000 exists for PCM; G.711 is 8000 by definition. Anything else is refused
        # rather than silently producing audio at the wrong rate.
        if rate != _RATES[encoding]:
            raise ProtocolError(
                "invalid_value",
                f"Invalid sample_rate {rate} for '{encoding}'. Must be {_RATES[encoding]}",
                param=f"{param}.sample_rate",
            )
    return AudioFormat(encoding)


def _parse_turn_detection(value: object) -> TurnDetection | None:
    p = "input.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise _bad_format(_UPDATE, p)
    unknown = set(value) - _TURN_KEYS
    if unknown:
        raise _bad_format(_UPDATE, f"{p}.{sorted(unknown)[0]}")
    td = TurnDetection()
    if (v := value.get("vad_threshold")) is not None:
        if not _is_number(v):
            raise _bad_format(_UPDATE, f"{p}.vad_threshold")
        if not 0.0 <= v <= 1.0:
            raise ProtocolError("invalid_value", "vad_threshold must be between 0 and 1", param=f"{p}.vad_threshold")
        td = replace(td, vad_threshold=float(v))
    for key in ("min_silence", "max_silence", "interruption_delay"):
        if (v := value.get(key)) is not None:
            if not _is_int(v):
                raise _bad_format(_UPDATE, f"{p}.{key}")
            if not 0 <= v <= 60000:
                raise ProtocolError("invalid_value", f"{key} must be between 0 and 60000 ms", param=f"{p}.{key}")
            td = replace(td, **{key: v})
    if td.min_silence is not None and td.max_silence is not None and td.max_silence < td.min_silence:
        raise ProtocolError(
            "invalid_value", "max_silence must be greater than or equal to min_silence", param=f"{p}.max_silence"
        )
    if (v := value.get("interrupt_response")) is not None:
        if not isinstance(v, bool):
            raise _bad_format(_UPDATE, f"{p}.interrupt_response")
        td = replace(td, interrupt_response=v)
    if (v := value.get("uninterruptible_turns")) is not None:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise _bad_format(_UPDATE, f"{p}.uninterruptible_turns")
        bad = [x for x in v if x not in _UNINTERRUPTIBLE]
        if bad:
            raise ProtocolError(
                "invalid_value",
                f"Invalid uninterruptible turn '{bad[0]}'. Must be one of: {', '.join(_UNINTERRUPTIBLE)}",
                param=f"{p}.uninterruptible_turns",
            )
        td = replace(td, uninterruptible_turns=tuple(v))
    if (v := value.get("type")) is not None:
        if v not in ("server_vad", "semantic_vad"):
            raise ProtocolError("invalid_value", f"Invalid turn_detection type '{v}'", param=f"{p}.type")
        td = replace(td, type=v)
    return td


def _parse_input_extra(value: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(current)
    p = "input"
    for key in _PASSIVE_INPUT_KEYS:
        if key not in value:
            continue
        v = value[key]
        if v is None:
            out[key] = None
            continue
        if key in ("keyterms", "language_codes"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise _bad_format(_UPDATE, f"{p}.{key}")
            if key == "keyterms" and len(v) > 100:
                raise ProtocolError("invalid_value", "keyterms may have at most 100 entries", param=f"{p}.{key}")
            out[key] = list(v) or None  # [] clears the list (§2.1)
        elif key == "transcription_mode":
            if v not in _TRANSCRIPTION_MODES:
                raise ProtocolError(
                    "invalid_value",
                    f"Invalid transcription_mode '{v}'. Must be one of: {', '.join(_TRANSCRIPTION_MODES)}",
                    param=f"{p}.{key}",
                )
            out[key] = v
        elif key == "transcription_prompt":
            if not isinstance(v, str):
                raise _bad_format(_UPDATE, f"{p}.{key}")
            if len(v) > 1750:
                raise ProtocolError(
                    "invalid_value", "transcription_prompt may be at most 1750 characters", param=f"{p}.{key}"
                )
            out[key] = v
        elif key == "voice_focus":
            if v not in _VOICE_FOCUS:
                raise ProtocolError(
                    "invalid_value",
                    f"Invalid voice_focus '{v}'. Must be one of: {', '.join(_VOICE_FOCUS)}",
                    param=f"{p}.{key}",
                )
            out[key] = v
        elif key == "voice_focus_threshold":
            if not _is_number(v):
                raise _bad_format(_UPDATE, f"{p}.{key}")
            if not 0.0 <= v <= 1.0:
                raise ProtocolError("invalid_value", f"{key} must be between 0 and 1", param=f"{p}.{key}")
            out[key] = float(v)
        elif key == "continuous_partials":
            if not isinstance(v, bool):
                raise _bad_format(_UPDATE, f"{p}.{key}")
            out[key] = v
    return out


def _parse_tools(value: object) -> tuple[ToolDef, ...]:
    if not isinstance(value, list):
        raise _bad_format(_UPDATE, "tools")
    tools: list[ToolDef] = []
    names: set[str] = set()
    for i, raw in enumerate(value):
        p = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise _bad_format(_UPDATE, p)
        if raw.get("type", "function") != "function":
            raise ProtocolError("invalid_value", f"Invalid tool type '{raw.get('type')}'", param=f"{p}.type")
        name = raw.get("name")
        if not isinstance(name, str):
            raise _bad_format(_UPDATE, f"{p}.name")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ProtocolError("invalid_value", f"Invalid tool name '{name}'", param=f"{p}.name")
        if name in names:
            raise ProtocolError("invalid_value", f"Duplicate tool name '{name}'", param=f"{p}.name")
        names.add(name)
        description = raw.get("description") or ""
        if not isinstance(description, str):
            raise _bad_format(_UPDATE, f"{p}.description")
        parameters = raw.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise _bad_format(_UPDATE, f"{p}.parameters")
        # Live (§2.1 `tools` row): a non-object `properties` is an invalid_value naming the exact path.
        if "properties" in parameters and not isinstance(parameters["properties"], dict):
            raise ProtocolError(
                "invalid_value",
                f"Invalid tool schema: '{p}.parameters.properties' must be an object",
                param=f"{p}.parameters.properties",
            )
        timeout = raw.get("timeout_seconds")
        if timeout is None:
            timeout = 120
        if not _is_int(timeout):
            raise _bad_format(_UPDATE, f"{p}.timeout_seconds")
        if not 1 <= timeout <= 300:
            raise ProtocolError(
                "invalid_value", "timeout_seconds must be between 1 and 300", param=f"{p}.timeout_seconds"
            )
        mode = raw.get("execution_mode") or "interactive"
        if mode not in _EXECUTION_MODES:
            raise ProtocolError(
                "invalid_value",
                f"Invalid execution_mode '{mode}'. Must be one of: {', '.join(_EXECUTION_MODES)}",
                param=f"{p}.execution_mode",
            )
        extra = {k: raw[k] for k in _TOOL_ECHO_NULLS if raw.get(k) is not None}
        tools.append(ToolDef(name, description, parameters, timeout, mode, extra))
    return tuple(tools)


def _voice_error(voice: object, voices: Sequence[str]) -> ProtocolError:
    return ProtocolError(
        "invalid_value", f"Invalid voice '{voice}'. Must be one of: {', '.join(voices)}", param="output.voice"
    )


def _immutable(param: str) -> ProtocolError:
    return ProtocolError("immutable_field", f"'{param}' cannot be changed after the first session.update", param=param)


def apply_session_update(
    current: SessionConfig | None, session: Mapping[str, Any], *, voices: Sequence[str]
) -> SessionConfig:
    """Validate one ``session.update`` and return the new config. ``current is None`` means the first update.

    Raises :class:`ProtocolError`. In the first update ``invalid_value`` and ``agent_not_found`` are fatal (live,
    §5.1); ``invalid_format`` (e.g. ``greeting: null``) is not, and later updates never are.
    """
    first = current is None
    try:
        return _apply(current, session, voices)
    except ProtocolError as e:
        if first and e.code in ("invalid_value", "agent_not_found"):
            raise e.as_fatal() from None
        raise


def _apply(current: SessionConfig | None, session: Mapping[str, Any], voices: Sequence[str]) -> SessionConfig:
    first = current is None
    if "agent_id" in session:
        # §2.1 `agent_id` row. The local agent has no stored agents, so every id is unknown.
        if not first:
            raise ProtocolError(
                "agent_id_not_first", "agent_id can only be set in the first session.update", param="agent_id"
            )
        if len(session) > 1:
            raise ProtocolError(
                "invalid_value", "agent_id is mutually exclusive with other session fields", param="agent_id"
            )
        raise ProtocolError("agent_not_found", f"Agent '{session['agent_id']}' not found", param="agent_id")
    unknown = set(session) - _SESSION_KEYS
    if unknown:
        # E.g. the REST shape `{"voice": {"voice_id": ...}}` at the top level (§2.1 `session.output` note).
        raise _bad_format(_UPDATE, sorted(unknown)[0])
    if "llm" in session:
        raise ProtocolError(
            "invalid_value",
            "BYO LLM config is not allowed on session.update; define it on a stored agent via POST /v1/agents",
            param="llm",
        )

    cfg = current if current is not None else SessionConfig(voice=voices[0])

    if "greeting" in session:
        greeting = session["greeting"]
        if greeting is None or not isinstance(greeting, str):
            raise _bad_format(_UPDATE, "greeting")  # live: explicit null → invalid_format, socket stays open
        if not first and greeting != cfg.greeting:
            raise _immutable("greeting")
        cfg = replace(cfg, greeting=greeting or None)

    if "system_prompt" in session:
        prompt = session["system_prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise _bad_format(_UPDATE, "system_prompt")
        cfg = replace(cfg, system_prompt=prompt)

    if "output" in session:
        out = session["output"]
        if not isinstance(out, dict):
            raise _bad_format(_UPDATE, "output")
        unknown = set(out) - _OUTPUT_KEYS
        if unknown:
            raise _bad_format(_UPDATE, f"output.{sorted(unknown)[0]}")
        if "voice" in out:
            voice = out["voice"]
            if not isinstance(voice, str):
                raise _bad_format(_UPDATE, "output.voice")
            if not first:
                if voice != cfg.voice:
                    raise _immutable("output.voice")
            elif voice not in voices:
                raise _voice_error(voice, voices)
            cfg = replace(cfg, voice=voice)
        if "format" in out:
            fmt = _parse_format(out["format"], "output.format")
            if not first and fmt != cfg.output_format:
                raise _immutable("output.format")
            cfg = replace(cfg, output_format=fmt)
        if "volume" in out:
            volume = out["volume"]
            if volume is not None:
                if not _is_number(volume):
                    raise _bad_format(_UPDATE, "output.volume")
                if not 0 <= volume <= 100:
                    raise ProtocolError("invalid_value", "volume must be between 0 and 100", param="output.volume")
                volume = float(volume)
            cfg = replace(cfg, volume=volume)
        if "type" in out and out["type"] not in (None, "audio"):
            raise ProtocolError("invalid_value", f"Invalid output type '{out['type']}'", param="output.type")

    if "input" in session:
        inp = session["input"]
        if not isinstance(inp, dict):
            raise _bad_format(_UPDATE, "input")
        unknown = set(inp) - _INPUT_KEYS
        if unknown:
            raise _bad_format(_UPDATE, f"input.{sorted(unknown)[0]}")
        if "format" in inp:
            # The docs call input.format mutable (§2.1); the local agent honours a change by rebuilding its decoder.
            cfg = replace(cfg, input_format=_parse_format(inp["format"], "input.format"))
        if "turn_detection" in inp:
            cfg = replace(cfg, turn_detection=_parse_turn_detection(inp["turn_detection"]))
        if "type" in inp and inp["type"] not in (None, "audio"):
            raise ProtocolError("invalid_value", f"Invalid input type '{inp['type']}'", param="input.type")
        cfg = replace(cfg, input_extra=_parse_input_extra(inp, cfg.input_extra))

    if "tools" in session:
        # Each update replaces the whole list (§2.1 `tools` row); null clears it.
        tools = session["tools"]
        cfg = replace(cfg, tools=() if tools is None else _parse_tools(tools))

    if "pre_connect_requests" in session:
        pcr = session["pre_connect_requests"]
        if pcr is not None and not isinstance(pcr, list):
            raise _bad_format(_UPDATE, "pre_connect_requests")
        cfg = replace(cfg, pre_connect_requests=tuple(pcr or ()))

    if "webhook" in session and session["webhook"] is not None and not isinstance(session["webhook"], dict):
        raise _bad_format(_UPDATE, "webhook")  # accepted and ignored otherwise (phone/webhook features only)
    return cfg


# --------------------------------------------------------------------------------------------------------------
# Credentials and tokens (§1.2, §1.3, §4.3)

_TOKEN_PREFIX: Final = "lat1"


@dataclass(frozen=True, slots=True)
class Grant:
    """Who opened the socket. ``kind="resume"``: only ``session.resume`` of ``session_id`` is allowed."""

    kind: Literal["key", "token", "resume"]
    session_id: str | None = None
    max_session_s: int | None = None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, body: str) -> str:
    return _b64(hmac.new(secret, body.encode("ascii"), hashlib.sha256).digest())


def _make_token(secret: bytes, claims: Mapping[str, Any]) -> str:
    body = f"{_TOKEN_PREFIX}.{_b64(json.dumps(claims, separators=(',', ':')).encode())}"
    return f"{body}.{_sign(secret, body)}"


def mint_token(
    secret: bytes, *, now: float, expires_in_s: int, max_session_s: int | None, rand: RandHex = secrets.token_hex
) -> str:
    """A stateless HMAC-signed temporary token, redeemable until ``now + expires_in_s`` (§1.3).

    Not single use: the live service let one token open several sessions inside its window (§1.3), so a token
    is a bearer credential for its whole window.
    """
    claims = {"k": "t", "exp": now + expires_in_s, "max": max_session_s, "n": rand(8)}
    return _make_token(secret, claims)


def mint_resume_token(secret: bytes, *, session_id: str, expires_at: float) -> str:
    """``session.ready.resume_token``: a credential that may only resume ``session_id`` (§4.3, SDK-DI usage)."""
    return _make_token(secret, {"k": "r", "sid": session_id, "exp": expires_at})


def verify_token(secret: bytes, token: str, *, now: float) -> Grant | None:
    """The grant a token carries, or ``None`` if it is forged, malformed or expired."""
    parts = token.split(".")
    if len(parts) != 3 or parts[0] != _TOKEN_PREFIX:
        return None
    body = f"{parts[0]}.{parts[1]}"
    if not hmac.compare_digest(_sign(secret, body), parts[2]):
        return None
    try:
        claims = json.loads(_unb64(parts[1]))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not _is_number(claims.get("exp")) or now >= claims["exp"]:
        return None
    if claims.get("k") == "t":
        max_s = claims.get("max")
        return Grant("token", max_session_s=max_s if _is_int(max_s) else None)
    if claims.get("k") == "r" and isinstance(claims.get("sid"), str):
        return Grant("resume", session_id=claims["sid"])
    return None


def _strip_bearer(value: str) -> str:
    value = value.strip()
    if value[:7].lower() == "bearer ":
        return value[7:].strip()
    return value


def authenticate(
    authorization: str | None, query_token: str | None, *, api_key: str, secret: bytes, now: float
) -> Grant | None:
    """Check the upgrade's credentials (§1.2): ``Authorization: Bearer <key>`` or the raw key, or ``?token=``
    carrying a minted token or the key itself. A token (or a resume token) in the header is accepted too."""
    for raw in (authorization, query_token):
        if not raw:
            continue
        cred = _strip_bearer(raw)
        if not cred:
            continue
        if hmac.compare_digest(cred.encode(), api_key.encode()):
            return Grant("key")
        grant = verify_token(secret, cred, now=now)
        if grant is not None:
            return grant
    return None


class TokenRequestInvalid(Exception):
    """``GET /v1/token`` failed validation: ``detail`` is the FastAPI 422 list (§1.3, live shape)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.detail = detail


def _int_param(
    query: Mapping[str, str], name: str, lo: int, hi: int, required: bool, errors: list[dict[str, Any]]
) -> int | None:
    loc = ["query", name]
    raw = query.get(name)
    if raw is None:
        if required:
            errors.append({"type": "missing", "loc": loc, "msg": "Field required", "input": None})
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        errors.append(
            {
                "type": "int_parsing",
                "loc": loc,
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        )
        return None
    if value < lo:
        errors.append(
            {
                "type": "greater_than_equal",
                "loc": loc,
                "msg": f"Input should be greater than or equal to {lo}",
                "input": raw,
                "ctx": {"ge": lo},
            }
        )
        return None
    if value > hi:
        errors.append(
            {
                "type": "less_than_equal",
                "loc": loc,
                "msg": f"Input should be less than or equal to {hi}",
                "input": raw,
                "ctx": {"le": hi},
            }
        )
        return None
    return value


def validate_token_request(authorization: str | None, query: Mapping[str, str]) -> tuple[str, int, int | None]:
    """``GET /v1/token`` parameters → ``(credential, expires_in_seconds, max_session_duration_seconds)``.

    Raises :class:`TokenRequestInvalid` with every problem at once, as FastAPI does (missing auth header or an
    out-of-range parameter → 422, §1.3). Whether the credential is the right key is the caller's check (→ 404).
    """
    errors: list[dict[str, Any]] = []
    cred = _strip_bearer(authorization) if authorization else ""
    if not cred:
        errors.append({"type": "missing", "loc": ["header", "authorization"], "msg": "Field required", "input": None})
    expires = _int_param(query, "expires_in_seconds", 1, 600, True, errors)
    max_session = _int_param(query, "max_session_duration_seconds", 60, 10800, False, errors)
    if errors:
        raise TokenRequestInvalid(errors)
    assert expires is not None
    return cred, expires, max_session


# --------------------------------------------------------------------------------------------------------------
# Agent transcript timing (§2.2 `transcript.agent.delta`, §4.1 cut transcript)


@dataclass(frozen=True, slots=True)
class WordSpan:
    delta: str  # what to append, with its leading space
    start_ms: int
    end_ms: int


class ReplyTranscript:
    """Words of one reply placed on the reply's audio timeline, so an interrupted reply can report what was heard.

    Sentences arrive with the span of reply audio they occupy; word times inside a sentence are interpolated by
    character length (Piper gives no word timings). Pure.
    """

    __slots__ = ("_words",)

    def __init__(self) -> None:
        self._words: list[WordSpan] = []

    def add_sentence(self, sentence: str, start_ms: float, end_ms: float) -> list[WordSpan]:
        """Place ``sentence`` on ``[start_ms, end_ms)`` and return its word deltas."""
        words = sentence.split()
        if not words:
            return []
        total = sum(len(w) + 1 for w in words)
        span = max(0.0, end_ms - start_ms)
        out: list[WordSpan] = []
        pos = 0
        for w in words:
            s = start_ms + span * pos / total
            pos += len(w) + 1
            e = start_ms + span * pos / total
            delta = w if not self._words and not out else " " + w
            out.append(WordSpan(delta, int(round(s)), int(round(e))))
        self._words.extend(out)
        return out

    @property
    def text(self) -> str:
        return "".join(w.delta for w in self._words)

    def heard(self, played_ms: float) -> str:
        """Text of the words whose audio had started by ``played_ms`` (a partly sent word counts as heard)."""
        return "".join(w.delta for w in self._words if w.start_ms < played_ms).strip()


def json_dumps(event: Mapping[str, Any]) -> str:
    """Compact JSON for the wire."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)

"""``session.update`` validation: which fields a client may set, to what, and when. Pure.

:func:`apply_session_update` checks one update against the current config (``None`` before the first) and returns the
new :class:`~.config.SessionConfig`, or raises :class:`~.errors.ProtocolError` with the live service's code, message and
``param``, fatal in the first update only where live was (docs/reference/local-agent-api.md#implemented). ``greeting``,
``output.voice`` and ``output.format`` are immutable after the first update.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, Final

from .config import (
    ENCODINGS,
    PASSIVE_INPUT_KEYS,
    RATES,
    TOOL_ECHO_NULLS,
    AudioFormat,
    SessionConfig,
    ToolDef,
    TurnDetection,
)
from .errors import ProtocolError, bad_format
from .wire import is_int, is_number

__all__ = ["apply_session_update", "check_agent_binding"]

_TRANSCRIPTION_MODES: Final = ("min_latency", "balanced", "max_accuracy")
_VOICE_FOCUS: Final = ("near-field", "far-field")
_UNINTERRUPTIBLE: Final = ("greeting", "dtmf_prompt", "tool_refused_ask")
_EXECUTION_MODES: Final = ("interactive", "hold")
_SESSION_KEYS: Final = frozenset(
    {"agent_id", "system_prompt", "greeting", "tools", "input", "output", "llm", "webhook", "pre_connect_requests"}
)
_INPUT_KEYS: Final = frozenset({"format", "turn_detection", "type", *PASSIVE_INPUT_KEYS})
_OUTPUT_KEYS: Final = frozenset({"voice", "format", "volume", "type"})
_TURN_KEYS: Final = frozenset(
    {"vad_threshold", "min_silence", "max_silence", "interrupt_response", "interruption_delay",
     "uninterruptible_turns", "type"}
)  # fmt: skip
_UPDATE = "session.update"


def _parse_format(value: object, param: str) -> AudioFormat:
    if not isinstance(value, dict) or not isinstance(value.get("encoding"), str):
        raise bad_format(_UPDATE, param)
    unknown = set(value) - {"encoding", "sample_rate"}
    if unknown:
        raise bad_format(_UPDATE, f"{param}.{sorted(unknown)[0]}")
    encoding = value["encoding"]
    if encoding not in ENCODINGS:
        raise ProtocolError(
            "invalid_value",
            f"Invalid encoding '{encoding}'. Must be one of: {', '.join(ENCODINGS)}",
            param=f"{param}.encoding",
        )
    rate = value.get("sample_rate")
    if rate is not None:
        if not is_int(rate):
            raise bad_format(_UPDATE, f"{param}.sample_rate")
        # Only 24000 exists for PCM; G.711 is 8000 by definition (docs/reference/local-agent-api.md#implemented).
        # Anything else is refused rather than silently producing audio at the wrong rate.
        if rate != RATES[encoding]:
            raise ProtocolError(
                "invalid_value",
                f"Invalid sample_rate {rate} for '{encoding}'. Must be {RATES[encoding]}",
                param=f"{param}.sample_rate",
            )
    return AudioFormat(encoding)


def _parse_turn_detection(value: object) -> TurnDetection | None:
    p = "input.turn_detection"
    if value is None:
        return None
    if not isinstance(value, dict):
        raise bad_format(_UPDATE, p)
    unknown = set(value) - _TURN_KEYS
    if unknown:
        raise bad_format(_UPDATE, f"{p}.{sorted(unknown)[0]}")
    td = TurnDetection()
    if (v := value.get("vad_threshold")) is not None:
        if not is_number(v):
            raise bad_format(_UPDATE, f"{p}.vad_threshold")
        if not 0.0 <= v <= 1.0:
            raise ProtocolError("invalid_value", "vad_threshold must be between 0 and 1", param=f"{p}.vad_threshold")
        td = replace(td, vad_threshold=float(v))
    for key in ("min_silence", "max_silence", "interruption_delay"):
        if (v := value.get(key)) is not None:
            if not is_int(v):
                raise bad_format(_UPDATE, f"{p}.{key}")
            if not 0 <= v <= 60000:
                raise ProtocolError("invalid_value", f"{key} must be between 0 and 60000 ms", param=f"{p}.{key}")
            td = replace(td, **{key: v})
    if td.min_silence is not None and td.max_silence is not None and td.max_silence < td.min_silence:
        raise ProtocolError(
            "invalid_value", "max_silence must be greater than or equal to min_silence", param=f"{p}.max_silence"
        )
    if (v := value.get("interrupt_response")) is not None:
        if not isinstance(v, bool):
            raise bad_format(_UPDATE, f"{p}.interrupt_response")
        td = replace(td, interrupt_response=v)
    if (v := value.get("uninterruptible_turns")) is not None:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise bad_format(_UPDATE, f"{p}.uninterruptible_turns")
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
    for key in PASSIVE_INPUT_KEYS:
        if key not in value:
            continue
        v = value[key]
        if v is None:
            out[key] = None
            continue
        if key in ("keyterms", "language_codes"):
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise bad_format(_UPDATE, f"{p}.{key}")
            if key == "keyterms" and len(v) > 100:
                raise ProtocolError("invalid_value", "keyterms may have at most 100 entries", param=f"{p}.{key}")
            out[key] = list(v) or None  # [] clears the list
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
                raise bad_format(_UPDATE, f"{p}.{key}")
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
            if not is_number(v):
                raise bad_format(_UPDATE, f"{p}.{key}")
            if not 0.0 <= v <= 1.0:
                raise ProtocolError("invalid_value", f"{key} must be between 0 and 1", param=f"{p}.{key}")
            out[key] = float(v)
        elif key == "continuous_partials":
            if not isinstance(v, bool):
                raise bad_format(_UPDATE, f"{p}.{key}")
            out[key] = v
    return out


def _parse_tools(value: object) -> tuple[ToolDef, ...]:
    if not isinstance(value, list):
        raise bad_format(_UPDATE, "tools")
    tools: list[ToolDef] = []
    names: set[str] = set()
    for i, raw in enumerate(value):
        p = f"tools[{i}]"
        if not isinstance(raw, dict):
            raise bad_format(_UPDATE, p)
        if raw.get("type", "function") != "function":
            raise ProtocolError("invalid_value", f"Invalid tool type '{raw.get('type')}'", param=f"{p}.type")
        name = raw.get("name")
        if not isinstance(name, str):
            raise bad_format(_UPDATE, f"{p}.name")
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name):
            raise ProtocolError("invalid_value", f"Invalid tool name '{name}'", param=f"{p}.name")
        if name in names:
            raise ProtocolError("invalid_value", f"Duplicate tool name '{name}'", param=f"{p}.name")
        names.add(name)
        description = raw.get("description") or ""
        if not isinstance(description, str):
            raise bad_format(_UPDATE, f"{p}.description")
        parameters = raw.get("parameters")
        if parameters is None:
            parameters = {}
        if not isinstance(parameters, dict):
            raise bad_format(_UPDATE, f"{p}.parameters")
        # Live: a non-object `properties` is an invalid_value naming the exact path
        # (docs/reference/local-agent-api.md#implemented).
        if "properties" in parameters and not isinstance(parameters["properties"], dict):
            raise ProtocolError(
                "invalid_value",
                f"Invalid tool schema: '{p}.parameters.properties' must be an object",
                param=f"{p}.parameters.properties",
            )
        timeout = raw.get("timeout_seconds")
        if timeout is None:
            timeout = 120
        if not is_int(timeout):
            raise bad_format(_UPDATE, f"{p}.timeout_seconds")
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
        extra = {k: raw[k] for k in TOOL_ECHO_NULLS if raw.get(k) is not None}
        tools.append(ToolDef(name, description, parameters, timeout, mode, extra))
    return tuple(tools)


def _voice_error(voice: object, voices: Sequence[str]) -> ProtocolError:
    return ProtocolError(
        "invalid_value", f"Invalid voice '{voice}'. Must be one of: {', '.join(voices)}", param="output.voice"
    )


def _immutable(param: str) -> ProtocolError:
    return ProtocolError("immutable_field", f"'{param}' cannot be changed after the first session.update", param=param)


def apply_session_update(
    current: SessionConfig | None,
    session: Mapping[str, Any],
    *,
    voices: Sequence[str],
    agents: Mapping[str, Mapping[str, Any]] | None = None,
) -> SessionConfig:
    """Validate one ``session.update`` and return the new config. ``current is None`` means the first update.

    ``agents``: the stored agents this update may name, by id, each as the ``session.update`` fields it stands for
    (:func:`gateway.local_agent.store.agents.agent_session_fields`); the shell looks the one named up before calling
    (docs/reference/local-agent-api.md#stored-agents). A first update ``{agent_id}`` opens the session with that
    agent's config; later updates change it as they would an inline one.

    Raises :class:`ProtocolError`. In the first update ``invalid_value`` and ``agent_not_found`` are fatal (live:
    docs/reference/local-agent-api.md#implemented); ``invalid_format`` (e.g. ``greeting: null``) is not, and later
    updates never are.
    """
    first = current is None
    try:
        return _apply(current, session, voices, agents or {})
    except ProtocolError as e:
        if first and e.code in ("invalid_value", "agent_not_found"):
            raise e.as_fatal() from None
        raise


def check_agent_binding(current: SessionConfig | None, session: Mapping[str, Any]) -> str | None:
    """The stored agent a ``session.update`` binds (``None``: it names none). ``agent_id`` must be the only field of
    the first update (live: docs/reference/local-agent-api.md#stored-agents); raises :class:`ProtocolError`
    otherwise (not yet fatal: :func:`apply_session_update` makes it so in a first update)."""
    if "agent_id" not in session:
        return None
    if current is not None:
        raise ProtocolError(
            "agent_id_not_first", "agent_id can only be set in the first session.update", param="agent_id"
        )
    if len(session) > 1:
        raise ProtocolError(
            "invalid_value", "agent_id is mutually exclusive with other session fields", param="agent_id"
        )
    agent_id = session["agent_id"]
    if not isinstance(agent_id, str):
        raise bad_format(_UPDATE, "agent_id")
    return agent_id


def _apply(
    current: SessionConfig | None,
    session: Mapping[str, Any],
    voices: Sequence[str],
    agents: Mapping[str, Mapping[str, Any]],
) -> SessionConfig:
    first = current is None
    agent_id = check_agent_binding(current, session)
    if agent_id is not None:
        fields = agents.get(agent_id)
        if fields is None:
            raise ProtocolError("agent_not_found", f"Agent '{agent_id}' not found", param="agent_id")
        # The stored agent's fields, validated as an inline first update would be (they were when it was stored).
        return replace(_apply(None, fields, voices, {}), agent_id=agent_id)
    unknown = set(session) - _SESSION_KEYS
    if unknown:
        # E.g. the REST shape `{"voice": {"voice_id": ...}}` at the top level.
        raise bad_format(_UPDATE, sorted(unknown)[0])
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
            raise bad_format(_UPDATE, "greeting")  # live: explicit null → invalid_format, socket stays open
        if not first and greeting != cfg.greeting:
            raise _immutable("greeting")
        cfg = replace(cfg, greeting=greeting or None)

    if "system_prompt" in session:
        prompt = session["system_prompt"]
        if prompt is not None and not isinstance(prompt, str):
            raise bad_format(_UPDATE, "system_prompt")
        cfg = replace(cfg, system_prompt=prompt)

    if "output" in session:
        out = session["output"]
        if not isinstance(out, dict):
            raise bad_format(_UPDATE, "output")
        unknown = set(out) - _OUTPUT_KEYS
        if unknown:
            raise bad_format(_UPDATE, f"output.{sorted(unknown)[0]}")
        if "voice" in out:
            voice = out["voice"]
            if not isinstance(voice, str):
                raise bad_format(_UPDATE, "output.voice")
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
                if not is_number(volume):
                    raise bad_format(_UPDATE, "output.volume")
                if not 0 <= volume <= 100:
                    raise ProtocolError("invalid_value", "volume must be between 0 and 100", param="output.volume")
                volume = float(volume)
            cfg = replace(cfg, volume=volume)
        if "type" in out and out["type"] not in (None, "audio"):
            raise ProtocolError("invalid_value", f"Invalid output type '{out['type']}'", param="output.type")

    if "input" in session:
        inp = session["input"]
        if not isinstance(inp, dict):
            raise bad_format(_UPDATE, "input")
        unknown = set(inp) - _INPUT_KEYS
        if unknown:
            raise bad_format(_UPDATE, f"input.{sorted(unknown)[0]}")
        if "format" in inp:
            # The docs call input.format mutable; the local agent honours a change by rebuilding its decoder.
            cfg = replace(cfg, input_format=_parse_format(inp["format"], "input.format"))
        if "turn_detection" in inp:
            cfg = replace(cfg, turn_detection=_parse_turn_detection(inp["turn_detection"]))
        if "type" in inp and inp["type"] not in (None, "audio"):
            raise ProtocolError("invalid_value", f"Invalid input type '{inp['type']}'", param="input.type")
        cfg = replace(cfg, input_extra=_parse_input_extra(inp, cfg.input_extra))

    if "tools" in session:
        # Each update replaces the whole list; null clears it (docs/reference/local-agent-api.md#implemented).
        tools = session["tools"]
        cfg = replace(cfg, tools=() if tools is None else _parse_tools(tools))

    if "pre_connect_requests" in session:
        pcr = session["pre_connect_requests"]
        if pcr is not None and not isinstance(pcr, list):
            raise bad_format(_UPDATE, "pre_connect_requests")
        cfg = replace(cfg, pre_connect_requests=tuple(pcr or ()))

    if "webhook" in session and session["webhook"] is not None and not isinstance(session["webhook"], dict):
        raise bad_format(_UPDATE, "webhook")  # accepted and ignored otherwise (phone/webhook features only)
    return cfg

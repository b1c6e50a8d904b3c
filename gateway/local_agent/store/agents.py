"""Stored agents: what ``POST``/``PUT /v1/agents`` accept, the record they keep, and the ``session.update`` fields an
agent stands for. Pure (no I/O; ids and times passed in).

An agent is one JSON object (docs/reference/local-agent-api.md#stored-agents): ``name``, ``system_prompt`` and
``voice`` are required; ``greeting``, ``input``, ``output``, ``tools``, ``llm`` and ``pre_connect_requests`` are
optional. The voice is the REST shape ``{"voice_id": "..."}`` (a plain string is accepted too). Everything a session
uses is validated by the WebSocket's own rules (:func:`~..protocol.apply_session_update`), so an agent that stores is
an agent that opens; a bad one is a 422 whose ``detail`` lists each problem FastAPI-style, ``loc`` starting at
``"body"``, as the live service's REST errors are shaped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final

from gateway.errors import RemoteProtocolError

from ..protocol import ProtocolError, apply_session_update
from ..protocol.wire import RandHex

__all__ = [
    "AGENT_FIELDS",
    "AgentInvalid",
    "agent_session_fields",
    "new_agent_id",
    "validate_agent",
]

AGENT_FIELDS: Final = frozenset(
    {"name", "system_prompt", "voice", "greeting", "input", "output", "tools", "llm", "pre_connect_requests"}
)
_REQUIRED: Final = ("name", "system_prompt", "voice")
NAME_MAX = 255
_AGENT_ID: Final = re.compile(r"agent_[0-9a-f]{32}")


class AgentInvalid(RemoteProtocolError):
    """A body ``/v1/agents`` refuses: ``detail`` is the 422 list (the client's mistake)."""

    def __init__(self, detail: list[dict[str, Any]]) -> None:
        super().__init__(detail)
        self.detail = detail


def new_agent_id(rand: RandHex) -> str:
    return "agent_" + rand(16)


def is_agent_id(value: str) -> bool:
    return _AGENT_ID.fullmatch(value) is not None


def _err(type_: str, loc: Sequence[str | int], msg: str, value: Any) -> dict[str, Any]:
    return {"type": type_, "loc": ["body", *loc], "msg": msg, "input": value}


def _loc_of(param: str | None) -> list[str | int]:
    """``tools[0].parameters.properties`` → ``["tools", 0, "parameters", "properties"]``."""
    loc: list[str | int] = []
    for part in (param or "").split("."):
        m = re.fullmatch(r"([^\[\]]+)((?:\[\d+\])*)", part)
        if m is None:
            loc.append(part)
            continue
        loc.append(m.group(1))
        loc.extend(int(i) for i in re.findall(r"\[(\d+)\]", m.group(2)))
    return [x for x in loc if x != ""]


def _voice_id(value: Any, errors: list[dict[str, Any]]) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        extra = sorted(set(value) - {"voice_id"})
        if extra:
            errors.append(
                _err("extra_forbidden", ["voice", extra[0]], "Extra inputs are not permitted", value[extra[0]])
            )
            return None
        vid = value.get("voice_id")
        if isinstance(vid, str):
            return vid
        if vid is None:
            errors.append(_err("missing", ["voice", "voice_id"], "Field required", value))
        else:
            errors.append(_err("string_type", ["voice", "voice_id"], "Input should be a valid string", vid))
        return None
    errors.append(_err("model_type", ["voice"], "Input should be an object with a voice_id", value))
    return None


def _llm(value: Any, errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``llm``: at most one OpenAI-compatible endpoint ``{base_url, model, api_key?}``. Kept without its key: the
    local agent answers with its own engine and never stores a secret it does not use."""
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if len(items) > 1:
        errors.append(_err("too_long", ["llm"], "At most one LLM endpoint", value))
        return []
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            errors.append(_err("model_type", ["llm", i], "Input should be an object", item))
            continue
        base_url, model = item.get("base_url"), item.get("model")
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            errors.append(_err("url_parsing", ["llm", i, "base_url"], "Input should be an http(s) URL", base_url))
        if not isinstance(model, str) or not model:
            errors.append(_err("string_type", ["llm", i, "model"], "Input should be a non-empty string", model))
        out.append({"base_url": base_url, "model": model})
    return out


def validate_agent(body: Any, *, voices: Sequence[str]) -> dict[str, Any]:
    """The agent document a ``POST``/``PUT`` body stands for (without ``id`` and times), or :class:`AgentInvalid`
    listing every problem of the top-level fields, then the first the session rules find."""
    if not isinstance(body, dict):
        raise AgentInvalid([{"type": "model_type", "loc": ["body"], "msg": "Input should be an object", "input": body}])
    errors: list[dict[str, Any]] = []
    for key in sorted(set(body) - AGENT_FIELDS):
        errors.append(_err("extra_forbidden", [key], "Extra inputs are not permitted", body[key]))
    for key in _REQUIRED:
        if body.get(key) is None:
            errors.append(_err("missing", [key], "Field required", None))
    name = body.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip() or len(name) > NAME_MAX):
        errors.append(_err("string_type", ["name"], f"Input should be a string of 1 to {NAME_MAX} characters", name))
    prompt = body.get("system_prompt")
    if prompt is not None and not isinstance(prompt, str):
        errors.append(_err("string_type", ["system_prompt"], "Input should be a valid string", prompt))
    voice = _voice_id(body["voice"], errors) if body.get("voice") is not None else None
    output = body.get("output")
    if isinstance(output, dict) and "voice" in output:
        # The REST shape keeps the voice at the top level only, so an agent has one voice, not two.
        errors.append(_err("extra_forbidden", ["output", "voice"], "Set the voice with the top-level voice", output))
    llm = _llm(body.get("llm"), errors)
    if errors:
        raise AgentInvalid(errors)
    agent: dict[str, Any] = {
        "name": name,
        "system_prompt": prompt,
        "voice": {"voice_id": voice},
        "greeting": body.get("greeting"),
        "input": body.get("input") or {},
        "output": output or {},
        "tools": body.get("tools") or [],
        "llm": llm,
        "pre_connect_requests": body.get("pre_connect_requests") or [],
    }
    try:
        apply_session_update(None, agent_session_fields(agent), voices=voices)
    except ProtocolError as e:
        raise AgentInvalid([_err("value_error", _session_loc(e.param), e.message, None)]) from None
    return agent


def _session_loc(param: str | None) -> list[str | int]:
    loc = _loc_of(param)
    if loc[:2] == ["output", "voice"]:
        return ["voice", "voice_id"]  # the session's output.voice is the agent's top-level voice
    return loc


def agent_session_fields(agent: Mapping[str, Any]) -> dict[str, Any]:
    """The inline ``session.update`` fields a stored agent stands for (``llm`` stays on the agent: the local agent
    answers with its own engine; docs/reference/local-agent-api.md#stored-agents)."""
    fields: dict[str, Any] = {
        "system_prompt": agent.get("system_prompt"),
        "output": {**(agent.get("output") or {}), "voice": (agent.get("voice") or {}).get("voice_id")},
    }
    if agent.get("greeting") is not None:
        fields["greeting"] = agent["greeting"]
    for key in ("input", "tools", "pre_connect_requests"):
        if agent.get(key):
            fields[key] = agent[key]
    return fields

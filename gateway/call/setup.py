"""What a call is, once its stream's ``start`` was authorized: the stream, and the profile it is served with. Pure."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..audio.transcode import agent_format_spec
from ..carriers.events import StreamStarted
from ..config import Profile, Settings
from ..outbound import OUTBOUND_PARAM, fill_template, variables_from_parameters
from ..profile_options import input_options

__all__ = ["CallSetup", "profile_name_for", "session_config", "setup_for", "stored_agent_update"]


@dataclass(frozen=True, slots=True)
class CallSetup:
    """An authorized stream: its ``start``, and the profile (name and settings, the call's variables filled in)."""

    start: StreamStarted
    profile_name: str
    profile: Profile

    @property
    def encoding(self) -> str:
        return self.start.encoding

    @property
    def sample_rate(self) -> int:
        return self.start.sample_rate


def profile_name_for(settings: Settings, params: Mapping[str, str]) -> str:
    """The profile a stream asks for: an outbound call's ``profile`` parameter (its token covers every parameter),
    else the one its called number maps to (the token covers that name too)."""
    if params.get(OUTBOUND_PARAM) and params.get("profile") in settings.profiles:
        return params["profile"]
    return settings.profile_for(params.get("to", ""))[0]


def setup_for(settings: Settings, start: StreamStarted) -> CallSetup:
    """The call a verified ``start`` describes. An outbound call's parameters (POST /calls) are bound to its token,
    so its variables can be trusted and are filled into the profile's prompt and greeting."""
    params = start.custom_parameters
    name = profile_name_for(settings, params)
    profile = settings.profiles[name]
    if params.get(OUTBOUND_PARAM):
        variables = variables_from_parameters(params)
        profile = dataclasses.replace(
            profile,
            system_prompt=fill_template(profile.system_prompt, variables),
            greeting=fill_template(profile.greeting, variables),
        )
    return CallSetup(start, name, profile)


def session_config(profile: Profile, agent_format: str, tools: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``session`` of a call's first ``session.update``: the profile, the agent audio format, the tools. A
    profile with ``agent_id`` sends it alone: the protocol refuses it mixed with other fields
    (docs/how-to/conversation.md#stored-agents); :func:`stored_agent_update` follows once the session is ready."""
    if profile.agent_id:
        return {"agent_id": profile.agent_id}
    fmt = agent_format_spec(agent_format)
    output: dict[str, Any] = {"voice": profile.voice, "format": fmt}
    if profile.volume is not None:
        output["volume"] = profile.volume
    return {
        "system_prompt": profile.system_prompt,
        "greeting": profile.greeting or None,
        "input": {"format": fmt, **input_options(profile)},
        "output": output,
        "tools": tools,
    }


def stored_agent_update(profile: Profile, agent_format: str, tools: list[dict[str, Any]]) -> dict[str, Any] | None:
    """For a stored agent (``agent_id``), the ``session`` of the ``session.update`` sent once it is ready: the mutable
    fields the profile sets on top of the agent: the input format and options, a system prompt other than the
    built-in default, the volume, and the profile's tools (they replace the agent's: ``tools = []`` keeps them).
    Greeting, voice and output format cannot change after the first update: they are the stored agent's."""
    if not profile.agent_id:
        return None
    session: dict[str, Any] = {"input": {"format": agent_format_spec(agent_format), **input_options(profile)}}
    if profile.system_prompt != _DEFAULT_PROMPT:
        session["system_prompt"] = profile.system_prompt
    if profile.volume is not None:
        session["output"] = {"volume": profile.volume}
    if tools:
        session["tools"] = tools
    return session


_DEFAULT_PROMPT = Profile().system_prompt

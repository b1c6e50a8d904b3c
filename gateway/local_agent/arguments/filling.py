"""Slot filling: ask for a tool's missing required arguments, one question per turn, before calling it. Pure.

:func:`start` takes what the caller's first request said (an :class:`~.extract.Extraction`) and either has every
required argument (:class:`Ready`: call the tool) or asks for the first one missing (:class:`Ask`, carrying the
:class:`SlotFill` state the session keeps for the next turn). :func:`answer` folds the next turn in. An answer that
gives no usable value is asked for again, at most ``MAX_REASKS`` times, then the agent gives up (:class:`GiveUp`).
docs/how-to/local-agent.md#tool-arguments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeAlias

from .extract import Extraction
from .schema import Kind, Param, check_value, params_of, question_for

__all__ = ["MAX_REASKS", "Ask", "GiveUp", "Plan", "Ready", "SlotFill", "answer", "speech_hint", "start"]

#: At most this many enum values go into a speech-recognition hint (Whisper keeps half its context for one).
_MAX_HINT_VALUES = 24
#: Times one argument is asked for again after an answer it could not use.
MAX_REASKS = 2
GIVE_UP = "Sorry, I still didn't get that. Let's leave it there for now. Is there anything else I can help with?"


@dataclass(frozen=True, slots=True)
class SlotFill:
    """A tool call waiting for the caller: the arguments so far and the one being asked for."""

    tool: str
    arguments: Mapping[str, Any]
    asking: str
    context: Mapping[str, Any] = field(default_factory=dict)
    reasks: int = 0
    #: Words the answer is likely to be (an enum's values), given to speech recognition as context: a short
    #: answer such as "a van, please" is misheard far less often with them. Empty: none.
    hint: str = ""


@dataclass(frozen=True, slots=True)
class Ask:
    text: str
    state: SlotFill


@dataclass(frozen=True, slots=True)
class Ready:
    tool: str
    arguments: dict[str, Any]
    context: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class GiveUp:
    text: str


Plan: TypeAlias = Ask | Ready | GiveUp


def _plan(
    tool: str,
    params: list[Param],
    arguments: dict[str, Any],
    context: Mapping[str, Any],
    unusable: tuple[str, ...],
    reasks: int,
) -> Ask | Ready:
    missing = [p for p in params if p.required and p.name not in arguments]
    # A value heard but unusable is asked for first (it is what the caller is thinking about).
    missing.sort(key=lambda p: p.name not in unusable)
    if not missing:
        return Ready(tool, arguments, context)
    p = missing[0]
    question = question_for(p)
    if p.name in unusable:
        question = f"Sorry, I didn't get the {p.spoken_name}. {question}"
    hint = ", ".join(_enum_words(p)) if p.kind is Kind.ENUM else ""
    return Ask(question, SlotFill(tool, dict(arguments), p.name, context, reasks, hint))


def start(
    tool: str,
    parameters: Mapping[str, Any],
    extraction: Extraction,
    *,
    defaults: Mapping[str, Any] | None = None,
    context: Mapping[str, Any] | None = None,
) -> Ask | Ready:
    """The first turn of a request for ``tool``: ``defaults`` (the intent table's fixed arguments) count where
    they fit the schema and the caller said nothing else."""
    params = params_of(parameters)
    by_name = {p.name: p for p in params}
    args: dict[str, Any] = {}
    for k, v in (defaults or {}).items():
        p = by_name.get(k)
        if p is None or check_value(p.schema, v) is None:
            args[k] = v
    args.update(extraction.values)
    return _plan(tool, params, args, dict(context or {}), extraction.unusable, 0)


def answer(state: SlotFill, parameters: Mapping[str, Any], extraction: Extraction) -> Plan:
    """The caller's next turn, while ``state`` waits for ``state.asking``."""
    params = params_of(parameters)
    args = {**state.arguments, **extraction.values}
    if state.asking in extraction.values or not any(p.name == state.asking for p in params):
        return _plan(state.tool, params, args, state.context, extraction.unusable, 0)
    if state.reasks >= MAX_REASKS:
        return GiveUp(GIVE_UP)
    plan = _plan(state.tool, params, args, state.context, (*extraction.unusable, state.asking), state.reasks + 1)
    return plan


def _enum_words(p: Param) -> list[str]:
    return [str(v).replace("_", " ") for v in p.schema.get("enum", []) if isinstance(v, str)]


def speech_hint(declared: Iterable[Mapping[str, Any]], state: SlotFill | None) -> str:
    """Words the caller's next turn is likely to hold, for speech recognition's context (``""``: none): the
    choices of the question just asked, else the values of every required enum of the declared tools
    (``declared``: their ``parameters``; an optional enum, such as a transfer's ``mode: cold|warm``, is rarely
    the caller's to say). An enum's values are words Whisper has no other way to expect ("put me through to billing"
    is heard as "the building" without them, "a van" as "a band"); measured on the tool-argument bench,
    docs/how-to/local-agent.md#tool-arguments."""
    if state is not None and state.hint:
        return state.hint
    words: dict[str, None] = {}
    for parameters in declared:
        for p in params_of(parameters):
            if p.kind is Kind.ENUM and p.required:
                words.update(dict.fromkeys(_enum_words(p)))
    return ", ".join(list(words)[:_MAX_HINT_VALUES])

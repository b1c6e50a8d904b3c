"""Tool arguments from a caller's words: spoken numbers, times and dates, phone numbers, names, enums, checked
against the tool's declared JSON Schema, and slot filling for what is missing. Pure (no I/O, no clock: the session's
``now`` is passed in). docs/how-to/local-agent.md#tool-arguments.
"""

from __future__ import annotations

from .choice import bind_intents, choose_tool, gist, gives_required, overlap_bonus, tool_text
from .extract import Extraction, extract
from .filling import Ask, GiveUp, Plan, Ready, SlotFill, answer, speech_hint, start
from .schema import Kind, Param, params_of, question_for, validate

__all__ = [
    "Ask",
    "Extraction",
    "GiveUp",
    "Kind",
    "Param",
    "Plan",
    "Ready",
    "SlotFill",
    "answer",
    "bind_intents",
    "choose_tool",
    "extract",
    "gist",
    "gives_required",
    "overlap_bonus",
    "params_of",
    "question_for",
    "speech_hint",
    "start",
    "tool_text",
    "validate",
]

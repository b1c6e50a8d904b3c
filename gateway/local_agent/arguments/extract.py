"""Tool arguments from a caller's words, for the parameters a tool declares. Pure and deterministic.

:func:`extract` reads one utterance against a tool's ``parameters`` JSON Schema and returns the values it found,
already of the declared type (an integer for ``integer``, an ISO string for a time), plus the parameters it heard
but could not use (a party of 40 where ``maximum`` is 12): those are asked for again, never passed on with the
wrong type. Times and dates go first so their numbers are not taken twice; then phone numbers and digit strings,
enum values, counts, names. ``asking`` says which parameter the utterance answers (the agent just asked for it):
then a bare "seven" is a time, and a whole short answer is a name or a free string.
docs/how-to/local-agent.md#tool-arguments.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .phone import digits_in, phone_number
from .schema import Kind, Param, check_value, format_moment, params_of
from .when import find_moment
from .words import NumberSpan, numbers_in, tokenize

__all__ = ["Extraction", "extract"]

_YES = {"yes", "yeah", "yep", "yup", "sure", "correct", "right", "please", "absolutely", "ok", "okay"}
_NO = {"no", "nope", "nah", "not", "don't", "dont", "without"}
_NAME_CUE = re.compile(
    r"\b(?:my name is|my name's|name is|name's|under the name(?: of)?|under|this is|i'm|i am|call me)\s+"
    r"((?:[A-Z][\w'-]*)(?:\s+[A-Z][\w'-]*){0,2})"
)
_FILLER_START = re.compile(
    r"^(?:(?:uh|um|er|erm|so|well|okay|ok|yes|yeah|sure|oh)[,.]?\s+)*"
    r"(?:it's|it is|that's|that is|that would be|that'll be|i'd like|i want|make it|my name is|the name is|"
    r"name's|put it under|under|for)?\s*",
    re.IGNORECASE,
)
_NOT_NAMES = {"a", "the", "to", "at", "for", "and", "of", "table", "tomorrow", "today", "tonight", "please"}
_PROPER = re.compile(
    r"\b(?:in|for|to|from|at|near|about|called|named|of)\s+((?:[A-Z][\w'-]*)(?:\s+(?:[A-Z][\w'-]*|of|de|la))*)"
)
_NOT_PROPER = {"I", "I'm", "I'd", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"}
#: Words that are no value of a free string on their own: "For when?" heard for the answer "Berlin.".
_NO_VALUE = {
    "when", "what", "where", "who", "why", "how", "which", "it", "that", "this", "there", "here", "then", "so",
    "a", "an", "the", "for", "to", "in", "on", "at", "of", "and", "or", "is", "was", "me", "you", "we", "us", "i",
}  # fmt: skip
#: A free string naming a place ("city", "destination"): a number alone is no such name ("for one." for "Berlin.").
_PLACE_WORDS = {"city", "town", "country", "place", "destination", "location", "region", "state", "county"}
_EMAIL = re.compile(r"([\w.+-]+)\s*(?:@|\bat\b)\s*([\w-]+(?:\s*(?:\.|\bdot\b)\s*[\w-]+)+)", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class Extraction:
    #: Parameter → value, each valid against its schema.
    values: dict[str, Any] = field(default_factory=dict)
    #: Parameters the caller spoke to but whose value was unusable (asked for again).
    unusable: tuple[str, ...] = ()


def _answer_text(text: str) -> str:
    t = _FILLER_START.sub("", text.strip(), count=1)
    return t.strip(" .,!?;:").strip()


def _plausible_text(p: Param, value: str) -> bool:
    """A free string worth passing on: not only question or function words, and for a place not only a number
    (what Whisper makes of a one-word answer it did not catch: "for one.", "For when?")."""
    tokens = tokenize(value)
    words = [t for t in tokens if t not in _NO_VALUE]
    if not words:
        return False
    if p.words & _PLACE_WORDS:
        numeric = {i for span in numbers_in(tokens) for i in range(span.start, span.end)}
        return any(i not in numeric and t not in _NO_VALUE for i, t in enumerate(tokens))
    return True


def _name_from(text: str, answer: bool) -> str | None:
    m = _NAME_CUE.search(text)
    if m:
        words = [w for w in m.group(1).split() if w.lower() not in _NOT_NAMES]
        return " ".join(w.strip("'") for w in words) or None
    if not answer:
        return None
    words = re.findall(r"[A-Za-z][A-Za-z'-]*", _answer_text(text))
    words = [w for w in words if w.lower() not in _NOT_NAMES | {"please", "thanks", "thank", "you"}]
    if not 1 <= len(words) <= 3:
        return None
    return " ".join(w[0].upper() + w[1:] for w in words)


def _proper_noun(text: str) -> str | None:
    """A capitalised name after a preposition ("the weather in New York"): a place or a thing the caller named."""
    for m in _PROPER.finditer(text):
        words = m.group(1).split()
        while words and words[-1] in ("of", "de", "la"):
            words.pop()
        if words and words[0] not in _NOT_PROPER and words[0].lower() not in _NOT_NAMES:
            return " ".join(words)
    return None


def _email_from(text: str) -> str | None:
    m = _EMAIL.search(text)
    if m is None:
        return None
    local = m.group(1).replace(" ", "").lower()
    domain = re.sub(r"\s*(?:\bdot\b|\.)\s*", ".", m.group(2), flags=re.IGNORECASE).replace(" ", "").lower()
    return f"{local}@{domain}"


def _enum_from(p: Param, tokens: list[str], used: set[int]) -> tuple[Any, set[int]] | None:
    values = p.schema.get("enum", [])
    best: tuple[int, Any, set[int]] | None = None
    for v in values:
        if isinstance(v, bool):
            continue
        if isinstance(v, (int, float)):
            for span in numbers_in(tokens, frozenset(used)):
                if span.value == v and (best is None or span.start < best[0]):
                    best = (span.start, v, set(range(span.start, span.end)))
            continue
        words = tokenize(str(v).replace("_", " "))
        n = len(words)
        if not n:
            continue
        for i in range(len(tokens) - n + 1):
            window = tokens[i : i + n]
            if any(j in used for j in range(i, i + n)):
                continue
            if all(a == b or a.rstrip("s") == b.rstrip("s") for a, b in zip(window, words, strict=True)):
                if best is None or i < best[0]:
                    best = (i, v, set(range(i, i + n)))
                break
    return (best[1], best[2]) if best else None


def _count_score(p: Param, tokens: list[str], span: NumberSpan) -> int:
    after = tokens[span.end : span.end + 2]
    before = tokens[max(0, span.start - 2) : span.start]
    score = 2 * sum(w in p.words or w.rstrip("s") in p.words for w in after)
    score += sum(w in p.words for w in before)
    if before[-1:] == ["for"]:
        score += 1
    return score


def _assign_counts(params: list[Param], tokens: list[str], used: set[int], answer: str | None) -> dict[str, Any]:
    spans = [s for s in numbers_in(tokens, frozenset(used)) if not s.ordinal]
    out: dict[str, Any] = {}
    if not params or not spans:
        return out
    scored = sorted(
        (
            (_count_score(p, tokens, s) + (3 if p.name == answer else 0), -s.start, p.name, s)
            for p in params
            for s in spans
        ),
        key=lambda x: (x[0], x[1]),
        reverse=True,
    )
    taken: set[int] = set()
    for score, _, name, span in scored:
        if name in out or span.start in taken:
            continue
        # A number next to none of the parameter's words counts only when it is the one number the tool takes and
        # the caller is not answering a question about something else.
        if score <= 0 and (len(params) > 1 or answer not in (None, name)):
            continue
        out[name] = span.value
        taken.add(span.start)
        used.update(range(span.start, span.end))
    return out


def extract(parameters: Mapping[str, Any], text: str, now: datetime | None, *, asking: str | None = None) -> Extraction:
    """The arguments said in ``text`` for a tool declaring ``parameters``; ``now`` resolves relative days
    ("tomorrow"; without it, only days and times said outright count); ``asking``: the parameter the agent
    just asked for."""
    params = params_of(parameters)
    tokens = tokenize(text)
    used: set[int] = set()
    found: dict[str, Any] = {}

    moment_kinds = {Kind.DATETIME, Kind.DATE, Kind.TIME, Kind.MOMENT}
    moment_params = [p for p in params if p.kind in moment_kinds]
    answering_time = any(p.name == asking for p in moment_params)
    if now is not None and moment_params:
        # Only for a tool that takes a time: else "oh two oh seven ..." would lose "two oh seven" to 14:07.
        moment = find_moment(tokens, now, answer=answering_time)
        used |= moment.used
        for p in moment_params:
            value = format_moment(p.kind, moment.day, moment.clock, now)
            if value is not None:
                found[p.name] = value

    for p in params:
        if p.kind is Kind.PHONE:
            got = phone_number(tokens, frozenset(used))
            if got is not None:
                found[p.name], taken = got
                used |= taken
        elif p.kind is Kind.DIGITS:
            digits = digits_in(tokens, frozenset(used))
            if digits is not None and (len(digits[0]) >= 3 or p.name == asking):
                found[p.name] = digits[0]
                used |= digits[1]
    for p in params:
        if p.kind is Kind.ENUM:
            enum_hit = _enum_from(p, tokens, used)
            if enum_hit is not None:
                found[p.name], taken_enum = enum_hit
                used |= taken_enum
    implausible: list[str] = []
    counts = _assign_counts([p for p in params if p.kind in (Kind.INTEGER, Kind.NUMBER)], tokens, used, asking)
    found.update(counts)
    for p in params:
        answer = p.name == asking
        if p.kind is Kind.NAME:
            name = _name_from(text, answer)
            if name:
                found[p.name] = name
        elif p.kind is Kind.EMAIL:
            email = _email_from(text)
            if email:
                found[p.name] = email
        elif p.kind is Kind.BOOLEAN and answer:
            words = set(tokens)
            if words & _NO:
                found[p.name] = False
            elif words & _YES:
                found[p.name] = True
        elif p.kind is Kind.TEXT:
            value = _answer_text(text) if answer else _proper_noun(text)
            if value and not _plausible_text(p, value):
                implausible.append(p.name)
            elif value and not any(v == value for v in found.values()):
                found[p.name] = value

    values: dict[str, Any] = {}
    unusable: list[str] = implausible
    by_name = {p.name: p for p in params}
    for name, value in found.items():
        if check_value(by_name[name].schema, value) is None:
            values[name] = value
        else:
            unusable.append(name)
    if asking is not None and asking in by_name and asking not in values and asking not in unusable:
        unusable.append(asking)
    return Extraction(values, tuple(unusable))

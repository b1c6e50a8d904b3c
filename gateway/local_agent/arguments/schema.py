"""The declared JSON Schema of a tool's parameters, as the argument extractor reads it. Pure.

Each property gets a :class:`Kind` from its type, ``enum``, ``format``, name and description (a string called
``time`` is a time, one called ``phone`` a phone number); :func:`validate` checks arguments against the schema
(the subset a tool's ``parameters`` use: ``type``, ``enum``, ``required``, ``minimum``/``maximum``,
``minLength``/``maxLength``, ``format`` date/time/date-time), and :func:`question_for` words the follow-up
question for a missing one (docs/how-to/local-agent.md#tool-arguments).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time
from typing import Any

__all__ = ["Kind", "Param", "format_moment", "params_of", "question_for", "validate"]


class Kind(enum.Enum):
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    ENUM = "enum"
    DATETIME = "date-time"  # format date-time: RFC 3339 with the session clock's offset
    DATE = "date"  # YYYY-MM-DD
    TIME = "time"  # HH:MM
    MOMENT = "moment"  # a time-like string without a format: the most specific of date-time, time, date
    PHONE = "phone"
    EMAIL = "email"
    NAME = "name"
    DIGITS = "digits"
    TEXT = "text"


@dataclass(frozen=True, slots=True)
class Param:
    name: str
    schema: Mapping[str, Any]
    kind: Kind
    required: bool
    #: Lower-case words of the name and description (what the caller might say next to the value).
    words: frozenset[str]

    @property
    def description(self) -> str:
        d = self.schema.get("description")
        return d.strip() if isinstance(d, str) else ""

    @property
    def spoken_name(self) -> str:
        return re.sub(r"(?<=[a-z])(?=[A-Z])", " ", self.name).replace("_", " ").replace("-", " ").lower()


_STOP = {"the", "a", "an", "of", "for", "to", "in", "on", "at", "and", "or", "is", "be", "will", "this", "that", "it"}
_PARTY = {"party", "people", "guests", "persons", "diners", "covers", "seats", "size", "group"}
_PARTY_WORDS = frozenset({"people", "person", "persons", "guests", "guest", "us", "party", "adults", "diners"})


def _type_of(schema: Mapping[str, Any]) -> str | None:
    t = schema.get("type")
    if isinstance(t, list):
        t = next((x for x in t if x != "null"), None)
    return t if isinstance(t, str) else None


def _words(name: str, schema: Mapping[str, Any]) -> frozenset[str]:
    text = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ") + " " + str(schema.get("description") or "")
    words = {w for w in re.findall(r"[a-z]+", text.lower()) if w not in _STOP}
    stems = {w[:-1] for w in words if w.endswith("s") and len(w) > 3}
    if words & _PARTY:
        words |= _PARTY_WORDS
    return frozenset(words | stems)


def _kind(name: str, schema: Mapping[str, Any], siblings: frozenset[str]) -> Kind:
    if isinstance(schema.get("enum"), list):
        return Kind.ENUM
    t = _type_of(schema)
    if t == "integer":
        return Kind.INTEGER
    if t == "number":
        return Kind.NUMBER
    if t == "boolean":
        return Kind.BOOLEAN
    fmt = schema.get("format")
    if fmt in ("date-time", "date", "time"):
        return {"date-time": Kind.DATETIME, "date": Kind.DATE, "time": Kind.TIME}[fmt]
    if fmt == "email":
        return Kind.EMAIL
    n = name.lower()
    desc = str(schema.get("description") or "").lower()
    if "phone" in n or "mobile" in n or "phone number" in desc or "telephone" in desc:
        return Kind.PHONE
    if "email" in n:
        return Kind.EMAIL
    parts = set(re.split(r"[_\W]+|(?<=[a-z])(?=[A-Z])", n))
    if parts & {"date", "day"} and not parts & {"time"}:
        return Kind.DATE
    if parts & {"time", "when", "datetime", "start", "slot", "at"}:
        has_date = any(s != name and set(re.split(r"[_\W]+", s.lower())) & {"date", "day"} for s in siblings)
        return Kind.TIME if has_date else Kind.MOMENT
    if "name" in parts:
        return Kind.NAME
    if parts & {"number", "id", "code", "ref", "reference", "zip", "postcode"}:
        return Kind.DIGITS
    return Kind.TEXT


def params_of(parameters: Mapping[str, Any]) -> list[Param]:
    """The properties of a tool's ``parameters`` schema, in declared order."""
    props = parameters.get("properties")
    if not isinstance(props, Mapping):
        return []
    required = parameters.get("required")
    req = set(required) if isinstance(required, list) else set()
    names = frozenset(str(k) for k in props)
    out = []
    for name, schema in props.items():
        s: Mapping[str, Any] = schema if isinstance(schema, Mapping) else {}
        out.append(Param(str(name), s, _kind(str(name), s, names), name in req, _words(str(name), s)))
    return out


def format_moment(kind: Kind, day: date | None, clock: time | None, now: datetime) -> str | None:
    """A day and/or time of day as the parameter's kind wants it; ``None`` when the caller did not say enough."""
    if kind is Kind.TIME:
        return clock.strftime("%H:%M") if clock else None
    if kind is Kind.DATE:
        return day.isoformat() if day else None
    if kind is Kind.DATETIME:
        if clock is None:
            return None
        if day is None:  # a time alone is the next one to come: today if still ahead, else tomorrow
            day = now.date() if clock > now.time().replace(tzinfo=None) else date.fromordinal(now.toordinal() + 1)
        return datetime.combine(day, clock, tzinfo=now.tzinfo).isoformat(timespec="seconds")
    if day and clock:
        return f"{day.isoformat()}T{clock.strftime('%H:%M')}"
    if clock:
        return clock.strftime("%H:%M")
    return day.isoformat() if day else None


_FORMATS = {
    "date": re.compile(r"\d{4}-\d{2}-\d{2}$"),
    "time": re.compile(r"\d{2}:\d{2}(:\d{2})?$"),
    "date-time": re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2})?([+-]\d{2}:\d{2}|Z)?$"),
}


def check_value(schema: Mapping[str, Any], value: Any) -> str | None:
    """Why ``value`` does not fit ``schema`` (``None``: it fits)."""
    t = _type_of(schema)
    ok = {
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, (int, float)) and not isinstance(value, bool),
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "array": isinstance(value, list),
        "object": isinstance(value, dict),
    }.get(t or "", True)
    if not ok:
        return f"must be {t}"
    enum_values = schema.get("enum")
    if isinstance(enum_values, list) and value not in enum_values:
        return "must be one of " + ", ".join(map(str, enum_values))
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = schema.get("minimum"), schema.get("maximum")
        if isinstance(lo, (int, float)) and value < lo:
            return f"must be at least {lo}"
        if isinstance(hi, (int, float)) and value > hi:
            return f"must be at most {hi}"
    if isinstance(value, str):
        lo, hi = schema.get("minLength"), schema.get("maxLength")
        if isinstance(lo, int) and len(value) < lo:
            return f"must be at least {lo} characters"
        if isinstance(hi, int) and len(value) > hi:
            return f"must be at most {hi} characters"
        fmt = schema.get("format")
        pattern = _FORMATS.get(fmt) if isinstance(fmt, str) else None
        if pattern is not None and not pattern.match(value):
            return f"must be a {fmt}"
    return None


def validate(parameters: Mapping[str, Any], arguments: Mapping[str, Any]) -> dict[str, str]:
    """Problems of ``arguments`` against the tool's ``parameters`` schema, by parameter (empty: valid)."""
    problems: dict[str, str] = {}
    for p in params_of(parameters):
        if p.name in arguments:
            why = check_value(p.schema, arguments[p.name])
            if why:
                problems[p.name] = why
        elif p.required:
            problems[p.name] = "is required"
    return problems


def question_for(p: Param) -> str:
    """The follow-up question asking the caller for ``p``."""
    if p.kind in (Kind.INTEGER, Kind.NUMBER) and p.words & _PARTY_WORDS:
        return "For how many people?"
    if p.kind in (Kind.TIME, Kind.DATETIME):
        return "For what time?"
    if p.kind is Kind.MOMENT:
        return "For what day and time?"
    if p.kind is Kind.DATE:
        return "For which day?"
    if p.kind is Kind.PHONE:
        return "What phone number should I use?"
    if p.kind is Kind.NAME:
        return "What name should I put that under?"
    if p.kind is Kind.EMAIL:
        return "What is the email address?"
    if p.kind is Kind.ENUM:
        values = [str(v).replace("_", " ") for v in p.schema.get("enum", [])]
        if 1 < len(values) <= 5:
            return f"Would you like {', '.join(values[:-1])} or {values[-1]}?"
    what = p.description.rstrip(".") if 0 < len(p.description.split()) <= 8 else p.spoken_name
    what = what[0].lower() + what[1:] if what[:2].lower() == what[:2] or what[1:2].islower() else what
    if p.kind is Kind.BOOLEAN:
        return f"{what[0].upper() + what[1:]}: yes or no?"
    return f"What is the {what}?" if not what.lower().startswith(("the ", "a ", "your ")) else f"What is {what}?"

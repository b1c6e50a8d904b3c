"""Times and dates in a caller's words, relative ones resolved against the session's clock. Pure.

``now`` is always passed in (the replier reads the clock, docs/how-to/local-agent.md#tool-arguments), so
"seven thirty tomorrow" is testable. The conventions, written down because a caller rarely says am or pm:

- "half seven" is half past seven (British);
- an hour without am/pm, "morning", "evening" or "tonight" is read within 08:00–19:59: one to seven are
  afternoon or evening (13:00–19:59), eight to eleven morning, twelve is noon; 13–23 are taken as said;
- a weekday ("Friday", "next Friday", "on Friday") is the first such day *after* today; "this Friday" may be today;
- a day of the month without a month is this month's if it has not passed, else next month's; a month and day
  without a year is this year's if it has not passed, else next year's;
- "in twenty minutes", "in two hours" are ``now`` plus that (a day and a time).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

from .words import NumberSpan, parse_number

__all__ = ["Moment", "find_moment"]

WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
MONTHS = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_MONTH_ABBR = {m[:3]: i + 1 for i, m in enumerate(MONTHS)} | {"sept": 9}
_AM = {"am", "morning"}
_PM = {"pm", "afternoon", "evening", "night", "tonight"}
_TIME_CUES = {"at", "around", "about", "by", "from", "until", "till", "before", "after", "for"}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})$")
_ISO_DATE = re.compile(r"(\d{4})-(\d{2})-(\d{2})$")


@dataclass(frozen=True, slots=True)
class Moment:
    """What was said: a day, a time of day, both or neither, and the tokens that said it."""

    day: date | None = None
    clock: time | None = None
    used: frozenset[int] = frozenset()


def _month(tok: str) -> int | None:
    if tok in MONTHS:
        return MONTHS.index(tok) + 1
    return _MONTH_ABBR.get(tok)


def _meridiem(tokens: list[str], i: int) -> tuple[str | None, int]:
    """am/pm said at ``i`` ("pm", "in the evening", "at night", "tonight"): ``(which, end)``."""
    tok = tokens[i] if i < len(tokens) else ""
    if tok in ("am", "pm"):
        return tok, i + 1
    if tok == "tonight":
        return "pm", i + 1
    if tok == "in" and tokens[i + 1 : i + 2] == ["the"] and i + 2 < len(tokens):
        part = tokens[i + 2]
        if part in _AM:
            return "am", i + 3
        if part in _PM:
            return "pm", i + 3
    if tok == "at" and tokens[i + 1 : i + 2] == ["night"]:
        return "pm", i + 2
    return None, i


def _hour24(hour: int, meridiem: str | None) -> int | None:
    if hour > 23:
        return None
    if hour > 12 or hour == 0:
        return hour if meridiem != "am" or hour == 0 else None
    if meridiem == "am":
        return hour % 12
    if meridiem == "pm":
        return hour % 12 + 12
    return hour + 12 if 1 <= hour <= 7 else hour


def _minutes_after(tokens: list[str], i: int) -> tuple[int, int] | None:
    """Minutes spoken after an hour: "thirty", "forty five", "oh five", "15"."""
    if i >= len(tokens):
        return None
    if tokens[i] in ("oh", "o") and i + 1 < len(tokens):
        span = parse_number(tokens, i + 1)
        if span is not None and span.value < 10 and not span.ordinal:
            return span.value, span.end
        return None
    span = parse_number(tokens, i)
    if span is None or span.ordinal or not 10 <= span.value <= 59:
        return None
    if not tokens[i].isdigit() or len(tokens[i]) == 2:
        return span.value, span.end
    return None


def _clock_at(tokens: list[str], i: int, answer: bool) -> tuple[int, int, int, str | None] | None:
    """A time of day starting at ``i``: ``(hour, minute, end, meridiem)``; hour not yet made 24-hour."""
    tok = tokens[i]
    prev = tokens[i - 1] if i > 0 else ""
    if tok in ("noon", "midday"):
        return 12, 0, i + 1, "pm"
    if tok == "midnight":
        return 0, 0, i + 1, None
    if tok in ("half", "quarter") or (tok.isdigit() or parse_number(tokens, i)) and "past" in tokens[i + 1 : i + 3]:
        return _past_to(tokens, i)
    m = _CLOCK.match(tok)
    if m:
        hour, minute, end = int(m.group(1)), int(m.group(2)), i + 1
    elif tok.isdigit() and len(tok) in (3, 4) and prev in _TIME_CUES - {"for"}:
        # "at 730", "at 1930": Whisper sometimes writes a spoken time without its colon.
        hour, minute, end = int(tok[:-2]), int(tok[-2:]), i + 1
        if hour > 23 or minute > 59:
            return None
        m = _CLOCK.match(f"{hour}:{minute:02d}")
    else:
        span = parse_number(tokens, i)
        if span is None or span.ordinal or span.value > 23 or (len(tok) > 2 and tok.isdigit()):
            return None
        hour, end = span.value, span.end
        mins = _minutes_after(tokens, end)
        minute = 0
        if mins is not None:
            minute, end = mins
    said_minutes = m is not None or minute != 0 or end > i + 1
    if end < len(tokens) and tokens[end] == "oclock":
        end += 1
        said_minutes = True
    explicit = tokens[end] in ("am", "pm") if end < len(tokens) else False
    meridiem, end = _meridiem(tokens, end)
    if prev == "for" and not said_minutes and not explicit:
        return None  # "a table for two tonight": a count, then the day
    cue = prev in _TIME_CUES - {"for"} or (prev == "for" and said_minutes and tokens[i - 2 : i - 1] != ["table"])
    if not (answer or cue or meridiem is not None or m is not None or said_minutes and prev != "for"):
        return None
    if minute > 59:
        return None
    return hour, minute, end, meridiem


def _past_to(tokens: list[str], i: int) -> tuple[int, int, int, str | None] | None:
    tok = tokens[i]
    end = i + 1
    if tok == "half":
        minutes = 30
    elif tok == "quarter":
        minutes = 15
    else:
        span = parse_number(tokens, i)
        if span is None or span.value > 59:
            return None
        minutes, end = span.value, span.end
        if end < len(tokens) and tokens[end] in ("minutes", "minute"):
            end += 1
    if tok == "half" and end < len(tokens) and tokens[end] not in ("past", "to", "after"):
        # British "half seven": half past seven.
        span = parse_number(tokens, end)
        if span is None or span.ordinal or not 1 <= span.value <= 12:
            return None
        meridiem, stop = _meridiem(tokens, span.end)
        return span.value, 30, stop, meridiem
    if end >= len(tokens) or tokens[end] not in ("past", "to", "after"):
        return None
    to = tokens[end] == "to"
    hour_span = parse_number(tokens, end + 1)
    if hour_span is None or not 1 <= hour_span.value <= 12:
        return None
    hour = hour_span.value
    if to:
        hour, minutes = (hour - 1) or 12, 60 - minutes
    meridiem, stop = _meridiem(tokens, hour_span.end)
    return hour, minutes, stop, meridiem


def _ordinal_day(tokens: list[str], i: int) -> NumberSpan | None:
    span = parse_number(tokens, i)
    if span is None or not 1 <= span.value <= 31:
        return None
    return span


def _resolve_day_of_month(day: int, month: int | None, year: int | None, today: date) -> date | None:
    try:
        if month is None:
            candidate = date(today.year, today.month, day) if day >= today.day else None
            if candidate is None:
                y, mo = (today.year + 1, 1) if today.month == 12 else (today.year, today.month + 1)
                candidate = date(y, mo, day)
            return candidate
        if year is not None:
            return date(year, month, day)
        candidate = date(today.year, month, day)
        return candidate if candidate >= today else date(today.year + 1, month, day)
    except ValueError:
        return None


def _day_at(tokens: list[str], i: int, today: date) -> tuple[date, int, str | None] | None:
    """A day said at ``i``: ``(day, end, meridiem hint)``."""
    tok = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    iso = _ISO_DATE.match(tok)
    if iso:
        try:
            return date(int(iso.group(1)), int(iso.group(2)), int(iso.group(3))), i + 1, None
        except ValueError:
            return None
    if tok == "today":
        return today, i + 1, None
    if tok == "tonight":
        return today, i + 1, "pm"
    if tok == "this" and nxt in ("morning", "afternoon", "evening"):
        return today, i + 2, "am" if nxt == "morning" else "pm"
    if tok == "day" and tokens[i + 1 : i + 3] == ["after", "tomorrow"]:
        return today + timedelta(days=2), i + 3, None
    if tok == "tomorrow":
        hint = None
        end = i + 1
        if nxt in _AM | _PM and nxt not in ("am", "pm"):
            hint, end = ("am" if nxt in _AM else "pm"), i + 2
        return today + timedelta(days=1), end, hint
    if tok in ("this", "next", "coming", "on") and nxt in WEEKDAYS:
        target = WEEKDAYS.index(nxt)
        ahead = (target - today.weekday()) % 7
        if ahead == 0 and tok != "this":
            ahead = 7
        return today + timedelta(days=ahead), i + 2, None
    if tok in WEEKDAYS:
        ahead = (WEEKDAYS.index(tok) - today.weekday()) % 7 or 7
        return today + timedelta(days=ahead), i + 1, None
    if tok == "next" and nxt == "week":
        return today + timedelta(days=7), i + 2, None
    if tok == "in" and i + 2 < len(tokens):
        count = 1 if nxt in ("a", "one") else None
        unit_at = i + 2
        if count is None:
            span = parse_number(tokens, i + 1)
            if span is not None and not span.ordinal:
                count, unit_at = span.value, span.end
        unit = tokens[unit_at] if unit_at < len(tokens) else ""
        if count is not None and unit in ("day", "days"):
            return today + timedelta(days=count), unit_at + 1, None
        if count is not None and unit in ("week", "weeks"):
            return today + timedelta(days=7 * count), unit_at + 1, None
    # Month then day: "June 5th", "June the fifth".
    month = _month(tok)
    if month is not None:
        at = i + 1 + (nxt == "the")
        span = _ordinal_day(tokens, at)
        if span is not None:
            year = _year_at(tokens, span.end)
            resolved = _resolve_day_of_month(span.value, month, year[0] if year else None, today)
            if resolved is not None:
                return resolved, year[1] if year else span.end, None
        return None
    # Day then month: "the fifth of June", "5 June", "the 21st".
    start = i + (tok in ("the", "on"))
    if tokens[start : start + 1] == ["the"]:
        start += 1
    span = _ordinal_day(tokens, start)
    if span is None:
        return None
    end = span.end
    after = end + (tokens[end : end + 1] == ["of"])
    month = _month(tokens[after]) if after < len(tokens) else None
    if month is not None:
        year = _year_at(tokens, after + 1)
        resolved = _resolve_day_of_month(span.value, month, year[0] if year else None, today)
        return (resolved, year[1] if year else after + 1, None) if resolved else None
    if span.ordinal and start > i:
        resolved = _resolve_day_of_month(span.value, None, None, today)
        return (resolved, end, None) if resolved else None
    return None


def _year_at(tokens: list[str], i: int) -> tuple[int, int] | None:
    if i < len(tokens) and tokens[i].isdigit() and len(tokens[i]) == 4:
        return int(tokens[i]), i + 1
    return None


def _relative_at(tokens: list[str], i: int, now: datetime) -> tuple[datetime, int] | None:
    """ "in twenty minutes", "in an hour", "in half an hour", "in two hours"."""
    if tokens[i] != "in" or i + 2 >= len(tokens):
        return None
    if tokens[i + 1 : i + 4] == ["half", "an", "hour"]:
        return now + timedelta(minutes=30), i + 4
    if tokens[i + 1] in ("an", "a", "one") and tokens[i + 2] == "hour":
        return now + timedelta(hours=1), i + 3
    span = parse_number(tokens, i + 1)
    if span is None or span.ordinal or span.end >= len(tokens):
        return None
    unit = tokens[span.end]
    if unit in ("minute", "minutes", "mins"):
        return now + timedelta(minutes=span.value), span.end + 1
    if unit in ("hour", "hours"):
        return now + timedelta(hours=span.value), span.end + 1
    return None


def find_moment(
    tokens: list[str], now: datetime, used: frozenset[int] = frozenset(), *, answer: bool = False
) -> Moment:
    """The first day and the first time of day said in ``tokens`` (outside ``used``). ``answer``: the tokens
    answer "for what time?", so a bare number ("seven") is a time too."""
    day: date | None = None
    clock: time | None = None
    hint: str | None = None
    taken: set[int] = set()
    i = 0
    while i < len(tokens):
        if i in used:
            i += 1
            continue
        rel = _relative_at(tokens, i, now) if day is None and clock is None else None
        if rel is not None:
            moment, end = rel
            day, clock = moment.date(), moment.time().replace(second=0, microsecond=0)
            taken.update(range(i, end))
            i = end
            continue
        if day is None:
            found_day = _day_at(tokens, i, now.date())
            if found_day is not None:
                day, end, day_hint = found_day
                hint = hint or day_hint
                taken.update(range(i, end))
                i = end
                continue
        if clock is None and (tokens[i] not in _TIME_CUES):
            found = _clock_at(tokens, i, answer)
            if found is not None:
                hour, minute, end, meridiem = found
                h24 = _hour24(hour, meridiem or _lookahead_hint(tokens, end))
                if h24 is not None:
                    clock = time(h24, minute)
                    taken.update(range(i, end))
                    if i > 0 and tokens[i - 1] in _TIME_CUES - {"for"}:
                        taken.add(i - 1)
                    i = end
                    continue
        i += 1
    if clock is not None and hint is not None and clock.hour < 12 and _hour_was_bare(clock):
        clock = clock.replace(hour=clock.hour % 12 + 12) if hint == "pm" else clock
    return Moment(day, clock, frozenset(taken))


def _lookahead_hint(tokens: list[str], end: int) -> str | None:
    """ "at eight tomorrow night": a part of the day said right after the time."""
    rest = tokens[end : end + 3]
    if rest[:1] == ["tonight"] or rest[1:2] == ["night"] or rest[1:2] == ["evening"]:
        return "pm"
    if rest[1:2] == ["morning"]:
        return "am"
    return None


def _hour_was_bare(clock: time) -> bool:
    # Only 08:00-11:59 can be a bare hour read as morning (see the module docstring).
    return 8 <= clock.hour <= 11

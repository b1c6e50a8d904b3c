"""Words of a transcribed utterance, and the numbers spoken in them. Pure.

The argument extractors (docs/how-to/local-agent.md#tool-arguments) work on one token list per utterance:
lower-cased words and digit groups, punctuation dropped, with a few spellings Whisper varies on made uniform
("p.m." → "pm", "o'clock" → "oclock", "twenty-two" → "twenty two", "7:30" kept whole). Each extractor marks the
tokens it used, so a number that is part of a time is not also taken as a party size.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["NumberSpan", "numbers_in", "parse_number", "tokenize"]

_NORMALISE = (
    (re.compile(r"\ba\.\s?m\.?(?=\W|$)"), " am "),
    (re.compile(r"\bp\.\s?m\.?(?=\W|$)"), " pm "),
    (re.compile(r"o['’]\s?clock"), " oclock "),
    (re.compile(r"(\d)(am|pm)\b"), r"\1 \2"),
    (re.compile(r"(?<=[a-z])-(?=[a-z])"), " "),
)
_TOKEN = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,2}[:.]\d{2}(?!\d)|\d+(?:st|nd|rd|th)?|[a-z]+(?:['’][a-z]+)?|\+")


def tokenize(text: str) -> list[str]:
    """``text`` as lower-case word and digit tokens (digit groups split at dashes, times such as ``7:30`` and
    ISO dates kept whole)."""
    t = text.lower()
    for pattern, repl in _NORMALISE:
        t = pattern.sub(repl, t)
    tokens = []
    for tok in _TOKEN.findall(t):
        tokens.append(tok.replace("’", "'").replace(".", ":") if re.fullmatch(r"\d{1,2}\.\d{2}", tok) else tok)
    return tokens


UNITS = {
    "zero": 0, "oh": 0, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
    "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
    "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
}  # fmt: skip
TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
ORDINAL_UNITS = {
    "first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7, "eighth": 8,
    "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13, "fourteenth": 14, "fifteenth": 15,
    "sixteenth": 16, "seventeenth": 17, "eighteenth": 18, "nineteenth": 19,
}  # fmt: skip
ORDINAL_TENS = {"twentieth": 20, "thirtieth": 30}
#: Counting words that stand for a number on their own.
_SPECIAL = {"couple": 2, "dozen": 12, "single": 1}
_DIGITS_ORD = re.compile(r"(\d+)(st|nd|rd|th)?$")


@dataclass(frozen=True, slots=True)
class NumberSpan:
    start: int  # first token
    end: int  # one past the last token
    value: int
    ordinal: bool = False


def _small(tokens: list[str], i: int) -> tuple[int, int, bool] | None:
    """A number below 100 at ``i``: ``(value, end, ordinal)``."""
    if i >= len(tokens):
        return None
    tok = tokens[i]
    m = _DIGITS_ORD.match(tok)
    if m:
        return int(m.group(1)), i + 1, m.group(2) is not None
    if tok in UNITS and tok != "oh":
        return UNITS[tok], i + 1, False
    if tok in ORDINAL_UNITS:
        return ORDINAL_UNITS[tok], i + 1, True
    if tok in ORDINAL_TENS:
        return ORDINAL_TENS[tok], i + 1, True
    if tok in TENS:
        value = TENS[tok]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if nxt in UNITS and 0 < UNITS[nxt] < 10 and nxt != "oh":
            return value + UNITS[nxt], i + 2, False
        if nxt in ORDINAL_UNITS and ORDINAL_UNITS[nxt] < 10:
            return value + ORDINAL_UNITS[nxt], i + 2, True
        return value, i + 1, False
    return None


def parse_number(tokens: list[str], i: int) -> NumberSpan | None:
    """The number spoken at token ``i`` ("four", "twenty two", "a hundred and five", "3", "21st", "a couple"),
    or ``None``."""
    if i >= len(tokens):
        return None
    tok = tokens[i]
    nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
    if tok == "a" and nxt in _SPECIAL:
        return NumberSpan(i, i + 2 + (tokens[i + 2 : i + 3] == ["of"]), _SPECIAL[nxt])
    if tok == "a" and nxt in ("hundred", "thousand"):
        head: tuple[int, int, bool] | None = (1, i + 1, False)
    else:
        head = _small(tokens, i)
    if head is None:
        return None
    value, end, ordinal = head
    if ordinal or _DIGITS_ORD.match(tok) and len(tok) > 2 and tok.isdigit():
        return NumberSpan(i, end, value, ordinal)
    for scale, factor in (("hundred", 100), ("thousand", 1000)):
        if end < len(tokens) and tokens[end] == scale and value < 100:
            value *= factor
            end += 1
            rest_at = end + 1 if end < len(tokens) and tokens[end] == "and" else end
            rest = _small(tokens, rest_at)
            if rest is not None and rest[0] < factor:
                value += rest[0]
                end, ordinal = rest[1], rest[2]
    return NumberSpan(i, end, value, ordinal)


def numbers_in(tokens: list[str], used: set[int] | frozenset[int] = frozenset()) -> list[NumberSpan]:
    """Every number spoken in ``tokens`` outside the ``used`` token indexes, left to right."""
    spans = []
    i = 0
    while i < len(tokens):
        if i in used:
            i += 1
            continue
        span = parse_number(tokens, i)
        if span is None or any(j in used for j in range(span.start, span.end)):
            i += 1
            continue
        spans.append(span)
        i = span.end
    return spans

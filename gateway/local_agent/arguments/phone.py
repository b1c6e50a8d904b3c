"""Phone numbers, order numbers and other digit strings read out by a caller. Pure.

Callers say digits one by one ("five five five, one two three four"), in groups ("five fifty five"), with "oh"
for zero and "double"/"triple" for repeats. A number said with "plus" or an international "00" prefix comes back
in E.164 form (``+`` and the digits); anything else as the digits said (docs/how-to/local-agent.md#tool-arguments).
"""

from __future__ import annotations

from .words import TENS, UNITS

__all__ = ["digits_in", "phone_number"]

_REPEAT = {"double": 2, "triple": 3}
_FILLER = {"and", "dash", "hyphen", "um", "uh", "er"}


def _digit_word(tokens: list[str], i: int) -> tuple[str, int] | None:
    tok = tokens[i]
    if tok.isdigit():
        return tok, i + 1
    if tok in ("oh", "o", "zero"):
        return "0", i + 1
    if tok in _REPEAT and i + 1 < len(tokens):
        one = _digit_word(tokens, i + 1)
        if one is not None and len(one[0]) == 1:
            return one[0] * _REPEAT[tok], one[1]
        return None
    if tok in TENS:
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        if nxt in UNITS and 0 < UNITS[nxt] < 10:
            return str(TENS[tok] + UNITS[nxt]), i + 2
        return str(TENS[tok]), i + 1
    if tok in UNITS:
        value = UNITS[tok]
        if tokens[i + 1 : i + 2] == ["hundred"]:
            return str(value * 100), i + 2
        return str(value), i + 1
    return None


def digits_in(tokens: list[str], used: frozenset[int] = frozenset()) -> tuple[str, frozenset[int]] | None:
    """The longest run of spoken digits in ``tokens`` (outside ``used``): ``(digits, tokens used)``; a leading
    "plus" is kept as ``+``."""
    best: tuple[str, frozenset[int]] | None = None
    i = 0
    while i < len(tokens):
        start = i
        plus = tokens[i] in ("plus", "+")
        j = i + 1 if plus else i
        digits = ""
        taken = set(range(start, j))
        while j < len(tokens) and j not in used:
            found = _digit_word(tokens, j)
            if found is None:
                if tokens[j] in _FILLER and digits:
                    taken.add(j)
                    j += 1
                    continue
                break
            digits += found[0]
            taken.update(range(j, found[1]))
            j = found[1]
        if digits and (best is None or len(digits) > len(best[0].lstrip("+"))):
            best = (("+" if plus else "") + digits, frozenset(taken))
        i = max(j, i + 1)
    return best


def phone_number(tokens: list[str], used: frozenset[int] = frozenset()) -> tuple[str, frozenset[int]] | None:
    """A phone number said in ``tokens``: 7 to 15 digits, ``+`` first when said internationally."""
    found = digits_in(tokens, used)
    if found is None:
        return None
    number, taken = found
    if number.startswith("00"):
        number = "+" + number[2:]
    if not 7 <= len(number.lstrip("+")) <= 15:
        return None
    return number, taken

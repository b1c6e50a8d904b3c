"""Which declared tool a caller's words ask for. Pure: it decides on similarity scores computed elsewhere.

A client declares tools under its own names with its own descriptions; the intents file knows a few tools by name.
A tool is chosen (docs/how-to/local-agent.md#tool-arguments):

- each declared tool scores the cosine of the caller's words (and of their gist, without the values) and the tool's
  name and description;
- plus :data:`OVERLAP_BONUS` per word of the tool's name, description or parameter names the caller said;
- an intent *bound* to a declared tool lends it its own score: an intent naming a tool that is declared, or one
  whose ``description`` (else its examples) is close to the tool's name and description, so ``book_table`` in the
  intents file reaches a client's ``reserve_table``;
- when the matched intent calls no declared tool, a tool whose every required argument the words give
  (:func:`gives_required`: "a party of twelve ... tomorrow at one") scores :data:`ARGUMENT_BONUS` more, and then
  any intent bound to it lends its score, not only the matched one: the words' values are evidence the embedding
  of a sentence does not weigh;
- the best tool is called when it scores at least :data:`DIRECT_THRESHOLD` and more than any matched intent
  that calls no tool (:data:`DIRECT_MARGIN`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from .extract import Extraction
from .schema import Kind, params_of
from .words import numbers_in, tokenize

__all__ = [
    "ARGUMENT_BONUS",
    "BIND_THRESHOLD",
    "DIRECT_MARGIN",
    "DIRECT_THRESHOLD",
    "OVERLAP_BONUS",
    "bind_intents",
    "choose_tool",
    "gist",
    "gives_required",
    "overlap_bonus",
    "tool_text",
]

#: Cosine between an intent and a declared tool's text above which the intent calls that tool.
BIND_THRESHOLD = 0.5
#: Cosine (with the bonus) between the caller's words and a declared tool's texts from which the tool is called
DIRECT_THRESHOLD = 0.4
#: ... and beats a matched intent that calls no tool by more than this. Calling a tool is a consequential act (a
#: built-in ``end_call`` hangs up), so the words must be closer to the tool than to any plain intent: "I am calling
#: from the office" scores 0.38 against end_call's "hang up the phone call".
DIRECT_MARGIN = 0.0
#: Added to a tool's score per word the caller said that names it (its name, description or parameters), at most
#: twice: a sentence embedding weighs "taxi" no more than "can I", a word shared with the tool is a strong hint.
OVERLAP_BONUS = 0.08
#: Added to a tool's score when the words give every one of its required arguments (:func:`gives_required`).
#: Enough to lift a booking worded unlike the intents' examples ("We are a party of twelve. Can we come tomorrow
#: at one?" is 0.37 from opening_hours and 0.34 from book_table) over a plain intent matched about as weakly; far
#: from enough to beat one matched well ("Are you open tomorrow at one?" is 0.7 from opening_hours).
ARGUMENT_BONUS = 0.1
#: Argument kinds that count as evidence: values read from their own kind of words (a number, a time, a phone
#: number, an enum's value), unlike a free string or a name, which any capitalised word can give.
_EVIDENT = frozenset(Kind) - {Kind.TEXT, Kind.NAME, Kind.BOOLEAN}
_GENERIC = {
    "a", "an", "the", "of", "for", "to", "in", "on", "at", "by", "and", "or", "with", "from", "is", "be", "it", "its",
    "get", "set", "make", "do", "give", "call", "caller", "user", "customer", "their", "your", "my", "me", "can",
    "will", "what", "this", "that", "number", "name", "time", "date", "day", "type", "kind", "id", "details",
}  # fmt: skip


def bind_intents(
    similarity: Mapping[str, Mapping[str, float]], intent_tools: Mapping[str, str | None], declared: frozenset[str]
) -> dict[str, str]:
    """Intent → declared tool: the intent's own tool when declared, else the closest declared tool above
    :data:`BIND_THRESHOLD` (``similarity[intent][tool]``)."""
    out: dict[str, str] = {}
    for intent, scores in similarity.items():
        own = intent_tools.get(intent)
        if own is not None and own in declared:
            out[intent] = own
            continue
        best = max(((s, t) for t, s in scores.items() if t in declared), default=None)
        if best is not None and best[0] >= BIND_THRESHOLD:
            out[intent] = best[1]
    for intent, own in intent_tools.items():
        if own is not None and own in declared:
            out[intent] = own
    return out


def choose_tool(
    intent: str | None,
    intent_score: float,
    bound: Mapping[str, str],
    direct: Mapping[str, float],
    intent_scores: Mapping[str, float] | None = None,
    gives: Callable[[str], bool] | None = None,
) -> str | None:
    """The declared tool to call for one utterance (``None``: answer from the intents file). A tool scores its
    direct similarity, or the intent's score when the matched intent is bound to it, whichever is higher.
    ``gives(tool)``: the words give every required argument of ``tool`` (asked only of tools the bonus could
    lift to :data:`DIRECT_THRESHOLD`, and only when the matched intent is bound to no declared tool); such a tool
    scores the best of every intent bound to it (``intent_scores``: each intent's best cosine) and
    :data:`ARGUMENT_BONUS` more."""
    scores = dict(direct)
    via = bound.get(intent) if intent is not None else None
    if via is not None:
        scores[via] = max(scores.get(via, -1.0), intent_score)
    if gives is not None and via is None:
        # Only when the matched intent calls no declared tool: an intent bound to a tool is the request understood,
        # and another tool's values do not override it ("cancel my booking for tomorrow at eight" gives a
        # book_appointment its date and time).
        lent: dict[str, float] = {}
        for name, s in (intent_scores or {}).items():
            t = bound.get(name)
            if t is not None:
                lent[t] = max(lent.get(t, -1.0), s)
        for t in set(scores) | set(lent):
            s = max(scores.get(t, -1.0), lent.get(t, -1.0))
            if s + ARGUMENT_BONUS >= DIRECT_THRESHOLD and gives(t):
                scores[t] = s + ARGUMENT_BONUS
    best = max(((s, t) for t, s in scores.items()), default=None)
    if best is None or best[0] < DIRECT_THRESHOLD:
        return None
    if intent is not None and via is None and best[0] - intent_score <= DIRECT_MARGIN:
        return None
    return best[1]


def gives_required(parameters: Mapping[str, Any], extraction: Extraction) -> bool:
    """The words (``extraction``, read against the tool's ``parameters``) give every required argument of the
    tool, at least one of them a value of its own kind of words (a count, a time or day, a phone number, digits,
    an enum's value): evidence that the caller asks for this tool. A tool requiring nothing has none."""
    required = [p for p in params_of(parameters) if p.required]
    return (
        bool(required)
        and all(p.name in extraction.values for p in required)
        and any(p.kind in _EVIDENT for p in required)
    )


def tool_text(name: str, description: str) -> tuple[str, ...]:
    """What a declared tool is compared as: its name in words with its description, and its name alone (a short
    name such as "get weather" is often closer to how a caller asks than a long description)."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ").lower().strip()
    full = f"{words}: {description}".strip(": ")
    return (full, words) if description.strip() and words else (full,)


def gist(text: str) -> str:
    """``text`` without the numbers and digits in it (the values, not the request), lower case."""
    tokens = tokenize(text)
    drop = {i for span in numbers_in(tokens) for i in range(span.start, span.end)}
    return " ".join(t for i, t in enumerate(tokens) if i not in drop and not t[:1].isdigit())


def _content_words(text: str) -> set[str]:
    words = {w for w in re.findall(r"[a-z]+", re.sub(r"(?<=[a-z])(?=[A-Z])", " ", text).lower()) if len(w) > 2}
    return {w[:-1] if w.endswith("s") and len(w) > 4 else w for w in words} - _GENERIC


def overlap_bonus(text: str, name: str, description: str, parameters: Mapping[str, object]) -> float:
    """What the words ``text`` shares with a tool add to its score (see :data:`OVERLAP_BONUS`)."""
    props = parameters.get("properties")
    names = " ".join(str(k) for k in props) if isinstance(props, Mapping) else ""
    tool_words = _content_words(f"{name.replace('_', ' ')} {description} {names.replace('_', ' ')}")
    shared = _content_words(text) & tool_words
    return OVERLAP_BONUS * min(2, len(shared))

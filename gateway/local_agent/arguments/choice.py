"""Which declared tool a caller's words ask for. Pure: it decides on similarity scores computed elsewhere.

A client declares tools under its own names with its own descriptions; the intents file knows a few tools by name.
A tool is chosen (docs/how-to/local-agent.md#tool-arguments):

1. when the caller's words matched an intent that names a tool and that tool is declared, or an intent *bound* to a
   declared tool: the tool's name and description are close to the intent (its ``description``, else its examples),
   so ``book_table`` in the intents file reaches a client's ``reserve_table``;
2. else when the words themselves are close enough to a declared tool's name and description, and not much closer
   to a non-tool intent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from .words import numbers_in, tokenize

__all__ = ["BIND_THRESHOLD", "DIRECT_MARGIN", "DIRECT_THRESHOLD", "bind_intents", "choose_tool", "gist", "tool_text"]

#: Cosine between an intent and a declared tool's text above which the intent calls that tool.
BIND_THRESHOLD = 0.5
#: Cosine between the caller's words and a declared tool's text above which the tool is called directly
DIRECT_THRESHOLD = 0.35
#: ... unless a non-tool intent matched better than the tool by more than this.
DIRECT_MARGIN = 0.25


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
    intent: str | None, intent_score: float, bound: Mapping[str, str], direct: Mapping[str, float]
) -> str | None:
    """The declared tool to call for one utterance (``None``: answer from the intents file)."""
    if intent is not None and intent in bound:
        return bound[intent]
    best = max(((s, t) for t, s in direct.items()), default=None)
    if best is None or best[0] < DIRECT_THRESHOLD:
        return None
    if intent is not None and intent_score - best[0] > DIRECT_MARGIN:
        return None
    return best[1]


def tool_text(name: str, description: str) -> str:
    """What a declared tool is compared as: its name in words, then its description."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", name).replace("_", " ").replace("-", " ").lower()
    return f"{words}: {description}".strip(": ")


def gist(text: str) -> str:
    """``text`` without the numbers and digits in it (the values, not the request), lower case."""
    tokens = tokenize(text)
    drop = {i for span in numbers_in(tokens) for i in range(span.start, span.end)}
    return " ".join(t for i, t in enumerate(tokens) if i not in drop and not t[:1].isdigit())

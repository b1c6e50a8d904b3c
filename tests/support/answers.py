"""Recognising the local agent's answers in audio transcribed back with Whisper tiny.en.

One misheard word ("nine" heard as "mine" after a barge-in) must not fail a test about call behaviour, while a
wrong answer (another intent's reply) still must. So an answer is recognised by several of its distinctive
content words, not by one exact word."""

from __future__ import annotations

import re

# The opening_hours reply: "We are open from nine in the morning until ten at night, every day of the week."
_OPENING_HOURS_CUES = (r"\b(nine|9)\b", r"\b(ten|10)\b", r"\bmorning\b", r"\bnight\b", r"\b(every ?day|week)\b")


def is_opening_hours_answer(text: str, min_cues: int = 3) -> bool:
    t = text.lower()
    return sum(1 for cue in _OPENING_HOURS_CUES if re.search(cue, t)) >= min_cues

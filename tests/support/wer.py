"""Word error rate between a reference text and a transcript, after normalisation. Pure.

Normalisation makes formatting choices not count as errors: case, punctuation, and digits versus number words
(Whisper writes "6 people" for "six people").
"""

from __future__ import annotations

import re

__all__ = ["normalize_words", "word_error_rate"]

_NUMBER_WORDS = {
    "0": "zero", "1": "one", "2": "two", "3": "three", "4": "four", "5": "five", "6": "six", "7": "seven",
    "8": "eight", "9": "nine", "10": "ten", "11": "eleven", "12": "twelve", "13": "thirteen", "14": "fourteen",
    "15": "fifteen", "16": "sixteen", "17": "seventeen", "18": "eighteen", "19": "nineteen", "20": "twenty",
    "30": "thirty",
}  # fmt: skip


def normalize_words(text: str) -> list[str]:
    """Lower-case words without punctuation; small numbers spelled out; "okay"/"ok" unified."""
    text = text.lower().replace("’", "'")
    words = re.findall(r"[a-z0-9']+", text)
    out: list[str] = []
    for w in words:
        w = w.strip("'")
        if not w:
            continue
        w = _NUMBER_WORDS.get(w, w)
        out.append("okay" if w == "ok" else w)
    return out


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, by word-level Levenshtein distance."""
    ref, hyp = normalize_words(reference), normalize_words(hypothesis)
    if not ref:
        return 0.0 if not hyp else 1.0
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1] / len(ref)

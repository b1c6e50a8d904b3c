"""Where each word of a reply falls on the reply's audio: ``transcript.agent.delta`` timing and, on a barge-in, the
text the caller heard (docs/reference/local-agent-api.md#implemented, docs/architecture/local-agent.md#barge-in). Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ReplyTranscript", "WordSpan"]


@dataclass(frozen=True, slots=True)
class WordSpan:
    delta: str  # what to append, with its leading space
    start_ms: int
    end_ms: int


class ReplyTranscript:
    """Words of one reply placed on the reply's audio timeline, so an interrupted reply can report what was heard.

    Sentences arrive with the span of reply audio they occupy; word times inside a sentence are interpolated by
    character length (Piper gives no word timings). Pure.
    """

    __slots__ = ("_words",)

    def __init__(self) -> None:
        self._words: list[WordSpan] = []

    def add_sentence(self, sentence: str, start_ms: float, end_ms: float) -> list[WordSpan]:
        """Place ``sentence`` on ``[start_ms, end_ms)`` and return its word deltas."""
        words = sentence.split()
        if not words:
            return []
        total = sum(len(w) + 1 for w in words)
        span = max(0.0, end_ms - start_ms)
        out: list[WordSpan] = []
        pos = 0
        for w in words:
            s = start_ms + span * pos / total
            pos += len(w) + 1
            e = start_ms + span * pos / total
            delta = w if not self._words and not out else " " + w
            out.append(WordSpan(delta, int(round(s)), int(round(e))))
        self._words.extend(out)
        return out

    @property
    def text(self) -> str:
        return "".join(w.delta for w in self._words)

    def heard(self, played_ms: float) -> str:
        """Text of the words whose audio had started by ``played_ms`` (a partly sent word counts as heard)."""
        return "".join(w.delta for w in self._words if w.start_ms < played_ms).strip()

"""Nearest-neighbour intent matching over sentence embeddings. Pure given an embedder (no I/O, no clock, no state
changes after construction), so one matcher can serve every call.

Each intent is a handful of example phrasings. A caller's utterance goes to the intent of its single most similar
example (cosine of MiniLM embeddings), or to nobody when even that is below ``threshold``. Nearest example rather
than an intent centroid, so one unusual phrasing in the examples is not averaged away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["IntentMatcher", "Embedder"]


class Embedder(Protocol):
    """What :class:`IntentMatcher` needs: unit-length rows, one per text (``SentenceEmbedder`` provides it)."""

    def embed(self, texts: Sequence[str]) -> npt.NDArray[np.float32]: ...


class IntentMatcher:
    """Map an utterance to the name of the closest intent, or ``None`` when nothing is close enough."""

    def __init__(self, embedder: Embedder, intents: Mapping[str, Sequence[str]], threshold: float = 0.35) -> None:
        if not -1.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be a cosine in [-1, 1], got {threshold}")
        names: list[str] = []
        examples: list[str] = []
        for name, phrases in intents.items():
            if isinstance(phrases, str):
                raise TypeError(f"intent {name!r}: examples must be a list of strings, not one string")
            cleaned = [p.strip() for p in phrases if p.strip()]
            if not cleaned:
                raise ValueError(f"intent {name!r} has no examples")
            names.extend([name] * len(cleaned))
            examples.extend(cleaned)
        if not examples:
            raise ValueError("no intents given")
        self._embedder = embedder
        self.threshold = threshold
        self.intent_names: tuple[str, ...] = tuple(dict.fromkeys(names))
        self._labels = tuple(names)
        self._examples = tuple(examples)
        self._matrix = embedder.embed(examples)  # (n_examples, 384), unit rows

    def scores(self, text: str) -> dict[str, float]:
        """Best cosine per intent for ``text`` (all intents; useful for logs and debugging thresholds)."""
        sims = self._similarities(text)
        best: dict[str, float] = {name: -1.0 for name in self.intent_names}
        for label, sim in zip(self._labels, sims.tolist(), strict=True):
            if sim > best[label]:
                best[label] = sim
        return best

    def match(self, text: str) -> tuple[str | None, float]:
        """``(intent, score)`` of the nearest example; ``intent`` is ``None`` below the threshold or for blank text."""
        if not text.strip():
            return None, 0.0
        sims = self._similarities(text)
        i = int(np.argmax(sims))
        score = float(sims[i])
        return (self._labels[i] if score >= self.threshold else None), score

    def _similarities(self, text: str) -> npt.NDArray[np.float32]:
        vec = self._embedder.embed([text.strip()])[0]
        return self._matrix @ vec

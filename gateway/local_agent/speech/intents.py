"""Nearest-neighbour intent matching over sentence embeddings. Pure given an embedder (no I/O, no clock, no state
changes after construction), so one matcher can serve every call.

Each intent is a handful of example phrasings. A caller's utterance goes to the intent of its single most similar
example (cosine of MiniLM embeddings), or to nobody when even that is below ``threshold``. Nearest example rather
than an intent centroid, so one unusual phrasing in the examples is not averaged away.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "IntentMatcher", "Understanding"]

#: Embeddings of declared tools' texts kept per matcher (tools repeat across sessions); the oldest go first.
_TOOL_CACHE_MAX = 512


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
        labels = np.array(self._labels)
        centroids = np.stack([self._matrix[labels == n].mean(axis=0) for n in self.intent_names])
        self._centroids = (centroids / np.linalg.norm(centroids, axis=1, keepdims=True)).astype(np.float32)
        self._texts: dict[str, npt.NDArray[np.float32]] = {}

    def _vectors(self, texts: Sequence[str]) -> npt.NDArray[np.float32]:
        """Unit rows for ``texts``, from the cache where embedded before (plain dict: safe across pool threads)."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._texts]
        if missing:
            if len(self._texts) + len(missing) > _TOOL_CACHE_MAX:
                self._texts.clear()
            for t, vec in zip(missing, self._embedder.embed(missing), strict=True):
                self._texts[t] = vec
        return np.stack([self._texts[t] for t in texts]) if texts else np.zeros((0, self._matrix.shape[1]), np.float32)

    def understand(
        self,
        text: str,
        tools: Mapping[str, Sequence[str]],
        descriptions: Mapping[str, str] | None = None,
        gist: str | None = None,
    ) -> Understanding:
        """The intent of ``text`` (as :meth:`match`), its closeness to each declared tool (``tools``: name → the
        texts of :func:`gateway.local_agent.arguments.tool_text`; the closest counts), and each intent's closeness
        to those tools (by their first text; the intent's
        ``descriptions[intent]`` where given, else its examples' centroid). ``gist``: the words without the
        values the caller gave (digits, numbers), compared to the tools too: values say nothing of which tool.
        With tools, also every intent's best cosine (a bound intent may lend it to its tool)."""
        if not text.strip():
            return Understanding(None, 0.0, {}, {})
        gist = gist.strip() if gist and gist.strip() != text.strip() else None
        vecs = self._embedder.embed([text.strip(), gist] if gist else [text.strip()])
        vec = vecs[0]
        sims = self._matrix @ vec
        i = int(np.argmax(sims))
        score = float(sims[i])
        intent = self._labels[i] if score >= self.threshold else None
        if not tools:
            return Understanding(intent, score, {}, {})
        best: dict[str, float] = {}
        for label, sim in zip(self._labels, sims.tolist(), strict=True):
            best[label] = max(best.get(label, -1.0), sim)
        names = [n for n in tools if tools[n]]
        direct = {n: float((self._vectors(list(tools[n])) @ vecs.T).max()) for n in names}
        tool_vecs = self._vectors([tools[n][0] for n in names])
        intent_vecs = self._centroids.copy()
        for k, name in enumerate(self.intent_names):
            d = (descriptions or {}).get(name)
            if d:
                intent_vecs[k] = self._vectors([d])[0]
        grid = intent_vecs @ tool_vecs.T
        by_intent = {name: dict(zip(names, grid[k].tolist(), strict=True)) for k, name in enumerate(self.intent_names)}
        return Understanding(intent, score, direct, by_intent, best)

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
        sims: npt.NDArray[np.float32] = self._matrix @ vec
        return sims


@dataclass(frozen=True, slots=True)
class Understanding:
    """One utterance against the intents and the session's declared tools (cosines)."""

    intent: str | None
    score: float
    #: Declared tool → cosine of the utterance and the tool's name and description.
    direct: dict[str, float]
    #: Intent → declared tool → cosine of the intent (its description, else its examples' centroid) and the tool.
    intent_tools: dict[str, dict[str, float]]
    #: Intent → the utterance's best cosine with its examples (filled when tools are declared).
    intent_scores: dict[str, float] = field(default_factory=dict)

"""Synthesized audio of fixed text, kept and replayed: a bounded LRU. Pure.

Fixed text is the greeting and the intent table's replies (``Say.fixed``); variable text (LLM output, ``{result}``
answers, ``reply.create`` instructions) is never cached. docs/architecture/local-agent.md#working-ahead.
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["Pieces", "SynthCache"]

#: What one synthesis gives: ``(sentence, 24 kHz PCM16)`` pieces, in order.
Pieces = list[tuple[str, bytes]]


class SynthCache:
    """Synthesized audio of *fixed* text, bounded LRU.

    Keyed by the chunk's text alone: the runtime has one Piper voice, always run with the voice's default
    synthesis settings, and everything per session (output format, volume) is applied after synthesis. Piper's
    defaults are randomised per run (``noise_scale`` 0.667, ``noise_w_scale`` 0.8: each rendering differs
    slightly in timbre and timing), so the cache does not reproduce what a fresh synthesis would give: it keeps
    the first rendering and replays it, as a recorded prompt would be. That is a fair rendering of the same text,
    and the one thing a cache changes is that a caller who hears a sentence twice hears the same take twice.
    Used from the event loop only.
    """

    def __init__(self, max_bytes: int = 32 << 20) -> None:
        self._items: OrderedDict[str, Pieces] = OrderedDict()
        self._bytes = 0
        self._max = max_bytes
        self.hits = 0
        self.misses = 0

    def get(self, text: str) -> Pieces | None:
        found = self._items.get(text)
        if found is None:
            self.misses += 1
            return None
        self._items.move_to_end(text)
        self.hits += 1
        return found

    def put(self, text: str, pieces: Pieces) -> None:
        size = sum(len(pcm) for _, pcm in pieces)
        if text in self._items or size > self._max // 4:
            return
        self._items[text] = pieces
        self._bytes += size
        while self._bytes > self._max:
            _, old = self._items.popitem(last=False)
            self._bytes -= sum(len(pcm) for _, pcm in old)

    def __len__(self) -> int:
        return len(self._items)

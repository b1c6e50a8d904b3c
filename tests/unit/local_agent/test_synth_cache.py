"""The synthesis cache on its own (gateway/local_agent/synth_cache.py): a bounded LRU of synthesized fixed text.
How sessions use it, on the real models: tests/integration/local_agent/test_synth_cache.py."""

from __future__ import annotations

from gateway.local_agent.synth_cache import SynthCache


def test_the_cache_is_a_bounded_lru() -> None:
    cache = SynthCache(max_bytes=4000)
    for i in range(5):
        cache.put(f"s{i}", [(f"s{i}", bytes(1000))])
    assert len(cache) == 4 and cache.get("s0") is None  # the oldest went first
    assert cache.get("s1") is not None  # s1 is now the most recent…
    cache.put("s5", [("s5", bytes(1000))])
    assert cache.get("s1") is not None and cache.get("s2") is None  # …so s2 went instead
    cache.put("huge", [("huge", bytes(2000))])  # more than a quarter of the budget: not kept
    assert cache.get("huge") is None

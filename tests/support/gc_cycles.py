"""What is left for Python's cyclic collector (docs/architecture/performance.md#call-garbage): run some calls with
the collector off, then count what is still alive of them before it runs, and name what it finds unreachable."""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

__all__ = ["Leftovers", "alive", "collector_off"]


def alive(kind: type) -> int:
    """Objects of ``kind`` (or a subclass) the collector tracks now. By type(o), not isinstance: a weak proxy whose
    referent is gone raises on isinstance."""
    return sum(1 for o in gc.get_objects() if kind in type(o).__mro__)


@dataclass
class Leftovers:
    """Filled when :func:`collector_off` ends: ``alive``, per kind asked, what was alive before the collector ran;
    ``garbage``, what it then found unreachable, by type name."""

    kinds: tuple[type, ...]
    alive: tuple[int, ...] = ()
    garbage: Counter[str] = field(default_factory=Counter)


@contextmanager
def collector_off(*kinds: type) -> Iterator[Leftovers]:
    """The block runs with the collector off (after a full collection, so nothing from before is counted). At its
    end, what of ``kinds`` is still alive was kept only by reference cycles if nothing else holds it."""
    found = Leftovers(kinds)
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)  # what the collector finds unreachable is kept in gc.garbage, to be named
    try:
        yield found
        found.alive = tuple(alive(k) for k in kinds)
        gc.collect()
        found.garbage = Counter(type(o).__qualname__ for o in gc.garbage)
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()

"""The state store: what replicas of one gateway must share, behind one small interface
(docs/architecture/scale-out.md#what-is-shared). Not pure (async), but :class:`InProcessStore` does no I/O.

Shared, and only this (the media path never touches the store):

- **used stream tokens**: a token opens one call, once, whichever replica its stream lands on (``SET NX`` + TTL);
- **the live-call registry**: which replica serves which call (:class:`LiveCall`), kept alive by each replica's
  heartbeat (:meth:`StateStore.heartbeat`), so a replica that dies leaves nothing beyond ``state.call_ttl_s``;
- **replicas**: each one's internal address and whether it drains (:class:`Replica`).

One call start costs one store round trip (:meth:`StateStore.admit_call`: the token, the previous owner of the
call, the new entry), a park one more, an end at most one more (ends are written in batches); the heartbeat one per
replica every third of the TTL, whatever the number of calls. Every method may raise
:class:`~gateway.errors.StateUnavailable` (the caller decides what that means, gateway.cluster); the in-process
store never does.
"""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Admitted", "InProcessStore", "LiveCall", "Owner", "Replica", "StateStore"]


@dataclass(frozen=True, slots=True)
class Replica:
    """One gateway process. ``address``: its internal listener (``http://host:port``), where others forward."""

    id: str
    address: str
    draining: bool = False
    started_at: float = 0.0  # wall clock


@dataclass(frozen=True, slots=True)
class LiveCall:
    """A call in the registry. ``state``: ``live`` (a stream serves it) or ``parked`` (its stream stopped, its agent
    session waits for a new stream, gateway.reattach)."""

    call_sid: str
    stream_sid: str
    carrier: str
    profile: str
    started_at: float  # wall clock
    state: str = "live"
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Owner:
    """Who holds a call: ``replica`` None when the replica that registered it is gone (its heartbeat stopped)."""

    replica: Replica | None
    call: LiveCall


@dataclass(frozen=True, slots=True)
class Admitted:
    """:meth:`StateStore.admit_call`'s answer: ``first_use`` False if the token already opened a call somewhere;
    ``previous``: another live replica that held the call (a re-attach, gateway.cluster); held by several, the one
    :meth:`StateStore.owner_of` would name."""

    first_use: bool
    previous: Owner | None = None


def _owner_rank(alive: bool, call: LiveCall) -> tuple[bool, bool, float]:
    """Of several replicas holding one call, the one with the highest rank owns it (:meth:`StateStore.owner_of`)."""
    return alive, call.state != "parked", call.started_at


class StateStore(abc.ABC):
    """The shared state of the replicas of one gateway. ``name``: ``memory`` or ``redis`` (logs, /calls/live)."""

    name: str = ""

    @abc.abstractmethod
    async def admit_call(
        self, me: Replica, call: LiveCall, token_key: str, token_ttl_s: float, call_ttl_s: float
    ) -> Admitted:
        """A stream's ``start`` was authorized here: mark its token used (unless it was already), find who held the
        call before, and register ``call`` under ``me``. A refused token registers nothing."""

    @abc.abstractmethod
    async def update_call(self, me: Replica, call: LiveCall) -> None:
        """``call`` changed (parked, or its agent session is known)."""

    @abc.abstractmethod
    async def drop_calls(self, me: Replica, call_sids: list[str]) -> None:
        """``call_sids`` are no longer served by ``me`` (ended, or handed over)."""

    @abc.abstractmethod
    async def heartbeat(self, me: Replica, calls: list[LiveCall], ttl_s: float) -> None:
        """``me`` is alive with exactly ``calls`` for ``ttl_s`` more seconds (re-registers all after an outage)."""

    @abc.abstractmethod
    async def owner_of(self, call_sid: str) -> Owner | None:
        """The replica holding ``call_sid`` (``Owner.replica`` None: it died), or None if no replica has it. Held by
        several (a redirect: the old replica keeps it parked until the hand-over, or its reattach window, ends): a
        live replica before a dead one, then where the call is live before where it is parked, then the newest
        stream."""

    @abc.abstractmethod
    async def live_calls(self) -> list[tuple[Replica, LiveCall]]:
        """Every call of every live replica."""

    @abc.abstractmethod
    async def reserve_slot(self, call_sid: str, limit: int, ttl_s: float) -> bool:
        """Hold one of ``limit`` cluster-wide call slots for ``call_sid`` for ``ttl_s`` (again for the same call: the
        same slot, its expiry renewed). False when all are held."""

    @abc.abstractmethod
    async def keep_slots(self, call_sids: list[str], ttl_s: float) -> None:
        """Renew the slots of ``call_sids`` (live calls; a slot already gone is taken again, past the limit)."""

    @abc.abstractmethod
    async def free_slots(self, call_sids: list[str]) -> None:
        """The calls ended (or their reservations are given back). A call some live replica holds live keeps its
        slot: it ended on the replica asking (a stale parked entry expired there), not where it goes on."""

    @abc.abstractmethod
    async def leave(self, me: Replica) -> None:
        """``me`` shuts down: its entry and its calls go now."""

    async def close(self) -> None:  # noqa: B027 - optional: only a store with connections has something to do
        """Release connections."""


class InProcessStore(StateStore):
    """One process is the whole cluster: plain dicts with expiry (``clock``: monotonic seconds)."""

    name = "memory"

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[str, float] = {}  # token key -> forget after (insertion order = expiry order)
        self._replicas: dict[str, tuple[Replica, float]] = {}  # id -> (replica, alive until)
        self._calls: dict[str, dict[str, LiveCall]] = {}  # replica id -> call sid -> call
        self._slots: dict[str, float] = {}  # call sid -> held until

    def _expire(self, now: float) -> None:
        while self._tokens:
            key, until = next(iter(self._tokens.items()))
            if until > now:
                break
            del self._tokens[key]

    def _alive(self, replica_id: str, now: float) -> Replica | None:
        entry = self._replicas.get(replica_id)
        return entry[0] if entry is not None and entry[1] > now else None

    async def admit_call(
        self, me: Replica, call: LiveCall, token_key: str, token_ttl_s: float, call_ttl_s: float
    ) -> Admitted:
        now = self._clock()
        self._expire(now)
        if token_key in self._tokens:
            return Admitted(False)
        self._tokens[token_key] = now + token_ttl_s
        holders = [
            Owner(replica, held)
            for rid, calls in self._calls.items()
            if rid != me.id
            and (held := calls.get(call.call_sid)) is not None
            and (replica := self._alive(rid, now)) is not None
        ]
        previous = max(holders, key=lambda o: _owner_rank(True, o.call), default=None)
        self._replicas.setdefault(me.id, (me, now + call_ttl_s))
        self._calls.setdefault(me.id, {})[call.call_sid] = call
        return Admitted(True, previous)

    async def update_call(self, me: Replica, call: LiveCall) -> None:
        self._calls.setdefault(me.id, {})[call.call_sid] = call

    async def drop_calls(self, me: Replica, call_sids: list[str]) -> None:
        for sid in call_sids:
            self._calls.get(me.id, {}).pop(sid, None)

    async def heartbeat(self, me: Replica, calls: list[LiveCall], ttl_s: float) -> None:
        self._replicas[me.id] = (me, self._clock() + ttl_s)
        self._calls[me.id] = {c.call_sid: c for c in calls}

    async def owner_of(self, call_sid: str) -> Owner | None:
        now = self._clock()
        holders = [
            Owner(self._alive(rid, now), held)
            for rid, calls in self._calls.items()
            if (held := calls.get(call_sid)) is not None
        ]
        return max(holders, key=lambda o: _owner_rank(o.replica is not None, o.call), default=None)

    async def live_calls(self) -> list[tuple[Replica, LiveCall]]:
        now = self._clock()
        return [
            (replica, c)
            for rid, calls in self._calls.items()
            if (replica := self._alive(rid, now)) is not None
            for c in calls.values()
        ]

    async def reserve_slot(self, call_sid: str, limit: int, ttl_s: float) -> bool:
        now = self._clock()
        for sid in [s for s, until in self._slots.items() if until <= now]:
            del self._slots[sid]
        if call_sid not in self._slots and len(self._slots) >= limit:
            return False
        self._slots[call_sid] = now + ttl_s
        return True

    async def keep_slots(self, call_sids: list[str], ttl_s: float) -> None:
        until = self._clock() + ttl_s
        for sid in call_sids:
            self._slots[sid] = until

    async def free_slots(self, call_sids: list[str]) -> None:
        now = self._clock()
        for sid in call_sids:
            held_live = any(
                (held := calls.get(sid)) is not None and held.state != "parked" and self._alive(rid, now) is not None
                for rid, calls in self._calls.items()
            )
            if not held_live:
                self._slots.pop(sid, None)

    async def leave(self, me: Replica) -> None:
        self._replicas.pop(me.id, None)
        self._calls.pop(me.id, None)

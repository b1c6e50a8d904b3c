"""This replica as a member of the gateway's cluster: its identity, the calls it holds, its heartbeat, and what it
does when the shared store fails (docs/architecture/scale-out.md). Not pure: asyncio tasks and the store's I/O.

The store is asked at a call's start (one round trip: token, previous owner, registration), when its agent session
parks, when the call ends (ends are batched), and by the heartbeat (one round trip per replica every third of
``state.call_ttl_s``, carrying every call the replica holds, so an entry lost to a failed write or a Redis restart
comes back by itself). Nothing on the media path awaits it.

Store failures (:class:`~gateway.errors.StateUnavailable`, each bounded by ``state.op_timeout_s``): calls already
running never notice. A new stream's token was already checked (HMAC, expiry, door, call binding) and marked used in
this process (gateway.admission); with ``state.on_unavailable = "degrade"`` that is all, and ``state.unavailable``
(a warning, once per outage) and ``voice_gateway_state_unavailable_total{op}`` say single use is per process until
the store answers again; with ``"refuse"`` the stream is refused.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

import structlog
from prometheus_client import CollectorRegistry, Counter

from ..errors import StateUnavailable
from ..state.settings import StateSettings
from ..state.store import LiveCall, Owner, Replica, StateStore
from .forward import ForwardVerifier, forward_key

__all__ = ["Cluster", "token_key"]

log = structlog.get_logger("gateway.cluster")


def token_key(token: str) -> str:
    """What the store keeps of a used token: its SHA-256 (the token itself is a credential until it expires)."""
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def advertised_address(settings: StateSettings, port: int) -> str:
    """Where other replicas reach this one's internal listener."""
    if "://" in settings.internal_url:
        return settings.internal_url
    if settings.internal_url:  # a bare host (Kubernetes: the pod's IP)
        return f"http://{settings.internal_url}:{port}"
    host = settings.internal_host
    if host in ("", "0.0.0.0", "::"):
        try:
            host = socket.gethostbyname(socket.gethostname())
        except OSError:
            host = "127.0.0.1"
    return f"http://{host}:{port}"


class Cluster:
    """This replica's view of the cluster. ``accepting``: reads whether this process still takes calls (drain)."""

    def __init__(
        self,
        settings: StateSettings,
        store: StateStore,
        *,
        token_secret: bytes,
        token_ttl_s: float,
        accepting: Callable[[], bool],
        unavailable: Counter | None = None,
        forwards: Counter | None = None,
    ) -> None:
        """``unavailable``, ``forwards``: the app's counters (gateway.metrics); None: private ones (tests)."""
        self.settings = settings
        self.store = store
        self._token_ttl_s = token_ttl_s
        self._accepting = accepting
        rid = f"{socket.gethostname()[:40]}-{secrets.token_hex(4)}"
        self.me = Replica(rid, "", False, time.time())
        #: Calls this replica holds (live, or parked for a re-attach), by CallSid.
        self.local: dict[str, LiveCall] = {}
        #: Streams whose admission the store is answering, by CallSid: the heartbeat carries them already, but
        #: ``local`` keeps what it held (a replayed token of a call live here must not evict the live call).
        self._admitting: dict[str, LiveCall] = {}
        self.key = forward_key(token_secret)
        self.verifier = ForwardVerifier(self.key, rid, settings.forward_window_s)
        self._tasks: set[asyncio.Task[None]] = set()
        self._beat_task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._down_since: float | None = None
        self._drops: set[str] = set()  # calls ended here, their entries not yet removed from the store
        self._frees: set[str] = set()  # ... and their cluster slots (state.max_cluster_calls)
        self._flushing = False
        reg = CollectorRegistry()
        self.unavailable = unavailable or Counter("state_unavailable", "", ["op"], registry=reg)
        self.forwards = forwards or Counter("forwards", "", ["action", "result"], registry=reg)

    # ---- life -----------------------------------------------------------------------------------------------------
    async def start(self, port: int | None) -> None:
        """Join: the internal listener is on ``port`` (None: there is none, the store is this process's own and no
        other replica can reach this one); first heartbeat now (a store that is down is logged, not fatal: the
        heartbeat keeps trying)."""
        address = advertised_address(self.settings, port) if port is not None else ""
        self.me = dataclasses.replace(self.me, address=address)
        await self._beat()
        log.info("cluster.joined", replica=self.me.id, address=address or None, store=self.store.name)
        self._beat_task = asyncio.get_running_loop().create_task(self._heartbeat(), name="cluster_heartbeat")

    async def stop(self) -> None:
        if self._beat_task is not None:
            self._beat_task.cancel()
            await asyncio.gather(self._beat_task, return_exceptions=True)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=self.settings.op_timeout_s * 2)
        try:
            await self.store.leave(self.me)
        except StateUnavailable as exc:
            self._failed("leave", exc)
        await self.store.close()

    def draining_changed(self) -> None:
        """Drain started: tell the registry now, not at the next beat."""
        self._wake.set()

    async def _heartbeat(self) -> None:
        interval = self.settings.call_ttl_s / 3
        while True:
            try:
                async with asyncio.timeout(interval):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()  # after the wait: a drain that began before this task first ran is not lost
            await self._beat()

    @property
    def _slot_ttl_s(self) -> float:
        """How long a beat keeps this replica's cluster slots: as long as it keeps the replica's record
        (``call_ttl_s``: a live call's slot outlasts two missed beats, as its replica does), plus two
        ``op_timeout_s``: the keep runs after the record's write, and two keeps may lie the beat's two store calls
        further apart than two records. So a slot goes no sooner than its replica's record (unless keeps alone fail
        twice running), and at most that margin after the replica is known dead, not a whole TTL later."""
        return self.settings.call_ttl_s + 2 * self.settings.op_timeout_s

    async def _beat(self) -> None:
        draining = not self._accepting()
        if draining != self.me.draining:
            self.me = dataclasses.replace(self.me, draining=draining)
        try:
            held = {**self.local, **self._admitting}
            await self.store.heartbeat(self.me, list(held.values()), self.settings.call_ttl_s)
            if self.settings.max_cluster_calls:
                await self.store.keep_slots(list(held), self._slot_ttl_s)
        except StateUnavailable as exc:
            self._failed("heartbeat", exc)
        else:
            self._ok()

    # ---- store failures ---------------------------------------------------------------------------------------------
    def _failed(self, op: str, exc: StateUnavailable) -> None:
        self.unavailable.labels(op).inc()
        if self._down_since is None:
            self._down_since = time.monotonic()
            log.warning(
                "state.unavailable",
                op=op,
                error=str(exc),
                on_unavailable=self.settings.on_unavailable,
                detail="single-use stream tokens are per process until the store answers",
            )

    def _ok(self) -> None:
        if self._down_since is not None:
            log.info("state.recovered", down_s=round(time.monotonic() - self._down_since, 2))
            self._down_since = None

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro, name="cluster_write")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ---- calls ------------------------------------------------------------------------------------------------------
    async def reserve(self, call_sid: str) -> str | None:
        """The webhook of ``call_sid`` passed this process's admission: one of ``state.max_cluster_calls`` slots,
        held for ``state.reservation_ttl_s`` until its stream starts (then the heartbeat keeps it). None, or
        ``at_capacity``. The store down: allowed (``degrade``) or refused (``refuse``)."""
        limit = self.settings.max_cluster_calls
        if not limit:
            return None
        try:
            held = await self.store.reserve_slot(call_sid, limit, self.settings.reservation_ttl_s)
        except StateUnavailable as exc:
            self._failed("reserve", exc)
            return "at_capacity" if self.settings.on_unavailable == "refuse" else None
        self._ok()
        return None if held else "at_capacity"

    async def admit(self, call: LiveCall, token: str) -> tuple[str | None, Owner | None]:
        """A stream's ``start`` passed this process's admission: the token's single use across replicas, and the
        call's registration. Returns (refusal or None, the other replica that held the call, if any).

        Until the store answers, the call is in ``_admitting`` (a heartbeat meanwhile carries it, an end meanwhile
        waits for the answer) and ``local`` keeps what it held for the CallSid: a refused stream (a replay of one of
        the call's old tokens) leaves the call's entry here, and any change made to it meanwhile, as they were."""
        sid = call.call_sid
        self._admitting[sid] = call
        try:
            admitted = await self.store.admit_call(
                self.me, call, token_key(token), self._token_ttl_s, self.settings.call_ttl_s
            )
        except StateUnavailable as exc:
            self._failed("admit", exc)
            refused = self.settings.on_unavailable == "refuse"
            self._admitted(call, not refused)
            return ("store_unavailable" if refused else None), None
        except BaseException:  # cancelled (the stream's task ended): not admitted here, and nothing waits for it
            self._admitted(call, False)
            raise
        self._ok()
        self._admitted(call, admitted.first_use)
        if not admitted.first_use:
            return "token_in_use", None
        previous = admitted.previous
        if previous is not None and (previous.replica is None or previous.replica.id == self.me.id):
            previous = None
        return None, previous

    def _admitted(self, call: LiveCall, held: bool) -> None:
        """The store answered ``call``'s admission: ``held`` (this replica serves it now) or refused."""
        sid = call.call_sid
        if self._admitting.get(sid) is call:
            del self._admitting[sid]
        if held:
            self.local[sid] = call
        if (sid in self._drops or sid in self._frees) and not self._flushing:  # ends that waited for the answer
            self._flushing = True
            self._spawn(self._flush())

    def parked(self, call_sid: str, stream_sid: str, session_id: str) -> None:
        """Stream ``stream_sid`` of the call stopped here and its agent session is parked for a new stream."""
        call = self.local.get(call_sid)
        if call is not None and call.stream_sid == stream_sid:
            self.local[call_sid] = call = dataclasses.replace(call, state="parked", session_id=session_id)
            self._spawn(self._write("update", call))

    def session_known(self, call_sid: str, stream_sid: str, session_id: str) -> None:
        """The call's agent session is ready (or was taken over): the next heartbeat carries its id (no write of
        its own: ``GET /calls/live`` may show it up to ``state.call_ttl_s / 3`` later)."""
        call = self.local.get(call_sid)
        if call is not None and call.stream_sid == stream_sid and call.session_id != session_id:
            self.local[call_sid] = dataclasses.replace(call, session_id=session_id)

    def ended(self, call_sid: str, stream_sid: str, *, call_over: bool = True) -> None:
        """This replica no longer holds ``call_sid`` as served by ``stream_sid`` (that stream ended unparked, or its
        parked session ended or was handed over: ``call_over`` False, the call goes on elsewhere and keeps its
        cluster slot). A newer stream of the same call here keeps the entry."""
        call = self.local.get(call_sid)
        if call is not None and call.stream_sid == stream_sid:
            del self.local[call_sid]
            self._drops.add(call_sid)
            if call_over and self.settings.max_cluster_calls:
                self._frees.add(call_sid)
            if not self._flushing:
                self._flushing = True
                self._spawn(self._flush())

    async def _flush(self) -> None:
        """Write ends in batches: the ends of one moment go together, and ends that come while a write is in flight
        go with the next (300 calls hung up at once are a few round trips, not 300 waiting for a connection)."""
        try:
            while True:
                # A call being admitted here again waits for the store's answer (refused: the end goes ahead;
                # admitted: a re-attach on this replica, the call keeps its entry and its slot).
                drops = {s for s in self._drops if s not in self._admitting}
                frees = {s for s in self._frees if s not in self._admitting}
                if not drops and not frees:
                    break
                self._drops -= drops
                self._frees -= frees
                drops = {s for s in drops if s not in self.local}
                frees = {s for s in frees if s not in self.local}
                try:
                    await self.store.drop_calls(self.me, sorted(drops))
                    await self.store.free_slots(sorted(frees))
                except StateUnavailable as exc:
                    self._failed("drop", exc)  # the next heartbeat writes the exact set again; slots expire
                else:
                    self._ok()
        finally:
            self._flushing = False

    async def _write(self, op: str, call: LiveCall) -> None:
        try:
            await self.store.update_call(self.me, call)
        except StateUnavailable as exc:
            self._failed(op, exc)  # the next heartbeat writes the exact set again
        else:
            self._ok()

    async def owner_of(self, call_sid: str) -> Owner | None:
        """Who holds ``call_sid``. With the store down, only what this replica holds is known (raises
        StateUnavailable for anything else)."""
        try:
            owner = await self.store.owner_of(call_sid)
        except StateUnavailable as exc:
            self._failed("owner", exc)
            if call_sid in self.local:
                return Owner(self.me, self.local[call_sid])
            raise
        self._ok()
        return owner

    async def live_calls(self) -> tuple[list[tuple[Replica, LiveCall]], bool]:
        """Every live call of the cluster, and whether the list is complete (False: the store is down, these are
        this replica's only)."""
        try:
            calls = await self.store.live_calls()
        except StateUnavailable as exc:
            self._failed("live_calls", exc)
            return [(self.me, c) for c in self.local.values()], False
        self._ok()
        return calls, True

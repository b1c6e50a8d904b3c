"""Who gets a line: the per-process call limit, slot reservations and live stream tokens. Pure (``now`` is passed in).

A call passes two doors (docs/architecture/index.md#admission): the voice webhook (we learn the CallSid and answer
TwiML) and, a moment later, the media-stream upgrade (which carries no CallSid: it arrives only in ``start``). Checking
the limit at the webhook but counting the call only once its stream starts lets a burst of webhooks race past the limit
(QwenPaw PR #38). So the webhook *reserves* a slot for its CallSid, and the stream *claims* that reservation at
``start``.

Slots are held by:
- ``live`` calls: a stream whose ``start`` was authorized;
- ``reservations``: a webhook answered for a CallSid whose stream has not started yet (expire after
  ``reservation_ttl_s``, so a caller who hangs up while Twilio connects does not hold a slot for long).

Occupancy is ``live + reservations``. A webhook is answered only after its carrier's signature checked out
(docs/security.md), so only authenticated requests reserve.

**Pending streams hold no slot.** An upgrade carries no CallSid and, for most carriers, no credential either: who
it is shows only in ``start``. So upgrades wait in a small pool of their own (``pending_limit``, separate from the
call limit, each bounded by ``server.start_timeout_s`` in the session): when the pool is full, the *oldest* waiting
socket is evicted to make room (:meth:`Admission.open_stream` returns its ticket). A real carrier sends ``start``
within milliseconds of its upgrade, so a flood of idle sockets cannot keep a signed call's stream out: it would have
to open ``pending_limit`` sockets in those milliseconds, and even then the next real stream evicts one. An upgrade
is refused outright only while draining (unless a reservation is waiting for its stream) or when live calls alone
fill the limit and no reservation is waiting. At ``start`` a stream claims its CallSid's reservation, or else needs
a free slot (``at_capacity``).

Used tokens: a stream token opens one call, once. The set of tokens this process admitted is kept until each
token's expiry (``token_ttl_s`` after it was first used is an upper bound), so neither a replayed ``start`` while
the call is live nor a new stream after it ended can ride the same token. A later stream of the same CallSid
(re-attach after a redirect) goes through the webhook again and presents a fresh token. The set is per process;
across replicas a token replayed elsewhere is bounded by its TTL, its call id, door and profile binding
(docs/security.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Admission", "REFUSED_AT_CAPACITY", "REFUSED_DRAINING", "REFUSED_TOKEN_IN_USE"]

REFUSED_AT_CAPACITY = "at_capacity"
REFUSED_DRAINING = "draining"
REFUSED_TOKEN_IN_USE = "token_in_use"


@dataclass
class Admission:
    limit: int
    reservation_ttl_s: float = 30.0
    accepting: bool = True
    #: Upgrades that may wait for their ``start`` at once; beyond it the oldest waiting one is evicted.
    pending_limit: int = 32
    #: How long a used token is remembered (a token's lifetime: server.call_token_ttl_s).
    token_ttl_s: float = 300.0
    _reservations: dict[str, float] = field(default_factory=dict)  # CallSid -> expires at
    _pending: dict[int, None] = field(default_factory=dict)  # tickets of streams waiting for 'start', oldest first
    _live: dict[int, tuple[str, str]] = field(default_factory=dict)  # ticket -> (CallSid, token)
    _tokens: set[str] = field(default_factory=set)  # tokens of live calls
    _used: dict[str, float] = field(default_factory=dict)  # every token admitted -> forget after (insertion order)
    _next_ticket: int = 0

    # ---- views -----------------------------------------------------------------------------------------------------
    def occupancy(self, now: float) -> int:
        self._expire(now)
        return len(self._live) + len(self._reservations)

    def has_room(self, now: float) -> bool:
        return self.accepting and self.occupancy(now) < self.limit

    @property
    def live(self) -> int:
        return len(self._live)

    @property
    def reservations(self) -> int:
        return len(self._reservations)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def idle(self) -> bool:
        """Nothing held at all (tests and leak checks)."""
        return not (self._live or self._pending or self._tokens)

    # ---- the webhook -------------------------------------------------------------------------------------------
    def reserve(self, call_sid: str, now: float) -> str | None:
        """Hold a slot for ``call_sid``. Returns ``None`` if reserved, else why not."""
        if not self.accepting:
            return REFUSED_DRAINING
        self._expire(now)
        if call_sid in self._reservations:  # Twilio retried the webhook: same call, same slot
            self._reservations[call_sid] = now + self.reservation_ttl_s
            return None
        if len(self._live) + len(self._reservations) + 1 > self.limit:
            return REFUSED_AT_CAPACITY
        self._reservations[call_sid] = now + self.reservation_ttl_s
        return None

    def unreserve(self, call_sid: str) -> None:
        """Give a reservation back (the cluster-wide limit refused the call after this process reserved it)."""
        self._reservations.pop(call_sid, None)

    # ---- the media stream --------------------------------------------------------------------------------------
    def open_stream(self, now: float) -> tuple[int, int | None] | str:
        """An upgrade arrives. Returns ``(ticket, evicted)``: the ticket to pass to :meth:`start`/:meth:`release`,
        and the ticket of the oldest waiting stream evicted to make room (its socket must be closed), or None.
        Or, as a str, why the upgrade is refused."""
        self._expire(now)
        if not self._reservations and (not self.accepting or len(self._live) >= self.limit):
            return REFUSED_DRAINING if not self.accepting else REFUSED_AT_CAPACITY
        evicted = None
        if len(self._pending) >= self.pending_limit:
            evicted = next(iter(self._pending))
            del self._pending[evicted]
        self._next_ticket += 1
        self._pending[self._next_ticket] = None
        return self._next_ticket, evicted

    def start(self, ticket: int, call_sid: str, token: str, now: float) -> str | None:
        """The stream's authorized ``start``: claim the CallSid's reservation (or a free slot) and the token."""
        self._pending.pop(ticket, None)
        self._expire(now)
        if token in self._tokens or token in self._used:
            return REFUSED_TOKEN_IN_USE
        if self._reservations.pop(call_sid, None) is None:
            # No webhook answered for this call here: a new call, which a draining process no longer takes (only the
            # calls it promised before the drain may still start).
            if not self.accepting:
                return REFUSED_DRAINING
            if len(self._live) + len(self._reservations) + 1 > self.limit:
                return REFUSED_AT_CAPACITY
        self._live[ticket] = (call_sid, token)
        self._tokens.add(token)
        self._used[token] = now + self.token_ttl_s
        return None

    def release(self, ticket: int) -> None:
        """The stream's handler ended (for any reason): free its slot and its token."""
        self._pending.pop(ticket, None)
        entry = self._live.pop(ticket, None)
        if entry is not None:
            self._tokens.discard(entry[1])

    def _expire(self, now: float) -> None:
        while self._used:  # oldest first: entries are added with a growing 'now' and the same TTL
            token, until = next(iter(self._used.items()))
            if until > now:
                break
            del self._used[token]
        if self._reservations:
            for sid in [s for s, exp in self._reservations.items() if exp <= now]:
                del self._reservations[sid]

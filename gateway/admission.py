"""Who gets a line: the per-process call limit, slot reservations and live stream tokens. Pure (``now`` is passed in).

A call passes two doors (telephony.md §A.1–§A.2): the voice webhook (we learn the CallSid and answer TwiML) and,
a moment later, the media-stream upgrade (which carries no CallSid: it arrives only in ``start``). Checking the
limit at the webhook but counting the call only once its stream starts lets a burst of webhooks race past the
limit (telephony.md §C item 12, QwenPaw PR #38). So the webhook *reserves* a slot for its CallSid, and the stream
*claims* that reservation at ``start``.

Slots are held by:
- ``live`` calls: a stream whose ``start`` was authorized;
- ``reservations``: a webhook answered for a CallSid whose stream has not started yet (expire after
  ``reservation_ttl_s``, so a caller who hangs up while Twilio connects does not hold a slot for long);
- ``pending`` streams: upgraded sockets still waiting for ``start`` (at most ``server.start_timeout_s``).

A pending stream most likely belongs to a reservation, so occupancy is ``live + max(reservations, pending)``. The
upgrade is let in if it can match an unclaimed reservation or a free slot exists; at ``start`` it claims its
CallSid's reservation, or else needs a free slot (``at_capacity``). While draining, the webhook and unreserved
streams are refused, but streams of calls already answered may still connect.

Live tokens: a stream token is refused while a live call of this process already uses it (a replayed ``start``
for the same CallSid). The set is per process and cleared when the call ends: a later stream of the same CallSid
(re-attach after a redirect, issue #8) has to present a token again, and tokens stay verifiable by any replica
without shared state (the token itself is an HMAC bound to the CallSid with a short TTL, :mod:`gateway.security`).
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
    _reservations: dict[str, float] = field(default_factory=dict)  # CallSid -> expires at
    _pending: set[int] = field(default_factory=set)  # tickets of streams waiting for 'start'
    _live: dict[int, tuple[str, str]] = field(default_factory=dict)  # ticket -> (CallSid, token)
    _tokens: set[str] = field(default_factory=set)  # tokens of live calls
    _next_ticket: int = 0

    # ---- views -----------------------------------------------------------------------------------------------------
    def occupancy(self, now: float) -> int:
        self._expire(now)
        return len(self._live) + max(len(self._reservations), len(self._pending))

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
        if len(self._live) + max(len(self._reservations) + 1, len(self._pending)) > self.limit:
            return REFUSED_AT_CAPACITY
        self._reservations[call_sid] = now + self.reservation_ttl_s
        return None

    # ---- the media stream --------------------------------------------------------------------------------------
    def open_stream(self, now: float) -> int | str:
        """An upgrade arrives. Returns a ticket (int) to pass to :meth:`start`/:meth:`release`, or why not (str)."""
        self._expire(now)
        matches_reservation = len(self._pending) < len(self._reservations)
        if not self.accepting and not matches_reservation:
            return REFUSED_DRAINING
        if len(self._live) + max(len(self._reservations), len(self._pending) + 1) > self.limit:
            return REFUSED_AT_CAPACITY
        self._next_ticket += 1
        self._pending.add(self._next_ticket)
        return self._next_ticket

    def start(self, ticket: int, call_sid: str, token: str, now: float) -> str | None:
        """The stream's authorized ``start``: claim the CallSid's reservation (or a free slot) and the token."""
        self._pending.discard(ticket)
        self._expire(now)
        if token in self._tokens:
            return REFUSED_TOKEN_IN_USE
        if self._reservations.pop(call_sid, None) is None and (
            len(self._live) + 1 + max(len(self._reservations), len(self._pending)) > self.limit
        ):
            return REFUSED_AT_CAPACITY
        self._live[ticket] = (call_sid, token)
        self._tokens.add(token)
        return None

    def release(self, ticket: int) -> None:
        """The stream's handler ended (for any reason): free its slot and its token."""
        self._pending.discard(ticket)
        entry = self._live.pop(ticket, None)
        if entry is not None:
            self._tokens.discard(entry[1])

    def _expire(self, now: float) -> None:
        if self._reservations:
            for sid in [s for s, exp in self._reservations.items() if exp <= now]:
                del self._reservations[sid]

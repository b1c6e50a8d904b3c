"""Playout accounting for audio queued at the carrier. Pure: every method takes ``now`` (monotonic seconds).

The carrier plays what we send in real time, FIFO (docs/architecture/twilio-media-streams.md#fifo-playout). We model its
buffer as the time at which everything sent so far will have played (``buffer_end``), correct that model with mark
echoes (a mark echo at
``now`` proves playback reached the mark's position), and start a new *generation* on every ``clear``: Twilio
echoes every pending mark after a clear, so echoes from an older generation prove nothing and are ignored
(docs/architecture/twilio-media-streams.md#marks-and-clear).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PlayoutTracker", "MarkEcho"]


@dataclass(frozen=True, slots=True)
class _Mark:
    generation: int
    position_ms: int  # cumulative audio sent in this generation when the mark was sent
    reply_id: str | None
    reply_position_ms: int  # audio of that reply sent before the mark
    sent_at: float


@dataclass(frozen=True, slots=True)
class MarkEcho:
    """A mark echo that counts: playback reached ``position_ms`` of its generation."""

    name: str
    reply_id: str | None
    reply_played_ms: int
    round_trip_s: float


class PlayoutTracker:
    __slots__ = ("generation", "sent_ms", "stale_echoes", "buffer_end", "_seq", "_marks", "_reply_sent_ms",
                 "reply_played_ms", "_reply", "_reply_ms")  # fmt: skip

    def __init__(self) -> None:
        self.generation = 0
        self.sent_ms = 0  # audio sent in the current generation
        self.stale_echoes = 0  # echoes ignored because their generation was cleared
        #: When everything sent so far will have played (monotonic seconds); read by the queue's pacing rule.
        self.buffer_end = 0.0
        self._seq = 0
        self._marks: dict[str, _Mark] = {}
        # Audio sent per reply: the reply being sent now in a plain counter (``_reply``, ``_reply_ms``), the others in
        # the dict, so a frame costs no dict update (docs/architecture/performance.md#trim-ceiling).
        self._reply_sent_ms: dict[str | None, int] = {}
        self._reply: str | None = None
        self._reply_ms = 0
        self.reply_played_ms: dict[str | None, int] = {}

    # ---- sending -----------------------------------------------------------------------------------------------
    def on_sent(self, duration_ms: int, now: float, reply_id: str | None = None) -> None:
        self.sent_ms += duration_ms
        if reply_id != self._reply:
            self._reply_sent_ms[self._reply] = self._reply_ms
            self._reply, self._reply_ms = reply_id, self._reply_sent_ms.get(reply_id, 0)
        self._reply_ms += duration_ms
        end = self.buffer_end
        self.buffer_end = (end if end > now else now) + duration_ms / 1000.0

    def plays_from(self, now: float) -> float:
        """When audio sent now starts playing: after what is queued at the carrier, or now."""
        return max(self.buffer_end, now)

    def lead_ms(self, now: float) -> float:
        """Audio we believe is queued at the carrier and not yet played."""
        return max(0.0, self.buffer_end - now) * 1000.0

    def playing(self, now: float) -> bool:
        return self.buffer_end > now

    def reply_sent_ms(self, reply_id: str | None) -> int:
        return self._reply_ms if reply_id == self._reply else self._reply_sent_ms.get(reply_id, 0)

    def new_mark(self, now: float, reply_id: str | None) -> str:
        """Register a mark to send right after the audio sent so far; returns its name."""
        self._seq += 1
        name = f"g{self.generation}.{self._seq}"
        self._marks[name] = _Mark(self.generation, self.sent_ms, reply_id, self.reply_sent_ms(reply_id), now)
        return name

    @property
    def pending_marks(self) -> int:
        return sum(1 for m in self._marks.values() if m.generation == self.generation)

    # ---- carrier feedback --------------------------------------------------------------------------------------
    def on_mark(self, name: str, now: float) -> MarkEcho | None:
        """A mark came back. Returns what it proves, or None for unknown or cleared-generation marks."""
        mark = self._marks.pop(name, None)
        if mark is None:
            return None
        if mark.generation != self.generation:
            self.stale_echoes += 1
            return None
        # Playback has reached the mark: what is still queued is exactly what we sent after it.
        self.buffer_end = now + (self.sent_ms - mark.position_ms) / 1000.0
        played = max(self.reply_played_ms.get(mark.reply_id, 0), mark.reply_position_ms)
        self.reply_played_ms[mark.reply_id] = played
        return MarkEcho(name, mark.reply_id, played, now - mark.sent_at)

    def clear(self, now: float) -> float:
        """We sent ``clear``: the carrier dropped its queue. Returns the ms of audio that was dropped unplayed."""
        dropped = self.lead_ms(now)
        self.generation += 1
        self.sent_ms = 0
        self.buffer_end = now
        # Echoes of the old generation will still arrive (Twilio flushes pending marks); keep them to recognise.
        return dropped

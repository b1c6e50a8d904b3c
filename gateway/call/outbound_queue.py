"""Audio and control messages on their way to the carrier, and when each may go. Pure: every method takes ``now``.

One queue per call holds everything the caller is to hear, in order: the agent's audio as whole 20 ms frames in the
stream's encoding, the gateway's own prompts and keypad tones, and marks (checkpoints whose echo proves what was
heard). Each item carries the playout *generation* it was queued in (a ``clear`` starts a new one) and a tag (the
reply id, or ``__prompt__``/``__hangup__``/``__dtmf_N__``). Messages built out of turn (``clear``, and the mark that
follows a media message once ``audio.mark_interval_ms`` of audio went out) wait in a short urgent line that goes
first.

:meth:`OutboundQueue.pull` is the one pacing rule (docs/architecture/decisions/0008-paced-playout-and-marks.md;
docs/architecture/failure-behaviour.md#backpressure): it hands out the next message only while the carrier holds less
than the lead target (``audio.playout_lead_ms``, at most the dialect's
``max_lead_ms``), coalesces up to ``frames_per_message`` frames of one generation into a message (within the
dialect's bounds: Exotel ≥ 100 ms, Vonage exactly 20 ms), pads a short tail with silence, and accounts what it hands
out in the :class:`~gateway.playout.PlayoutTracker` as sent at ``now``: the shell sends each message it pulls
before pulling the next. When it holds something back it sets :attr:`OutboundQueue.wake_at`.

Backpressure: the queue itself never drops audio; it reports :attr:`has_room` (fewer than ``max_frames`` frames,
``audio.outbound_buffer_s``), and the shell stops reading the agent while it is full (the call ends as
``carrier_stalled`` when that lasts ``audio.outbound_buffer_s``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Protocol

from ..carriers.base import FRAME_MS, Dialect
from ..playout import PlayoutTracker
from .stats import CallSummary

__all__ = ["OutboundQueue", "SentAudioObserver"]

_Item = tuple[int, "str | None", "bytes | None"]  # (generation, tag, frame; None for a mark)


class SentAudioObserver(Protocol):
    """Told what audio the carrier writer sent and where the playout model places it, and of every ``clear``
    (the call's recording and its per-reply timing: gateway.records.recorder.CallTap). Once per message."""

    def sent(self, tag: str | None, payload: bytes, now: float, plays_at: float) -> None: ...

    def cleared(self, now: float) -> None: ...


class OutboundQueue:
    __slots__ = ("_dialect", "_playout", "_summary", "per_message", "_min_frames", "_ceiling", "_mark_interval_ms",
                 "max_frames", "items", "urgent", "_clear", "_clear_asked_at", "frames", "_ms_since_mark",
                 "_short_since", "wake_at", "reply_active", "clock_marks", "tag_of", "_waited", "observer", "loop",
                 "loop_ahead")  # fmt: skip

    def __init__(
        self,
        dialect: Dialect,
        playout: PlayoutTracker,
        summary: CallSummary,
        *,
        frames_per_message: int,
        lead_target_ms: int,
        mark_interval_ms: int,
        max_frames: int,
    ) -> None:
        self._dialect = dialect
        self._playout = playout
        self._summary = summary
        lo = max(1, dialect.min_message_ms // FRAME_MS)
        hi = max(lo, dialect.max_message_ms // FRAME_MS)
        #: Frames per media message: the configured count within the dialect's bounds.
        self.per_message = min(max(frames_per_message, lo), hi)
        self._min_frames = lo
        limit = dialect.max_lead_ms
        target = lead_target_ms if limit is None else min(lead_target_ms, limit)
        self._ceiling = target - FRAME_MS  # send while the carrier holds at most this much
        self._mark_interval_ms = mark_interval_ms
        self.max_frames = max_frames
        # Read by the shell's writer on the hot path (whether anything is queued); changed only here.
        self.items: deque[_Item] = deque()  # audio frames and marks, in order
        self.urgent: deque[str | bytes] = deque()  # built messages that go before the items
        self._clear: str | bytes | None = None  # the clear in the urgent line, for its latency
        self._clear_asked_at: float | None = None
        self.frames = 0  # audio frames in items
        self._ms_since_mark = 0
        self._short_since: float | None = None
        #: When to pull again: set when :meth:`pull` held something back, None when it has nothing.
        self.wake_at: float | None = None
        #: Whether the reply now arriving may still grow (Exotel's minimum message waits for more of it).
        self.reply_active = False
        #: Marks the carrier cannot echo (``build_mark`` → None), resolved by the clock model: (when, name).
        self.clock_marks: list[tuple[float, str]] = []
        #: Mark name → tag, for the marks whose echo someone waits for (:meth:`put_mark` ``waited``).
        self.tag_of: dict[str, str] = {}
        self._waited: set[str] = set()
        #: Told of every media message handed out and every clear (None: nobody listens; set by the shell).
        self.observer: SentAudioObserver | None = None
        #: A looped sound to keep queued while nothing else plays (hold audio, gateway.call.hold): (its tag, a
        #: function giving its next N frames). :meth:`pull` keeps ``loop_ahead`` frames of it queued, no more.
        self.loop: tuple[str, Callable[[int], list[bytes]]] | None = None
        self.loop_ahead = 5

    # ---- what goes in -----------------------------------------------------------------------------------------
    def put_audio(self, tag: str | None, frames: list[bytes]) -> None:
        gen = self._playout.generation
        if len(frames) == 1:  # the steady state: one 20 ms frame per agent chunk pair
            self.items.append((gen, tag, frames[0]))
        else:
            self.items.extend([(gen, tag, f) for f in frames])
        self.frames += len(frames)

    def put_mark(self, tag: str | None, *, waited: bool = False) -> None:
        """A mark after everything queued so far; ``waited``: its echo is reported (:attr:`tag_of`)."""
        if waited and tag is not None:
            self._waited.add(tag)
        self.items.append((self._playout.generation, tag, None))

    def clear(self, message: str | bytes, now: float, asked_at: float | None) -> int:
        """Barge-in: drop everything queued and put the carrier's ``clear`` first in line. Returns the ms of audio
        dropped here. ``asked_at``: when the caller started speaking (the clear's latency is measured when it is
        pulled)."""
        dropped = self.frames * FRAME_MS
        self.drop()
        if self.observer is not None:
            self.observer.cleared(now)
        self.urgent.append(message)
        self._clear, self._clear_asked_at = message, asked_at
        return dropped

    def drop_tag(self, tag: str) -> None:
        """Forget the queued audio tagged ``tag`` (hold audio that stops), keeping everything else in order."""
        if any(t == tag for _g, t, _f in self.items):
            kept = [item for item in self.items if item[1] != tag]
            self.items = deque(kept)
            self.frames = sum(1 for _g, _t, f in kept if f is not None)

    def drop(self) -> None:
        """Forget everything queued (not the urgent line)."""
        self.items.clear()
        self.frames = 0
        self._short_since = None

    # ---- state --------------------------------------------------------------------------------------------------
    @property
    def pending(self) -> bool:
        return bool(self.urgent or self.items or self.loop)

    @property
    def has_room(self) -> bool:
        return self.frames < self.max_frames

    @property
    def queued_ms(self) -> int:
        """Audio queued here, not yet handed out."""
        return self.frames * FRAME_MS

    # ---- what comes out -----------------------------------------------------------------------------------------
    def take(self, tag: str | None, frames: list[bytes], now: float) -> str | bytes | None:
        """``put_audio(tag, frames)`` then ``pull(now)``, the same message and the same state after, in one step when
        nothing waits before the frames (the steady state of a reply: the agent reader's fast lane,
        :meth:`~gateway.call.shell.carrier.CarrierWriter.send_audio`): the frames go out as the next message without
        a round trip through :attr:`items`."""
        if (
            self.items
            or self.urgent
            or self.loop is not None
            or self._min_frames > 1
            or len(frames) > self.per_message
            or (self._playout.buffer_end - now) * 1000.0 > self._ceiling
        ):
            self.put_audio(tag, frames)
            return self.pull(now)
        return self._media(tag, frames, now)

    def pull(self, now: float) -> str | bytes | None:
        """The next message to send now, or None (nothing, or nothing yet: see :attr:`wake_at`)."""
        if self.urgent:
            msg = self.urgent.popleft()
            if msg is self._clear:
                self._clear = None
                if self._clear_asked_at is not None:
                    self._summary.clear_latencies_ms.append((now - self._clear_asked_at) * 1000)
            return msg
        if self.loop is not None and self.frames < self.loop_ahead:
            loop_tag, more = self.loop
            self.put_audio(loop_tag, more(self.loop_ahead))
        items = self.items
        playout = self._playout
        while items:
            lead = (playout.buffer_end - now) * 1000.0  # playout.lead_ms(now), inline: the ceiling is never negative
            if lead > self._ceiling:
                # Pacing: keep at most the lead target queued at the carrier
                # (docs/architecture/decisions/0008-paced-playout-and-marks.md).
                self.wake_at = now + (lead - self._ceiling) / 1000.0
                return None
            gen, tag, item = items[0]
            if item is None:
                items.popleft()
                if gen == playout.generation:
                    built = self._mark(tag, now, explicit=True)
                    if built is not None:
                        return built
                continue
            if self._min_frames > 1 and not self._whole(now):
                return None
            frames = [item]
            items.popleft()
            per = self.per_message
            while len(frames) < per and items and items[0][2] is not None and items[0][0] == gen:
                frames.append(items.popleft()[2])  # type: ignore[arg-type]  # not a mark: checked above
            self.frames -= len(frames)
            if gen != playout.generation:
                continue  # queued before a clear: never to the caller
            return self._media(tag, frames, now)
        self.wake_at = None
        return None

    def _whole(self, now: float) -> bool:
        """A carrier with a minimum message (Exotel, docs/architecture/audio.md#framing): wait for a whole message of
        this reply, unless it ended (a mark or a new generation follows) or the agent went quiet for two message
        lengths."""
        items = self.items
        gen0 = items[0][0]
        run = 0
        for gen, _tag, item in items:
            if item is None or gen != gen0 or run >= self._min_frames:
                break
            run += 1
        if run < self._min_frames and run == len(items) and self.reply_active:
            if self._short_since is None:
                self._short_since = now
            if now - self._short_since < 2 * self._dialect.min_message_ms / 1000.0:
                self.wake_at = now + FRAME_MS / 1000.0
                return False
        self._short_since = None
        return True

    def _media(self, tag: str | None, frames: list[bytes], now: float) -> str | bytes:
        missing = self._min_frames - len(frames)
        if missing > 0:  # the tail of a reply on a carrier with a minimum message: pad with silence
            frames = frames + [bytes([self._dialect.silence]) * self._dialect.frame_bytes] * missing
        payload = b"".join(frames) if len(frames) > 1 else frames[0]
        msg = self._dialect.build_media(payload)
        if self.observer is not None:
            self.observer.sent(tag, payload, now, self._playout.plays_from(now))
        self._sent(tag, len(frames), now)
        return msg

    def _sent(self, tag: str | None, frames: int, now: float) -> None:
        dur = FRAME_MS * frames
        self._playout.on_sent(dur, now, tag)
        self._summary.frames_out += frames
        self._ms_since_mark += dur
        if self._ms_since_mark >= self._mark_interval_ms:
            built = self._mark(tag, now, explicit=False)
            if built is not None:
                self.urgent.append(built)  # right after this message

    def send_one(self, tag: str | None, now: float) -> bool:
        """The compiled message lane (:meth:`~gateway.call.shell.carrier.CarrierWriter.send_message`): one frame
        whose media message the caller built itself may go now when :meth:`take` would send it at once as a message
        of its own and nobody watches the payloads (no :attr:`observer`). Then it is counted as sent, as
        :meth:`take` would count it, and True; else nothing changes, and the frame takes :meth:`take`."""
        if (
            self.items
            or self.urgent
            or self.loop is not None
            or self.observer is not None
            or self._min_frames > 1
            or (self._playout.buffer_end - now) * 1000.0 > self._ceiling
        ):
            return False
        self._sent(tag, 1, now)
        return True

    def _mark(self, tag: str | None, now: float, *, explicit: bool) -> str | bytes | None:
        name = self._playout.new_mark(now, tag)
        self._ms_since_mark = 0
        if explicit and tag is not None and tag in self._waited:
            self._waited.discard(tag)
            self.tag_of[name] = tag
        built = self._dialect.build_mark(name)
        if built is None:
            # No checkpoint verb at this carrier: the mark resolves when the clock model says the audio before it
            # has played.
            self.clock_marks.append((now + self._playout.lead_ms(now) / 1000.0, name))
        return built

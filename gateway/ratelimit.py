"""The per-call inbound audio rate limit: a token bucket over audio *duration*. Pure: no asyncio, no I/O, no clock
reads; the caller passes ``now`` (seconds on a monotonic clock) and each message's duration.

Why (docs/security.md#inbound-audio-rate): a caller, or anyone holding a stream, can send audio many times faster than
real time, and everything the gateway forwards is billed by the agent per audio second and floods its recogniser. A real
carrier sends at real time, one frame per frame length, but after network jitter it delivers the late frames in a bunch.
So the bucket holds ``burst_s`` seconds of audio and refills at ``rate`` × real time: over any interval of
T seconds at most ``burst_s + rate·T`` seconds of audio are admitted (plus, once, what a message longer than the
whole burst overshoots: see :meth:`InboundAudioBudget.admit`), and a caller that keeps to real time never loses a
frame, late bunches up to ``burst_s`` included.

Media timing is a duration derived from byte counts and the stream's negotiated format (:func:`seconds_per_byte`),
never a message count: carriers frame differently (Twilio 20 ms = 160 B of 8 kHz μ-law, L16 at 16 kHz 20 ms =
640 B, Exotel ~100 ms messages).
"""

from __future__ import annotations

__all__ = ["BYTES_PER_SAMPLE", "InboundAudioBudget", "seconds_per_byte"]

#: Bytes per sample of each carrier encoding, as :class:`gateway.carriers.events.StreamStarted` names them.
BYTES_PER_SAMPLE: dict[str, int] = {"audio/pcmu": 1, "audio/pcma": 1, "audio/pcm": 2}

#: Slack on the comparison, in seconds of audio: repeated float subtraction of 0.02 leaves a full bucket a few ulps
#: short of the last frame of an exactly ``burst_s``-long bunch. A nanosecond of audio is nothing to an attacker.
_EPS_S = 1e-9


def seconds_per_byte(encoding: str, sample_rate: int) -> float:
    """Audio duration of one payload byte of a mono stream (8 kHz μ-law: 1/8000 s; L16 at 16 kHz: 1/32000 s).

    The stream's declared channel count is deliberately not a divisor: the gateway forwards caller audio as mono,
    so claiming more channels would only let a stream pass more audio per second of budget."""
    try:
        width = BYTES_PER_SAMPLE[encoding]
    except KeyError:
        raise ValueError(f"unknown encoding {encoding!r}") from None
    if sample_rate <= 0:
        raise ValueError(f"sample rate must be positive, got {sample_rate!r}")
    return 1.0 / (width * sample_rate)


class InboundAudioBudget:
    """A token bucket of audio seconds: ``burst_s`` deep, refilled at ``rate`` seconds of audio per second.

    It starts full (``now`` is when the call's clock starts), so constructing it before the stream's ``start``
    changes nothing: a full bucket stays full. One :meth:`admit` per carrier message, on the per-frame path: a few
    float operations, nothing allocated beyond them."""

    __slots__ = ("_last", "_tokens", "burst_s", "rate")

    def __init__(self, rate: float = 1.2, burst_s: float = 1.0, now: float = 0.0) -> None:
        if not rate >= 1.0:  # also refuses NaN
            raise ValueError(f"rate must be at least 1.0 (real time), got {rate!r}")
        if not burst_s > 0.0:
            raise ValueError(f"burst_s must be positive, got {burst_s!r}")
        self.rate = rate
        self.burst_s = burst_s
        self._tokens = burst_s
        self._last = now

    def admit(self, duration_s: float, now: float) -> bool:
        """Whether a message of ``duration_s`` seconds of audio arriving at ``now`` may pass; if so it is paid for.
        A refused message costs nothing (the caller drops it).

        A message longer than the whole burst (big carrier messages, or a tiny ``burst_s``) could never pass a plain
        bucket; it passes when the bucket is full, and the bucket goes into debt until that excess is paid back, so
        the long-run bound still holds."""
        # Comparisons, not min(): the builtin call doubles the cost of this per-frame check (~150 ns → ~310 ns).
        tokens = self._tokens
        elapsed = now - self._last
        if elapsed > 0.0:  # a clock that did not move (or went back) refills nothing
            tokens += elapsed * self.rate
            if tokens > self.burst_s:  # noqa: PLR1730
                tokens = self.burst_s
            self._last = now
        if tokens + _EPS_S >= (duration_s if duration_s < self.burst_s else self.burst_s):  # noqa: FURB136
            self._tokens = tokens - duration_s
            return True
        self._tokens = tokens
        return False

    def available_s(self, now: float) -> float:
        """Seconds of audio that would pass at ``now`` (negative while a long message's debt is being paid back);
        for tests and diagnostics, not the per-frame path."""
        return min(self.burst_s, self._tokens + max(0.0, now - self._last) * self.rate)

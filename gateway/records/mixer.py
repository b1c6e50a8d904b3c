"""The two-channel recording's sample clock: caller on the left, agent on the right *as the caller heard it*. Pure
(no clock reads: every position comes in as seconds since the stream started; no I/O).

One 8 kHz clock from the stream's start (docs/how-to/call-records.md#recording):

- **caller**: carriers send continuous 20 ms frames, so caller audio is laid end to end by sample count (network
  jitter and a late event loop do not move it: frames that arrive late come in a burst that catches up). Only when
  *every* frame of the last :data:`WINDOW_FRAMES` arrived more than :data:`GAP_S` after the running count says it
  should have (the carrier sent nothing for a while, or its clock runs slow) does the channel skip forward by that
  persistent lateness, leaving silence: it stays within :data:`GAP_S` of the call clock over any length of call.
  The first frame goes where it arrived.
- **agent**: each message the carrier writer sent is placed where the playout model says it starts playing (the
  time it was sent plus what was still queued at the carrier, corrected by mark echoes:
  :class:`gateway.playout.PlayoutTracker`). A ``clear`` at ``t`` cuts everything placed at or after ``t``: audio
  the carrier flushed before it played is not in the recording.

:meth:`Mixer.commit` turns everything before a position into interleaved 16-bit stereo samples. The shell commits
only what can no longer change: agent audio before *now* has played (a clear cannot reach back), and caller audio
up to :data:`HOLD_S` before now has arrived unless the carrier was late by more than that.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import numpy as np

from ..audio import g711
from ..audio.resample import make_resampler

__all__ = ["GAP_S", "HOLD_S", "RATE", "WINDOW_FRAMES", "Mixer", "pcm8k_decoder"]

RATE = 8000
#: Caller frames persistently this late against the running sample count: the channel skips forward.
GAP_S = 0.02
#: How many frames in a row must be that late (jitter and event-loop stalls are shorter, and catch up).
WINDOW_FRAMES = 25
#: What is committed trails the call clock by this much: late caller frames still land in place.
HOLD_S = 0.25

Decoder = Callable[[bytes], "np.ndarray"]


def pcm8k_decoder(encoding: str, sample_rate: int) -> Decoder:
    """A decoder of the stream's payloads into 8 kHz int16 samples (stateful when it resamples: one per track)."""
    if encoding == "audio/pcmu":
        to_pcm: Callable[[bytes], bytes] = g711.ulaw_to_pcm16
    elif encoding == "audio/pcma":
        to_pcm = g711.alaw_to_pcm16
    else:
        to_pcm = bytes  # audio/pcm: 16-bit little-endian already
    if sample_rate == RATE:
        return lambda payload: np.frombuffer(to_pcm(payload), dtype="<i2")
    resampler = make_resampler(sample_rate, RATE, "MQ")
    return lambda payload: np.frombuffer(resampler.process(to_pcm(payload)), dtype="<i2")


class Mixer:
    """Both channels of one call, from the last committed sample on."""

    def __init__(self, caller_decoder: Decoder, agent_decoder: Decoder, agent_bytes_per_s: float = RATE) -> None:
        """``agent_bytes_per_s``: of the stream's encoding (8000 for 8 kHz G.711), to tell which messages play
        end to end."""
        self._caller_decode = caller_decoder
        self._agent_decode = agent_decoder
        self._agent_bytes_per_s = agent_bytes_per_s
        self.committed = 0  # samples written out, per channel
        self._caller_next: int | None = None  # where the next caller sample goes (None: no frame yet)
        self._late: deque[int] = deque(maxlen=WINDOW_FRAMES)  # the last frames' lateness, in samples
        self._caller: list[tuple[int, np.ndarray]] = []  # (position, samples), in order, not overlapping
        self._agent: list[tuple[int, np.ndarray]] = []  # (position, samples), in the order sent

    # ---- what comes in --------------------------------------------------------------------------------------
    def caller(self, payload: bytes, arrived_s: float) -> None:
        self.add_caller([payload], [arrived_s])

    def add_caller(self, payloads: list[bytes], arrived_s: list[float]) -> None:
        """Caller payloads in order, each with its arrival (seconds since the stream started). One decode for the
        lot, and one segment per run of frames laid end to end: the writer thread holds the GIL briefly."""
        if not payloads:
            return
        pcm = self._caller_decode(payloads[0] if len(payloads) == 1 else b"".join(payloads))
        total = sum(len(p) for p in payloads)
        if not total or not len(pcm):
            return
        scale = len(pcm) / total  # samples per payload byte (1 for G.711, 1/2 for 8 kHz PCM16, …)
        late, gap, nxt = self._late, GAP_S * RATE, self._caller_next
        run_start: int | None = None  # sample position of the current run, and where it is in pcm
        run_from = taken = 0
        for payload, t in zip(payloads, arrived_s, strict=True):
            n = round((taken + len(payload)) * scale) - round(taken * scale)
            taken += len(payload)
            due = round(t * RATE) - n  # where it starts if it left the caller just now
            pos = due if nxt is None else nxt
            lateness = due - pos
            late.append(lateness)
            if lateness > gap and len(late) == WINDOW_FRAMES and (behind := min(late)) > gap:
                pos += behind  # every recent frame was late: a gap (or a slow clock), not jitter
                late.clear()
            pos = max(pos, self.committed)
            at = round((taken - len(payload)) * scale)
            if run_start is None or pos != run_start + (at - run_from):
                if run_start is not None:
                    self._caller.append((run_start, pcm[run_from:at]))
                run_start, run_from = pos, at
            nxt = pos + n
        assert run_start is not None
        self._caller.append((run_start, pcm[run_from:]))
        self._caller_next = nxt

    def agent(self, payload: bytes, plays_at_s: float) -> None:
        self.add_agent([(payload, plays_at_s)])

    def add_agent(self, items: list[tuple[bytes | None, float]]) -> None:
        """What the carrier writer sent, in order: (payload, plays at) or (None, cleared at). Messages that play end
        to end are decoded together."""
        run: list[bytes] = []
        run_at = 0.0
        run_end = 0.0
        for payload, t in items:
            if payload is None:
                self._agent_run(run, run_at)
                run = []
                self.clear(t)
                continue
            seconds = len(payload) / self._agent_bytes_per_s
            if run and abs(t - run_end) < 0.5 / RATE:
                run.append(payload)
            else:
                self._agent_run(run, run_at)
                run, run_at = [payload], t
            run_end = t + seconds
        self._agent_run(run, run_at)

    def _agent_run(self, run: list[bytes], plays_at_s: float) -> None:
        if not run:
            return
        pcm = self._agent_decode(run[0] if len(run) == 1 else b"".join(run))
        if not len(pcm):
            return
        pos = round(plays_at_s * RATE)
        if pos < self.committed:  # cannot happen with a model that never plays in the past; keep what is left
            pcm, pos = pcm[self.committed - pos :], self.committed
        self._agent.append((pos, pcm))

    def clear(self, at_s: float) -> None:
        """The carrier flushed what it had not played at ``at_s``: it never reached the caller."""
        cut = max(round(at_s * RATE), self.committed)
        kept: list[tuple[int, np.ndarray]] = []
        for pos, pcm in self._agent:
            if pos < cut:
                kept.append((pos, pcm[: cut - pos]))
        self._agent = kept

    # ---- what goes out --------------------------------------------------------------------------------------
    def commit(self, upto: int) -> np.ndarray:
        """Interleaved int16 stereo (caller, agent) for samples ``committed`` .. ``upto``; empty when none."""
        start = self.committed
        n = upto - start
        if n <= 0:
            return np.zeros(0, dtype="<i2")
        out = np.zeros((n, 2), dtype="<i2")
        self._caller = _take(self._caller, out[:, 0], start, upto)
        self._agent = _take(self._agent, out[:, 1], start, upto)
        self.committed = upto
        return out.reshape(-1)


def _take(
    segments: list[tuple[int, np.ndarray]], channel: np.ndarray, start: int, end: int
) -> list[tuple[int, np.ndarray]]:
    """Write the parts of ``segments`` in [start, end) into ``channel``; return what is left after ``end``."""
    left: list[tuple[int, np.ndarray]] = []
    for pos, pcm in segments:
        stop = pos + len(pcm)
        if stop <= start:
            continue
        a, b = max(pos, start), min(stop, end)
        if a < b:
            # Later audio wins where two overlap (a re-anchored model after a mark echo): it is what played.
            channel[a - start : b - start] = pcm[a - pos : b - pos]
        if stop > end:
            left.append((end, pcm[end - pos :]) if pos < end else (pos, pcm))
    return left

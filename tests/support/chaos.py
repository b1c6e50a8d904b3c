"""Pieces shared by the agent-socket chaos tests: tests/integration/test_reliability_chaos.py (the fake agent) and
tests/e2e/test_faults_local_agent.py (the real local agent). Both cut the gateway's agent socket with a
:class:`~tests.support.tcp_proxy.TcpProxy` while Twilio's side of the call streams caller audio at real time, and
both check that no caller frame was lost by comparing what the caller sent with what the agent received.

- :class:`PacedCaller`: Twilio's uplink, one 20 ms frame every 20 ms of wall time for the whole call.
- :func:`cut_offsets`: a reproducible set of random cut moments inside one phase.
- :func:`cut_when_linked`: cut the link that carries a session now (waiting for it if it is between sockets).
- :func:`agent_quiet`, :func:`received_caller_audio`: bounded waits (never assertions on latency)."""

from __future__ import annotations

import asyncio
import random
import statistics
import time
from collections import deque
from collections.abc import Callable

from gateway.audio import g711
from tests.support.tcp_proxy import Link, TcpProxy
from tests.support.twilio_peer import TwilioPeer

FRAME = 160  # 20 ms of 8 kHz μ-law: what Twilio puts in one media message
FRAME_S = 0.02


class PacedCaller:
    """Twilio's side of one call's uplink: 20 ms of audio every 20 ms for the whole call, like the carrier (never
    faster than real time). Phrases queued with :meth:`say` go out in order; between them ``filler`` (default:
    μ-law digital silence) keeps the line going. ``frames_sent`` counts every media message sent."""

    def __init__(self, peer: TwilioPeer, filler: bytes | None = None) -> None:
        self.peer = peer
        self.filler = filler if filler is not None else bytes([g711.ULAW_SILENCE]) * FRAME
        assert len(self.filler) == FRAME
        self.frames_sent = 0
        self._queue: deque[bytes] = deque()
        self.stop = asyncio.Event()
        self.idle = asyncio.Event()  # nothing queued: the caller is not speaking
        self.idle.set()

    def say(self, ulaw: bytes) -> float:
        """Queue a phrase; returns its duration (s). It starts with the next frame."""
        self._queue.extend(ulaw[i : i + FRAME].ljust(FRAME, b"\xff") for i in range(0, len(ulaw), FRAME))
        self.idle.clear()
        return len(ulaw) / 8000

    @property
    def speaking(self) -> bool:
        return bool(self._queue)

    async def run(self) -> None:
        t0 = time.monotonic()
        while not self.stop.is_set():
            frame = self._queue.popleft() if self._queue else self.filler
            if not self._queue:
                self.idle.set()
            await self.peer.send_media(frame)
            self.frames_sent += 1
            await asyncio.sleep(max(0.0, t0 + self.frames_sent * FRAME_S - time.monotonic()))

    @property
    def sent_s(self) -> float:
        return self.frames_sent * FRAME_S


def cut_offsets(rng: random.Random, n: int, lo: float, hi: float, min_gap: float = 0.0) -> list[float]:
    """``n`` sorted random moments in [lo, hi], at least ``min_gap`` apart (so each cut has resumed before the next
    one). Drawn only from ``rng``: the same seed gives the same moments."""
    span = (hi - lo) - min_gap * (n - 1)
    if n < 1 or span < 0:
        raise ValueError(f"cannot fit {n} cuts {min_gap} s apart in [{lo}, {hi}]")
    # n uniform points in the span left after the gaps, sorted, then spread by the gaps: uniform over valid sets.
    points = sorted(rng.uniform(0.0, span) for _ in range(n))
    return [round(lo + p + i * min_gap, 3) for i, p in enumerate(points)]


async def cut_when_linked(
    proxy: TcpProxy,
    find_link: Callable[[], Link | None],
    *,
    at_cut: Callable[[], None] | None = None,
    timeout: float = 10.0,
) -> Link:
    """Cut the link ``find_link`` returns; if there is none now (the session is between two sockets, just
    resumed), wait for the next one. ``at_cut`` runs at the very moment of the cut (to judge where in the call it
    landed). Returns the link cut."""
    async with asyncio.timeout(timeout):
        while (link := find_link()) is None:
            await asyncio.sleep(0.005)
    if at_cut is not None:
        at_cut()
    await proxy.cut(link)
    return link


async def agent_quiet(peer: TwilioPeer, quiet_s: float = 1.0, timeout: float = 30.0) -> None:
    """Wait until the gateway has sent the caller no audio for ``quiet_s`` (the agent's turn is over)."""
    async with asyncio.timeout(timeout):
        while True:
            media = peer.events("media")
            if media and time.monotonic() - media[-1].t >= quiet_s:
                return
            await asyncio.sleep(0.02)


async def received_caller_audio(
    sent_s: float, received_s: Callable[[], float], tolerance_s: float = 0.005, timeout: float = 5.0
) -> float:
    """Seconds of caller audio the agent received, read once it has caught up with ``sent_s`` (or after
    ``timeout``); then a short extra wait, so audio that should not be there (a duplicate) is counted too.
    The caller must already have stopped sending."""
    try:
        async with asyncio.timeout(timeout):
            while received_s() < sent_s - tolerance_s:
                await asyncio.sleep(0.02)
    except TimeoutError:
        pass  # the comparison the caller asserts shows what is missing
    await asyncio.sleep(0.1)
    return received_s()


def gap_summary(gaps_ms: list[float]) -> str:
    gaps = sorted(gaps_ms)
    p95 = gaps[min(len(gaps) - 1, int(round(0.95 * len(gaps))) - 1)]
    return f"median {statistics.median(gaps):.1f}, p95 {p95:.1f}, max {gaps[-1]:.1f}"

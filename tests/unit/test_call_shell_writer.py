"""The carrier writer's fast lane (gateway/call/shell/carrier.py, CarrierWriter.send_audio): the agent reader hands
it a reply's frames, and the carrier gets what ``put_audio`` then ``flush`` (the path every other agent event takes)
would have sent, at the same moments, with the same queue and the same wake-ups left for the writer task. Both never
send to a socket that is backed up, and leave nothing queued without waking the writer task."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gateway.audio.transcode import OutboundAudio
from gateway.call.outbound_queue import OutboundQueue
from gateway.call.shell.carrier import CarrierWriter, after_send
from gateway.call.stats import CallSummary
from gateway.errors import CallEnded, Outcome
from gateway.playout import PlayoutTracker
from tests.support.call_script import ScriptDialect


class _PayloadDialect(ScriptDialect):
    def build_media(self, payload: bytes) -> str:
        return f"media {payload.hex()}"


class _Carrier:
    """Stands in for the carrier socket: records what is sent; ``backlog`` says whether its buffer is backed up."""

    closed = False

    def __init__(self) -> None:
        self.sent: list[str | bytes] = []
        self.backlog = False
        self.sent_while_backlogged = 0
        self.fills_in: int | None = None  # the buffer backs up after that many more sends

    async def receive(self) -> str | bytes:  # pragma: no cover - the writer never reads
        raise NotImplementedError

    async def send(self, data: str | bytes) -> None:
        self.sent_while_backlogged += self.backlog
        self.sent.append(data)
        if self.fills_in is not None:
            self.fills_in -= 1
            if self.fills_in == 0:
                self.backlog, self.fills_in = True, None

    def backlogged(self) -> bool:
        return self.backlog

    async def close(self, code: int, message: bytes = b"") -> None:  # pragma: no cover
        raise NotImplementedError


class _Side:
    def __init__(self, marks: bool, min_ms: int, clock: list[float]) -> None:
        self.queue = OutboundQueue(
            _PayloadDialect(marks=marks, min_message_ms=min_ms),
            PlayoutTracker(),
            CallSummary(),
            frames_per_message=1,
            lead_target_ms=100,
            mark_interval_ms=60,
            max_frames=50,
        )
        self.carrier = _Carrier()
        self.room, self.clock_wake = asyncio.Event(), asyncio.Event()
        seen = [0]

        def clock_changed() -> bool:
            changed, seen[0] = len(self.queue.clock_marks) > seen[0], len(self.queue.clock_marks)
            return changed

        done = after_send(self.queue, clock_changed, self.room, self.clock_wake)
        self.writer = CarrierWriter(self.queue, self.carrier, lambda: clock[0], done)

    def seen(self) -> tuple[object, ...]:
        """What either path leaves for the call's other tasks. Not ``room``: only the agent reader waits for it, and the
        lane is the agent reader sending, so the lane never sets it (a flush, which any task may run, does)."""
        q = self.queue
        return (
            list(self.carrier.sent),
            list(q.items),
            list(q.urgent),
            q.wake_at,
            list(q.clock_marks),
            self.clock_wake.is_set(),
            self.writer._wake.is_set(),  # noqa: SLF001 - whether the writer task was woken is the point
        )


async def _step(op: str, arg: int, clock: list[float], sides: tuple[_Side, ...]) -> None:
    """One step of a script that is not audio, the same on every side: time passes, the carrier's socket backs up
    (or will after ``arg`` sends), the reply may still grow, a mark is queued, or the writer task takes its turn."""
    if op == "time":
        clock[0] += arg / 1000.0
    for side in sides:
        if op == "backlog":
            side.carrier.backlog = bool(arg)
        elif op == "fills":
            side.carrier.fills_in = arg
        elif op == "active":
            side.queue.reply_active = bool(arg)
        elif op == "mark":
            side.queue.put_mark("r1")
        elif op == "writer":
            side.writer._wake.clear()  # noqa: SLF001 - as the writer task does before its turn
            if not side.carrier.backlog:
                await side.writer.flush()


_STEP = st.one_of(
    st.tuples(st.just("audio"), st.integers(1, 2)),
    st.tuples(st.just("audio"), st.integers(1, 2)),
    st.tuples(st.just("time"), st.integers(0, 60)),
    st.tuples(st.just("backlog"), st.booleans()),
    st.tuples(st.just("fills"), st.integers(1, 2)),  # the socket backs up after this many sends
    st.tuples(st.just("active"), st.booleans()),  # whether the reply may still grow (a carrier's minimum message)
    st.tuples(st.just("mark"), st.just(0)),
    st.tuples(st.just("writer"), st.just(0)),  # the writer task's turn: it sends what is due
)


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(steps=st.lists(_STEP, max_size=40), marks=st.booleans(), min_ms=st.sampled_from([20, 100]))
def test_send_audio_is_put_audio_then_flush(steps, marks, min_ms):
    async def run() -> None:
        clock = [0.0]
        plain, lane = _Side(marks, min_ms, clock), _Side(marks, min_ms, clock)
        n = 0
        for op, arg in steps:
            marks_before = [len(side.queue.clock_marks) for side in (plain, lane)]
            sent_before = len(plain.carrier.sent)
            if op == "audio":
                frames = [bytes([(n + i) % 256]) * 160 for i in range(arg)]
                n += arg
                plain.queue.put_audio("r1", frames)
                await plain.writer.flush()
                await lane.writer.send_audio("r1", frames)
            else:
                await _step(op, arg, clock, (plain, lane))
            assert lane.seen() == plain.seen()
            # A flush that sent (or handed out a clock-resolved mark) tells a waiting agent reader there is room.
            pq = plain.queue
            after = len(plain.carrier.sent) > sent_before or len(pq.clock_marks) != marks_before[0]
            assert plain.room.is_set() == (after and pq.frames < pq.max_frames)
            assert lane.carrier.sent_while_backlogged == plain.carrier.sent_while_backlogged == 0
            for side, before in zip((plain, lane), marks_before, strict=True):
                q = side.queue
                if op == "audio" and (q.items or q.urgent):
                    assert side.writer._wake.is_set()  # noqa: SLF001 - what is left, the writer task sends
                if len(q.clock_marks) > before:
                    assert side.clock_wake.is_set()  # a clock-resolved mark: the call's clock learns its deadline
            for side in (plain, lane):
                side.room.clear()
                side.clock_wake.clear()

    asyncio.run(run())


# ---- the compiled message lane (CarrierWriter.steady_lane with a FusedFirMessages, send_message) ------------------
class _TemplateDialect(ScriptDialect):
    """A media message that is a fixed text around the payload's base64, as Twilio's is."""

    def build_media(self, payload: bytes) -> str:
        return "media:" + base64.b64encode(payload).decode() + "!"

    def media_template(self) -> tuple[bytes, bytes]:
        return b"media:", b"!"


class _TextCarrier(_Carrier):
    """A WebSocket carrier: text frames may also come as UTF-8 bytes (CarrierLink.text_sender), recorded as text;
    ``going``: the socket is closing, and that send raises as aiohttp's does."""

    going = False

    def text_sender(self) -> Any:
        return self._send_text

    async def _send_text(self, data: bytes) -> None:
        if self.going:
            raise ConnectionResetError("Cannot write to closing transport")
        self.texts += 1
        await self.send(data.decode())


def _lane_side(min_ms: int, clock: list[float], lane: bool, marks: bool = True) -> tuple[_Side, Any, Any]:
    """A writer for an agent reader in a reply's steady state: ``lane``, the compiled message lane; else the
    chunk's frames through send_audio (what every call without the lane does). ``marks``: whether the carrier echoes
    marks (else the call's clock resolves them)."""
    side = _Side(marks, min_ms, clock)
    side.queue._dialect = _TemplateDialect(marks=marks, min_message_ms=min_ms)  # noqa: SLF001 - the dialect under test
    side.carrier = _TextCarrier()
    side.carrier.texts = 0
    side.writer._carrier = side.carrier  # noqa: SLF001 - the same writer, on the carrier with send_text
    audio = OutboundAudio("pcm24k", "audio/pcmu", 8000, 160, "FIR")
    messages = audio.messages(*_TemplateDialect().media_template()) if lane else None
    convert, send = side.writer.steady_lane(messages, audio.convert)
    return side, convert, send


_LANE_STEP = st.one_of(
    st.tuples(st.just("audio"), st.integers(1, 1500)),  # an agent chunk of that many bytes (odd ones split samples)
    st.tuples(st.just("steady"), st.integers(1, 12)),  # the steady state: that many 10 ms chunks back to back
    st.tuples(st.just("steady"), st.integers(1, 12)),
    st.tuples(st.just("time"), st.integers(0, 60)),
    st.tuples(st.just("backlog"), st.booleans()),
    st.tuples(st.just("fills"), st.integers(1, 2)),
    st.tuples(st.just("mark"), st.just(0)),
    st.tuples(st.just("observer"), st.booleans()),  # someone watches the payloads (a recording)
    st.tuples(st.just("writer"), st.just(0)),
)


class _Observer:
    def __init__(self) -> None:
        self.seen: list[tuple[str | None, bytes, float, float]] = []

    def sent(self, tag: str | None, payload: bytes, now: float, plays_at: float) -> None:
        self.seen.append((tag, payload, now, plays_at))

    def cleared(self, now: float) -> None:  # pragma: no cover - nothing is cleared here
        self.seen.append((None, b"", now, -1.0))


@settings(max_examples=150, deadline=None, database=None, derandomize=True)
@given(
    steps=st.lists(_LANE_STEP, max_size=60),
    min_ms=st.sampled_from([20, 20, 100]),
    seed=st.integers(0, 2**16),
    marks=st.booleans(),
)
@example(
    steps=[("steady", 12), ("time", 30), ("steady", 12), ("mark", 0), ("writer", 0)], min_ms=20, seed=1, marks=True
)
@example(steps=[("steady", 12), ("time", 100), ("steady", 12)], min_ms=20, seed=2, marks=False)
def test_the_message_lane_sends_what_the_frames_lane_sends(steps, min_ms, seed, marks):
    """Byte for byte the same messages at the same moments, and the same queue, playout, counts and wake-ups, as
    the chunk's frames through send_audio: the lane only builds the lone frame's message in the compiled step."""
    rng = np.random.default_rng(seed)

    async def run() -> None:
        clock = [0.0]
        (plain, p_convert, p_send), (lane, l_convert, l_send) = (
            _lane_side(min_ms, clock, False, marks),
            _lane_side(min_ms, clock, True, marks),
        )
        for op, arg in steps:
            if op in ("audio", "steady"):
                sizes = [arg] if op == "audio" else [480] * arg
                for size in sizes:
                    data = rng.integers(-30000, 30000, (size + 1) // 2).astype("<i2").tobytes()[:size]
                    for convert, send in ((p_convert, p_send), (l_convert, l_send)):
                        if out := convert(data):
                            await send("r1", out)
            elif op == "observer":
                for side in (plain, lane):
                    side.queue.observer = _Observer() if arg else None
            else:
                await _step(op, arg, clock, (plain, lane))
            assert lane.seen() == plain.seen()
            pq, lq = plain.queue, lane.queue
            assert (lq.frames, lq._playout.sent_ms, lq._playout.buffer_end, lq._summary.frames_out) == (  # noqa: SLF001
                pq.frames, pq._playout.sent_ms, pq._playout.buffer_end, pq._summary.frames_out  # noqa: SLF001
            )  # fmt: skip
            if pq.observer is not None:
                assert lq.observer.seen == pq.observer.seen
            assert lane.carrier.sent_while_backlogged == plain.carrier.sent_while_backlogged == 0
        assert plain.carrier.texts == 0  # the plain side never had the lane

    asyncio.run(run())


def test_the_message_lane_carries_a_replys_steady_state():
    """The test above compares nothing if the lane never sends: 10 ms chunks, paced, leave as the lane's messages,
    every one a frame the plain path builds the same."""

    async def run() -> None:
        clock = [0.0]
        lane, convert, send = _lane_side(20, clock, True)
        pcm = np.random.default_rng(7).integers(-8000, 8000, 240 * 40).astype("<i2").tobytes()
        for i in range(40):
            if out := convert(pcm[480 * i : 480 * (i + 1)]):
                await send("r1", out)
            clock[0] += 0.010
        assert lane.carrier.texts >= 15  # 20 frames, the first held 2 ms by the filter, marks aside
        frames = [m for m in lane.carrier.sent if str(m).startswith("media:")]
        assert len(frames) == lane.queue._summary.frames_out >= 19  # noqa: SLF001

    asyncio.run(run())


def test_the_message_lane_on_a_closing_socket_ends_the_call_as_carrier_closed():
    """The lane sends with the socket's own send, which raises ConnectionError on a closing socket: the call ends
    as every other send to it ends it (CarrierLink.send: carrier_closed), and the writer is not left busy."""

    async def run() -> None:
        clock = [0.0]
        lane, convert, send = _lane_side(20, clock, True)
        pcm = np.random.default_rng(3).integers(-8000, 8000, 240 * 8).astype("<i2").tobytes()
        lane.carrier.going = True
        with pytest.raises(CallEnded) as ended:
            for i in range(8):
                if out := convert(pcm[480 * i : 480 * (i + 1)]):
                    await send("r1", out)
                clock[0] += 0.010
        assert ended.value.reason == Outcome.CARRIER_CLOSED
        assert not lane.writer._busy  # noqa: SLF001 - the writer task may still send the goodbye

    asyncio.run(run())

"""What the real CallSession adds per message, in process: its steady-state fast paths driven with stand-in
sockets, against the pure functions they call (parse, transcode, build).

    .venv/bin/python -m bench.session_overhead        # ≈ 10 s; docs/architecture/performance.md, "The floor"
    .venv/bin/python -m bench.session_overhead --cold # + the same with 50 calls interleaved, caches evicted
    .venv/bin/python -m bench.session_overhead --opcodes  # bytecode instructions per message: gateway and floor

- carrier → agent: one Twilio ``media`` text through ``CarrierReader.on_message`` (the carrier reader's work
  per message: the dialect's parse, the core, the ``input.audio`` send) against parse + ``InboundAudio.convert`` +
  ``input_audio`` alone;
- agent → carrier: one 10 ms ``reply.audio`` through ``parse_server_event`` and ``AcceptedCall.on_agent_event`` (the
  agent reader's work per chunk: the core's conversion, queue and playout accounting, the ``media`` send, a mark
  each second) against parse + ``OutboundAudio.convert`` + ``build_media`` alone.

``--opcodes`` counts instead of timing: the bytecode instructions the interpreter executes per message in the
gateway's code (``gateway/``, and the floor prototype's own module for the floor), on the same two paths of the real
session and on the floor prototype's two loops (``bench/prototypes/floor_session.py``, canned messages, then with
the real audio work as ``--prototype floor-transcode`` does), by function. Unlike a timing it does not depend on the
machine or its load: the same tree gives the same counts, so it shows what a change to the per-message Python does
where the load figures cannot resolve a few per cent (docs/architecture/performance.md#opcodes). The sockets are
stand-ins, and what aiohttp does per message is not counted: the floor and the gateway share it.

The stand-in sockets' sends cost ~0.1 µs and never suspend, so the difference is the session's own Python per
message, with hot caches: a floor for what it costs inside a loaded process, where 100+ calls interleave. The clock
advances 10 ms per agent chunk, so the playout lead stays under target and every frame takes the fast path, and 20 ms
per carrier frame, so caller audio stays at real time, within the inbound rate limit (none of it is dropped).
"""

from __future__ import annotations

import base64
import collections
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import FrameType
from typing import Any

import numpy as np
from aiohttp import WSMessage, WSMsgType

from bench.report import rotated
from gateway.agent import protocol as ap
from gateway.agent.client import AgentConnection, AgentEndpoint
from gateway.audio.transcode import InboundAudio, OutboundAudio
from gateway.call.setup import setup_for
from gateway.call.shell.accepted import AcceptedCall
from gateway.carriers.events import StreamStarted
from gateway.config import load_settings
from gateway.errors import CallEnded
from gateway.session import CallSession

STREAM_SID = "MZ" + "0" * 32


class _CarrierSocket:
    """Stands in for the prepared aiohttp WebSocketResponse: counts sends, never suspends; ``receive`` hands out
    ``incoming`` in turn (the floor's carrier loop reads the socket itself)."""

    def __init__(self, incoming: Iterable[Any] = ()) -> None:
        self.sent = 0
        self.feed(incoming)

    def feed(self, incoming: Iterable[Any]) -> None:
        self._incoming = iter(incoming)

    async def receive(self) -> Any:
        return next(self._incoming)

    async def send_str(self, data: str) -> None:
        self.sent += 1

    async def send_bytes(self, data: bytes) -> None:
        self.sent += 1

    async def send_frame(self, data: bytes, opcode: Any) -> None:  # the compiled message lane's text frames
        self.sent += 1


class _Drained(Exception):
    """The stand-in agent connection has handed out all its events (ends a reader's loop that is being counted)."""


class _Agent(AgentConnection):
    """Stands in for a ready agent connection: counts sends, never backlogged; ``recv`` hands out ``events`` in turn
    (the agent readers read the connection themselves), then raises :class:`_Drained`."""

    def __init__(self, events: Iterable[ap.ServerEvent] = ()) -> None:
        self.sent = 0
        self.feed(events)

    def feed(self, events: Iterable[ap.ServerEvent]) -> None:
        self._events = iter(events)

    async def send(self, text: str) -> None:
        self.sent += 1

    async def recv(self) -> ap.ServerEvent:
        try:
            return next(self._events)
        except StopIteration:
            raise _Drained from None

    def backlogged(self) -> bool:
        return False

    @property
    def open_(self) -> bool:
        return True


def _drive(coro: Any) -> None:
    """Run a coroutine that must not suspend (the fast path with these sockets)."""
    try:
        coro.send(None)
    except StopIteration:
        return
    coro.close()
    raise RuntimeError("the session path suspended: not the steady-state fast path")


def _stream_opening() -> tuple[str, str]:
    """Twilio's ``connected`` and ``start`` for the benchmark's stream."""
    start = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": STREAM_SID,
        "callSid": "CA" + "0" * 32,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    return (
        json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}),
        json.dumps({"event": "start", "sequenceNumber": "1", "streamSid": STREAM_SID, "start": start}),
    )


def session_under_test() -> tuple[AcceptedCall, _CarrierSocket, _Agent, list[float]]:
    """The call of a CallSession past start and session.ready, on stand-in sockets and a settable clock, reached
    through public seams (what the session's tasks do after an authorized start and a session.ready)."""
    now = [1000.0]
    carrier, agent = _CarrierSocket(), _Agent()
    settings = load_settings(env={"GATEWAY_TOKEN_SECRET": "bench"})
    sess = CallSession(
        ws=carrier,
        settings=settings,
        endpoint=AgentEndpoint("ws://bench", "k", "bench"),  # type: ignore[arg-type]
        tools=None,
        clock=lambda: now[0],
    )  # type: ignore[arg-type]
    connected, start_text = _stream_opening()
    sess.dialect.parse(connected)
    start = [ev for ev in sess.dialect.parse(start_text) if isinstance(ev, StreamStarted)][0]
    call = sess.begin(setup_for(settings, start))  # the stream's start was authorized
    call.agent.adopt(agent)  # the agent socket is open ...
    call.core.agent_ready("sess_bench", now[0])  # ... and its session.ready arrived
    call.core.agent_event(ap.ReplyStarted("resp_bench"), now[0])  # the agent is speaking
    return call, carrier, agent, now


def messages() -> tuple[str, bytes, str, bytes]:
    rng = np.random.default_rng(7)
    ulaw = bytes(rng.integers(0, 256, 160, dtype=np.uint8))
    media = json.dumps(
        {
            "event": "media",
            "sequenceNumber": "5",
            "streamSid": STREAM_SID,
            "media": {"track": "inbound", "chunk": "3", "timestamp": "60", "payload": base64.b64encode(ulaw).decode()},
        }
    )
    pcm = (np.sin(np.arange(240) * 0.3) * 3000).astype("<i2").tobytes()  # 10 ms of 24 kHz PCM16
    reply = json.dumps({"type": "reply.audio", "reply_id": "resp_bench", "data": base64.b64encode(pcm).decode()})
    return media, ulaw, reply, pcm


def measure(n: int = 20000, rounds: int = 7) -> dict[str, Any]:
    call, carrier, agent, now = session_under_test()
    media, ulaw, reply, pcm = messages()
    audio = load_settings(env={"GATEWAY_TOKEN_SECRET": "bench"}).audio
    inbound = InboundAudio("audio/pcmu", 8000, "pcm24k", audio.inbound_resample_quality)
    outbound = OutboundAudio("pcm24k", "audio/pcmu", 8000, 160, audio.outbound_resample_quality)
    build_media = call.dialect.build_media

    def carrier_path() -> None:
        now[0] += 0.020  # a frame every 20 ms, as on a real call: within the inbound rate limit (gateway.ratelimit)
        _drive(call.inbound.on_message(media))

    def carrier_parts() -> None:
        now[0] += 0.020  # the same clock step, so the difference stays the session's own work
        for ev in call.dialect.parse(media):
            ap.input_audio(inbound.convert(ev.payload))

    def agent_path() -> None:
        now[0] += 0.010
        _drive(call.on_agent_event(ap.parse_server_event(reply)))

    def agent_parts() -> None:
        for frame in outbound.convert(ap.parse_server_event(reply).data):  # type: ignore[attr-defined]
            build_media(frame)

    cases: dict[str, Callable[[], None]] = {
        "carrier → agent, session path": carrier_path,
        "carrier → agent, pure parts": carrier_parts,
        "agent → carrier, session path": agent_path,
        "agent → carrier, pure parts": agent_parts,
    }
    out: dict[str, Any] = {}
    gc.disable()
    try:
        for name, fn in cases.items():
            per_round = []
            for _ in range(rounds):
                t0 = time.perf_counter()
                for _ in range(n):
                    fn()
                per_round.append((time.perf_counter() - t0) / n * 1e6)
            out[name] = statistics.median(per_round)
    finally:
        gc.enable()
    out["carrier sends"], out["agent sends"] = carrier.sent, agent.sent
    out["session µs per carrier message"] = out["carrier → agent, session path"] - out["carrier → agent, pure parts"]
    out["session µs per agent chunk"] = out["agent → carrier, session path"] - out["agent → carrier, pure parts"]
    # a call-second: 50 carrier frames, 100 agent chunks of 10 ms
    out["session ms per call-second"] = (
        50 * out["session µs per carrier message"] + 100 * out["session µs per agent chunk"]
    ) / 1000
    return out


def measure_cold(calls: int = 50, evict_kb: int = 4096, rounds: int = 60) -> dict[str, Any]:
    """The same paths with ``calls`` calls interleaved and ``evict_kb`` of other memory read between two messages,
    as on a loaded gateway, where every message finds the caches holding other calls' (and other processes') data.
    Each message is timed on its own (the eviction is not timed), the path and its parts in turn first
    (:func:`bench.report.rotated`: timed back to back on the same message, the first pays for the cold code and data
    the other then finds warm, which once charged the session with all of it); means per message."""
    paths = [session_under_test() for _ in range(calls)]
    media, _ulaw, reply, _pcm = messages()
    audio = load_settings(env={"GATEWAY_TOKEN_SECRET": "bench"}).audio
    ins = [InboundAudio("audio/pcmu", 8000, "pcm24k", audio.inbound_resample_quality) for _ in range(calls)]
    outs = [OutboundAudio("pcm24k", "audio/pcmu", 8000, 160, audio.outbound_resample_quality) for _ in range(calls)]
    other = np.ones(evict_kb * 128)  # float64: 128 per KB
    clock = time.perf_counter_ns
    times: dict[str, list[int]] = {k: [] for k in ("in path", "in parts", "out path", "out parts")}

    def timed(key: str, keep: bool, fn: Callable[..., Any], *args: Any) -> None:
        other.sum()  # evict
        t0 = clock()
        fn(*args)
        if keep:
            times[key].append(clock() - t0)

    def agent_path(call: AcceptedCall) -> None:
        _drive(call.on_agent_event(ap.parse_server_event(reply)))

    def agent_parts(call: AcceptedCall, outbound: OutboundAudio) -> None:
        for frame in outbound.convert(ap.parse_server_event(reply).data):  # type: ignore[attr-defined]
            call.dialect.build_media(frame)

    def carrier_path(call: AcceptedCall) -> None:
        _drive(call.inbound.on_message(media))

    def carrier_parts(call: AcceptedCall, inbound: InboundAudio) -> None:
        for ev in call.dialect.parse(media):
            ap.input_audio(inbound.convert(ev.payload))  # type: ignore[attr-defined]

    gc.disable()
    try:
        for r in range(rounds):
            keep = r >= rounds // 4  # the first quarter warms up
            for (call, _carrier, _agent, now), inbound, outbound in zip(paths, ins, outs, strict=True):
                for _ in range(2):
                    now[0] += 0.010
                    for key, fn, args in rotated([("out path", agent_path, (call,)),
                                                  ("out parts", agent_parts, (call, outbound))], r):  # fmt: skip
                        timed(key, keep, fn, *args)
                for key, fn, args in rotated([("in path", carrier_path, (call,)),
                                              ("in parts", carrier_parts, (call, inbound))], r):  # fmt: skip
                    timed(key, keep, fn, *args)
    finally:
        gc.enable()
    means = {k: statistics.mean(v) / 1000 for k, v in times.items()}
    out: dict[str, Any] = {f"cold µs per message, {k}": v for k, v in means.items()}
    out["cold: carrier sends"] = sum(c.sent for _call, c, _a, _n in paths)
    out["cold: agent sends"] = sum(a.sent for _call, _c, a, _n in paths)
    out["cold: session µs per carrier message"] = means["in path"] - means["in parts"]
    out["cold: session µs per agent chunk"] = means["out path"] - means["out parts"]
    out["cold: whole path ms per call-second"] = (50 * means["in path"] + 100 * means["out path"]) / 1000
    out["cold: session ms per call-second"] = (
        50 * out["cold: session µs per carrier message"] + 100 * out["cold: session µs per agent chunk"]
    ) / 1000
    return out


# ---- bytecode per message (--opcodes) ------------------------------------------------------------------------------
_ROOT = Path(__file__).resolve().parent.parent
#: Whose code is counted: the gateway package and the floor prototype (not the harness, the stand-ins or libraries).
_COUNTED = (str(_ROOT / "gateway") + "/", str(_ROOT / "bench" / "prototypes") + "/")


def count_opcodes(fn: Callable[[], Any]) -> collections.Counter[str]:
    """Bytecode instructions executed by ``fn()`` in the counted code, by function (``module:qualname``)."""
    counts: collections.Counter[str] = collections.Counter()

    def trace(frame: FrameType, event: str, arg: Any) -> Any:
        code = frame.f_code
        if not code.co_filename.startswith(_COUNTED):
            return trace  # not counted, but its callees may be
        if event == "call":
            frame.f_trace_opcodes = True
        elif event == "opcode":
            name = code.co_filename.removeprefix(str(_ROOT) + "/").removesuffix(".py").replace("/", ".")
            counts[f"{name}:{code.co_qualname}"] += 1
        return trace

    old = sys.gettrace()
    sys.settrace(trace)
    try:
        fn()
    finally:
        sys.settrace(old)
    return counts


def _per_message(counts: collections.Counter[str], n: int) -> dict[str, float]:
    return {k: v / n for k, v in counts.most_common()}


def _floor_session(ws: _CarrierSocket) -> Any:
    """The floor prototype's CallSession past its start, on the stand-in carrier socket ``ws`` (its loops are driven
    by :func:`_floor_loops`)."""
    from bench.prototypes import floor_session as fs

    settings = load_settings(env={"GATEWAY_TOKEN_SECRET": "bench"})
    sess = fs.CallSession(
        ws=ws,  # type: ignore[arg-type]
        settings=settings,
        endpoint=AgentEndpoint("ws://bench", "k", "bench"),  # type: ignore[arg-type]
        tools=None,
    )
    for text in _stream_opening():
        sess.dialect.parse(text)
    sess.summary.stream_sid = STREAM_SID
    return sess


def _floor_loops(media: str, event: ap.ServerEvent, n: int) -> tuple[Callable[[], Any], ...]:
    """Two callables: the floor's carrier loop over ``n`` media messages, then its agent loop over ``n`` chunks (each
    ended by the message that ends it: ``stop``, ``session.ended``)."""
    from aiohttp import WSMessage, WSMsgType

    from gateway.errors import CallEnded

    def carrier() -> None:
        texts = [media] * n + ['{"event":"stop"}']
        sess = _floor_session(_CarrierSocket(WSMessage(WSMsgType.TEXT, t, None) for t in texts))
        try:
            _drive(sess.carrier_loop(_Agent()))
        except CallEnded:
            pass

    def agent() -> None:
        sess = _floor_session(_CarrierSocket())
        try:
            _drive(sess.agent_loop(_Agent([event] * n + [ap.SessionEnded()])))
        except CallEnded:
            pass

    return carrier, agent


def _reader_loop(media: str, event: ap.ServerEvent, n: int) -> Callable[[], Any]:
    """The session's carrier reader (``CarrierReader.run``, the real task's loop, socket read included) over ``n``
    media messages, ended by the stream's ``stop``; on a new call past its first frames."""
    call, carrier, _agent, now = session_under_test()
    _warm(call, now, media, event)
    stop = {"event": "stop", "sequenceNumber": "9", "streamSid": STREAM_SID, "stop": {"callSid": "CA" + "0" * 32}}

    def incoming() -> Iterable[WSMessage]:
        for _ in range(n):
            now[0] += 0.020
            yield WSMessage(WSMsgType.TEXT, media, None)
        yield WSMessage(WSMsgType.TEXT, json.dumps(stop), None)

    def run() -> None:
        carrier.feed(incoming())
        try:
            _drive(call.inbound.run())
        except CallEnded:  # the stop: the caller hung up
            pass

    return run


def _agent_reader_loop(media: str, event: ap.ServerEvent, n: int) -> Callable[[], Any]:
    """The session's agent reader (``AcceptedCall._read_agent``, the real task's loop, the connection's read
    included) over ``n`` 10 ms chunks of a reply's steady state; on a new call past its first frames."""
    call, _carrier, agent, now = session_under_test()
    _warm(call, now, media, event)

    def incoming() -> Iterable[ap.ServerEvent]:
        for _ in range(n):
            now[0] += 0.010
            yield event

    def run() -> None:
        agent.feed(incoming())
        try:
            _drive(call._read_agent(call.core))  # noqa: SLF001 - the agent reader's own loop is what is counted
        except _Drained:
            pass

    return run


def _warm(call: AcceptedCall, now: list[float], media: str, event: ap.ServerEvent) -> None:
    for _ in range(100):  # past the first frames (the filters' look-ahead, the first mark)
        now[0] += 0.010
        _drive(call.on_agent_event(event))
        now[0] += 0.010
        _drive(call.on_agent_event(event))
        _drive(call.inbound.on_message(media))


def measure_opcodes(n: int = 500) -> dict[str, dict[str, float]]:
    """Bytecode instructions per message, by function, on each path: the session's (one carrier frame through the
    carrier reader's loop, ``CarrierReader.run``; one 10 ms agent chunk through the agent reader's loop,
    ``_read_agent``, its event parsed once beforehand: the stand-in connection's ``recv`` hands it out, as it does
    to the floor) and the floor's, plain and transcoding. Every loop is counted over ``n`` and ``2n`` messages and
    differenced, so a call's setup and its last message drop out."""
    media, _ulaw, reply, _pcm = messages()
    event = ap.parse_server_event(reply)

    def per_message(loop: Callable[[str, ap.ServerEvent, int], Callable[[], Any]]) -> dict[str, float]:
        return _per_message(count_opcodes(loop(media, event, 2 * n)) - count_opcodes(loop(media, event, n)), n)

    out = {
        "gateway, carrier → agent": per_message(_reader_loop),
        "gateway, agent → carrier": per_message(_agent_reader_loop),
    }
    from bench.prototypes import floor_session

    variant = floor_session.TRANSCODE  # the module's own setting (its variant file), put back after
    try:
        for label, transcode in (("floor", False), ("floor-transcode", True)):
            floor_session.TRANSCODE = transcode  # the real audio work per message, as --prototype floor-transcode
            for warm in _floor_loops(media, event, 1):
                warm()  # the floor's tables of message sizes are built once per process, on its first call
            one, two = _floor_loops(media, event, n), _floor_loops(media, event, 2 * n)
            for i, direction in enumerate(("carrier → agent", "agent → carrier")):
                out[f"{label}, {direction}"] = _per_message(count_opcodes(two[i]) - count_opcodes(one[i]), n)
    finally:
        floor_session.TRANSCODE = variant
    return out


def main() -> None:
    import warnings

    warnings.simplefilter("ignore", DeprecationWarning)
    import structlog

    structlog.configure(logger_factory=structlog.PrintLoggerFactory(file=open("/dev/null", "w")))  # noqa: SIM115
    if "--opcodes" in sys.argv:
        for path, by_function in measure_opcodes().items():
            print(f"{path}: {sum(by_function.values()):.1f} opcodes per message")
            for name, count in list(by_function.items())[:8]:
                print(f"  {count:7.1f}  {name}")
        return
    args = [a for a in sys.argv[1:] if a != "--cold"]
    res = measure(n=int(args[0]) if args else 20000)
    if "--cold" in sys.argv:
        res.update(measure_cold())
    for key, value in res.items():
        print(f"{key:40s} {value:10.2f}" if isinstance(value, float) else f"{key:40s} {value:10d}")


if __name__ == "__main__":
    main()

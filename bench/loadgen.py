"""The load generator: one process (pinned to its own core by scripts/bench) that plays Twilio for every call and
the Voice Agent API for every agent session of the gateway under test, and measures the gateway between them.

Run by scripts/bench as ``python -m bench.loadgen PLAN_JSON``; prints one JSON object per line: ``ready``, then one
``step`` per load level, then ``done``.

Twilio side, per call (docs/architecture/twilio-media-streams.md): POST the voice webhook, read the TwiML, open the
stream, send ``connected`` and ``start`` (with the TwiML's parameters), then one ``media`` frame (160 B μ-law,
speech-like) every 20 ms; play what comes back at real time and echo each ``mark`` once the audio before it has played;
on ``clear`` drop the queue and echo pending marks at once, as Twilio does.

Agent side, per session (docs/architecture/agent-api.md#events): answer ``session.update`` with
``session.updated`` and ``session.ready``, start a reply, and send ``reply.audio`` at real time in ``chunk_ms``
chunks (scripts/bench defaults to the live service's: 10 ms / 480 B of PCM, 37.5 ms / 300 B of μ-law); on a barge-in
(driven by the generator) send ``reply.done`` ``interrupted`` and start a new reply. The reply's audio is speech-like
audio in the agent's format, base64-encoded once at start-up and sent in turn (:func:`reply_chunks`; the gateway's
work per chunk depends on the chunk's size, not on what it says), and the caller's ``input.audio`` is counted by its
base64 length, not decoded. The generator handles as many messages as the gateway, on its own core, and costs about
what the floor prototype does per call: at the floor's last steps it must still have core to spare
(docs/architecture/performance.md#generator).

Added latency is measured on one clock, both peers being here:
- caller → agent, per frame: ``input.audio`` received − ``media`` sent, for the message that completed the frame's
  audio. Which message that is comes from the gateway's own ``InboundAudio`` run here on the same frame sizes
  (output byte counts depend on sizes only), so coalesced or held-back frames are charged their full wait.
- agent → caller, per frame: ``media`` received − the ``reply.audio`` sent whose arrival let the gateway complete
  that frame (again from the gateway's own ``OutboundAudio``, which also knows the resampler's block release).
  The resampler's algorithmic holdback is therefore *not* in this figure; it is reported separately.
- barge-in: ``clear`` received − ``reply.done interrupted`` sent.
Calls add load in 20 ms phases spread over the period (real calls are not in step), one timer drives every peer.

``"carrier": "audiosocket"`` in the plan plays Asterisk instead of Twilio (bench/audiosocket_peer.py): the UUID from
``GET /audiosocket/calls``, a TCP connection to the gateway's AudioSocket listener, 320 B slin frames every 20 ms,
hang-up by closing. AudioSocket has no clear and no marks, so such runs drive no barge-ins (scripts/bench).
"""

from __future__ import annotations

import asyncio
import binascii
import json
import os
import random
import resource
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import aiohttp

from bench.audiosocket_peer import AudioSocketClient, frame
from bench.report import limited_p99
from bench.wsproto import WsClient, WsServerConn
from gateway.audio import g711
from gateway.audio.transcode import InboundAudio, OutboundAudio
from tests.support.media_corpus import agent_pcm24k, caller_ulaw8k, speechlike_pcm16

CLK_TCK = os.sysconf("SC_CLK_TCK")
_INPUT_PREFIX = b'{"type":"input.audio","audio":"'


# ---- mapping tables: which message completes which frame, from the gateway's own pure converters -----------------
def inbound_table(agent_format: str, quality: str, frames: int, carrier: str = "twilio") -> list[int]:
    """cum[n] = agent-side audio bytes available once caller frame n (0-based) has been processed."""
    pcm = carrier == "audiosocket"  # 8 kHz slin instead of μ-law
    conv = InboundAudio("audio/pcm" if pcm else "audio/pcmu", 8000, agent_format, quality)
    silence = b"\x00" * 320 if pcm else b"\xff" * 160
    out, total = [], 0
    for _ in range(frames):
        total += len(conv.convert(silence))
        out.append(total)
    return out


def reply_chunks(agent_format: str, chunk_bytes: int, seconds: float = 2.0) -> list[bytes]:
    """The agent's reply audio: speech-like audio as the agent speaks it (tests/support/media_corpus.py), in the
    agent's format (24 kHz PCM16 with energy above 4 kHz, which the gateway's filter must remove; or 8 kHz G.711 for
    a passthrough format), cut into whole ``chunk_bytes`` chunks, each base64-encoded once."""
    if agent_format == "pcm24k":
        audio = agent_pcm24k(seconds)
    else:
        pcm8k = speechlike_pcm16(seconds, 8000, 11).tobytes()
        audio = g711.pcm16_to_alaw(pcm8k) if agent_format == "pcma" else g711.pcm16_to_ulaw(pcm8k)
    return [
        binascii.b2a_base64(audio[i : i + chunk_bytes], newline=False)
        for i in range(0, len(audio) - chunk_bytes + 1, chunk_bytes)
    ]


def b64_decoded_len(b64: bytes) -> int:
    """How many bytes the base64 text ``b64`` (no line breaks, padded, as the gateway sends it) decodes to, without
    decoding it."""
    return len(b64) // 4 * 3 - b64.endswith(b"=") - b64.endswith(b"==")


def outbound_table(
    agent_format: str, quality: str, chunk_bytes: int, frames: int, carrier: str = "twilio"
) -> list[int]:
    """k[j] = index of the agent chunk whose processing hands out carrier frame j (0-based)."""
    pcm = carrier == "audiosocket"
    conv = OutboundAudio(agent_format, "audio/pcm" if pcm else "audio/pcmu", 8000, 320 if pcm else 160, quality)
    chunk = bytes(chunk_bytes)
    out: list[int] = []
    k = 0
    while len(out) < frames:
        for _ in conv.convert(chunk):
            out.append(k)
        k += 1
    return out


def procs_cpu_s(pids: int | str | list[int]) -> float:
    """CPU seconds of one process or the sum of several (replicas)."""
    return sum(proc_cpu_s(p) for p in pids) if isinstance(pids, list) else proc_cpu_s(pids)


def thread_run_ns(pid: int | str) -> int:
    """Nanoseconds the process's main thread (the gateway's event loop) has run on a CPU: ``/proc/PID/schedstat``,
    finer than ``/proc/PID/stat``'s 10 ms ticks, which a 100 ms slice needs."""
    with open(f"/proc/{pid}/schedstat", encoding="ascii") as f:
        return int(f.read().split()[0])


def busiest_share(samples: list[tuple[float, list[int]]]) -> dict[str, float]:
    """From (time, each process's :func:`thread_run_ns`) samples taken about 100 ms apart: the share of a core the
    busiest process's event loop took in each slice between two samples, as :func:`percentiles` of 0..1. The mean over a
    window hides what breaks a p99: a few hundred ms in which the work asked for exceeds the core
    (docs/architecture/performance.md#load-shape)."""
    shares = [
        max((b - a) / 1e9 / (t1 - t0) for a, b in zip(ns0, ns1, strict=True))
        for (t0, ns0), (t1, ns1) in zip(samples, samples[1:], strict=False)
        if t1 > t0
    ]
    return percentiles(shares, scale=1.0)


def procs_rss_mb(pids: int | str | list[int]) -> float:
    return sum(proc_rss_mb(p) for p in pids) if isinstance(pids, list) else proc_rss_mb(pids)


def proc_cpu_s(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def proc_rss_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# ---- one call: both peers ----------------------------------------------------------------------------------------
@dataclass(eq=False)
class Call:
    gen: LoadGen
    idx: int
    call_sid: str
    stream_sid: str
    tw: WsClient | None = None
    pbx: AudioSocketClient | None = None
    ag: WsServerConn | None = None
    steady_at: float = float("inf")  # latency samples count from here (session ready + warm-up)
    # caller → agent
    media_n: int = 0
    media_sent: deque[float] = field(default_factory=deque)  # send times of frames not yet seen at the agent
    media_seen: int = 0  # frames whose audio the agent has received in full
    in_bytes: int = 0
    # agent → caller
    reply_no: int = 0
    reply_head: bytes = b""  # the current reply's ``reply.audio`` up to its data, as a frame's start (_start_reply)
    chunk_g: int = 0  # global index of the next chunk the agent sends
    chunk_times: deque[float] = field(default_factory=deque)
    chunk_base: int = 0  # global index of chunk_times[0]
    epoch_g0: int = 0  # global index of the first chunk of the reply the Twilio side is hearing
    frame_j: int = 0  # frames received in this epoch
    pending_barge: tuple[int, float] | None = None  # (global chunk index of the new reply, reply.done sent at)
    play_end: float = 0.0
    mark_timers: dict[str, asyncio.TimerHandle] = field(default_factory=dict)
    closed: bool = False
    sid: bytes = field(init=False, default=b"")  # stream_sid, for the media messages built as bytes

    def __post_init__(self) -> None:
        self.sid = self.stream_sid.encode()

    # -- Twilio side
    def send_media(self, now: float) -> None:
        g = self.gen
        n = self.media_n
        self.media_n = n + 1
        if self.pbx is not None:
            self.pbx.send_bytes(g.frames[n % len(g.frames)])
            self.media_sent.append(now)
            return
        payload = g.payloads[n % len(g.payloads)]
        assert self.tw is not None
        self.tw.send_payload(
            b'{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d","timestamp":"%d",'
            b'"payload":"%s"},"streamSid":"%s"}' % (n + 3, n + 1, n * 20, payload, self.sid)
        )
        self.media_sent.append(now)

    def on_frame(self, kind: int, payload: bytes) -> None:
        """AudioSocket: every audio frame is played like a Twilio ``media``; the hang-up frame needs nothing. The
        gateway's 20 ms of silence right after the UUID (before the agent session exists) maps to no agent chunk."""
        if kind == 0x10 and self.reply_no:
            self.on_twilio(b"")

    def on_twilio(self, text: bytes) -> None:
        now = time.monotonic()
        g = self.gen
        msg: dict[str, Any] | None = None
        if text and not text.startswith(b'{"event":"media"'):  # the gateway's template; anything else is parsed
            msg = json.loads(text)
        if msg is None or msg.get("event") == "media":
            # Our playout model: 20 ms per frame, FIFO.
            self.play_end = max(self.play_end, now) + 0.02
            j = self.frame_j
            self.frame_j = j + 1
            if j >= len(g.out_table):
                g.unmapped += 1
                return
            k = self.epoch_g0 + g.out_table[j]
            times, base = self.chunk_times, self.chunk_base
            while k > base and times:
                times.popleft()
                base += 1
            self.chunk_base = base
            if k == base and times and times[0] >= self.steady_at and g.window_open:
                g.out_samples.append(now - times[0])
                if g.dump is not None:
                    g.dump.append(("out", now, now - times[0]))
            return
        assert msg is not None
        ev = msg.get("event")
        if ev == "mark":
            name = msg["mark"]["name"]
            self.mark_timers[name] = g.loop.call_later(max(0.0, self.play_end - now), self._echo_mark, name)
        elif ev == "clear":
            for name, h in list(self.mark_timers.items()):
                h.cancel()
                self._echo_mark(name)
            self.play_end = now
            if self.pending_barge is not None:
                g0, sent = self.pending_barge
                self.pending_barge = None
                self.epoch_g0, self.frame_j = g0, 0
                if g.window_open:
                    g.clear_samples.append(now - sent)
            else:
                g.unexpected_clears += 1

    def _echo_mark(self, name: str) -> None:
        self.mark_timers.pop(name, None)
        if self.tw is not None and not self.closed:
            self.tw.send_text(
                '{"event":"mark","sequenceNumber":"%d","streamSid":"%s","mark":{"name":"%s"}}'
                % (self.media_n + 3, self.stream_sid, name)
            )

    # -- agent side
    def on_agent(self, text: bytes) -> None:
        now = time.monotonic()
        g = self.gen
        msg: dict[str, Any] | None = None
        b64: bytes | None
        if text.startswith(_INPUT_PREFIX):  # the gateway's template: no need to parse the JSON
            b64 = text[len(_INPUT_PREFIX) : -2]
        else:
            msg = json.loads(text)
            b64 = str(msg.get("audio", "")).encode() if msg.get("type") == "input.audio" else None
        if b64 is not None:
            self.in_bytes += b64_decoded_len(b64)
            table = g.in_table
            sent = self.media_sent
            while self.media_seen < len(table) and table[self.media_seen] <= self.in_bytes and sent:
                t = sent.popleft()
                if t >= self.steady_at and g.window_open:
                    g.in_samples.append(now - t)
                    if g.dump is not None:
                        g.dump.append(("in", now, now - t))
                self.media_seen += 1
            if self.media_seen >= len(table):
                sent.clear()
            return
        assert msg is not None
        kind = msg.get("type")
        if kind == "session.update":
            self._agent_send({"type": "session.updated", "config": msg.get("session", {})})
            self._agent_send({"type": "session.ready", "session_id": f"sess_bench_{self.idx}", "config": {}})
            self._start_reply()
            g.paired(self)
        elif kind == "session.end":
            self._agent_send({"type": "session.ended", "session_duration_seconds": 1.0})
            if self.ag is not None:
                self.ag.close()

    def _agent_send(self, msg: dict[str, Any]) -> None:
        assert self.ag is not None
        self.ag.send_text(json.dumps(msg))

    def _start_reply(self) -> None:
        self.reply_no += 1
        self._agent_send({"type": "reply.started", "reply_id": self.reply_id, "item_id": f"item_{self.reply_no}"})
        self.reply_head = ('{"type":"reply.audio","reply_id":"%s","data":"' % self.reply_id).encode()

    @property
    def reply_id(self) -> str:
        return f"resp_{self.idx}_{self.reply_no}"

    def send_chunk(self, now: float) -> None:
        if not self.reply_no or self.ag is None:
            return  # no reply yet
        g = self.gen
        i = self.chunk_g
        self.ag.send_payload(b"".join((self.reply_head, g.reply_chunks[(self.idx + i) % len(g.reply_chunks)], b'"}')))
        self.chunk_times.append(now)
        self.chunk_g = i + 1

    def barge_in(self) -> None:
        """The agent says the caller interrupted: ``reply.done`` interrupted, then a new reply goes on."""
        self._agent_send({"type": "reply.done", "reply_id": self.reply_id, "status": "interrupted"})
        self.pending_barge = (self.chunk_g, time.monotonic())
        self._start_reply()


# ---- the generator -------------------------------------------------------------------------------------------
class LoadGen:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.loop = asyncio.get_running_loop()
        self.chunk_ms = float(plan["chunk_ms"])  # a multiple of 0.5 ms (scripts/bench checks): μ-law's live 37.5 ms
        fmt = plan.get("agent_format", "pcm24k")
        self.bytes_per_ms = 48 if fmt == "pcm24k" else 8  # 24 kHz PCM16, or 8 kHz G.711 passed through
        self.chunk_bytes = round(self.bytes_per_ms * self.chunk_ms)  # 480 B (PCM, 10 ms), 300 B (μ-law, 37.5 ms)
        # Chunk times on the 1 ms ticker: a cycle of whole ms that holds whole chunks, e.g. 37.5 ms chunks as two per
        # 75 ms at offsets 0 and 38 (gaps 38, 37 ms: real time on average, as the live service paces them).
        per_cycle = 1 if self.chunk_ms.is_integer() else 2
        self.chunk_cycle = round(self.chunk_ms * per_cycle)
        self.chunk_offsets = [round(i * self.chunk_ms) for i in range(per_cycle)]
        frames = int(plan.get("table_frames", 40000))
        self.carrier = plan.get("carrier", "twilio")
        self.in_table = inbound_table(fmt, plan["in_quality"], frames, self.carrier)
        self.out_table = outbound_table(fmt, plan["out_quality"], self.chunk_bytes, frames, self.carrier)
        ulaw = caller_ulaw8k(2.0)
        self.payloads = [binascii.b2a_base64(ulaw[i : i + 160], newline=False) for i in range(0, 16000, 160)]
        self.frames = [frame(0x10, g711.ulaw_to_pcm16(ulaw[i : i + 160])) for i in range(0, 16000, 160)]
        self.reply_chunks = reply_chunks(fmt, self.chunk_bytes)
        self.calls: list[Call] = []
        self.media_slots: list[list[Call]] = [[] for _ in range(20)]
        self.chunk_slots: list[list[Call]] = [[] for _ in range(self.chunk_cycle)]
        self._unpaired: deque[WsServerConn] = deque()
        self._waiting: Call | None = None
        self._paired: asyncio.Future[None] | None = None
        self.window_open = False
        self.in_samples: list[float] = []
        self.out_samples: list[float] = []
        self.clear_samples: list[float] = []
        self.unmapped = 0
        self.unexpected_clears = 0
        self.dropped = 0
        self.setup_failures = 0
        self.tick_lag: list[float] = []
        self._running = True
        self.dump: list[tuple[str, float, float]] | None = [] if plan.get("dump") else None

    # -- agent server
    def _agent_open(self, conn: WsServerConn, path: str) -> None:
        call = self._waiting
        if call is None or call.ag is not None:
            self._unpaired.append(conn)  # not expected: every agent connection follows a call's start
            conn.close()
            return
        call.ag = conn
        conn.on_text = call.on_agent

    def paired(self, call: Call) -> None:
        if self._paired is not None and not self._paired.done() and self._waiting is call:
            self._paired.set_result(None)

    # -- calls
    async def add_call(self, http: aiohttp.ClientSession) -> None:
        if self.carrier == "audiosocket":
            await self.add_audiosocket_call(http)
            return
        idx = len(self.calls) + self.dropped + self.setup_failures
        call = Call(self, idx, f"CA{idx:032x}", f"MZ{idx:032x}")
        # Several replicas (scripts/bench_scaleout: ``gateway_urls``): the webhook goes to one, the stream to the next,
        # as a load balancer would spread them.
        bases = self.plan.get("gateway_urls") or [self.plan["gateway_url"]]
        base = bases[idx % len(bases)]
        form = {"CallSid": call.call_sid, "From": "+15550001111", "To": "+15550002222", "AccountSid": "AC" + "0" * 32}
        try:
            async with asyncio.timeout(10):
                async with http.post(base + "/twilio/voice", data=form) as r:
                    body = await r.text()
                stream = ElementTree.fromstring(body).find("./Connect/Stream")
                if stream is None:
                    raise ConnectionError(f"no <Stream> in TwiML: {body[:200]}")
                params = {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")}
                url = urlsplit(stream.attrib["url"])
                if len(bases) > 1:
                    url = url._replace(netloc=urlsplit(bases[(idx + 1) % len(bases)]).netloc)
                self._waiting = call
                self._paired = self.loop.create_future()
                _, tw = await self.loop.create_connection(
                    lambda: WsClient(url.netloc, url.path), url.hostname, url.port or 80
                )
                await tw.open
                call.tw = tw
                tw.on_text = call.on_twilio
                tw.send_text(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
                tw.send_text(
                    json.dumps(
                        {
                            "event": "start",
                            "sequenceNumber": "1",
                            "streamSid": call.stream_sid,
                            "start": {
                                "accountSid": "AC" + "0" * 32,
                                "streamSid": call.stream_sid,
                                "callSid": call.call_sid,
                                "tracks": ["inbound"],
                                "customParameters": params,
                                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                            },
                        }
                    )
                )
                await self._paired
        except (OSError, TimeoutError, ConnectionError, aiohttp.ClientError, ElementTree.ParseError) as exc:
            self.setup_failures += 1
            print(json.dumps({"kind": "warning", "setup_failed": repr(exc)}), flush=True)
            if call.tw is not None:
                call.tw.close()
            return
        finally:
            self._waiting = None
        self._admit(call, call.tw.closed)  # type: ignore[union-attr]

    async def add_audiosocket_call(self, http: aiohttp.ClientSession) -> None:
        """Asterisk: the dialplan's CURL() for a UUID, then AudioSocket() connects and sends it."""
        idx = len(self.calls) + self.dropped + self.setup_failures
        base = self.plan["gateway_url"]
        host, _, port = self.plan["audiosocket"].rpartition(":")
        try:
            async with asyncio.timeout(10):
                async with http.get(base + "/audiosocket/calls", params={"to": "+15550002222"}) as r:
                    call_uuid = uuid.UUID((await r.text()).strip())
                call = Call(self, idx, str(call_uuid), str(call_uuid))
                self._waiting = call
                self._paired = self.loop.create_future()
                _, pbx = await self.loop.create_connection(AudioSocketClient, host, int(port))
                call.pbx = pbx
                pbx.on_frame = call.on_frame
                pbx.send_bytes(frame(0x01, call_uuid.bytes))
                await self._paired
        except (OSError, TimeoutError, ConnectionError, ValueError) as exc:
            self.setup_failures += 1
            print(json.dumps({"kind": "warning", "setup_failed": repr(exc)}), flush=True)
            return
        finally:
            self._waiting = None
        self._admit(call, pbx.closed)

    def _admit(self, call: Call, closed: asyncio.Future[None]) -> None:
        idx = call.idx
        call.steady_at = time.monotonic() + float(self.plan.get("call_warmup_s", 1.0))
        self.calls.append(call)
        self.media_slots[idx % 20].append(call)
        phase = (idx * 7) % self.chunk_cycle
        for off in self.chunk_offsets:
            self.chunk_slots[(phase + off) % self.chunk_cycle].append(call)
        closed.add_done_callback(lambda _f, c=call: self._lost(c))

    def _lost(self, call: Call) -> None:
        if call.closed:
            return
        call.closed = True
        self.dropped += 1
        self._forget(call)

    def _forget(self, call: Call) -> None:
        for slots in (self.media_slots, self.chunk_slots):
            for s in slots:
                while call in s:
                    s.remove(call)
        if call in self.calls:
            self.calls.remove(call)

    async def ticker(self) -> None:
        """One timer for every peer: each ms, the calls whose 20 ms phase (media) or chunk phase (agent) is due."""
        t0 = self.loop.time()
        k = 0
        while self._running:
            k += 1
            target = t0 + k * 0.001
            delay = target - self.loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                if self.dump is not None and -delay > 0.002:
                    self.dump.append(("lag", time.monotonic(), -delay))
                if -delay > 0.02:  # hopelessly behind: skip ahead rather than burst
                    t0 = self.loop.time() - k * 0.001
                await asyncio.sleep(0)
            # How late this tick runs, every tick (the timer's own ~1 ms granularity included): a generator that
            # cannot keep its schedule shows here before it shows as the gateway's latency (bench/report.py).
            self.tick_lag.append(max(0.0, self.loop.time() - target))
            now = time.monotonic()
            for c in self.media_slots[k % 20]:
                c.send_media(now)
            for c in self.chunk_slots[k % self.chunk_cycle]:
                c.send_chunk(now)

    async def slices(self, pids: list[int | str], out: list[tuple[float, list[int]]]) -> None:
        """Every 100 ms until cancelled (the window's end): each gateway process's event-loop run time
        (:func:`busiest_share`). A gateway process gone mid-window ends the sampling (the step reports the
        slices before it; what ended the process shows in its own figures)."""
        while True:
            try:
                out.append((time.monotonic(), [thread_run_ns(p) for p in pids]))
            except OSError:
                return
            await asyncio.sleep(0.1)

    async def barge_ins(self, count: int, seconds: float) -> None:
        """The measurement window: ``seconds`` long, with ``count`` barge-ins spread over it (none: AudioSocket)."""
        if count == 0:
            await asyncio.sleep(seconds)
        for _ in range(count):
            await asyncio.sleep(seconds / max(1, count))
            # a call whose agent has sent audio (chunk_g), not awaiting a clear
            steady = [c for c in self.calls if c.pending_barge is None and c.chunk_g and not c.closed]
            if steady:
                random.choice(steady).barge_in()

    async def run(self) -> None:
        plan = self.plan
        server = await self.loop.create_server(lambda: WsServerConn(self._agent_open), "127.0.0.1", plan["agent_port"])
        print(json.dumps({"kind": "ready"}), flush=True)
        ticker = asyncio.create_task(self.ticker())
        gw_pid = plan["gateway_pid"]
        rss0 = procs_rss_mb(gw_pid)
        limit_ms = plan["p99_limit_ms"]
        # Several replicas: a fresh connection per webhook, so a keep-alive connection that a replica closed while
        # idle (server.header_timeout_s) is never reused mid-race.
        connector = aiohttp.TCPConnector(force_close=bool(plan.get("gateway_urls")))
        async with aiohttp.ClientSession(connector=connector) as http:
            for target in plan["steps"]:
                t_add = time.monotonic()
                while len(self.calls) < target:
                    await self.add_call(http)
                    if self.setup_failures > max(3, target // 20):
                        break
                add_s = time.monotonic() - t_add
                await asyncio.sleep(plan["warmup_s"])
                self.in_samples, self.out_samples, self.clear_samples = [], [], []
                self.tick_lag = []
                cpu0, own0, t0 = procs_cpu_s(gw_pid), proc_cpu_s(), time.monotonic()
                self.window_open = True
                slices: list[tuple[float, list[int]]] = []
                sampler = asyncio.create_task(self.slices(gw_pid if isinstance(gw_pid, list) else [gw_pid], slices))
                await self.barge_ins(int(plan["barge_ins_per_step"]), plan["window_s"])
                self.window_open = False
                sampler.cancel()
                await asyncio.wait([sampler])  # ended before its samples are read (a cancel of ours still propagates)
                t1 = time.monotonic()
                cpu1, own1 = procs_cpu_s(gw_pid), proc_cpu_s()
                n = len(self.calls)
                step = {
                    "kind": "step",
                    "calls": n,
                    "target": target,
                    "add_s": round(add_s, 2),
                    "window_s": round(t1 - t0, 2),
                    "in": percentiles(self.in_samples),
                    "out": percentiles(self.out_samples),
                    "clear": percentiles(self.clear_samples),
                    "gateway_cpu": (cpu1 - cpu0) / (t1 - t0),
                    "gateway_loop_100ms": busiest_share(slices),
                    "loadgen_cpu": (own1 - own0) / (t1 - t0),
                    "gateway_rss_mb": procs_rss_mb(gw_pid),
                    "gateway_rss0_mb": rss0,
                    "tick_lag_p99_ms": percentiles(self.tick_lag)["p99"] if self.tick_lag else 0.0,
                    "late_ticks": sum(1 for x in self.tick_lag if x > 0.002),
                    "dropped": self.dropped,
                    "setup_failures": self.setup_failures,
                    "unmapped": self.unmapped,
                    "unexpected_clears": self.unexpected_clears,
                    "barge_ins_without_clear": sum(
                        1 for c in self.calls if c.pending_barge is not None and t1 - c.pending_barge[1] > 1.0
                    ),
                }
                if self.carrier == "audiosocket":
                    step["out_paced"] = True  # bench.report.limited_p99: the outbound figure is the pacing queue
                if self.dump is not None:
                    step["dump"] = self.dump
                    self.dump = []
                print(json.dumps(step), flush=True)
                p99 = limited_p99(step)
                if p99 > limit_ms or step["gateway_cpu"] > plan["cpu_limit"] or n < target:
                    break
            self._running = False
            await ticker
            for c in list(self.calls):
                c.closed = True
                if c.tw is not None:
                    c.tw.send_text(
                        json.dumps(
                            {
                                "event": "stop",
                                "sequenceNumber": "9",
                                "streamSid": c.stream_sid,
                                "stop": {"accountSid": "AC" + "0" * 32, "callSid": c.call_sid},
                            }
                        )
                    )
            await asyncio.sleep(0.5)
            for c in list(self.calls):
                if c.tw is not None:
                    c.tw.close()
                if c.pbx is not None:
                    c.pbx.close()
        server.close()
        print(
            json.dumps({"kind": "done", "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}),
            flush=True,
        )


def percentiles(xs: list[float], scale: float = 1000.0) -> dict[str, float]:
    """p50/p90/p99/max (nearest rank) times ``scale``: seconds in, ms out by default."""
    if not xs:
        return {"n": 0, "p50": 0.0, "p90": 0.0, "p99": 0.0, "max": 0.0}
    s = sorted(xs)
    n = len(s)

    def at(q: float) -> float:
        return s[min(n - 1, int(q * n))] * scale

    return {"n": n, "p50": at(0.5), "p90": at(0.9), "p99": at(0.99), "max": s[-1] * scale}


async def _run(plan: dict[str, Any]) -> None:
    await LoadGen(plan).run()


def main() -> None:
    plan = json.loads(sys.argv[1])
    try:
        import uvloop  # the generator must stay far from its own limits: the cheapest loop there is
    except ImportError:
        asyncio.run(_run(plan))
    else:
        uvloop.run(_run(plan))


if __name__ == "__main__":
    main()

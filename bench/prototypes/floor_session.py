"""Bench-only prototype "floor" (scripts/bench --prototype floor): a stand-in for gateway/session.py whose
CallSession relays a Twilio call to the agent doing the least any gateway must do per message, and nothing else.
It measures the ceiling of the transport the real gateway runs on (aiohttp server for the carrier socket, aiohttp
client WebSocket on the process's shared ClientSession for the agent socket, uvloop), not a product.
docs/architecture/performance.md, "The floor: what a relay that does nothing costs".

Per message, and only this:

- carrier → agent: receive a text frame, parse it with the real Twilio fast-path decoder (msgspec,
  ``gateway.carriers.twilio._decode_media``), send one ``input.audio``. With ``agent_format = "pcmu"`` the caller's
  μ-law goes through unchanged (re-encoded into the agent JSON by the real ``input_audio`` template); with
  ``pcm24k`` nothing is transcoded: a precomputed ``input.audio`` of the size the real InboundAudio would produce
  for that frame (960 B of PCM, 950 B for the first) is sent instead, so message sizes and counts match the real run.
- agent → carrier: receive through the real ``AgentConnection`` (its msgspec ``reply.audio`` fast path), send
  ``media``. With ``pcmu`` the agent's bytes are cut into 160 B frames (as the real OutboundAudio passthrough does);
  with ``pcm24k`` nothing is resampled or encoded: a precomputed 160 B μ-law silence ``media``, as UTF-8 bytes, is
  sent as many times as the real OutboundAudio would hand out frames for that chunk, by the socket's own
  ``send_frame``: the send the gateway's message lane uses (``CarrierLink.text_sender``). That schedule (with the
  default FIR: one frame every other chunk of 10 ms; with soxr MQ: bursts of 3–4 frames every 6–8 chunks) is
  computed once per chunk size and ``audio.outbound_resample_quality`` from OutboundAudio on silence (frame counts
  depend on sizes only), so the load generator's frame mapping, which uses the same converters, stays exact.
- ``reply.done`` ``interrupted``: send ``clear`` and restart the frame schedule (the real gateway resets its
  OutboundAudio there), so the barge-in measure works. ``stop``: end the agent session (``session.end``) and close.

``--prototype floor-transcode`` is the same relay doing the real audio work per message: the caller's frames through
the real ``InboundAudio`` into ``input.audio``, the agent's chunks through the real ``OutboundAudio``'s compiled message
lane (``FusedFirMessages.message``: a lone frame comes out as its whole ``media`` message, sent as the gateway's lane
sends it; several frames go through ``build_media``), reset at a barge-in. It measures what the gateway would cost
with no session logic at all between the sockets.

Not done (what the real session adds): transcoding and resampling, playout pacing and marks (the real gateway sends
one mark per second of audio, ≈ 2 more messages per call-second with its echo), queues, backpressure, resume,
tools, DTMF, prompts, per-call metrics and logs beyond one line. Per call it still verifies the stream's token and
takes its admission slot. Twilio only.
"""

from __future__ import annotations

import asyncio
import binascii
import functools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import structlog
from aiohttp import WSMsgType, web

from gateway.agent import protocol as ap
from gateway.agent.client import AgentClosed, AgentConnection, AgentEndpoint
from gateway.audio.transcode import InboundAudio, OutboundAudio, agent_format_spec
from gateway.carriers.base import Dialect
from gateway.carriers.events import StreamConnected, StreamStarted
from gateway.carriers.registry import TwilioDialect
from gateway.carriers.twilio import _decode_media
from gateway.config import Settings
from gateway.errors import CallEnded, CarrierProtocolError
from gateway.outbound import token_subject
from gateway.security import TokenError, verify_call_token

__all__ = ["CallSession", "CallSummary", "PROMPT_ECHO_SLACK_S", "inbound_sizes", "outbound_schedule"]

#: gateway.drain imports this from gateway.session; same value as the real module's.
PROMPT_ECHO_SLACK_S = 2.0
FRAME_BYTES = 160  # one 20 ms frame of 8 kHz μ-law
#: Frames the load generator maps (bench/loadgen.py ``table_frames``); the outbound schedule covers at least these.
SCHEDULE_FRAMES = 40000

log = structlog.get_logger("gateway.call")


def _variant() -> dict[str, Any]:
    """The prototype's variant (scripts/bench writes floor_variant.json next to this file in the prototype tree)."""
    path = Path(__file__).with_name("floor_variant.json")
    return json.loads(path.read_text()) if path.exists() else {}


#: floor-transcode: the real conversions instead of canned messages of their sizes.
TRANSCODE = bool(_variant().get("transcode"))


@dataclass
class CallSummary:
    """The fields of gateway.session.CallSummary (metrics and the registry read them); the floor fills a few."""

    call_sid: str = ""
    stream_sid: str = ""
    session_id: str = ""
    profile: str = ""
    outcome: str = ""
    hung_up_by: str = ""
    duration_s: float = 0.0
    turns: int = 0
    replies: int = 0
    interruptions: int = 0
    tool_calls: int = 0
    frames_in: int = 0
    frames_to_agent: int = 0
    frames_dropped_to_agent: int = 0
    frames_dropped_rate_limit: int = 0
    frames_out: int = 0
    media_faults: dict[str, int] = field(default_factory=dict)
    agent_resumes: int = 0
    resume_gaps_ms: list[float] = field(default_factory=list)
    prompt: str = ""
    time_to_first_agent_audio_ms: float | None = None
    response_latencies_ms: list[float] = field(default_factory=list)
    clear_latencies_ms: list[float] = field(default_factory=list)
    mark_round_trips_ms: list[float] = field(default_factory=list)
    stale_mark_echoes: int = 0
    agent_close_code: int | None = None
    error: str = ""

    def log_fields(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "duration_s": round(self.duration_s, 3),
            "frames_in": self.frames_in,
            "frames_out": self.frames_out,
            "interruptions": self.interruptions,
            "floor": True,
        }


# ---- precomputed once per process: what the real converters would send, by size only ---------------------------
_INBOUND: dict[tuple[str, str], list[int]] = {}
_OUTBOUND: dict[tuple[str, str, int], list[int]] = {}


def inbound_sizes(agent_format: str, quality: str, frames: int = 50) -> list[int]:
    """Bytes the real InboundAudio hands the agent for each of the first ``frames`` 160 B μ-law frames (the last
    value holds from there on: the resampler is in steady state after the first frame)."""
    key = (agent_format, quality)
    if key not in _INBOUND:
        conv = InboundAudio("audio/pcmu", 8000, agent_format, quality)
        _INBOUND[key] = [len(conv.convert(b"\xff" * FRAME_BYTES)) for _ in range(frames)]
    return _INBOUND[key]


def outbound_schedule(agent_format: str, quality: str, chunk_bytes: int) -> list[int]:
    """Frames the real OutboundAudio hands out for each agent chunk of ``chunk_bytes`` (0-based chunk index), from
    the start of a reply stream, for at least ``SCHEDULE_FRAMES`` frames. Extended by :func:`_frames_for`."""
    key = (agent_format, quality, chunk_bytes)
    sched = _OUTBOUND.get(key)
    if sched is None:
        conv = OutboundAudio(agent_format, "audio/pcmu", 8000, FRAME_BYTES, quality)
        chunk = bytes(chunk_bytes)
        sched, total = [], 0
        while total < SCHEDULE_FRAMES:
            n = len(conv.convert(chunk))
            sched.append(n)
            total += n
        _OUTBOUND[key] = sched
    return sched


def _frames_for(sched: list[int], i: int) -> int:
    # Past the precomputed schedule (a call longer than the generator maps): repeat its last second.
    return sched[i] if i < len(sched) else sched[len(sched) - 100 + (i - len(sched)) % 100]


class CallSession:
    """Same constructor and public surface as gateway.session.CallSession (gateway/app.py builds it)."""

    def __init__(
        self,
        *,
        ws: web.WebSocketResponse,
        settings: Settings,
        endpoint: AgentEndpoint,
        tools: Any,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        on_summary: Callable[[CallSummary], None] | None = None,
        on_event: Callable[[Any], None] | None = None,
        admit: Callable[[str, str], str | None] | None = None,
        resume_window_s: float | None = None,
        dialect: Dialect | None = None,
        call_control: Any = None,
        parked: Any = None,
        stream_stopping: Callable[[str], bool] | None = None,
        token_scope: str | None = None,
        on_accept: Callable[[Any, Any], None] | None = None,  # call records' taps: the floor records nothing
        warm: Any = None,  # warm transfers: not part of the floor
        shared_admit: Any = None,  # the cluster's half of admission: the floor runs one process
        carrier: Any = None,  # a non-WebSocket carrier transport (AudioSocket): the floor serves WebSockets only
    ) -> None:
        self._ws = ws
        self._settings = settings
        self._endpoint = endpoint
        self._clock = clock
        self._wall = wall_clock
        self._on_summary = on_summary
        self._admit = admit
        self.dialect: Dialect = dialect if dialect is not None else TwilioDialect()
        self._token_scope = token_scope or self.dialect.carrier
        self.summary = CallSummary()
        self.started = False
        self._agent: AgentConnection | None = None
        self._agent_ended = False
        self._started_at = clock()
        self._end_task: asyncio.Task[Any] | None = None

    async def run(self) -> CallSummary:
        outcome = "carrier_closed"
        try:
            if self.dialect.carrier != "twilio":
                raise CallEnded("floor_twilio_only")
            start = await self._await_start()
            self._authorize(start)
            self.started = True
            agent = await self._open_agent()
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self.carrier_loop(agent), name="floor_carrier")
                tg.create_task(self.agent_loop(agent), name="floor_agent")
        except* CallEnded as eg:
            outcome = eg.exceptions[0].reason
        except* Exception as eg:
            outcome = "internal_error"
            self.summary.error = repr(eg.exceptions[0])
            log.error("call.internal_error", exc_info=eg.exceptions[0])
        finally:
            await asyncio.shield(self._teardown(outcome))
        return self.summary

    async def shutdown(self) -> None:
        """The process shuts down now: close the carrier socket (gateway/app.py ``_close_calls``)."""
        if not self._ws.closed:
            await self._ws.close(code=1001, message=b"server shutdown")

    def machine_detected(self, answered_by: str) -> None:
        """Answering-machine detection is not part of the floor."""

    def request_end(self, reason: str = "drained") -> None:
        """Drain: close the carrier socket; the carrier loop sees the close and the call tears down."""
        if self._end_task is None and not self._ws.closed:
            self._end_task = asyncio.get_running_loop().create_task(self._ws.close(code=1001, message=b"drained"))

    # ---- per call ----------------------------------------------------------------------------------------------
    async def _receive_text(self) -> str:
        msg = await self._ws.receive()
        if msg.type is WSMsgType.TEXT:
            return msg.data
        raise CallEnded("carrier_closed")

    async def _await_start(self) -> StreamStarted:
        async with asyncio.timeout(self._settings.server.start_timeout_s):
            while True:
                for ev in self.dialect.parse(await self._receive_text()):
                    if isinstance(ev, StreamStarted):
                        return ev
                    if not isinstance(ev, StreamConnected):
                        raise CarrierProtocolError(f"{type(ev).__name__} before start")

    def _authorize(self, start: StreamStarted) -> None:
        s = self.summary
        s.call_sid, s.stream_sid = start.call_id, start.stream_id
        token = start.custom_parameters.get("token")
        try:
            verify_call_token(
                self._settings.secrets.token_secret,
                token,
                token_subject(
                    start.custom_parameters,
                    start.call_id,
                    self._settings.profile_for(start.custom_parameters.get("to", ""))[0],
                ),
                self._wall(),
                scope=self._token_scope,
            )
        except TokenError:
            raise CallEnded("refused") from None
        refusal = self._admit(start.call_id, token or "") if self._admit is not None else None
        if refusal is not None:
            raise CallEnded(refusal)

    async def _open_agent(self) -> AgentConnection:
        cfg = self._settings.agent
        fmt = agent_format_spec(self._settings.audio.agent_format)
        agent = self._agent = await AgentConnection.open(self._endpoint, timeout=cfg.connect_timeout_s)
        await agent.send(ap.session_update({"input": {"format": fmt}, "output": {"format": fmt}}))
        async with asyncio.timeout(cfg.ready_timeout_s):
            while True:
                ev = await agent.recv()
                if isinstance(ev, ap.SessionReady):
                    self.summary.session_id = ev.session_id
                    return agent

    async def _teardown(self, outcome: str) -> None:
        s = self.summary
        s.outcome = outcome
        agent = self._agent
        if agent is not None:
            if self._agent_ended:
                await agent.end(0)
            else:
                self._agent_ended = await agent.end(self._settings.agent.end_timeout_s)
            s.agent_close_code = agent.close_code
        if not self._ws.closed:
            try:
                async with asyncio.timeout(2):
                    await self._ws.close(code=1000)
            except (TimeoutError, ConnectionError):
                pass
        s.duration_s = self._clock() - self._started_at
        log.info("call.ended", **s.log_fields())
        if self._on_summary is not None:
            self._on_summary(s)

    # ---- per message -------------------------------------------------------------------------------------------
    async def carrier_loop(self, agent: AgentConnection) -> None:
        audio = self._settings.audio
        passthrough = audio.agent_format != "pcm24k"
        sizes = inbound_sizes(audio.agent_format, audio.inbound_resample_quality)
        # pcm24k: the input.audio messages the real gateway would send, built once (content: silence).
        canned = [ap.input_audio(bytes(n)) if n else None for n in sizes]
        steady = canned[-1]
        # floor-transcode only (the plain floor keeps no per-call audio state, as before)
        inbound = (
            InboundAudio("audio/pcmu", 8000, audio.agent_format, audio.inbound_resample_quality) if TRANSCODE else None
        )
        send, receive = agent.send, self._ws.receive
        s = self.summary
        n = 0
        while True:
            msg = await receive()
            if msg.type is not WSMsgType.TEXT:
                raise CallEnded("carrier_closed")
            try:
                m = _decode_media(msg.data)
            except msgspec.DecodeError:
                raise CarrierProtocolError("not JSON") from None
            media = m.media
            if media is not None and m.event == "media":
                if passthrough:
                    text: str | None = ap.input_audio(media.payload)
                elif inbound is not None:
                    pcm = inbound.convert(media.payload)
                    text = ap.input_audio(pcm) if pcm else None
                else:
                    text = canned[n] if n < len(canned) else steady
                n += 1
                if text is not None:
                    try:
                        await send(text)
                    except AgentClosed:
                        raise CallEnded("agent_closed") from None
                continue
            if m.event == "stop":
                s.frames_in = n
                raise CallEnded("caller_hangup")
            # connected, mark echoes (none: the floor sends no marks), dtmf: nothing to do

    async def agent_loop(self, agent: AgentConnection) -> None:
        audio = self._settings.audio
        passthrough = audio.agent_format != "pcm24k"
        stream = getattr(self.dialect, "stream", None)
        sid = self.summary.stream_sid
        media_msg = b'{"event":"media","streamSid":"%s","media":{"payload":"%s"}}' % (
            sid.encode(),
            binascii.b2a_base64(b"\xff" * FRAME_BYTES, newline=False),
        )
        build_media = stream.build_media if stream is not None else self.dialect.build_media
        send = self._ws.send_str
        # A media message already encoded as UTF-8: the socket's own send, as the gateway's lane sends it.
        send_text = functools.partial(self._ws.send_frame, opcode=WSMsgType.TEXT)
        recv = agent.recv
        ReplyAudio, ReplyDone, SessionEnded = ap.ReplyAudio, ap.ReplyDone, ap.SessionEnded
        sched: list[int] | None = None
        chunk_i = 0  # chunks of the current reply stream (restarts at a barge-in, like OutboundAudio.reset)
        buf = bytearray()
        frames_out = 0
        outbound = (
            OutboundAudio(audio.agent_format, "audio/pcmu", 8000, FRAME_BYTES, audio.outbound_resample_quality)
            if TRANSCODE
            else None
        )
        convert: Callable[[bytes], bytes | list[bytes]] | None = None
        if outbound is not None:
            # floor-transcode: the gateway's compiled message lane when this pair has one (the default FIR), as
            # CallCore.message_lane gives it (from the Twilio stream's template); else the plain converter's frames.
            parts = stream.media_template() if stream is not None else None
            lane = outbound.messages(*parts) if parts is not None else None
            convert = lane.message if lane is not None else outbound.convert
        try:
            while True:
                try:
                    ev = await recv()
                except AgentClosed:
                    raise CallEnded("agent_closed") from None
                if type(ev) is ReplyAudio:
                    if passthrough:
                        buf += ev.data
                        while len(buf) >= FRAME_BYTES:
                            frame = bytes(buf[:FRAME_BYTES])
                            del buf[:FRAME_BYTES]
                            await send(build_media(frame))
                            frames_out += 1
                        continue
                    if convert is not None:
                        out = convert(ev.data)
                        if type(out) is bytes:  # the lane's lone frame, as its whole media message
                            await send_text(out)
                            frames_out += 1
                            continue
                        for frame in out:
                            await send(build_media(frame))
                            frames_out += 1
                        continue
                    if sched is None:
                        sched = outbound_schedule(audio.agent_format, audio.outbound_resample_quality, len(ev.data))
                    k = _frames_for(sched, chunk_i)
                    chunk_i += 1
                    for _ in range(k):
                        await send_text(media_msg)
                    frames_out += k
                elif type(ev) is ReplyDone:
                    if ev.status == "interrupted":
                        chunk_i = 0
                        buf.clear()
                        if outbound is not None:
                            outbound.reset()
                        await send(self.dialect.build_clear())
                        self.summary.interruptions += 1
                elif type(ev) is SessionEnded:
                    self._agent_ended = True
                    raise CallEnded("agent_ended")
        except ConnectionError:
            raise CallEnded("carrier_closed") from None
        finally:
            self.summary.frames_out = frames_out

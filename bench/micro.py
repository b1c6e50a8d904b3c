"""Micro-benchmarks of the media path's pure functions, per 20 ms frame, fast path against the plain reference.

In:  parse a Twilio ``media`` message → transcode μ-law 8 kHz to PCM16 24 kHz → build ``input.audio``.
Out: parse the ``reply.audio`` messages of 20 ms (two of 10 ms by default) → transcode → whole 160-byte frames →
     build Twilio ``media``.
With ``agent_format`` pcmu/pcma the transcode steps are G.711 passthrough (and the agent's chunks 37.5 ms of μ-law).
Every figure is the median over rounds of the mean per frame over the speech-like corpus (tests/support/
media_corpus.py, the frames the equivalence test checks), with the garbage collector off while timing.
"""

from __future__ import annotations

import base64
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gateway.agent import protocol as ap
from gateway.audio import g711
from gateway.audio.transcode import InboundAudio, OutboundAudio
from gateway.carriers.twilio import TwilioStream
from tests.support.media_corpus import (
    REPLY_ID,
    STREAM_SID,
    agent_pcm24k,
    caller_ulaw8k,
    reply_audio_messages,
    twilio_media_messages,
)
from tests.support.plain_media_path import PlainInbound, PlainOutbound, plain_build_media, plain_input_audio

__all__ = ["Corpus", "MicroResult", "corpus", "run_micro"]


@dataclass
class Corpus:
    media: list[str]  # Twilio media messages, one per 20 ms frame
    replies: list[str]  # reply.audio messages, chunk_ms each
    chunk_ms: float
    agent_format: str = "pcm24k"


def corpus(seconds: float = 2.0, chunk_ms: float = 10, agent_format: str = "pcm24k") -> Corpus:
    media = twilio_media_messages(caller_ulaw8k(seconds))
    if agent_format == "pcm24k":
        return Corpus(media, reply_audio_messages(agent_pcm24k(seconds), chunk_ms), chunk_ms, agent_format)
    # G.711 passthrough: the agent speaks 8 kHz G.711 itself (the live service: 37.5 ms / 300 B chunks of μ-law)
    law = caller_ulaw8k(seconds, seed=11)
    if agent_format == "pcma":
        law = g711.pcm16_to_alaw(g711.ulaw_to_pcm16(law))
    step = round(8 * chunk_ms)
    replies = [
        json.dumps(
            {
                "type": "reply.audio",
                "reply_id": REPLY_ID,
                "data": base64.b64encode(law[pos : pos + step]).decode("ascii"),
                "timestamp": 1790210425.0 + pos,
            }
        )
        for pos in range(0, len(law), step)
    ]
    return Corpus(media, replies, chunk_ms, agent_format)


@dataclass
class MicroResult:
    """µs per 20 ms frame: medians, and the (min, max) over rounds."""

    median: dict[str, float] = field(default_factory=dict)
    spread: dict[str, tuple[float, float]] = field(default_factory=dict)


def _started() -> TwilioStream:
    t = TwilioStream()
    t.parse(
        '{"event":"start","streamSid":"%s","start":{"streamSid":"%s","callSid":"CA%s","mediaFormat":'
        '{"encoding":"audio/x-mulaw","sampleRate":8000,"channels":1}}}' % (STREAM_SID, STREAM_SID, "0" * 32)
    )
    return t


def _time_per_frame(fn: Callable[[], int], rounds: int) -> list[float]:
    """Run ``fn`` (which processes some frames and returns how many) ``rounds`` times; µs per frame each round."""
    t_end = time.perf_counter() + 0.05
    while time.perf_counter() < t_end:  # warm-up: caches, branch predictors, the CPU's clock
        fn()
    out = []
    gc.disable()
    try:
        for _ in range(rounds):
            t0 = time.perf_counter_ns()
            frames = fn()
            out.append((time.perf_counter_ns() - t0) / 1000 / frames)
    finally:
        gc.enable()
    return out


def _paths(c: Corpus, in_quality: str, out_quality: str) -> dict[str, Callable[[], int]]:
    per_frame = 20 / c.chunk_ms  # reply.audio messages per 20 ms frame (2 at 10 ms, 0.53 at 37.5 ms)
    n_frames_out = max(1, round(len(c.replies) / per_frame))
    fmt = c.agent_format
    twilio = _started()
    sid = STREAM_SID
    media, replies = c.media, c.replies
    payloads = [twilio.parse(m).payload for m in media]
    chunks = [ap.parse_server_event(r).data for r in replies]
    inbound = InboundAudio("audio/pcmu", 8000, fmt, in_quality)
    outbound = OutboundAudio(fmt, "audio/pcmu", 8000, 160, out_quality)
    p_in = PlainInbound("audio/pcmu", 8000, fmt, in_quality)
    p_out = PlainOutbound(fmt, "audio/pcmu", 8000, 160, out_quality)
    pcm_frames = [inbound.convert(p) for p in payloads]
    ulaw_frames = [f for ch in chunks for f in outbound.convert(ch)] or [b"\xff" * 160]

    def fast_in() -> int:
        # The gateway's road: whole frames' payload without an event (Dialect.audio_frame), else the parse.
        frame_of, parse, convert, build = twilio.audio_frame, twilio.parse, inbound.convert, ap.input_audio
        for m in media:
            payload = frame_of(m)
            build(convert(payload if payload is not None else parse(m).payload))
        return len(media)

    def plain_in() -> int:
        parse, convert = twilio.parse_plain, p_in.convert
        for m in media:
            plain_input_audio(convert(parse(m).payload))
        return len(media)

    # The gateway's road on Twilio: the compiled message lane when the pair has it (a lone frame comes out as its
    # whole media message), else the frames and build_media (gateway/call/shell/carrier.py, steady_lane).
    template = twilio.media_template()
    lane = OutboundAudio(fmt, "audio/pcmu", 8000, 160, out_quality).messages(*template) if template else None

    def fast_out() -> int:
        parse, build = ap.parse_server_event, twilio.build_media
        if lane is None:
            for r in replies:
                for f in outbound.convert(parse(r).data):
                    build(f)
            return n_frames_out
        message = lane.message
        for r in replies:
            out = message(parse(r).data)
            if type(out) is not bytes:
                for f in out:
                    build(f)
        return n_frames_out

    def plain_out() -> int:
        parse, convert = ap.parse_server_event_plain, p_out.convert
        for r in replies:
            for f in convert(parse(r).data):
                plain_build_media(sid, f)
        return n_frames_out

    def each(fn: Callable[[Any], Any], items: list[Any], per: float = 1.0) -> Callable[[], int]:
        def run() -> int:
            for x in items:
                fn(x)
            return max(1, round(len(items) / per))

        return run

    def np_round_trip() -> int:
        for p in pcm_frames:
            np.frombuffer(p, dtype=np.int16).tobytes()
        return len(pcm_frames)

    return {
        "in": fast_in,
        "out": fast_out,
        "in_plain": plain_in,
        "out_plain": plain_out,
        "in.parse_media": each(twilio.parse, media),
        "in.audio_frame": each(twilio.audio_frame, media),
        "in.parse_media_plain": each(twilio.parse_plain, media),
        "in.transcode": each(inbound.convert, payloads),
        "in.build_input_audio": each(ap.input_audio, pcm_frames),
        "in.build_input_audio_plain": each(plain_input_audio, pcm_frames),
        "out.parse_reply_audio": each(ap.parse_server_event, replies, per_frame),
        "out.parse_reply_audio_plain": each(ap.parse_server_event_plain, replies, per_frame),
        "out.transcode": each(outbound.convert, chunks, per_frame),
        **({"out.message_lane": each(lane.message, chunks, per_frame)} if lane is not None else {}),
        "out.transcode_plain": each(p_out.convert, chunks, per_frame),
        "out.build_media": each(twilio.build_media, ulaw_frames),
        "out.build_media_plain": each(lambda f: plain_build_media(sid, f), ulaw_frames),
        "numpy.frombuffer_tobytes": np_round_trip,
    }


def run_micro(c: Corpus, rounds: int = 15, in_quality: str = "FIR", out_quality: str = "FIR") -> MicroResult:
    res = MicroResult()
    for name, fn in _paths(c, in_quality, out_quality).items():
        xs = _time_per_frame(fn, rounds)
        res.median[name] = statistics.median(xs)
        res.spread[name] = (min(xs), max(xs))
    return res


def main() -> None:
    """``python -m bench.micro [PLAN_JSON]``: a table, or with a plan (what scripts/bench passes, to run this on the
    gateway's core at the bench's priority) one JSON line with the micro-benchmarks and the resampler study."""
    import json
    import sys

    from bench.resampling import study

    if len(sys.argv) < 2:
        r = run_micro(corpus())
        for k, v in r.median.items():
            print(f"{k:32s} {v:7.2f} µs  ({r.spread[k][0]:.2f}–{r.spread[k][1]:.2f})")
        return
    plan = json.loads(sys.argv[1])
    c = corpus(2.0, plan["chunk_ms"], plan.get("agent_format", "pcm24k"))
    r = run_micro(c, plan["rounds"], plan["in_quality"], plan["out_quality"])
    # The resampler study is about the pcm24k path (passthrough has no resampler): at its own agent chunking.
    rows = study(out_chunk_ms=max(20, round(plan["chunk_ms"])) if c.agent_format == "pcm24k" else 20)
    print(json.dumps({"micro": {"median": r.median, "spread": r.spread}, "resample": [x.as_dict() for x in rows]}))


if __name__ == "__main__":  # pragma: no cover
    main()

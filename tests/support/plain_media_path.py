"""The media path written the plain way: stdlib ``json`` and ``base64``, no templates, no coalescing, one
transcode per message. It is the reference the fast path in gateway/ must match byte for byte
(tests/unit/test_fastpath_equivalence.py) and the "plain" column of scripts/bench.

The plain parsers live in gateway/ itself (``TwilioStream.parse_plain``, ``protocol.parse_server_event_plain``):
they are the fast parsers' fallback for everything but the hot message.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable

from gateway.audio import g711
from gateway.audio.framing import Reframer
from gateway.audio.resample import FIR, FIR_RATES, FirResampler, StreamResampler, make_resampler

__all__ = ["PlainInbound", "PlainOutbound", "plain_build_media", "plain_input_audio"]

_DECODE: dict[str, Callable[[bytes], bytes]] = {"audio/pcmu": g711.ulaw_to_pcm16, "audio/pcma": g711.alaw_to_pcm16}
_ENCODE: dict[str, Callable[[bytes], bytes]] = {"audio/pcmu": g711.pcm16_to_ulaw, "audio/pcma": g711.pcm16_to_alaw}
_SILENCE = {"audio/pcmu": g711.ULAW_SILENCE, "audio/pcma": g711.ALAW_SILENCE, "audio/pcm": 0}
_AGENT = {"pcm24k": ("audio/pcm", 24000), "pcmu": ("audio/pcmu", 8000), "pcma": ("audio/pcma", 8000)}


def _resampler(in_rate: int, out_rate: int, quality: str) -> FirResampler | StreamResampler:
    """The numpy FIR for "FIR" (the gateway uses the compiled one: the two must agree byte for byte), else soxr."""
    if quality == FIR and (in_rate, out_rate) in FIR_RATES:
        return FirResampler(in_rate, out_rate)
    return make_resampler(in_rate, out_rate, quality)  # type: ignore[return-value]  # not FIR: soxr


class PlainInbound:
    """Caller → agent, one message at a time: decode G.711, resample, encode if the agent wants G.711."""

    def __init__(self, carrier_encoding: str, carrier_rate: int, agent_format: str, quality: str) -> None:
        enc, rate = _AGENT[agent_format]
        self.passthrough = enc == carrier_encoding and rate == carrier_rate
        self.decode = None if carrier_encoding == "audio/pcm" else _DECODE[carrier_encoding]
        self.encode = None if enc == "audio/pcm" else _ENCODE[enc]
        self.resampler = None if carrier_rate == rate else _resampler(carrier_rate, rate, quality)

    def convert(self, payload: bytes) -> bytes:
        if self.passthrough:
            return payload
        pcm = self.decode(payload) if self.decode else payload
        if self.resampler is not None:
            pcm = self.resampler.process(pcm)
        return self.encode(pcm) if self.encode else pcm


class PlainOutbound:
    """Agent → caller, one message at a time: transcode every chunk as it comes, then cut whole frames."""

    def __init__(
        self, agent_format: str, carrier_encoding: str, carrier_rate: int, frame_bytes: int, quality: str
    ) -> None:
        enc, rate = _AGENT[agent_format]
        self.passthrough = enc == carrier_encoding and rate == carrier_rate
        self.decode = None if enc == "audio/pcm" else _DECODE[enc]
        self.encode = None if carrier_encoding == "audio/pcm" else _ENCODE[carrier_encoding]
        self.resampler = None if rate == carrier_rate else _resampler(rate, carrier_rate, quality)
        self.framer = Reframer(frame_bytes)
        self.pad = _SILENCE[carrier_encoding]

    def convert(self, data: bytes) -> list[bytes]:
        if not self.passthrough:
            pcm = self.decode(data) if self.decode else data
            if self.resampler is not None:
                pcm = self.resampler.process(pcm)
            data = self.encode(pcm) if self.encode else pcm
        return self.framer.push(data)

    def flush(self) -> list[bytes]:
        frames: list[bytes] = []
        if self.resampler is not None:
            tail = self.resampler.flush()
            if tail:
                frames = self.framer.push(self.encode(tail) if self.encode else tail)
        return frames + self.framer.flush(self.pad)

    def reset(self) -> None:
        if self.resampler is not None:
            self.resampler.reset()
        self.framer.clear()


def plain_input_audio(audio: bytes) -> str:
    return json.dumps({"type": "input.audio", "audio": base64.b64encode(audio).decode("ascii")}, separators=(",", ":"))


def plain_build_media(stream_sid: str, payload: bytes) -> str:
    return json.dumps(
        {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(payload).decode("ascii")}},
        separators=(",", ":"),
    )

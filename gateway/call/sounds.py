"""The gateway's own sounds (bundled prompts, keypad tones) as whole 20 ms frames in the stream's format. Pure."""

from __future__ import annotations

from ..audio import dtmf
from ..audio.transcode import OutboundAudio
from ..carriers.events import StreamStarted

__all__ = ["prompt_frames", "tone_frames"]


def prompt_frames(ulaw: bytes, stream: StreamStarted, frame_bytes: int) -> list[bytes]:
    """A bundled prompt (8 kHz μ-law, gateway.prompts) as frames in the stream's own encoding and rate."""
    if (stream.encoding, stream.sample_rate) == ("audio/pcmu", 8000):
        return [ulaw[i : i + frame_bytes] for i in range(0, len(ulaw), frame_bytes)]
    conv = OutboundAudio("pcmu", stream.encoding, stream.sample_rate, frame_bytes, "MQ")
    return conv.convert(ulaw) + conv.flush()


def tone_frames(digits: str, stream: StreamStarted, frame_bytes: int) -> list[bytes]:
    """``send_dtmf``'s keypad tones (100 ms each, 100 ms apart). Raises ValueError for a digit it cannot play."""
    return dtmf.tones_for_carrier(digits, stream.encoding, stream.sample_rate, frame_bytes)

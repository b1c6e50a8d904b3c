"""The local agent's audio at its two edges: the client's ``input.format`` to 16 kHz for the VAD and STT, and the
TTS's 24 kHz PCM16 to ``reply.audio`` chunks in the ``output.format``. Pure (thin wrappers over
:mod:`gateway.audio`): bytes in, bytes out, no clock.

Reply chunk sizes copy the live service: 10 ms / 480 B of PCM, 37.5 ms / 300 B of G.711
(docs/reference/local-agent-api.md#implemented), unless ``reply_chunk_ms`` says otherwise.
"""

from __future__ import annotations

import numpy as np

from gateway.audio.framing import Reframer
from gateway.audio.g711 import (
    ALAW_SILENCE,
    ULAW_SILENCE,
    alaw_to_pcm16,
    pcm16_to_alaw,
    pcm16_to_ulaw,
    ulaw_to_pcm16,
)
from gateway.audio.resample import StreamResampler

from .protocol import AudioFormat
from .turns import SAMPLE_RATE as VAD_RATE

__all__ = ["TTS_RATE", "VAD_RATE", "InputDecoder", "OutputEncoder", "apply_volume", "audible"]

TTS_RATE = 24000  # Synthesizer.SAMPLE_RATE: PCM16 out of the speech stack


class InputDecoder:
    """Client audio in its ``input.format`` → 16 kHz PCM16 for the VAD and STT."""

    def __init__(self, fmt: AudioFormat) -> None:
        self.format = fmt
        self._resampler = StreamResampler(fmt.sample_rate, VAD_RATE)

    def decode(self, data: bytes) -> bytes:
        if self.format.encoding == "audio/pcmu":
            data = ulaw_to_pcm16(data)
        elif self.format.encoding == "audio/pcma":
            data = alaw_to_pcm16(data)
        return self._resampler.process(data)


class OutputEncoder:
    """24 kHz PCM16 from the TTS → fixed-size ``reply.audio`` chunks in the session's ``output.format``."""

    def __init__(self, fmt: AudioFormat, chunk_ms: float | None) -> None:
        self.rate = fmt.sample_rate
        self.encoding = fmt.encoding
        pcm = fmt.encoding == "audio/pcm"
        ms = chunk_ms if chunk_ms is not None else (10.0 if pcm else 37.5)
        self.bytes_per_sample = 2 if pcm else 1
        samples = max(1, round(self.rate * ms / 1000))
        self.chunk_s = samples / self.rate
        self._pad = 0 if pcm else (ULAW_SILENCE if fmt.encoding == "audio/pcmu" else ALAW_SILENCE)
        self._framer = Reframer(samples * self.bytes_per_sample)
        self._resampler = StreamResampler(TTS_RATE, self.rate) if self.rate != TTS_RATE else None

    def _encode(self, pcm16: bytes) -> bytes:
        if self.encoding == "audio/pcmu":
            return pcm16_to_ulaw(pcm16)
        if self.encoding == "audio/pcma":
            return pcm16_to_alaw(pcm16)
        return pcm16

    def push(self, pcm24k: bytes) -> tuple[list[bytes], float]:
        """Frames ready to send, and the duration (s) of audio this input added to the reply."""
        pcm = self._resampler.process(pcm24k) if self._resampler else pcm24k
        data = self._encode(pcm)
        return self._framer.push(data), len(data) / self.bytes_per_sample / self.rate

    def flush(self) -> list[bytes]:
        tail = self._encode(self._resampler.flush()) if self._resampler else b""
        return self._framer.push(tail) + self._framer.flush(self._pad)


def apply_volume(pcm: bytes, volume: float | None) -> bytes:
    """``output.volume`` (0–100) applied to PCM16; ``None`` or 100 leaves it as is."""
    if volume is None or volume >= 100:
        return pcm
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float32) * (volume / 100.0)
    return x.astype("<i2").tobytes()


def audible(frame: bytes, encoding: str, threshold: int = 300) -> bool:
    """A chunk with any sample above ``threshold`` (about -40 dBFS): used for the first-audio latency figure."""
    if encoding == "audio/pcm":
        pcm = frame
    elif encoding == "audio/pcmu":
        pcm = ulaw_to_pcm16(frame)
    else:
        pcm = alaw_to_pcm16(frame)
    return bool(pcm) and int(np.abs(np.frombuffer(pcm, dtype="<i2")).max()) > threshold

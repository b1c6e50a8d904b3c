#!/usr/bin/env python
"""Regenerate the gateway's bundled prompts (gateway/assets/*.ulaw) with the local agent's TTS.

Usage: .venv/bin/python scripts/make_prompts.py   (needs the 'speech' extra; takes a few seconds)

Each prompt is synthesized deterministically (no sampling noise, so a re-run gives the same bytes), resampled
24 kHz -> 8 kHz with soxr HQ, encoded to G.711 μ-law, given 100 ms of silence at each end and padded to a whole
number of 20 ms frames. The files are raw μ-law (no header): exactly what Twilio plays.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.audio import g711
from gateway.audio.resample import StreamResampler
from gateway.prompts import PROMPT_TEXTS, prompt_path

FRAME = 160  # 20 ms of 8 kHz μ-law
EDGE = bytes([g711.ULAW_SILENCE]) * 800  # 100 ms


def render(tts: object, text: str) -> bytes:
    pcm24 = b"".join(pcm for _sentence, pcm in tts.synthesize(text, noise_scale=0.0, noise_w_scale=0.0))  # type: ignore[attr-defined]
    pcm8 = StreamResampler(24000, 8000, "HQ").process(pcm24, last=True)
    ulaw = EDGE + g711.pcm16_to_ulaw(pcm8) + EDGE
    pad = (-len(ulaw)) % FRAME
    return ulaw + bytes([g711.ULAW_SILENCE]) * pad


def main() -> int:
    from gateway.local_agent.speech import SpeechModels

    tts = SpeechModels.load().tts
    for name, text in PROMPT_TEXTS.items():
        data = render(tts, text)
        path = prompt_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(
            f"{path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}: "
            f"{len(data)} bytes, {len(data) / 8000:.2f} s  <- {text!r}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

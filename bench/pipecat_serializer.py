"""Times pipecat-ai's TwilioFrameSerializer on the bench's frames. Runs in its own venv (artifacts/pipecat-venv,
made by ``scripts/bench --compare pipecat``), never in the gateway's: pipecat is a contrast, not a dependency.

    artifacts/pipecat-venv/bin/python bench/pipecat_serializer.py artifacts/bench/corpus.json

in:  ``deserialize(media JSON)`` → InputAudioRawFrame at 24 kHz (JSON, base64, μ-law decode, resample 8 → 24 kHz);
out: ``serialize(OutputAudioRawFrame of 20 ms at 24 kHz)`` → media JSON (resample 24 → 8 kHz, μ-law, base64, JSON).
Prints one JSON line: version, µs per frame in and out (median of rounds).
"""

from __future__ import annotations

import asyncio
import base64
import gc
import importlib.metadata
import inspect
import json
import statistics
import sys
import time
from pathlib import Path


async def main(path: str) -> dict[str, object]:
    from pipecat.frames.frames import OutputAudioRawFrame, StartFrame
    from pipecat.serializers.twilio import TwilioFrameSerializer

    corpus = json.loads(Path(path).read_text(encoding="utf-8"))
    media = corpus["media"]
    pcm = [base64.b64decode(p) for p in corpus["pcm24k_b64"]]
    sid = json.loads(media[0])["streamSid"]
    params = (
        TwilioFrameSerializer.InputParams(auto_hang_up=False) if hasattr(TwilioFrameSerializer, "InputParams") else None
    )
    kwargs = {"params": params} if params is not None else {}
    ser = TwilioFrameSerializer(sid, **kwargs)
    start = StartFrame(audio_in_sample_rate=24000, audio_out_sample_rate=24000)
    setup = ser.setup(start)
    if inspect.isawaitable(setup):
        await setup
    frames = [OutputAudioRawFrame(audio=p, sample_rate=24000, num_channels=1) for p in pcm]

    async def t_in() -> float:
        t0 = time.perf_counter_ns()
        for m in media:
            await ser.deserialize(m)
        return (time.perf_counter_ns() - t0) / 1000 / len(media)

    async def t_out() -> float:
        t0 = time.perf_counter_ns()
        for f in frames:
            await ser.serialize(f)
        return (time.perf_counter_ns() - t0) / 1000 / len(frames)

    await t_in()
    await t_out()
    gc.disable()
    ins = [await t_in() for _ in range(15)]
    outs = [await t_out() for _ in range(15)]
    gc.enable()
    return {
        "version": importlib.metadata.version("pipecat-ai"),
        "in_us": statistics.median(ins),
        "out_us": statistics.median(outs),
        "frames_in": len(media),
        "frames_out": len(frames),
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1]))))

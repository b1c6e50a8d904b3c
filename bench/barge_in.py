"""Barge-in and turn latency through the whole gateway, for ``scripts/bench_local_agent --barge-in``.

Each trial is one call placed by the call simulator (gateway.simulator) on the real gateway with its embedded
local agent (real models), over loopback: the caller asks for the menu (a reply of 15 s and more), and some way
into the reply speaks over it, either a back-channel ("uh-huh", "mm-hmm", "yeah", "okay", "right": must not
interrupt) or an interruption ("stop", "wait, stop", a question: must). Caller speech is synthetic, in several
voices (Piper's only English voice at different speeds, variation and pitch), with line noise, through the phone
path (band-pass, 8 kHz μ-law), sent in real time as a carrier would.

Measured per trial, on the simulator's 20 ms frame clock:

- ``reaction_ms``: the caller's speech onset (first frame of the turn with speech energy) → the first frame from
  which the caller hears no agent audio for 400 ms (what a caller perceives as "it stopped");
- ``decision_ms``: onset → the local agent committing the barge-in (its ``local_agent.barge_in`` log, which
  sends ``reply.done{interrupted}``; the gateway sends the carrier a ``clear`` then if anything is still queued);
- ``interrupted``: whether it committed one within 4 s of the onset (wrong for a back-channel, missed if not for an
  interruption);
- ``turn_latency_ms``: end of the menu question's speech → first audible reply frame the caller hears.

Trials run one after another (one caller on the machine; the logs are matched to the call by time).
"""

from __future__ import annotations

import asyncio
import dataclasses
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np
import structlog

from gateway.simulator.caller import CallerTurn, SimulatorConfig, simulate_call, trim_silence
from gateway.simulator.timeline import CallRecord, frame_levels

__all__ = ["BACKCHANNELS", "INTERRUPTIONS", "VOICES", "LogCapture", "run_barge_in", "summarise"]

QUESTION = "Tell me about the menu."
BACKCHANNELS = ("Uh-huh.", "Mm-hmm.", "Yeah.", "Okay.", "Right.")
INTERRUPTIONS = ("Stop.", "Wait, stop.", "Hold on a second.", "Sorry, that's not right.", "What time do you close?")
#: name → (Piper length_scale, noise_scale = noise_w_scale, pitch factor). Pitch: the 24 kHz rendering is read as
#: ``24000 * factor`` Hz, so it is higher (and quicker) or lower (and slower).
VOICES: dict[str, tuple[float, float, float]] = {
    "slow-steady": (1.2, 0.0, 1.0),  # the test suite's caller
    "quick-varied": (1.0, 0.667, 1.0),
    "high": (1.3, 0.5, 1.18),
    "low": (1.0, 0.3, 0.86),
}
SPEECH_RMS = 300.0  # a caller frame louder than this carries speech (line noise sits 25 dB below speech)
AUDIBLE_RMS = 200.0  # an agent frame louder than this is heard (the simulator's own rule)
FRAME_S = 0.02
SILENT_FRAMES = 20  # 400 ms without agent audio: the agent has stopped (longer than its pauses between words)
DECIDE_WITHIN_S = 4.0
WATCH = frozenset({"local_agent.barge_in", "local_agent.overlap_judged", "local_agent.overlap_heard"})


class LogCapture:
    """A structlog processor that keeps the local agent's barge-in logs with the event loop's time, prints
    warnings and errors, and drops everything else."""

    def __init__(self) -> None:
        self.events: list[tuple[float, str, dict[str, Any]]] = []

    def __call__(self, _logger: Any, method: str, event: dict[str, Any]) -> Any:
        name = str(event.get("event"))
        if name in WATCH:
            self.events.append((asyncio.get_running_loop().time(), name, dict(event)))
        if method in ("warning", "error", "critical", "exception"):
            print(f"  [{method}] {event}", flush=True)
        raise structlog.DropEvent

    def install(self) -> None:
        structlog.configure(processors=[self], wrapper_class=structlog.make_filtering_bound_logger(10))


def caller_turn(tts: Any, text: str, voice: str) -> CallerTurn:
    """``text`` in one of :data:`VOICES`, with line noise at 25 dB SNR, through the phone path, trimmed."""
    from gateway.local_agent.speech.phone import phone_path
    from tests.support.caller_voice import add_white_noise

    length, noise, pitch = VOICES[voice]
    pcm = b"".join(c for _s, c in tts.synthesize(text, length_scale=length, noise_scale=noise, noise_w_scale=noise))
    pad = bytes(2 * tts.SAMPLE_RATE // 5)
    noisy = add_white_noise(pad + pcm + pad, 25.0, seed=zlib.crc32(f"{voice}:{text}".encode()), reference=pcm)
    return CallerTurn("say", f"{text} [{voice}]", trim_silence(phone_path(noisy, round(tts.SAMPLE_RATE * pitch))))


def _first(levels: np.ndarray, start: int, cond: Callable[[float], bool]) -> int | None:
    for i in range(max(0, start), len(levels)):
        if cond(float(levels[i])):
            return i
    return None


def analyse(record: CallRecord, logs: list[tuple[float, str, dict[str, Any]]]) -> dict[str, Any]:
    """The figures of one trial (see the module docstring); ``error`` when the call did not go as scripted."""
    starts = [e.t for e in record.events if e.kind == "turn_started"]
    if record.outcome != "completed" or record.errors or len(starts) < 2:
        return {"error": f"outcome {record.outcome}, {len(starts)} turns, errors {record.errors}"}
    said, heard = frame_levels(bytes(record.said)), frame_levels(bytes(record.heard))
    q0, x0 = round(starts[0] / FRAME_S), round(starts[1] / FRAME_S)
    q_speech = [i for i in range(q0, x0) if said[i] > SPEECH_RMS]
    row: dict[str, Any] = {}
    if q_speech:
        answer = _first(heard, q_speech[-1] + 1, lambda v: v > AUDIBLE_RMS)
        row["turn_latency_ms"] = (answer - q_speech[-1]) * FRAME_S * 1000 if answer is not None else None
    onset = _first(said, x0, lambda v: v > SPEECH_RMS)
    if onset is None:
        return {**row, "error": "no caller speech in the barge-in turn"}
    # The agent must be talking when the caller starts (audible in 8 of the 13 frames around the onset): a trial
    # that lands in a pause between its sentences says nothing about the reaction (left out of that figure).
    row["agent_talking"] = bool((heard[max(0, onset - 10) : onset + 3] > AUDIBLE_RMS).sum() >= 8)
    stop = None
    for i in range(onset, len(heard) - SILENT_FRAMES):
        if not (heard[i : i + SILENT_FRAMES] > AUDIBLE_RMS).any():
            stop = i
            break
    row["reaction_ms"] = (stop - onset) * FRAME_S * 1000 if stop is not None else None
    if stop is not None:
        again = _first(heard, stop, lambda v: v > AUDIBLE_RMS)
        row["silent_ms"] = (again - stop) * FRAME_S * 1000 if again is not None else None
    onset_t = record.stream_t0 + onset * FRAME_S
    barges = [t for t, name, _e in logs if name == "local_agent.barge_in" and onset_t - 0.5 <= t]
    barges = [t for t in barges if t <= onset_t + DECIDE_WITHIN_S]
    row["interrupted"] = bool(barges)
    row["decision_ms"] = (barges[0] - onset_t) * 1000 if barges else None
    judged = [e for t, name, e in logs if name == "local_agent.overlap_judged" and t >= onset_t - 0.5]
    row["judged"] = [bool(e.get("interrupt")) for e in judged]
    heard = [e for t, name, e in logs if name == "local_agent.overlap_heard" and t >= onset_t - 0.5]
    row["heard"] = [str(e.get("text")) for e in heard]  # what the judge read (debug log: the caller's words)
    return row


async def one_trial(
    base: str, question: CallerTurn, over: CallerTurn, after_s: float, logs: LogCapture
) -> dict[str, Any]:
    mark = len(logs.events)
    cfg = SimulatorConfig(
        url=base,
        turns=(question, over),
        barge_in_after_s=after_s,
        greeting_timeout_s=0.5,  # the bench's profile has no greeting
        reply_timeout_s=3.0,  # a back-channel gets no reply of its own: hang up 3 s after it
        max_call_s=60.0,
    )
    record = await simulate_call(cfg)
    await asyncio.sleep(0.1)
    return analyse(record, logs.events[mark:])


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 1)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    bc = [r for r in rows if r["kind"] == "backchannel" and "error" not in r]
    it = [r for r in rows if r["kind"] == "interruption" and "error" not in r]
    timed = [r for r in it if r.get("interrupted") and r.get("agent_talking")]
    reactions = [r["reaction_ms"] for r in timed if r.get("reaction_ms") is not None]
    decisions = [r["decision_ms"] for r in it if r.get("decision_ms") is not None]
    bc_silences = [r["silent_ms"] for r in bc if r.get("silent_ms") is not None]
    lat = [r["turn_latency_ms"] for r in rows if r.get("turn_latency_ms") is not None]
    return {
        "barge_in_trials": len(rows),
        "barge_in_errors": sum("error" in r for r in rows),
        "reaction_p50_ms": _pct(reactions, 0.5),
        "reaction_p90_ms": _pct(reactions, 0.9),
        "reaction_trials": len(reactions),
        "decision_p50_ms": _pct(decisions, 0.5),
        "decision_p90_ms": _pct(decisions, 0.9),
        "backchannels_interrupting": sum(bool(r.get("interrupted")) for r in bc),
        "backchannels": len(bc),
        "backchannel_silence_p50_ms": _pct(bc_silences, 0.5),
        "interruptions_missed": sum(not r.get("interrupted") for r in it),
        "interruptions": len(it),
        "gateway_turn_latency_p50_ms": _pct(lat, 0.5),
        "gateway_turn_latency_p90_ms": _pct(lat, 0.9),
    }


def gateway_settings() -> Any:
    """The committed config with the embedded local agent and no greeting (the caller asks at once)."""
    from gateway.config import load_settings

    settings = load_settings(None, env={"GATEWAY_TOKEN_SECRET": "bench-token-secret", "LOG_FORMAT": "json"})
    if not settings.use_local_agent:
        raise SystemExit("--barge-in needs the embedded local agent (no agent URL or API key configured)")
    default = dataclasses.replace(settings.profiles["default"], greeting="")
    return dataclasses.replace(settings, profiles={**settings.profiles, "default": default})


async def run_barge_in(
    models: Any, trials_per_phrase: int, print_row: Callable[[dict[str, Any]], None]
) -> dict[str, Any]:
    """Every back-channel and interruption in every voice, ``trials_per_phrase`` times; the summary."""
    from aiohttp import web

    from gateway.app import create_app

    logs = LogCapture()
    logs.install()
    question = {v: caller_turn(models.tts, QUESTION, v) for v in VOICES}
    plan = [
        (kind, text, voice)
        for _ in range(trials_per_phrase)
        for voice in VOICES
        for kind, texts in (("backchannel", BACKCHANNELS), ("interruption", INTERRUPTIONS))
        for text in texts
    ]
    runner = web.AppRunner(create_app(gateway_settings(), local_agent_models=models), shutdown_timeout=5.0)
    await runner.setup()
    rows: list[dict[str, Any]] = []
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        base = f"http://{host}:{port}"
        for n, (kind, text, voice) in enumerate(plan):
            after_s = 1.0 + (n % 7) * 0.3  # vary where in the reply the caller speaks up (not in step with the phrase)
            over = caller_turn(models.tts, text, voice)
            row = {"kind": kind, "text": text, "voice": voice, "after_s": after_s}
            row.update(await one_trial(base, question[voice], over, after_s, logs))
            rows.append(row)
            print_row(row)
    finally:
        await runner.cleanup()
    return {**summarise(rows), "barge_in_rows": rows}

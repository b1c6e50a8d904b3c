"""The call simulator against the real gateway with the embedded local agent (real VAD, STT, intents, TTS), over
real loopback sockets: what a developer gets from ``python -m gateway call`` with no API key."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.simulator.caller import SimulatorConfig, load_caller_voice, say_turn, simulate_call
from gateway.simulator.timeline import CallRecord, Span, Timeline, build_timeline
from tests.support.answers import is_opening_hours_answer
from tests.support.local_gateway import local_agent_settings, serve_gateway, shared_speech_models

pytestmark = pytest.mark.speech


@pytest.fixture(scope="session")
def models() -> Any:
    return shared_speech_models()


@pytest.fixture(scope="session")
def voice() -> Any:
    return load_caller_voice(cpu_threads=2)


def heard_text(models: Any, record: CallRecord, span: Span) -> str:
    """What the caller heard during ``span``, transcribed by the local STT (8 kHz μ-law → 16 kHz)."""
    a = max(0, int((span.start_s - 0.1) * 8000))
    b = int((span.end_s + 0.1) * 8000)
    text = models.stt.transcribe(ulaw8k_to_pcm16_16k(bytes(record.heard[a:b])))
    return re.sub(r"[^a-z0-9 ]", "", text.lower())


def check_common(tl: Timeline) -> dict[str, Any]:
    d = json.loads(json.dumps(tl.to_dict()))
    assert d["outcome"] == "completed" and d["errors"] == [], tl.format_text()
    assert d["greeting"] is not None, tl.format_text()
    assert 0 < d["greeting"]["start_s"] < 3.0
    assert d["greeting"]["end_s"] - d["greeting"]["start_s"] > 1.0
    assert d["hangup"]["by"] == "caller" and d["hangup"]["reason"] == "script_done"
    assert d["counts"]["marks_played"] >= 2
    return d


async def test_question_is_answered_and_the_answer_is_heard(models, voice):
    async with serve_gateway(local_agent_settings(), models) as (base, _app):
        record = await simulate_call(SimulatorConfig(url=base, turns=(say_turn("What time do you open?", voice),)))
    tl = build_timeline(record)
    d = check_common(tl)
    greeting = heard_text(models, record, tl.greeting)
    assert "thanks for calling" in greeting, greeting
    (turn,) = tl.turns
    assert turn.reply is not None, tl.format_text()
    assert 0 < turn.response_latency_ms < 5000
    answer = heard_text(models, record, turn.reply)
    assert is_opening_hours_answer(answer, min_cues=4), answer
    assert d["turns"][0]["barge_in"] is False and d["clears"] == []


async def test_barge_in_during_the_menu_clears_the_reply_and_the_next_question_is_answered(models, voice):
    turns = (say_turn("Tell me about the menu.", voice), say_turn("What time do you open?", voice))
    async with serve_gateway(local_agent_settings(), models) as (base, _app):
        record = await simulate_call(SimulatorConfig(url=base, turns=turns, barge_in_after_s=3.0))
    tl = build_timeline(record)
    d = check_common(tl)
    menu, hours = tl.turns
    assert menu.reply is not None and 0 < menu.response_latency_ms < 5000, tl.format_text()
    # the caller started talking 3 s into the (15 s+) menu reply; the gateway cleared the line and the agent stopped
    assert hours.barge_in and hours.start_s - menu.reply.start_s == pytest.approx(3.0, abs=0.1)
    assert len(tl.clears) == 1, tl.format_text()
    assert hours.clear_after_ms is not None and 0 < hours.clear_after_ms < 3000
    assert hours.agent_stopped_after_ms is not None and hours.agent_stopped_after_ms < 3000
    assert menu.reply.end_s - menu.reply.start_s < 6.0  # cut short: the full menu reply is > 15 s
    cut = heard_text(models, record, menu.reply)
    assert "menu" in cut or "season" in cut, cut
    assert hours.reply is not None and 0 < hours.response_latency_ms < 5000, tl.format_text()
    answer = heard_text(models, record, hours.reply)
    assert is_opening_hours_answer(answer), answer
    assert "soup" not in answer and "dessert" not in answer, "the menu went on after the barge-in"
    assert d["turns"][1]["barge_in"] is True and d["clears"][0]["dropped_ms"] >= 0


def test_command_line_turns_keep_their_order_and_sound_like_the_caller(voice, tmp_path):
    import wave

    from gateway.simulator.caller import turns_from_args

    wav = tmp_path / "t.wav"
    with wave.open(str(wav), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(bytes(1600) + (b"\x00\x30\x00\xd0" * 2000) + bytes(1600))
    loads: list[int] = []

    def loader() -> Any:
        loads.append(1)
        return voice

    turns = turns_from_args([("say", "Hello there."), ("wav", str(wav)), ("say", "Goodbye.")], loader)
    assert [(t.source, t.label) for t in turns] == [("say", "Hello there."), ("wav", str(wav)), ("say", "Goodbye.")]
    assert loads == [1]  # the voice is loaded once, and only because --say was used
    # trimmed to the speech plus 0.1 s each side, whole 20 ms frames of 8 kHz μ-law
    assert all(len(t.ulaw) % 160 == 0 for t in turns)
    assert len(turns[1].ulaw) / 8000 == pytest.approx(0.5 + 0.2, abs=0.03)  # 0.5 s of sound in the file
    assert 0.5 < len(turns[0].ulaw) / 8000 < 2.5

"""Adaptive end of turn on real speech (docs/architecture/local-agent.md#turn-detection): with no ``min_silence`` or
``max_silence`` from the client, the speculative transcript of the caller's pause moves the end of turn earlier
(a finished, confidently matched request) or later (words that stop mid-sentence); a client's ``min_silence`` is
honoured exactly. How each turn ended is read from ``local_agent.turn``'s ``end_reason``.

No timed assertions: the silences here are long (the server's ``min_silence_ms`` 1500–2000 ms) so Whisper's
transcription of the pause is done well before the default end of turn, whatever the machine's load; what is
checked is *which* rule ended the turn, and that the events are the usual ones in the usual order."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from gateway.audio.g711 import ulaw_to_pcm16
from gateway.local_agent.brain import load_intents
from gateway.local_agent.settings import DEFAULT_INTENTS_PATH
from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k
from tests.support.logcapture import capture_call_logs, events, wait_event

from .agent_client import FRAME_BYTES, LinePump
from .conftest import AgentServer
from .test_resume_turn import send_frames

pytestmark = pytest.mark.speech

ULAW = {"format": {"encoding": "audio/pcmu"}}
SILENCE = b"\xff" * FRAME_BYTES  # 20 ms of μ-law digital silence
#: A reply.create reply long enough (about 20 s of speech at real time) to still be playing when the caller's
#: turn ends and they go on.
LONG_INSTRUCTIONS = (
    "Thank you for holding. Our team is reviewing your request right now, and this may take a little while. "
    "While you wait, you can ask about our opening hours, our menu, parking, or booking a table for later today. "
    "We are open every day of the week, from nine in the morning until ten at night, including holidays."
)
TURN_START = [
    "input.speech.started", "input.speech.stopped", "transcript.user.delta", "transcript.user", "reply.started"
]  # fmt: skip


def reply_text(intent: str) -> str:
    found = load_intents(DEFAULT_INTENTS_PATH).get(intent)
    assert found is not None
    return found.reply


async def one_turn(agent: AgentServer, speech_models: SpeechModels, phrase: str, **input_: Any) -> tuple[list, dict]:
    with capture_call_logs() as logs:
        c, _ = await agent.session(input={**ULAW, **input_}, output=ULAW)
        pump = LinePump(c).start()
        try:
            pump.say(caller_ulaw8k(speech_models.tts, phrase))
            turn = await c.collect_until(lambda r: r.type == "reply.done", timeout=40)
        finally:
            await pump.stop()
        logged = await wait_event(logs, "local_agent.turn")
        assert len(events(logs, "local_agent.turn")) == 1
    await c.close()
    types = [r.type for r in turn]
    assert types[:5] == TURN_START, types
    return turn, logged


async def test_a_finished_confident_request_ends_the_turn_before_min_silence(
    start_agent: Any, speech_models: SpeechModels
) -> None:
    agent = await start_agent(min_silence_ms=2000)
    turn, logged = await one_turn(agent, speech_models, "What hours are you open on Saturday?")
    assert logged["end_reason"] == "early" and logged["intent"] == "opening_hours", logged
    said = next(r.event for r in turn if r.type == "transcript.agent")
    assert said["text"] == reply_text("opening_hours")


async def test_a_client_min_silence_turns_adaptive_waiting_off(start_agent: Any, speech_models: SpeechModels) -> None:
    agent = await start_agent()
    _, logged = await one_turn(
        agent, speech_models, "What hours are you open on Saturday?", turn_detection={"min_silence": 2000}
    )
    assert logged["end_reason"] == "silence" and logged["intent"] == "opening_hours", logged


async def test_a_client_max_silence_also_turns_adaptive_waiting_off(
    start_agent: Any, speech_models: SpeechModels
) -> None:
    agent = await start_agent(min_silence_ms=2000)
    _, logged = await one_turn(
        agent, speech_models, "What hours are you open on Saturday?", turn_detection={"max_silence": 3000}
    )
    assert logged["end_reason"] == "silence", logged


async def test_words_that_stop_mid_sentence_wait_longer_than_min_silence(
    start_agent: Any, speech_models: SpeechModels
) -> None:
    agent = await start_agent(min_silence_ms=1500, late_silence_ms=2500)
    _, logged = await one_turn(agent, speech_models, "My phone number is")
    assert logged["end_reason"] == "late", logged


def loud_frames(ulaw: bytes) -> np.ndarray:
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    n = len(pcm) // FRAME_BYTES
    rms = np.sqrt(np.mean(pcm[: n * FRAME_BYTES].reshape(n, FRAME_BYTES) ** 2, axis=1))
    return np.nonzero(rms > 300.0)[0]


async def test_a_caller_who_goes_on_after_an_early_end_gets_both_parts_answered_together(
    start_agent: Any, speech_models: SpeechModels
) -> None:
    # "Do you have parking?" is a finished, confidently matched question: the turn ends early (400 ms) and its
    # reply starts. The caller goes on ("…near the restaurant?") before the plain timer (here 3 s, so the early
    # end surely comes first) would have ended the turn: the reply is interrupted at once and the whole sentence
    # is answered. Alone, "near the restaurant" gets another intent's reply; and over a reply, speech shorter
    # than the back-channel limit would have been dropped.
    agent = await start_agent(min_silence_ms=3000, max_silence_ms=5000)
    with capture_call_logs() as logs:
        c, _ = await agent.session(input=ULAW, output=ULAW)
        pump = LinePump(c).start()
        try:
            first = caller_ulaw8k(speech_models.tts, "Do you have parking", trail_s=0.0)
            pump.say(first[: (int(loud_frames(first)[-1]) + 1) * FRAME_BYTES])
            # The caller goes on as soon as the reply starts (well inside the 3 s the plain timer would wait).
            recs = await c.collect_until(lambda r: r.type == "reply.started", timeout=30)
            second = caller_ulaw8k(speech_models.tts, "near the restaurant?", lead_s=0.0)
            pump.say(second[int(loud_frames(second)[0]) * FRAME_BYTES :])
            recs += await c.collect_until(
                lambda r: r.type == "reply.done" and r.event["status"] == "completed", timeout=60
            )
        finally:
            await pump.stop()
        turns = events(logs, "local_agent.turn")
    await c.close()
    types = [r.type for r in recs]
    texts = [r.event.get("text") for r in recs if r.type.startswith("transcript")]
    assert types.count("transcript.user") == 2 and types.count("reply.done") == 2, (types, turns, texts)
    first_done = next(r.event for r in recs if r.type == "reply.done")
    assert first_done["status"] == "interrupted"
    assert turns[0]["end_reason"] == "early" and turns[0]["interrupted"] is True, turns
    final = [r.event for r in recs if r.type == "transcript.agent"][-1]
    assert final["text"] == reply_text("parking") and final["interrupted"] is False


async def test_a_continuation_over_a_reply_before_any_turn_was_answered_keeps_the_session(
    start_agent: Any, speech_models: SpeechModels
) -> None:
    # Bug: the hearing's "last turn ended early" slot was only ever set by the first answered turn, so a
    # continuation barge-in (BargeIn.continuation) that came before any turn had been answered read a missing
    # attribute and the session died with session.error{internal_error} and close 1011. Here the reply being
    # spoken is a reply.create one, which started while the caller was mid-turn: the caller's turn ends early
    # ("Do you have parking?" is finished and confidently matched) while that reply still plays, so the turn
    # waits behind it, and the caller goes on ("…near the restaurant?") within the plain timer: a continuation.
    # Expected, as for any continuation: the reply stops at once and both parts are answered together. The
    # back-channel limit is raised so the first phrase, still being heard when the reply starts, does not
    # interrupt it as an ordinary barge-in (a continuation does not wait for that limit).
    agent = await start_agent(min_silence_ms=3000, max_silence_ms=5000, backchannel_max_ms=5000)
    c, _ = await agent.session(input=ULAW, output=ULAW)
    try:
        first = caller_ulaw8k(speech_models.tts, "Do you have parking", trail_s=0.0)
        # Speech only, no trailing silence: the detector keeps the caller's turn open.
        await send_frames(c, first[: (int(loud_frames(first)[-1]) + 1) * FRAME_BYTES])
        await c.expect("input.speech.started", timeout=10)
        await c.send("reply.create", instructions=LONG_INSTRUCTIONS)
        await c.expect("reply.started", timeout=20)
        # 300 ms of silence: past the point where the pause is transcribed and judged (speculate_ms, plus the
        # ~100 ms Silero's probability trails the speech), short of the early end of turn (400 ms). The
        # detector's clock is the audio, so the turn cannot end while nothing is sent: give the transcription
        # and the intent match time to finish.
        await send_frames(c, SILENCE * 15)
        await asyncio.sleep(4.0)
        # 400 ms more silence: the early verdict ends the turn (the reply.create reply still plays)…
        await send_frames(c, SILENCE * 20)
        await c.expect("input.speech.stopped", timeout=10)
        # …and the caller goes on at once, well inside the 3 s plain timer.
        second = caller_ulaw8k(speech_models.tts, "near the restaurant?", lead_s=0.0)
        await send_frames(c, second[int(loud_frames(second)[0]) * FRAME_BYTES :] + SILENCE * 200)
        recs = await c.collect_until(lambda r: r.type == "reply.done" and r.event["status"] == "completed", timeout=60)
    finally:
        await c.close()
    types = [r.type for r in recs]
    assert "session.error" not in types, recs
    interrupted = next(r.event for r in recs if r.type == "reply.done")
    assert interrupted["status"] == "interrupted", types
    assert types.count("transcript.user") == 2, types
    final = [r.event for r in recs if r.type == "transcript.agent"][-1]
    assert final["text"] == reply_text("parking") and final["interrupted"] is False

"""The local agent on real speech: caller audio from the simulated phone caller (tests/support/caller_voice.py)
sent as real-time 20 ms μ-law frames over a real WebSocket, the real models on the agent side, and the agent's
reply audio transcribed back with the real STT."""

from __future__ import annotations

import pytest

from gateway.local_agent.brain import load_intents
from gateway.local_agent.settings import DEFAULT_INTENTS_PATH
from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k
from tests.support.listen import closest_reading
from tests.support.wer import word_error_rate

from .agent_client import LinePump
from .conftest import AgentServer

pytestmark = pytest.mark.speech

INTENTS = load_intents(DEFAULT_INTENTS_PATH)
ULAW = {"format": {"encoding": "audio/pcmu"}}
GREETING = "Hello, thanks for calling The Harbour Kitchen."


def reply_text(intent: str) -> str:
    found = INTENTS.get(intent)
    assert found is not None
    return found.reply


def types(recs: list) -> list[str]:
    return [r.type for r in recs]


async def test_greeting_is_spoken_first_then_a_question_gets_its_intent_reply(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    c, _ = await agent.session(greeting=GREETING, input=ULAW, output=ULAW)
    pump = LinePump(c).start()
    try:
        greeting = await c.collect_until(lambda r: r.type == "reply.done")
        assert types(greeting)[0] == "reply.started"
        assert [r.event["text"] for r in greeting if r.type == "transcript.agent"] == [GREETING]
        assert greeting[-1].event["status"] == "completed"

        pump.say(caller_ulaw8k(speech_models.tts, "What hours are you open on Saturday?"))
        turn = await c.collect_until(lambda r: r.type == "reply.done", timeout=40)
    finally:
        await pump.stop()
    t = types(turn)
    assert t[:5] == [
        "input.speech.started",
        "input.speech.stopped",
        "transcript.user.delta",
        "transcript.user",
        "reply.started",
    ], t
    user = next(r.event for r in turn if r.type == "transcript.user")
    assert word_error_rate("What hours are you open on Saturday?", user["text"]) <= 0.25, user["text"]
    agent_final = next(r.event for r in turn if r.type == "transcript.agent")
    assert agent_final["text"] == reply_text("opening_hours")
    assert agent_final["interrupted"] is False
    deltas = "".join(r.event["delta"] for r in turn if r.type == "transcript.agent.delta")
    assert deltas == agent_final["text"]
    # What the caller actually hears says what transcript.agent claims (read two ways: tests/support/listen.py).
    heard = closest_reading(speech_models.stt, bytes(c.audio[agent_final["reply_id"]]), agent_final["text"])
    assert word_error_rate(agent_final["text"], heard) <= 0.2, heard
    await c.send("session.end")
    await c.expect("session.ended")
    assert await c.wait_closed() == 1000


BOOK_TABLE_TOOL = {
    "type": "function",
    "name": "book_table",
    "description": "Book a table",
    "parameters": {"type": "object", "properties": {"party_size": {"type": "integer"}}},
}


async def test_tool_intent_emits_tool_call_and_speaks_reply_after_tool_once_the_result_arrives(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    c, ready = await agent.session(input=ULAW, output=ULAW, tools=[BOOK_TABLE_TOOL])
    assert ready["config"]["tools"][0]["name"] == "book_table"
    pump = LinePump(c).start()
    try:
        pump.say(caller_ulaw8k(speech_models.tts, "I want to reserve a table for Friday evening."))
        turn = await c.collect_until(lambda r: r.type == "reply.done", timeout=40)
        t = types(turn)
        assert "tool.call" in t and t.index("reply.started") < t.index("tool.call") < t.index("reply.done"), t
        call = next(r.event for r in turn if r.type == "tool.call")
        assert call["name"] == "book_table" and call["arguments"] == {}
        assert call["call_id"].startswith("chatcmpl-tool-") and len(call["call_id"]) == len("chatcmpl-tool-") + 16
        # Live: the pre-amble reply around a tool call is silent and has no transcript
        # (docs/architecture/agent-api.md#tool-results).
        assert "transcript.agent" not in t and turn[-1].event["status"] == "completed"

        await c.send("tool.result", call_id=call["call_id"], result='{"confirmation": "a table for two at seven"}')
        answer = await c.collect_until(lambda r: r.type == "reply.done", timeout=30)
    finally:
        await pump.stop()
    final = next(r.event for r in answer if r.type == "transcript.agent")
    assert final["text"] == "All done: a table for two at seven. We look forward to seeing you."
    assert answer[-1].event["status"] == "completed"
    heard = closest_reading(speech_models.stt, bytes(c.audio[final["reply_id"]]), final["text"])
    assert word_error_rate(final["text"], heard) <= 0.25, heard
    await c.close()


async def test_an_unanswered_tool_call_times_out_and_the_agent_apologises(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    c, _ = await agent.session(input=ULAW, output=ULAW, tools=[{**BOOK_TABLE_TOOL, "timeout_seconds": 1}])
    pump = LinePump(c).start()
    try:
        pump.say(caller_ulaw8k(speech_models.tts, "Is it possible to book dinner for six people?"))
        call = await c.expect("tool.call", timeout=40)
        await c.expect("reply.done")
        apology = await c.collect_until(lambda r: r.type == "reply.done", timeout=15)
        final = next(r.event for r in apology if r.type == "transcript.agent")
        assert final["text"] == INTENTS.tool_timeout_reply
        # A result after the timeout is ignored quietly (no error, no second answer).
        await c.send("tool.result", call_id=call["call_id"], result='"too late"')
        assert [r.type for r in await c.nothing_for(1.0)] == []
    finally:
        await pump.stop()
    await c.close()


async def test_caller_speaking_over_the_long_menu_interrupts_it_and_becomes_the_next_turn(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    c, _ = await agent.session(input=ULAW, output=ULAW)
    pump = LinePump(c).start()
    try:
        pump.say(caller_ulaw8k(speech_models.tts, "Could you read me the menu?"))
        started = await c.expect("reply.started", timeout=40)
        menu_id = started["reply_id"]
        # Let about three seconds of the menu play, then talk over it.
        for _ in range(200):
            if len(c.audio.get(menu_id, b"")) >= 3 * 8000:
                break
            await c.nothing_for(0.05)
        pump.say(caller_ulaw8k(speech_models.tts, "Wait, stop. What time do you open?"))
        events = await c.collect_until(lambda r: r.type == "reply.done", timeout=20)
        # The three barge-in events come back to back (docs/architecture/agent-api.md#interruptions), after
        # nothing else of the reply.
        tail = events[-3:]
        assert types(tail) == ["input.speech.started", "transcript.agent", "reply.done"], types(events)
        assert tail[-1].at - tail[0].at < 0.1
        cut = tail[1].event
        assert cut["interrupted"] is True and cut["reply_id"] == menu_id
        assert tail[2].event == {**tail[2].event, "reply_id": menu_id, "status": "interrupted"}
        full = reply_text("menu")
        assert cut["text"] and len(cut["text"]) < len(full) / 2, cut["text"]
        assert " ".join(full.split()).startswith(cut["text"])
        # The interrupting words are the caller's next turn.
        nxt = await c.collect_until(lambda r: r.type == "transcript.agent.delta", timeout=30)
        user = next(r.event for r in nxt if r.type == "transcript.user")
        assert "open" in user["text"].lower(), user
        audio_at_done = len(c.audio[menu_id])
        await c.nothing_for(0.5)
        assert len(c.audio[menu_id]) == audio_at_done, "menu audio kept coming after reply.done{interrupted}"
    finally:
        await pump.stop()
    await c.close()


async def test_short_backchannels_over_a_reply_do_not_interrupt_it(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    text = (
        "Let me tell you a little about us. We opened our doors twenty years ago, right by the harbour. "
        "Everything is cooked fresh each day, and the fish comes straight off the boats."
    )
    uh_huh = caller_ulaw8k(speech_models.tts, "Uh-huh.")
    okay = caller_ulaw8k(speech_models.tts, "Okay.")
    c, _ = await agent.session(input=ULAW, output=ULAW)
    pump = LinePump(c).start()
    try:
        await c.send("reply.create", instructions=text)
        started = await c.expect("reply.started")
        await c.nothing_for(1.5)
        pump.say(uh_huh)
        await pump.spoken()
        await c.nothing_for(1.0)
        pump.say(okay)
        events = await c.collect_until(lambda r: r.type == "reply.done", timeout=20)
        after = await c.nothing_for(1.5)
    finally:
        await pump.stop()
    assert "input.speech.started" not in types(events) + types(after), types(events) + types(after)
    final = next(r.event for r in events if r.type == "transcript.agent")
    assert final == {**final, "reply_id": started["reply_id"], "interrupted": False, "text": text}
    assert events[-1].event["status"] == "completed"
    # Back-channels are not turns: nothing was transcribed or answered.
    assert "transcript.user" not in types(after)
    await c.close()


async def test_with_interrupt_response_false_speech_over_a_reply_does_not_interrupt(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    c, _ = await agent.session(input={**ULAW, "turn_detection": {"interrupt_response": False}}, output=ULAW)
    pump = LinePump(c).start()
    try:
        await c.send("reply.create", instructions="Please listen carefully, as our menu options have changed recently.")
        await c.expect("reply.started")
        await c.nothing_for(0.5)
        pump.say(caller_ulaw8k(speech_models.tts, "Wait, stop. What time do you open?"))
        events = await c.collect_until(lambda r: r.type == "reply.done", timeout=20)
    finally:
        await pump.stop()
    assert events[-1].event["status"] == "completed"
    assert "input.speech.started" not in types(events)
    await c.close()


@pytest.mark.parametrize("encoding", ["audio/pcm", "audio/pcma"])
async def test_caller_audio_in_pcm_24k_and_a_law_is_decoded_for_turn_detection_and_stt(
    agent: AgentServer, speech_models: SpeechModels, encoding: str
) -> None:
    """Turn detection counts samples, not wall time, so this sends the caller's audio faster than real time."""
    import base64

    from gateway.audio.g711 import pcm16_to_alaw, ulaw_to_pcm16
    from gateway.audio.resample import StreamResampler

    text = "Are your meals expensive?"
    pcm8k = ulaw_to_pcm16(caller_ulaw8k(speech_models.tts, text)) + bytes(2 * 8000)  # + 1 s of silence
    if encoding == "audio/pcm":
        audio, frame = StreamResampler(8000, 24000).process(pcm8k, last=True), 960  # 20 ms at 24 kHz
    else:
        audio, frame = pcm16_to_alaw(pcm8k), 160
    c, _ = await agent.session(input={"format": {"encoding": encoding}})
    for i in range(0, len(audio), frame):
        await c.send("input.audio", audio=base64.b64encode(audio[i : i + frame]).decode())
    events = await c.collect_until(lambda r: r.type == "transcript.user", timeout=20)
    assert types(events) == ["input.speech.started", "input.speech.stopped", "transcript.user.delta", "transcript.user"]
    assert word_error_rate(text, events[-1].event["text"]) <= 0.25, events[-1].event
    final = await c.expect("transcript.agent", timeout=20)
    assert final["text"] == reply_text("price")
    await c.close()

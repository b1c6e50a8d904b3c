"""Tool arguments through the real local agent: a client declares ``reserve_table`` under its own name, the
simulated caller speaks (real synthesis, the phone path, real-time 20 ms μ-law frames over a real WebSocket), and
the agent's STT and intent engine fill ``tool.call.arguments`` from the declared schema, asking for what is missing
(docs/how-to/local-agent.md#tool-arguments)."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k

from .agent_client import LinePump
from .conftest import AgentServer

pytestmark = pytest.mark.speech

ULAW = {"format": {"encoding": "audio/pcmu"}}
RESERVE_TABLE = {
    "type": "function",
    "name": "reserve_table",
    "description": "Reserve a table at the restaurant.",
    "parameters": {
        "type": "object",
        "properties": {"party_size": {"type": "integer"}, "time": {"type": "string"}},
        "required": ["party_size", "time"],
    },
}


def tomorrow_at(hhmm: str) -> set[str]:
    # The agent reads the host's clock; either side of midnight the test still knows which day "tomorrow" is.
    days = {(datetime.now().astimezone() + timedelta(days=1, minutes=m)).date() for m in (-5, 0, 5)}
    return {f"{d.isoformat()}T{hhmm}" for d in days}


async def test_spoken_request_fills_typed_arguments_and_a_missing_one_is_asked_for(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    c, _ = await agent.session(input=ULAW, output=ULAW, tools=[RESERVE_TABLE])
    pump = LinePump(c, realtime=False).start()  # speech as fast as the agent takes it, silence at real time
    try:
        pump.say(caller_ulaw8k(speech_models.tts, "A table for four at seven thirty tomorrow."))
        call = await c.expect("tool.call", timeout=40)
        assert call["name"] == "reserve_table"
        assert call["arguments"]["party_size"] == 4 and type(call["arguments"]["party_size"]) is int
        assert call["arguments"]["time"] in tomorrow_at("19:30"), call
        await c.expect("reply.done")
        await c.send("tool.result", call_id=call["call_id"], result='"booked"')
        await c.collect_until(lambda r: r.type == "reply.done", timeout=30)

        # The time is missing: the agent asks for it, and the answer fills it.
        pump.say(caller_ulaw8k(speech_models.tts, "Could I book another table for two?"))
        asked = await c.collect_until(lambda r: r.type == "reply.done", timeout=40)
        assert "tool.call" not in [r.type for r in asked]
        question = next(r.event for r in asked if r.type == "transcript.agent")
        assert question["text"] == "For what day and time?"
        pump.say(caller_ulaw8k(speech_models.tts, "Tomorrow evening at eight o'clock."))
        second = await c.expect("tool.call", timeout=40)
        assert second["arguments"]["party_size"] == 2 and second["arguments"]["time"] in tomorrow_at("20:00"), second
    finally:
        await pump.stop()
    await c.close()


async def test_declared_enum_values_prime_the_transcription(agent: AgentServer, speech_models: SpeechModels) -> None:
    # Over the phone line Whisper hears "to billing" as "the building" unless the session's enum values are its
    # context; then the department is read at the first turn, with no follow-up question.
    transfer = {
        "type": "function",
        "name": "transfer",
        "description": "Transfer the caller to a department: sales, billing or support.",
        "parameters": {
            "type": "object",
            "properties": {"department": {"type": "string", "enum": ["sales", "billing", "support"]}},
            "required": ["department"],
        },
    }
    c, _ = await agent.session(input=ULAW, output=ULAW, tools=[transfer])
    pump = LinePump(c, realtime=False).start()
    try:
        pump.say(caller_ulaw8k(speech_models.tts, "Put me through to billing, please."))
        done = await c.collect_until(lambda r: r.type in ("tool.call", "reply.done"), timeout=40)
        heard = [r.event["text"] for r in done if r.type == "transcript.user"]
        assert [(r.event["name"], r.event["arguments"]) for r in done if r.type == "tool.call"] == [
            ("transfer", {"department": "billing"})
        ], heard
    finally:
        await pump.stop()
    await c.close()

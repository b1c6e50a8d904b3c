"""Semantic barge-in through the real local agent (real VAD, Whisper, Piper): speech over a reply holds it, and
its words decide. A back-channel ("Yeah.") lets the reply go on from where it was held, with no event at all; a
one-word "Stop." (as short as a back-channel, so the duration rule alone never stopped the agent) interrupts it
(docs/architecture/local-agent.md#barge-in)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.local_agent.codec import audible
from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k
from tests.support.logcapture import capture_call_logs, wait_event

from .agent_client import LinePump
from .conftest import AgentServer

pytestmark = pytest.mark.speech

ULAW = {"format": {"encoding": "audio/pcmu"}}
TEXT = (
    "Let me tell you a little about us. We opened our doors twenty years ago, right by the harbour. "
    "Everything is cooked fresh each day, and the fish comes straight off the boats every single morning."
)


async def test_a_back_channel_lets_the_reply_go_on_and_a_one_word_stop_interrupts_it(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    yeah = caller_ulaw8k(speech_models.tts, "Yeah.")
    stop = caller_ulaw8k(speech_models.tts, "Stop.")
    with capture_call_logs() as logs:
        c, ready = await agent.session(input=ULAW, output=ULAW)
        sid = ready["session_id"]
        pump = LinePump(c).start()
        try:
            await c.send("reply.create", instructions=TEXT)
            reply_id = (await c.expect("reply.started"))["reply_id"]
            await c.nothing_for(1.0)
            pump.say(yeah)
            judged = await wait_event(logs, "local_agent.overlap_judged", timeout=20, session_id=sid)
            assert judged["interrupt"] is False, judged
            # The reply goes on: speech comes again after the judgement (silence filled the hold), and nothing else
            # has happened.
            sent = len(c.audio[reply_id])
            async with asyncio.timeout(10):
                while not audible(bytes(c.audio[reply_id][sent:]), "audio/pcmu"):
                    await asyncio.sleep(0.02)
            seen = {r.type for r in c.events}
            assert not seen & {"input.speech.started", "transcript.agent", "reply.done", "transcript.user"}, seen
            pump.say(stop)
            events = await c.collect_until(lambda r: r.type == "reply.done", timeout=20)
            # "Stop." is the caller's next turn, transcribed as such (the line keeps running: the detector's clock is
            # the audio).
            user = await c.expect("transcript.user", timeout=20)
        finally:
            await pump.stop()
    tail = [r.type for r in events[-3:]]
    assert tail == ["input.speech.started", "transcript.agent", "reply.done"], [r.type for r in events]
    cut = events[-2].event
    assert cut["interrupted"] is True and cut["reply_id"] == reply_id
    assert len(cut["text"]) < len(TEXT), cut
    assert events[-1].event["status"] == "interrupted"
    assert [e["interrupt"] for e in logs if e.get("event") == "local_agent.overlap_judged"][-1] is True
    assert "stop" in user["text"].lower(), user
    await c.close()

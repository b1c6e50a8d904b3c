"""A long caller utterance, cut by a dropped socket and resumed, that the agent transcribes late (its model pool
busy with other work, as under load) must still get its own answer, not be held and merged into the caller's next
turn. The caller says the monologue, pauses 2.5 s (a clear end of turn), then asks a long question; the pool is freed
a quarter into the question, so the monologue's text is ready while the caller is talking again. Before the fix
the agent took that for "the end of turn was called too early", held the monologue (``local_agent.turn_held``) and
answered it only merged into the question, so an 8 s utterance followed by a 2.5 s silence got no answer of its
own. Now: the monologue's reply comes first (after the question, not over it), then the question's own answer."""

from __future__ import annotations

import asyncio
import threading

import pytest

from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k
from tests.support.logcapture import capture_call_logs, events
from tests.support.wer import word_error_rate

from .agent_client import FRAME_BYTES, LinePump
from .conftest import AgentServer
from .test_resume_turn import ULAW, drop_and_resume

pytestmark = pytest.mark.speech

MONOLOGUE = (
    "Hi, my name is Alex. I am calling from the office on behalf of a colleague of mine, "
    "who asked me to find out a couple of things for her before the weekend."
)
#: Long enough (about 5 s) that the caller is still saying it when the monologue's late transcript is ready.
QUESTION = "Could you also tell me what time you open on Sunday morning, and until when the kitchen is open?"


async def test_a_long_utterance_transcribed_late_is_answered_on_its_own_before_the_next_turn(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    rt = agent.runtime
    mono = caller_ulaw8k(speech_models.tts, MONOLOGUE, trail_s=0.0)
    question = caller_ulaw8k(speech_models.tts, QUESTION, lead_s=0.0)
    cut = len(mono) // 2 // FRAME_BYTES * FRAME_BYTES
    pause = b"\xff" * (8000 * 5 // 2)  # 2.5 s of silence after the monologue
    half = len(question) // 4 // FRAME_BYTES * FRAME_BYTES  # the pool is freed a quarter into the question
    with capture_call_logs() as logs:
        c, ready = await agent.session(input=ULAW, output=ULAW)
        sid = ready["session_id"]
        pump = LinePump(c).start()
        pump.say(mono[:cut])
        await pump.spoken()
        await pump.stop()
        c2 = await drop_and_resume(agent, c, sid)  # the socket drops mid-monologue
        # From here the model pool is busy (every thread held), so nothing gets transcribed for a while.
        release = threading.Event()
        blockers = [rt.executor.submit(release.wait, 60.0) for _ in range(rt.settings.threads)]
        pump = LinePump(c2).start()
        try:
            pump.say(mono[cut:] + pause + question[:half])
            await pump.spoken(timeout=60)
        finally:
            release.set()  # a quarter into the question
            for b in blockers:
                await asyncio.wrap_future(b)
        try:
            pump.say(question[half:])
            # The first reply after the drop is the monologue's, on its own: its transcript.user, then its reply,
            # before the question's transcript.user (held and merged, the question's turn came first, alone).
            first = await c2.collect_until(lambda r: r.type == "reply.done", timeout=60)
            types = [r.type for r in first]
            users = [r.event["text"] for r in first if r.type == "transcript.user"]
            assert len(users) == 1 and types.index("transcript.user") < types.index("reply.started"), (types, users)
            assert word_error_rate(MONOLOGUE, users[0]) <= 0.25, users[0]
            said = next(r.event for r in first if r.type == "transcript.agent")
            assert not said["interrupted"], said  # spoken after the question, not over it
            # Then the question, answered on its own, and nothing more.
            second = await c2.collect_until(lambda r: r.type == "reply.done", timeout=60)
            second += await c2.nothing_for(1.5)
        finally:
            await pump.stop()
    types = [r.type for r in second]
    users = [r.event["text"] for r in second if r.type == "transcript.user"]
    assert len(users) == 1 and types.count("reply.done") == 1, (types, users)
    assert word_error_rate(QUESTION, users[0]) <= 0.25, users[0]
    assert not next(r.event for r in second if r.type == "transcript.agent")["interrupted"]
    assert not events(logs, "local_agent.turn_held", session_id=sid)
    assert len(events(logs, "local_agent.turn_deferred", session_id=sid)) == 1
    await c2.send("session.end")
    await c2.expect("session.ended")

"""A caller's turn survives a session resume (docs/architecture/agent-api.md#resume): real synthesized caller
speech over the simulated phone line, the socket closed without ``session.end`` part-way through a phrase,
``session.resume`` on a new socket, the rest of the phrase sent there. The agent must hear one turn — the whole phrase —
and answer it once, and nothing of the closed socket may keep running. (With the VAD and turn detector per socket, the
phrase was split in two: the second socket started a new turn with only the end of the phrase, and answered that.)"""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest

from gateway.audio.g711 import ulaw_to_pcm16
from gateway.local_agent.brain import load_intents
from gateway.local_agent.settings import DEFAULT_INTENTS_PATH
from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k
from tests.support.wer import word_error_rate

from .agent_client import FRAME_BYTES, AgentClient, LinePump
from .conftest import AgentServer

pytestmark = pytest.mark.speech

ULAW = {"format": {"encoding": "audio/pcmu"}}
# The end of this phrase alone ("…near the restaurant") is a different question (location), so a split turn shows
# in the reply as well as in the transcript.
PHRASE = "Can I leave my car near the restaurant?"
INTENT = "parking"
CONNECTION_TASKS = {"reader", "listener", "replier", "writer", "turn:prepare"}


def reply_text(intent: str) -> str:
    found = load_intents(DEFAULT_INTENTS_PATH).get(intent)
    assert found is not None
    return found.reply


def loud_frames(ulaw: bytes) -> np.ndarray:
    """Indexes of the 20 ms frames carrying speech energy (the line noise is 25 dB below the speech)."""
    pcm = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    n = len(pcm) // FRAME_BYTES
    rms = np.sqrt(np.mean(pcm[: n * FRAME_BYTES].reshape(n, FRAME_BYTES) ** 2, axis=1))
    return np.nonzero(rms > 300.0)[0]


async def send_frames(c: AgentClient, ulaw: bytes) -> None:
    for i in range(0, len(ulaw), FRAME_BYTES):
        frame = ulaw[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
        await c.send("input.audio", audio=base64.b64encode(frame).decode())
        await asyncio.sleep(0)


def connection_tasks() -> list[str]:
    return [
        t.get_name()
        for t in asyncio.all_tasks()
        if not t.done() and (t.get_name() in CONNECTION_TASKS or t.get_name().startswith("job:"))
    ]


async def drop_and_resume(agent: AgentServer, c: AgentClient, sid: str) -> AgentClient:
    await c.close()  # a close without session.end: the session stays resumable
    for _ in range(100):
        if agent.runtime.live_sessions == 0:
            break
        await asyncio.sleep(0.05)
    assert agent.runtime.live_sessions == 0 and sid in agent.runtime.sessions
    # Nothing of the closed socket is still running (no reader, listener, speculation, reply…).
    assert connection_tasks() == []
    c2 = await agent.client()
    await c2.send("session.resume", session_id=sid)
    assert (await c2.expect("session.ready"))["session_id"] == sid
    return c2


async def finish_turn(agent: AgentServer, c2: AgentClient, rest: bytes, sid: str) -> None:
    pump = LinePump(c2).start()
    try:
        pump.say(rest)
        turn = await c2.collect_until(lambda r: r.type == "reply.done", timeout=40)
        # Nothing more: the phrase was one turn, answered once.
        turn += await c2.nothing_for(1.5)
    finally:
        await pump.stop()
    types = [r.type for r in turn]
    # The turn started on the first socket and goes on here: no second input.speech.started.
    assert "input.speech.started" not in types, types
    assert types.count("input.speech.stopped") == 1 and types.count("transcript.user") == 1, types
    assert types.index("input.speech.stopped") < types.index("transcript.user") < types.index("reply.started"), types
    heard = next(r.event["text"] for r in turn if r.type == "transcript.user")
    assert word_error_rate(PHRASE, heard) <= 0.25, heard
    said = next(r.event for r in turn if r.type == "transcript.agent")
    assert said["text"] == reply_text(INTENT) and said["interrupted"] is False
    users = [m for m in agent.runtime.sessions[sid].conversation.messages if m["role"] == "user"]
    assert [m["content"] for m in users] == [heard]
    await c2.send("session.end")
    await c2.expect("session.ended")


async def test_a_phrase_cut_by_a_dropped_socket_mid_word_is_one_turn_after_resume(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    ulaw = caller_ulaw8k(speech_models.tts, PHRASE, lead_s=0.3, trail_s=0.0)
    loud = loud_frames(ulaw)
    # Cut at the speech frame nearest the middle of the phrase: inside a word, not in a pause.
    middle = (int(loud[0]) + int(loud[-1])) // 2
    cut = int(loud[np.argmin(np.abs(loud - middle))]) * FRAME_BYTES
    c, ready = await agent.session(input=ULAW, output=ULAW)
    sid = ready["session_id"]
    await send_frames(c, ulaw[:cut])
    await c.expect("input.speech.started")
    c2 = await drop_and_resume(agent, c, sid)
    await finish_turn(agent, c2, ulaw[cut:], sid)


async def test_a_socket_dropped_while_the_caller_pauses_at_the_end_still_gets_the_turn_answered(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    # The whole phrase and 0.4 s of line silence (past the 160 ms speculation point, short of the 600 ms end of
    # turn) on the first socket; only silence on the resumed one. The turn must end and be answered there.
    ulaw = caller_ulaw8k(speech_models.tts, PHRASE, lead_s=0.3, trail_s=0.0)
    c, ready = await agent.session(input=ULAW, output=ULAW)
    sid = ready["session_id"]
    await send_frames(c, ulaw + b"\xff" * (20 * FRAME_BYTES))
    await c.expect("input.speech.started")
    c2 = await drop_and_resume(agent, c, sid)
    await finish_turn(agent, c2, b"", sid)

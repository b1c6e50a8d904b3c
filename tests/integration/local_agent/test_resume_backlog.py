"""A resume that arrives before the agent noticed the old socket drop must not lose the caller audio that socket
had already delivered (issue: aiohttp's ``receive()`` returns "closed" straight after ``close()``, and ``close()``
discards what it reads waiting for the close frame). That audio is only ever unread when the agent has fallen
behind real time, so the test makes it fall behind: every worker-pool thread is held busy, the listener's VAD call
waits, the inbound queue fills, the reader stops reading and the socket buffers the rest. The client then resumes on
a new socket *without closing the old one* (a half-open connection, as after a network cut), sends more audio there,
and the pool is released. Every second of audio sent on both sockets must be heard, and in the order it was sent."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from gateway.local_agent.codec import InputDecoder
from gateway.local_agent.hearing import INBOUND_MAX
from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k

from .agent_client import FRAME_BYTES
from .conftest import AgentServer
from .test_resume_turn import ULAW, connection_tasks, send_frames

pytestmark = pytest.mark.speech

PHRASE = "Can I leave my car near the restaurant?"


async def test_audio_the_old_socket_received_but_the_agent_had_not_read_is_heard_after_a_resume(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    rt = agent.runtime
    voice = caller_ulaw8k(speech_models.tts, PHRASE)
    old_audio = (voice * (int(10 * 8000 / len(voice)) + 1))[: 10 * 8000]  # 10 s of caller speech
    # Then the phrase once more, on the new socket (whole frames: send_frames pads the last one with silence).
    new_audio = voice.ljust(-(-len(voice) // FRAME_BYTES) * FRAME_BYTES, b"\xff")
    c, ready = await agent.session(input=ULAW, output=ULAW)
    sid = ready["session_id"]
    session = rt.sessions[sid]
    # Hold every worker-pool thread, so the listener's VAD call waits and the agent falls behind real time.
    release = threading.Event()
    blockers = [rt.executor.submit(release.wait, 30.0) for _ in range(rt.settings.threads)]
    try:
        await send_frames(c, old_audio)
        # The reader has stopped reading (inbound queue full); the rest sits in the socket's buffers.
        async with asyncio.timeout(10):
            while session.hearing is None or session.hearing.inbound.qsize() < INBOUND_MAX:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)
        assert session.input_audio_s < 9.0, session.input_audio_s  # the agent really had not read it all
        c2 = await agent.client()
        await c2.send("session.resume", session_id=sid)
        assert (await c2.expect("session.ready", timeout=10))["session_id"] == sid
    finally:
        release.set()
        for b in blockers:
            await asyncio.wrap_future(b)
    await send_frames(c2, new_audio)
    sent_s = (len(old_audio) + len(new_audio)) / 8000
    h = session.hearing
    assert h is not None
    # Bounded wait until everything sent was received and heard (or it stops growing: audio was lost).
    async with asyncio.timeout(20):
        last, still = -1.0, 0
        while not (abs(session.input_audio_s - sent_s) < 1e-6 and h.inbound.empty() and h.vad_pending is None):
            await asyncio.sleep(0.1)
            still = still + 1 if session.input_audio_s == last else 0
            last = session.input_audio_s
            if still >= 30:
                break
    assert session.input_audio_s == pytest.approx(sent_s, abs=1e-6), (session.input_audio_s, sent_s)
    # In order: the audio the agent heard is the old socket's, then the new one's, sample for sample.
    expected = InputDecoder(session.config.input_format).decode(old_audio + new_audio)
    heard = h.utterance.slice(0, h.utterance.end)
    n = min(len(expected), len(heard)) // 2
    assert len(heard) // 2 >= n and n > 0
    a = np.frombuffer(expected[: n * 2], dtype="<i2").astype(np.int32)
    b = np.frombuffer(heard[: n * 2], dtype="<i2").astype(np.int32)
    assert len(heard) == len(expected) and int(np.abs(a - b).max()) <= 1, (len(heard), len(expected))
    # One connection left, the old one's tasks all gone.
    assert len(rt.connections) == 1
    names = connection_tasks()
    assert names.count("reader") == 1 and names.count("listener") == 1, names
    await c2.send("session.end")
    await c2.expect("session.ended")
    await c.close()

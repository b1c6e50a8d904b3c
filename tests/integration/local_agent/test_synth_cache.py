"""The synthesis cache (synth_cache.SynthCache): fixed text (the greeting, the intent table's replies) is synthesized
once per process and replayed; variable text never is. Piper's default synthesis is randomised per run, so two
fresh renderings of one sentence differ: identical audio shows a replay, different audio a fresh synthesis."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import AgentServer

pytestmark = pytest.mark.speech

ULAW = {"format": {"encoding": "audio/pcmu"}}


async def reply_audio(agent: AgentServer, **session: Any) -> bytes:
    c, _ = await agent.session(output=ULAW, **session)
    done = await c.collect_until(lambda r: r.type == "reply.done")
    rid = done[-1].event["reply_id"]
    await c.close()
    return bytes(c.audio[rid])


async def reply_create_audio(agent: AgentServer, instructions: str) -> bytes:
    c, _ = await agent.session(output=ULAW)
    await c.send("reply.create", instructions=instructions)
    done = await c.collect_until(lambda r: r.type == "reply.done")
    rid = done[-1].event["reply_id"]
    await c.close()
    return bytes(c.audio[rid])


async def test_a_greeting_is_synthesized_once_and_replayed_to_the_next_session(agent: AgentServer) -> None:
    first = await reply_audio(agent, greeting="Thanks for calling, how can I help?")
    second = await reply_audio(agent, greeting="Thanks for calling, how can I help?")
    assert first and first == second
    assert agent.runtime.synth_cache.hits >= 1


async def test_variable_text_is_synthesized_afresh_every_time(agent: AgentServer) -> None:
    first = await reply_create_audio(agent, "Your table for two is booked for seven tonight.")
    second = await reply_create_audio(agent, "Your table for two is booked for seven tonight.")
    assert first and second and first != second  # Piper's per-run randomness: not a replay
    assert len(agent.runtime.synth_cache) == 0

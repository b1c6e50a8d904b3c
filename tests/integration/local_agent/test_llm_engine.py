"""The optional LLM reply engine against a fake OpenAI-compatible streaming endpoint (no real LLM is reachable):
the engine on its own, then a whole session using it (reply.create → tool.call → tool.result → spoken answer)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest

from gateway.local_agent.brain import BrainContext, CallTool, CreateRequest, Say, Step, UserTurn
from gateway.local_agent.conversation import Conversation
from gateway.local_agent.llm import LlmEngine
from gateway.local_agent.protocol import ToolDef
from gateway.local_agent.settings import LlmSettings, LocalAgentSettings, settings_from_env
from gateway.local_agent.speech import split_sentences

from .conftest import AgentServer
from .fake_llm import FakeChatCompletions, Scripted

pytestmark = pytest.mark.speech  # the app under test runs the real speech models


@pytest.fixture
async def fake_llm(aiohttp_server: Any) -> tuple[FakeChatCompletions, str]:
    fake = FakeChatCompletions()
    server = await aiohttp_server(fake.app())
    return fake, str(server.make_url("/v1"))


async def collect(engine: LlmEngine, trigger: Any, ctx: BrainContext) -> list[Step]:
    return [s async for s in engine.reply(trigger, ctx)]


async def test_engine_streams_sentences_and_sends_prompt_history_tools_and_key(
    fake_llm: tuple[FakeChatCompletions, str],
) -> None:
    fake, url = fake_llm
    fake.replies.append(Scripted("Sure. We open at nine tomorrow! Anything else?"))
    conv = Conversation()
    conv.add_user("When do you open?")
    ctx = BrainContext("You are the host of a restaurant.", (ToolDef("end_call", "Hang up"),), conv)
    # The key as start-up reads it from the environment (settings_from_env, tests/unit/local_agent/test_settings.py).
    llm = settings_from_env(
        LocalAgentSettings(llm=LlmSettings(url, "tiny-model", "FAKE_LLM_KEY", temperature=0.2)),
        {"FAKE_LLM_KEY": "sk-local-test"},
    ).llm
    assert llm is not None
    async with aiohttp.ClientSession() as http:
        engine = LlmEngine(llm, http, split=split_sentences)
        steps = await collect(engine, UserTurn("When do you open?"), ctx)
    assert steps == [Say("Sure."), Say("We open at nine tomorrow!"), Say("Anything else?")]
    body = fake.requests[0]
    assert body["model"] == "tiny-model" and body["stream"] is True and body["temperature"] == 0.2
    assert body["messages"] == [
        {"role": "system", "content": "You are the host of a restaurant."},
        {"role": "user", "content": "When do you open?"},
    ]
    assert body["tools"][0]["function"]["name"] == "end_call" and body["tool_choice"] == "auto"
    assert fake.headers[0]["Authorization"] == "Bearer sk-local-test"


async def test_engine_turns_streamed_tool_calls_into_call_tool_steps(fake_llm: tuple[FakeChatCompletions, str]) -> None:
    fake, url = fake_llm
    fake.replies.append(Scripted("Let me check.", tool_calls=[("book_table", {"party_size": 4, "time": "19:00"})]))
    ctx = BrainContext(None, (ToolDef("book_table"),), Conversation())
    async with aiohttp.ClientSession() as http:
        engine = LlmEngine(LlmSettings(url, "m"), http, split=split_sentences)
        steps = await collect(engine, CreateRequest("Book it."), ctx)
    assert steps == [Say("Let me check."), CallTool("book_table", {"party_size": 4, "time": "19:00"})]
    assert "Authorization" not in fake.headers[0]
    assert fake.requests[0]["messages"][-1] == {"role": "system", "content": "Book it."}


@pytest.mark.parametrize("failure", ["http-500", "unreachable"])
async def test_engine_apologises_when_the_endpoint_fails(
    fake_llm: tuple[FakeChatCompletions, str], failure: str
) -> None:
    fake, url = fake_llm
    if failure == "http-500":
        fake.replies.append(Scripted(status=500))
    else:
        url = "http://127.0.0.1:9/v1"  # nothing listens on the discard port
    async with aiohttp.ClientSession() as http:
        engine = LlmEngine(LlmSettings(url, "m", timeout_s=3), http, split=split_sentences, fallback_reply="Oops.")
        steps = await collect(engine, UserTurn("hi"), BrainContext(None, (), Conversation()))
    assert steps == [Say("Oops.")]


async def test_a_session_on_the_llm_engine_calls_tools_and_speaks_the_answer(
    fake_llm: tuple[FakeChatCompletions, str], start_agent: Callable[..., Awaitable[AgentServer]]
) -> None:
    fake, url = fake_llm
    fake.replies += [
        Scripted(tool_calls=[("book_table", {"party_size": 2})]),
        Scripted("Your table for two is booked for seven o'clock."),
    ]
    agent = await start_agent(llm=LlmSettings(url, "tiny-model"))
    c, _ = await agent.session(
        system_prompt="You book tables.",
        tools=[{"type": "function", "name": "book_table", "parameters": {"type": "object", "properties": {}}}],
        output={"format": {"encoding": "audio/pcmu"}},
    )
    await c.send("reply.create", instructions="Book a table for two.")
    call = await c.expect("tool.call")
    assert call["name"] == "book_table" and call["arguments"] == {"party_size": 2}
    assert (await c.expect("reply.done"))["status"] == "completed"
    await c.send("tool.result", call_id=call["call_id"], result='{"booked": true, "time": "19:00"}')
    events = await c.collect_until(lambda r: r.type == "reply.done", timeout=20)
    final = next(r.event for r in events if r.type == "transcript.agent")
    assert final["text"] == "Your table for two is booked for seven o'clock."
    # The second request carries the session prompt, the tool call under our call_id, and its result.
    second = fake.requests[1]["messages"]
    assert second[0] == {"role": "system", "content": "You book tables."}
    # reply.create's instructions were a system instruction for that one reply only.
    instruction = {"role": "system", "content": "Book a table for two."}
    assert fake.requests[0]["messages"][-1] == instruction and instruction not in second
    assistant = next(m for m in second if m["role"] == "assistant")
    assert assistant["tool_calls"][0]["id"] == call["call_id"]
    result = '{"booked": true, "time": "19:00"}'
    assert second[-1] == {"role": "tool", "tool_call_id": call["call_id"], "content": result}
    await c.close()

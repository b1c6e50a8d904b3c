"""Stored agents and session history through the real local agent: ``/v1/agents`` and ``/v1/sessions`` over HTTP on
loopback, a WebSocket session bound to a stored agent with real speech, and its artifacts (the stereo WAV and the
timeline) fetched back and checked: the caller on the left, the agent on the right
(docs/reference/local-agent-api.md#stored-agents, #sessions)."""

from __future__ import annotations

import asyncio
import io
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest

from gateway.local_agent.settings import SettingsError
from gateway.local_agent.speech import SpeechModels
from gateway.local_agent.speech.phone import ulaw8k_to_pcm16_16k
from gateway.local_agent.store.service import DB_NAME
from tests.support.caller_voice import caller_ulaw8k
from tests.support.wer import word_error_rate

from .agent_client import LinePump
from .conftest import API_KEY, AgentServer

ULAW = {"format": {"encoding": "audio/pcmu"}}
AUTH = {"Authorization": API_KEY}
GREETING = "Hello, you have reached the Harbour Kitchen booking line."
QUESTION = "What hours are you open on Saturday?"
TOOL = {
    "type": "function",
    "name": "book_table",
    "description": "Book a table",
    "parameters": {"type": "object", "properties": {"party_size": {"type": "integer"}}},
}


def agent_body(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": "Front desk",
        "system_prompt": "You take bookings for a small restaurant.",
        "voice": {"voice_id": "alba"},
        "greeting": GREETING,
        "input": ULAW,
        "output": ULAW,
        "tools": [TOOL],
    }
    body.update(changes)
    return body


async def call(
    http: aiohttp.ClientSession, method: str, url: str, *, headers: dict[str, str] | None = AUTH, **kw: Any
) -> tuple[int, Any]:
    async with http.request(method, url, headers=headers, **kw) as r:
        if r.content_type == "application/json":
            return r.status, await r.json()
        return r.status, await r.read()


async def wait_for_status(http: aiohttp.ClientSession, url: str, status: str, timeout: float = 15.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        while True:
            code, record = await call(http, "GET", url)
            assert code == 200, record
            if record["status"] == status:
                return record
            await asyncio.sleep(0.1)


def channel(stereo: np.ndarray, ch: int, start_ms: int, end_ms: int, rate: int) -> np.ndarray:
    return stereo[start_ms * rate // 1000 : end_ms * rate // 1000, ch].astype(np.float64)


def rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x**2))) if len(x) else 0.0


@pytest.mark.speech
async def test_a_spoken_session_with_a_stored_agent_is_recorded_in_stereo_with_its_timeline(
    start_agent: Callable[..., Awaitable[AgentServer]], speech_models: SpeechModels, tmp_path: Path
) -> None:
    agent = await start_agent(data_dir=tmp_path)
    async with aiohttp.ClientSession() as http:
        code, stored = await call(http, "POST", f"{agent.base}/v1/agents", json=agent_body())
        assert code == 201, stored
        c = await agent.client()
        ready = await c.open_session(agent_id=stored["id"])
        # The stored agent's config is the session's: greeting, prompt, formats, tools.
        assert ready["config"]["greeting"] == GREETING
        assert ready["config"]["system_prompt"] == stored["system_prompt"]
        assert ready["config"]["output"]["format"]["encoding"] == "audio/pcmu"
        assert [t["name"] for t in ready["config"]["tools"]] == ["book_table"]
        sid = ready["session_id"]
        pump = LinePump(c).start()
        try:
            greeting = await c.collect_until(lambda r: r.type == "reply.done", timeout=30)
            assert [r.event["text"] for r in greeting if r.type == "transcript.agent"] == [GREETING]
            pump.say(caller_ulaw8k(speech_models.tts, QUESTION))
            turn = await c.collect_until(lambda r: r.type == "reply.done", timeout=40)
            answer = next(r.event for r in turn if r.type == "transcript.agent")
        finally:
            await pump.stop()

        # While it runs the session is listed as active, with no artifacts yet.
        code, live = await call(http, "GET", f"{agent.base}/v1/sessions/{sid}")
        assert code == 200 and live["status"] == "active" and live["artifacts"] == []
        await c.send("session.end")
        ended = await c.expect("session.ended")
        await c.wait_closed()

        record = await wait_for_status(http, f"{agent.base}/v1/sessions/{sid}", "completed")
        assert record["agent_id"] == stored["id"]
        assert record["public_close_reason"] == "client_end"
        assert record["duration_seconds"] >= ended["session_duration_seconds"] - 0.5 > 0
        assert record["config"]["greeting"] == GREETING
        code, listed = await call(http, "GET", f"{agent.base}/v1/sessions?agent_id={stored['id']}")
        assert code == 200 and [s["id"] for s in listed["sessions"]] == [sid]
        assert "artifacts" not in listed["sessions"][0]

        artifacts = {a["type"]: a for a in record["artifacts"]}
        assert set(artifacts) == {"audio", "timeline"}
        # Signed links: fetched without the API key, as the cloud's presigned URLs are.
        code, timeline = await call(http, "GET", artifacts["timeline"]["url"], headers=None)
        assert code == 200, timeline
        code, wav_bytes = await call(http, "GET", artifacts["audio"]["url"], headers=None)
        assert code == 200
        code, _ = await call(http, "GET", f"{agent.base}/v1/sessions/{sid}/recording", headers=None)
        assert code == 401

    agent_turns = [t for t in timeline["turns"] if t["role"] == "agent"]
    user_turns = [t for t in timeline["turns"] if t["role"] == "user" and t["text"]]
    assert [t["trigger"] for t in agent_turns] == ["greeting", "user_speech"]
    assert agent_turns[0]["text"] == GREETING and agent_turns[1]["text"] == answer["text"]
    assert all(t["status"] == "completed" and t["time_to_first_audio_ms"] >= 0 for t in agent_turns)
    assert len(user_turns) == 1 and word_error_rate(QUESTION, user_turns[0]["text"]) <= 0.25
    # The answer's latency is measured from the end of the caller's turn.
    assert agent_turns[1]["trigger_ms"] == user_turns[0]["end_ms"]

    with wave.open(io.BytesIO(wav_bytes)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (2, 2, 8000)
        rate = w.getframerate()
        stereo = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)
    greet, user = agent_turns[0], user_turns[0]
    # The greeting is on the right only; the caller's question on the left only.
    assert rms(channel(stereo, 1, greet["first_audio_ms"], greet["end_ms"], rate)) > 10 * rms(
        channel(stereo, 0, greet["first_audio_ms"], greet["end_ms"], rate)
    )
    assert rms(channel(stereo, 0, user["start_ms"], user["end_ms"], rate)) > 10 * rms(
        channel(stereo, 1, user["start_ms"], user["end_ms"], rate)
    )
    # And each is what was said: the recording transcribed back.
    right = stereo[greet["first_audio_ms"] * rate // 1000 : greet["end_ms"] * rate // 1000 + rate // 2, 1]
    heard = speech_models.stt.transcribe(_to_16k(right))
    assert word_error_rate(GREETING, heard) <= 0.25, heard
    left = stereo[max(0, user["start_ms"] - 300) * rate // 1000 : user["end_ms"] * rate // 1000, 0]
    assert word_error_rate(QUESTION, speech_models.stt.transcribe(_to_16k(left))) <= 0.25
    # It all lives in the data directory.
    assert (tmp_path / DB_NAME).exists() and (tmp_path / "sessions" / sid / "recording.wav").exists()


def _to_16k(pcm8k: np.ndarray) -> bytes:
    from gateway.audio.g711 import pcm16_to_ulaw

    return ulaw8k_to_pcm16_16k(pcm16_to_ulaw(pcm8k.astype("<i2").tobytes()))


async def test_agents_round_trip_through_create_get_list_replace_and_delete(agent: AgentServer) -> None:
    base = f"{agent.base}/v1/agents"
    async with aiohttp.ClientSession() as http:
        code, created = await call(http, "POST", base, json=agent_body(voice="anna"))
        assert code == 201
        assert created["id"].startswith("agent_") and len(created["id"]) == len("agent_") + 32
        assert created["voice"] == {"voice_id": "anna"} and created["tools"][0]["name"] == "book_table"
        assert created["created_at"].endswith("Z")
        assert await call(http, "GET", f"{base}/{created['id']}") == (200, created)

        code, replaced = await call(http, "PUT", f"{base}/{created['id']}", json=agent_body(greeting="Hi there."))
        assert code == 200 and replaced["greeting"] == "Hi there." and replaced["voice"] == {"voice_id": "alba"}
        assert replaced["id"] == created["id"] and replaced["created_at"] == created["created_at"]

        others = [(await call(http, "POST", base, json=agent_body(name=f"n{i}")))[1]["id"] for i in range(2)]
        code, page = await call(http, "GET", f"{base}?limit=2")
        assert code == 200 and [a["id"] for a in page["agents"]] == others[::-1] and page["has_more"] is True
        cursor = page["response_metadata"]["next_cursor"]
        code, rest = await call(http, "GET", f"{base}?limit=2&cursor={cursor}")
        assert [a["id"] for a in rest["agents"]] == [created["id"]] and rest["has_more"] is False

        assert (await call(http, "DELETE", f"{base}/{created['id']}"))[0] == 204
        for method in ("GET", "DELETE"):
            assert await call(http, method, f"{base}/{created['id']}") == (404, {"detail": "Agent not found"})
        assert (await call(http, "PUT", f"{base}/{created['id']}", json=agent_body()))[0] == 404


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, [("missing", ["body", "name"]), ("missing", ["body", "system_prompt"]), ("missing", ["body", "voice"])]),
        (agent_body(voice={"voice_id": "nobody"}), [("value_error", ["body", "voice", "voice_id"])]),
        (
            agent_body(tools=[{**TOOL, "parameters": {"properties": []}}]),
            [("value_error", ["body", "tools", 0, "parameters", "properties"])],
        ),
        (agent_body(colour="blue"), [("extra_forbidden", ["body", "colour"])]),
        (agent_body(output={"voice": "alba"}), [("extra_forbidden", ["body", "output", "voice"])]),
        (
            agent_body(input={"format": {"encoding": "audio/ogg"}}),
            [("value_error", ["body", "input", "format", "encoding"])],
        ),
        ([1, 2], [("model_type", ["body"])]),
    ],
)
async def test_an_invalid_agent_is_a_422_naming_each_bad_field(
    agent: AgentServer, body: Any, expected: list[tuple[str, list[Any]]]
) -> None:
    async with aiohttp.ClientSession() as http:
        code, answer = await call(http, "POST", f"{agent.base}/v1/agents", json=body)
        assert code == 422
        assert [(d["type"], d["loc"]) for d in answer["detail"]] == expected
        assert all(d["msg"] for d in answer["detail"])
        # Nothing was stored.
        assert (await call(http, "GET", f"{agent.base}/v1/agents"))[1]["agents"] == []


async def test_the_rest_api_asks_for_the_api_key_and_answers_404_for_unknown_ids(agent: AgentServer) -> None:
    async with aiohttp.ClientSession() as http:
        for path in ("/v1/agents", "/v1/sessions", "/v1/sessions/sess_x", "/v1/sessions/sess_x/timeline"):
            assert await call(http, "GET", agent.base + path, headers=None) == (401, {"detail": "Missing API key"})
            assert await call(http, "GET", agent.base + path, headers={"Authorization": "nope"}) == (
                401,
                {"detail": "Invalid API key"},
            )
        bearer = {"Authorization": f"Bearer {API_KEY}"}
        assert await call(http, "GET", f"{agent.base}/v1/sessions/sess_x", headers=bearer) == (
            404,
            {"detail": "Session not found"},
        )
        assert (await call(http, "DELETE", f"{agent.base}/v1/sessions/sess_x"))[0] == 404
        assert (await call(http, "GET", f"{agent.base}/v1/sessions/sess_x/recording"))[0] == 404
        # An id that is not one of ours never names a file, even one that escapes the data directory.
        escape = f"{agent.base}/v1/sessions/..%2F..%2F{'a' * 8}/timeline"
        assert (await call(http, "GET", escape))[0] == 404
        code, bad = await call(http, "GET", f"{agent.base}/v1/sessions?limit=0")
        assert code == 422 and bad["detail"][0]["loc"] == ["query", "limit"]
        code, bad = await call(http, "GET", f"{agent.base}/v1/sessions?status=done")
        assert code == 422 and bad["detail"][0]["loc"] == ["query", "status"]
        code, bad = await call(http, "POST", f"{agent.base}/v1/agents", data=b"{not json", headers=AUTH)
        assert code == 422 and bad["detail"][0]["type"] == "json_invalid"


async def test_a_session_bound_to_a_stored_agent_takes_later_updates_as_an_inline_one_would(
    agent: AgentServer,
) -> None:
    async with aiohttp.ClientSession() as http:
        _, stored = await call(http, "POST", f"{agent.base}/v1/agents", json=agent_body(greeting=None, tools=[]))
    c = await agent.client()
    ready = await c.open_session(agent_id=stored["id"])
    assert ready["config"]["system_prompt"] == stored["system_prompt"] and ready["config"]["greeting"] is None
    await c.send("session.update", session={"system_prompt": "Be brief.", "tools": [TOOL]})
    updated = await c.expect("session.updated")
    assert updated["config"]["system_prompt"] == "Be brief." and updated["config"]["tools"][0]["name"] == "book_table"
    await c.send("session.update", session={"output": {"voice": "anna"}})
    error = await c.expect("session.error")
    assert (error["code"], error["param"]) == ("immutable_field", "output.voice")
    await c.send("session.end")
    await c.expect("session.ended")
    await c.wait_closed()


async def test_agents_outlive_the_app_and_a_dropped_session_ends_when_its_resume_window_runs_out(
    start_agent: Callable[..., Awaitable[AgentServer]], tmp_path: Path
) -> None:
    first = await start_agent(data_dir=tmp_path)
    async with aiohttp.ClientSession() as http:
        _, stored = await call(http, "POST", f"{first.base}/v1/agents", json=agent_body(greeting=None))
        await first.server.close()
        second = await start_agent(data_dir=tmp_path)  # resume window: 2 s (conftest)
        assert (await call(http, "GET", f"{second.base}/v1/agents/{stored['id']}"))[1] == stored
        c = await second.client()
        ready = await c.open_session(agent_id=stored["id"])
        c.abort()
        record = await wait_for_status(http, f"{second.base}/v1/sessions/{ready['session_id']}", "completed")
        assert record["public_close_reason"] == "resume_timeout"
        assert {a["type"] for a in record["artifacts"]} == {"audio", "timeline"}
        assert (await call(http, "DELETE", f"{second.base}/v1/sessions/{ready['session_id']}"))[0] == 204
        assert not (tmp_path / "sessions" / ready["session_id"]).exists()
        assert (await call(http, "GET", f"{second.base}/v1/sessions"))[1]["sessions"] == []


async def test_a_data_directory_that_cannot_be_used_stops_start_up_naming_it(
    start_agent: Callable[..., Awaitable[AgentServer]], tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(SettingsError, match="data_dir: cannot keep"):
        await start_agent(data_dir=tmp_path / "file" / "data")


async def test_a_data_directory_that_cannot_take_recordings_leaves_the_session_unharmed(
    start_agent: Callable[..., Awaitable[AgentServer]], tmp_path: Path
) -> None:
    (tmp_path / "sessions").write_text("a file where the sessions' folder should be")
    agent = await start_agent(data_dir=tmp_path)
    c = await agent.client()
    ready = await c.open_session(input=ULAW, output=ULAW)
    await c.send("session.end")
    await c.expect("session.ended")
    assert await c.wait_closed() == 1000
    async with aiohttp.ClientSession() as http:
        record = await wait_for_status(http, f"{agent.base}/v1/sessions/{ready['session_id']}", "completed")
    assert record["public_close_reason"] == "client_end" and record["artifacts"] == []


async def test_embedded_in_the_gateway_the_routes_and_artifact_links_live_under_agent(
    aiohttp_server: Any, speech_models: SpeechModels, tmp_path: Path
) -> None:
    from gateway.app import create_app
    from gateway.config import load_settings
    from gateway.local_agent.settings import DEFAULT_INTENTS_PATH

    from .agent_client import AgentClient

    (tmp_path / "gateway.toml").write_text(
        f'[local_agent]\nintents = "{DEFAULT_INTENTS_PATH}"\ndata_dir = "{tmp_path / "data"}"\n'
    )
    settings = load_settings(
        str(tmp_path / "gateway.toml"), env={"GATEWAY_TOKEN_SECRET": "x", "LOCAL_AGENT_API_KEY": API_KEY}
    )
    server = await aiohttp_server(create_app(settings, local_agent_models=speech_models))
    base = str(server.make_url("/agent/v1")).rstrip("/")
    async with aiohttp.ClientSession() as http:
        code, stored = await call(http, "POST", f"{base}/agents", json=agent_body(greeting=None))
        assert code == 201
        c = await AgentClient.connect(base.replace("http://", "ws://") + "/ws", headers=AUTH)
        ready = await c.open_session(agent_id=stored["id"])
        await c.send("session.end")
        await c.expect("session.ended")
        record = await wait_for_status(http, f"{base}/sessions/{ready['session_id']}", "completed")
        links = {a["type"]: a["url"] for a in record["artifacts"]}
        assert links["timeline"].startswith(f"{base}/sessions/{ready['session_id']}/timeline?")
        code, timeline = await call(http, "GET", links["timeline"], headers=None)
        assert code == 200 and timeline["session_id"] == ready["session_id"]
    assert (tmp_path / "data" / "local_agent.sqlite3").exists()

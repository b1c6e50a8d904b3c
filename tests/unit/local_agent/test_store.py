"""The store's pure parts: what a stored agent may hold and the session it opens, the timeline built from a session's
event log, where the stereo recording puts each side's audio, and the signed artifact links
(docs/reference/local-agent-api.md#stored-agents, #timeline, #recording, #artifacts)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from gateway.local_agent import protocol as proto
from gateway.local_agent.handshake import Close, Handshake, LoadAgent, OpenSession, Phase, Send
from gateway.local_agent.settings import DEFAULT_VOICES
from gateway.local_agent.store.agents import AgentInvalid, agent_session_fields, validate_agent
from gateway.local_agent.store.artifacts import LINK_TTL_S, check_link, sign_link
from gateway.local_agent.store.recording import StereoRecording, audible_pcm
from gateway.local_agent.store.timeline import build_timeline

VOICES = DEFAULT_VOICES
AGENT = {
    "name": "Desk",
    "system_prompt": "Take bookings.",
    "voice": {"voice_id": "anna"},
    "greeting": "Hello.",
    "output": {"format": {"encoding": "audio/pcmu"}, "volume": 50},
    "tools": [{"type": "function", "name": "book", "parameters": {"type": "object", "properties": {}}}],
    "llm": [{"base_url": "https://llm.example/v1", "model": "m", "api_key": "secret"}],
}


# ---- stored agents


def test_a_valid_agent_is_kept_normalised_and_without_the_llm_key() -> None:
    agent = validate_agent({**AGENT, "voice": "anna"}, voices=VOICES)
    assert agent["voice"] == {"voice_id": "anna"}
    assert agent["llm"] == [{"base_url": "https://llm.example/v1", "model": "m"}]
    assert "secret" not in repr(agent)


def test_an_agent_opens_the_session_it_stands_for() -> None:
    agent = validate_agent(AGENT, voices=VOICES)
    fields = agent_session_fields(agent)
    assert "llm" not in fields
    cfg = proto.apply_session_update(None, {"agent_id": "agent_1"}, voices=VOICES, agents={"agent_1": fields})
    assert (cfg.agent_id, cfg.voice, cfg.greeting, cfg.system_prompt) == ("agent_1", "anna", "Hello.", "Take bookings.")
    assert cfg.output_format.encoding == "audio/pcmu" and cfg.volume == 50.0 and cfg.tools[0].name == "book"
    # Later updates change a bound session as an inline one; the agent id stays.
    later = proto.apply_session_update(cfg, {"system_prompt": "Be brief."}, voices=VOICES)
    assert later.system_prompt == "Be brief." and later.agent_id == "agent_1"
    with pytest.raises(proto.ProtocolError) as e:
        proto.apply_session_update(cfg, {"greeting": "Hi."}, voices=VOICES)
    assert e.value.code == "immutable_field"


@pytest.mark.parametrize(
    ("session", "code", "fatal"),
    [
        ({"agent_id": "agent_unknown"}, "agent_not_found", True),
        ({"agent_id": "agent_1", "greeting": "x"}, "invalid_value", True),
        ({"agent_id": 7}, "invalid_format", False),
    ],
)
def test_a_first_update_naming_an_agent_it_cannot_bind_is_refused(
    session: dict[str, Any], code: str, fatal: bool
) -> None:
    with pytest.raises(proto.ProtocolError) as e:
        proto.apply_session_update(None, session, voices=VOICES, agents={"agent_1": {"system_prompt": "x"}})
    assert (e.value.code, e.value.param, e.value.fatal) == (code, "agent_id", fatal)


@pytest.mark.parametrize(
    ("change", "locs"),
    [
        ({"name": ""}, [["body", "name"]]),
        ({"name": 3, "system_prompt": 4}, [["body", "name"], ["body", "system_prompt"]]),
        ({"voice": {"voice_id": "anna", "speed": 2}}, [["body", "voice", "speed"]]),
        ({"voice": {}}, [["body", "voice", "voice_id"]]),
        ({"voice": {"voice_id": "robot"}}, [["body", "voice", "voice_id"]]),
        (
            {"llm": [{"base_url": "ftp://x", "model": ""}]},
            [["body", "llm", 0, "base_url"], ["body", "llm", 0, "model"]],
        ),
        ({"tools": [{"name": "bad name"}]}, [["body", "tools", 0, "name"]]),
        ({"output": {"volume": 300}}, [["body", "output", "volume"]]),
        ({"input": {"turn_detection": {"min_silence": -1}}}, [["body", "input", "turn_detection", "min_silence"]]),
        ({"greeting": 5}, [["body", "greeting"]]),
    ],
)
def test_an_invalid_agent_names_each_bad_field(change: dict[str, Any], locs: list[list[Any]]) -> None:
    with pytest.raises(AgentInvalid) as e:
        validate_agent({**AGENT, **change}, voices=VOICES)
    assert [d["loc"] for d in e.value.detail] == locs
    assert all(d["type"] and d["msg"] for d in e.value.detail)


# ---- the handshake looks the agent up through its shell


def test_the_handshake_asks_for_the_stored_agent_then_opens_with_its_config() -> None:
    hs = Handshake(voices=VOICES)
    hs.authenticate(proto.Grant("key"), now=0.0)
    actions = hs.receive('{"type":"session.update","session":{"agent_id":"agent_1"}}', now=0.0)
    assert actions == [LoadAgent("agent_1")] and hs.phase is Phase.LOADING_AGENT
    [opened] = hs.agent_loaded("agent_1", agent_session_fields(validate_agent(AGENT, voices=VOICES)), now=0.0)
    assert isinstance(opened, OpenSession) and opened.config.agent_id == "agent_1" and hs.phase is Phase.OPENING


def test_an_unknown_stored_agent_closes_the_socket_with_agent_not_found() -> None:
    hs = Handshake(voices=VOICES)
    hs.authenticate(proto.Grant("key"), now=0.0)
    hs.receive('{"type":"session.update","session":{"agent_id":"agent_2"}}', now=0.0)
    send, close = hs.agent_loaded("agent_2", None, now=1.0)
    assert isinstance(send, Send) and send.event["code"] == "agent_not_found"
    assert close == Close(1008, b"Agent 'agent_2' not found") and hs.phase is Phase.CLOSED


# ---- the timeline

LOG: list[dict[str, Any]] = [
    {"t": 0, "e": "reply.trigger", "reply_id": "r1", "trigger": "greeting"},
    {"t": 5, "e": "reply.started", "reply_id": "r1", "item_id": "i1"},
    {"t": 420, "e": "reply.first_audio", "reply_id": "r1"},
    {"t": 2000, "e": "transcript.agent", "reply_id": "r1", "text": "Hello.", "interrupted": False},
    {"t": 2001, "e": "reply.done", "reply_id": "r1", "status": "completed"},
    {"t": 3000, "e": "input.speech.started"},
    {"t": 4500, "e": "input.speech.stopped"},
    {"t": 4800, "e": "transcript.user", "item_id": "u1", "text": "Book a table."},
    {"t": 4810, "e": "reply.trigger", "reply_id": "r2", "trigger": "user_speech"},
    {"t": 4811, "e": "reply.started", "reply_id": "r2", "item_id": "i2"},
    {"t": 4900, "e": "tool.call", "call_id": "c1", "name": "book", "arguments": {"n": 2}},
    {"t": 4901, "e": "reply.done", "reply_id": "r2", "status": "completed"},
    {"t": 5400, "e": "tool.result", "call_id": "c1", "result": '"ok"', "is_error": False},
    {"t": 5410, "e": "reply.trigger", "reply_id": "r3", "trigger": "tool_result"},
    {"t": 5411, "e": "reply.started", "reply_id": "r3", "item_id": "i3"},
    {"t": 6010, "e": "reply.first_audio", "reply_id": "r3"},
    {"t": 6500, "e": "input.speech.started"},
    {"t": 6502, "e": "transcript.agent", "reply_id": "r3", "text": "Done", "interrupted": True},
    {"t": 6503, "e": "reply.done", "reply_id": "r3", "status": "interrupted"},
]


def test_the_timeline_has_turns_in_order_with_triggers_latencies_and_tool_calls() -> None:
    tl = build_timeline(LOG)
    roles = [(t["role"], t.get("reply_id") or t.get("item_id")) for t in tl["turns"]]
    assert roles == [("agent", "r1"), ("user", "u1"), ("agent", "r2"), ("agent", "r3"), ("user", None)]
    greet, user, pre, answer, barge = tl["turns"]
    assert (greet["trigger"], greet["trigger_ms"], greet["time_to_first_audio_ms"]) == ("greeting", 0, 420)
    assert (user["start_ms"], user["end_ms"], user["text"]) == (3000, 4500, "Book a table.")
    assert (pre["trigger"], pre["trigger_ms"], pre["tool_calls"], pre["first_audio_ms"]) == (
        "user_speech",
        4500,
        ["c1"],
        None,
    )
    assert (answer["trigger"], answer["time_to_first_audio_ms"], answer["status"]) == (
        "tool_result",
        610,
        "interrupted",
    )
    assert answer["text"] == "Done" and barge["end_ms"] is None
    assert tl["tool_calls"] == [
        {
            "call_id": "c1",
            "name": "book",
            "arguments": {"n": 2},
            "reply_id": "r2",
            "called_ms": 4900,
            "result": '"ok"',
            "is_error": False,
            "result_ms": 5400,
        }
    ]


def test_a_reply_create_is_the_trigger_of_the_reply_it_asked_for() -> None:
    log = [
        {"t": 100, "e": "reply.create", "instructions": None},
        {"t": 120, "e": "reply.trigger", "reply_id": "r", "trigger": "reply_create"},
        {"t": 400, "e": "reply.first_audio", "reply_id": "r"},
    ]
    [turn] = build_timeline(log)["turns"]
    assert (turn["trigger_ms"], turn["time_to_first_audio_ms"]) == (100, 300)


# ---- the recording


def tone(n: int, value: int = 1000) -> bytes:
    return np.full(n, value, dtype="<i2").tobytes()


def frames(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<i2").reshape(-1, 2)


def test_caller_audio_is_contiguous_and_agent_audio_goes_where_it_is_played() -> None:
    rec = StereoRecording(8000, hold_s=0.0)
    # Caller frames arriving with jitter (20 ms each, late and bunched) run on without gaps.
    rec.user(tone(160, 100), 0.020)
    rec.user(tone(160, 200), 0.045)
    rec.user(tone(160, 300), 0.050)
    rec.agent(tone(80, 7), 0.010)
    out = frames(rec.take(None))
    assert list(out[:480:160, 0]) == [100, 200, 300] and len(out) == 480
    assert set(out[80:160, 1]) == {7} and set(out[:80, 1]) == {0} and set(out[160:, 1]) == {0}


def test_a_real_gap_in_the_callers_audio_stays_silent() -> None:
    rec = StereoRecording(8000, hold_s=0.0)
    rec.user(tone(160), 0.020)
    rec.user(tone(160, 5), 2.020)  # the socket was away for two seconds
    out = frames(rec.take(None))
    assert len(out) == 16160 and set(out[160:16000, 0]) == {0} and set(out[16000:, 0]) == {5}


def test_agent_audio_written_after_a_flush_overwrites_what_the_client_dropped() -> None:
    rec = StereoRecording(8000, hold_s=0.0)
    rec.agent(tone(800, 9), 0.0)  # 100 ms sent ahead of the playout
    rec.agent(tone(400, 4), 0.05)  # barge-in at 50 ms: the client flushed; the next reply plays from there
    out = frames(rec.take(None))
    assert set(out[:400, 1]) == {9} and set(out[400:800, 1]) == {4}


def test_a_barge_in_cut_drops_the_agent_audio_the_client_had_not_played() -> None:
    rec = StereoRecording(8000, hold_s=0.0)
    rec.agent(tone(1600, 9), 0.0)  # 200 ms sent ahead
    rec.user(tone(800, 1), 0.1)
    rec.agent_cut(0.05)
    out = frames(rec.take(None))
    assert set(out[:400, 1]) == {9} and set(out[400:, 1]) == {0} and len(out) == 800


def test_take_holds_back_recent_audio_and_counts_what_comes_too_late() -> None:
    rec = StereoRecording(8000, hold_s=1.0)
    rec.user(tone(8000), 1.0)
    assert rec.take(0.5) == b""
    first = rec.take(1.5)  # up to 0.5 s
    assert len(first) == 4000 * 4 and rec.base == 4000
    rec.agent(tone(800, 3), 0.45)  # starts 50 ms (400 frames) before what was handed out
    rest = frames(rec.take(None))
    assert rec.late_frames == 400
    assert rec.base == 8000 and len(rest) == 4000 and set(rest[:400, 1]) == {3} and set(rest[400:, 1]) == {0}


def test_audible_counts_speech_not_line_noise() -> None:
    assert not audible_pcm(tone(160, 200)) and audible_pcm(tone(160, 2000)) and not audible_pcm(b"")


# ---- signed links


def test_an_artifact_link_opens_only_its_own_artifact_until_it_expires() -> None:
    q = sign_link(b"k" * 32, "sess_1", "recording", now=1000.0)
    assert check_link(b"k" * 32, "sess_1", "recording", q, now=1000.0 + LINK_TTL_S - 1)
    assert not check_link(b"k" * 32, "sess_1", "recording", q, now=1000.0 + LINK_TTL_S)
    assert not check_link(b"k" * 32, "sess_2", "recording", q, now=1001.0)
    assert not check_link(b"k" * 32, "sess_1", "timeline", q, now=1001.0)
    assert not check_link(b"x" * 32, "sess_1", "recording", q, now=1001.0)
    assert not check_link(b"k" * 32, "sess_1", "recording", {"expires": "9999999999"}, now=1001.0)

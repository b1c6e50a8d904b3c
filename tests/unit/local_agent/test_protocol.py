"""The local agent's pure protocol core (gateway/local_agent/protocol.py): parsing client events, validating and
echoing session config, tokens and credentials, the token endpoint's 422 shapes, and agent-transcript timing."""

from __future__ import annotations

import base64
import itertools
import json
import re
from typing import Any

import pytest

from gateway.local_agent import protocol as proto

VOICES = ("ivy", "alba", "eve")
SECRET = b"unit-test-secret-0123456789abcdef"


def counter_rand() -> Any:
    n = iter(range(1, 1000))
    return lambda nbytes: f"{next(n):0{nbytes * 2}x}"


# ---- ids and events


def test_ids_have_the_live_prefixes_and_lengths() -> None:
    rand = counter_rand()
    assert proto.new_session_id(rand) == "sess_" + "0" * 31 + "1"
    assert re.fullmatch(r"resp_[0-9a-f]{32}", proto.new_reply_id(rand))
    assert re.fullmatch(r"msg_[0-9a-f]{32}", proto.new_item_id(rand))
    assert re.fullmatch(r"chatcmpl-tool-[0-9a-f]{16}", proto.new_call_id(rand))
    assert re.fullmatch(r"sess_[0-9a-f]{32}", proto.new_session_id())  # the default uses secrets


def test_every_server_event_carries_a_float_timestamp_last() -> None:
    ev = proto.server_event("reply.done", 12, reply_id="r", status="completed")
    assert ev == {"type": "reply.done", "reply_id": "r", "status": "completed", "timestamp": 12.0}
    assert isinstance(ev["timestamp"], float)


def test_session_error_has_the_live_shape_with_a_lower_case_code() -> None:
    assert proto.session_error("UNAUTHORIZED", "Authentication failed", now=1.5) == {
        "type": "session.error",
        "code": "unauthorized",
        "message": "Authentication failed",
        "param": None,
        "session_id": None,
        "timestamp": 1.5,
    }


# ---- parsing client events

B64 = base64.b64encode(b"\x01\x02").decode()


@pytest.mark.parametrize(
    "message,expected",
    [
        ({"type": "session.update", "session": {}}, proto.SessionUpdate({})),
        ({"type": "input.audio", "audio": B64}, proto.InputAudio(b"\x01\x02")),
        ({"type": "input.audio", "audio": ""}, proto.InputAudio(b"")),
        ({"type": "tool.result", "call_id": "c", "result": "{}"}, proto.ToolResult("c", "{}", False)),
        ({"type": "tool.result", "call_id": "c", "result": "x", "is_error": True}, proto.ToolResult("c", "x", True)),
        ({"type": "tool.result", "call_id": "c", "result": "x", "is_error": None}, proto.ToolResult("c", "x", False)),
        ({"type": "reply.create"}, proto.ReplyCreate(None)),
        ({"type": "reply.create", "instructions": "Say hi"}, proto.ReplyCreate("Say hi")),
        ({"type": "reply.create", "instructions": ""}, proto.ReplyCreate(None)),
        ({"type": "session.resume", "session_id": "sess_1"}, proto.SessionResume("sess_1")),
        ({"type": "session.end"}, proto.SessionEnd()),
        ({"type": "session.end", "extra": 1}, proto.SessionEnd()),
        ({"type": "conversation.message", "role": "user", "content": "hi"}, proto.ConversationMessage("user", "hi")),
    ],
)
def test_valid_client_events_parse_to_typed_events(message: dict[str, Any], expected: proto.ClientEvent) -> None:
    assert proto.parse_client_event(json.dumps(message)) == expected


@pytest.mark.parametrize(
    "raw,code,message,param",
    [
        ("{not json", "invalid_format", "Invalid JSON format.", None),
        (b"\xff\xfe", "invalid_format", "Invalid JSON format.", None),
        ("[1, 2]", "invalid_format", "Invalid JSON format.", "type"),
        ('{"no_type": 1}', "invalid_format", "Invalid JSON format.", "type"),
        ('{"type": "reply.cancel"}', "invalid_format", "Unknown message type: reply.cancel", "type"),
        ('{"type": "session.update"}', "invalid_format", "Invalid message format for type 'session.update'", "session"),
        ('{"type": "session.update", "session": []}', "invalid_format", None, "session"),
        ('{"type": "input.audio"}', "invalid_format", "Invalid message format for type 'input.audio'", "audio"),
        ('{"type": "input.audio", "audio": "@@@"}', "invalid_audio", "Invalid audio data", "audio"),
        ('{"type": "input.audio", "audio": "AAA"}', "invalid_audio", "Invalid audio data", "audio"),
        ('{"type": "tool.result", "result": "x"}', "invalid_format", None, "call_id"),
        ('{"type": "tool.result", "call_id": "c", "result": {"a": 1}}', "invalid_format", None, "result"),
        (
            '{"type": "tool.result", "call_id": "c", "result": "x", "is_error": "no"}',
            "invalid_format",
            None,
            "is_error",
        ),
        ('{"type": "reply.create", "instructions": 5}', "invalid_format", None, "instructions"),
        ('{"type": "session.resume"}', "invalid_format", None, "session_id"),
        ('{"type": "conversation.message", "role": "bot", "content": "x"}', "invalid_format", None, "role"),
    ],
)
def test_malformed_client_events_raise_non_fatal_protocol_errors(
    raw: str | bytes, code: str, message: str | None, param: str | None
) -> None:
    with pytest.raises(proto.ProtocolError) as info:
        proto.parse_client_event(raw)
    err = info.value
    assert (err.code, err.param, err.fatal) == (code, param, False)
    if message is not None:
        assert err.message == message


# ---- session.update


def first(session: dict[str, Any]) -> proto.SessionConfig:
    return proto.apply_session_update(None, session, voices=VOICES)


def test_an_empty_first_update_gives_the_defaults() -> None:
    cfg = first({})
    assert cfg == proto.SessionConfig(voice="ivy")
    assert cfg.input_format.sample_rate == 24000 and cfg.output_format.encoding == "audio/pcm"


def test_a_full_first_update_is_resolved() -> None:
    cfg = first(
        {
            "system_prompt": "Be brief.",
            "greeting": "Hi!",
            "input": {
                "format": {"encoding": "audio/pcmu"},
                "turn_detection": {"vad_threshold": 0.4, "min_silence": 500, "interrupt_response": False},
                "keyterms": ["Harbour"],
                "transcription_mode": "min_latency",
            },
            "output": {"voice": "alba", "format": {"encoding": "audio/pcma", "sample_rate": 8000}, "volume": 80},
            "tools": [{"type": "function", "name": "end_call", "timeout_seconds": 10, "execution_mode": "hold"}],
        }
    )
    assert cfg.system_prompt == "Be brief." and cfg.greeting == "Hi!" and cfg.voice == "alba"
    assert cfg.input_format == proto.AudioFormat("audio/pcmu")
    assert cfg.output_format == proto.AudioFormat("audio/pcma") and cfg.volume == 80.0
    assert cfg.turn_detection == proto.TurnDetection(vad_threshold=0.4, min_silence=500, interrupt_response=False)
    assert cfg.input_extra == {"keyterms": ["Harbour"], "transcription_mode": "min_latency"}
    assert cfg.tools == (proto.ToolDef("end_call", timeout_seconds=10, execution_mode="hold"),)
    assert cfg.tool("end_call") is cfg.tools[0] and cfg.tool("nope") is None


@pytest.mark.parametrize(
    "session,code,param,fatal",
    [
        ({"output": {"voice": "dawn"}}, "invalid_value", "output.voice", True),
        ({"output": {"voice": 5}}, "invalid_format", "output.voice", False),
        # the REST shape (docs/architecture/agent-api.md#session-update)
        ({"voice": {"voice_id": "ivy"}}, "invalid_format", "voice", False),
        ({"agent_id": "agent_x", "greeting": "hi"}, "invalid_value", "agent_id", True),
        ({"agent_id": "agent_x"}, "agent_not_found", "agent_id", True),
        ({"llm": {"model": "x"}}, "invalid_value", "llm", True),
        ({"greeting": None}, "invalid_format", "greeting", False),
        ({"greeting": 3}, "invalid_format", "greeting", False),
        ({"input": {"format": {"encoding": "audio/opus"}}}, "invalid_value", "input.format.encoding", True),
        ({"input": {"format": {"encoding": "audio/pcm", "sample_rate": 16000}}}, "invalid_value",
         "input.format.sample_rate", True),
        ({"output": {"format": {"encoding": "audio/pcmu", "sample_rate": 24000}}}, "invalid_value",
         "output.format.sample_rate", True),
        ({"output": {"format": "audio/pcm"}}, "invalid_format", "output.format", False),
        ({"output": {"volume": 150}}, "invalid_value", "output.volume", True),
        ({"input": {"turn_detection": {"vad_threshold": 2}}}, "invalid_value",
         "input.turn_detection.vad_threshold", True),
        ({"input": {"turn_detection": {"min_silence": "600"}}}, "invalid_format",
         "input.turn_detection.min_silence", False),
        ({"input": {"turn_detection": {"min_silence": 2000, "max_silence": 1000}}}, "invalid_value",
         "input.turn_detection.max_silence", True),
        ({"input": {"turn_detection": {"uninterruptible_turns": ["everything"]}}}, "invalid_value",
         "input.turn_detection.uninterruptible_turns", True),
        ({"input": {"keyterms": ["k"] * 101}}, "invalid_value", "input.keyterms", True),
        ({"input": {"transcription_mode": "fast"}}, "invalid_value", "input.transcription_mode", True),
        ({"input": {"bogus": 1}}, "invalid_format", "input.bogus", False),
        ({"tools": {}}, "invalid_format", "tools", False),
        ({"tools": [{"name": "t", "parameters": {"properties": []}}]}, "invalid_value",
         "tools[0].parameters.properties", True),
        ({"tools": [{"name": "a"}, {"name": "b", "parameters": {"properties": "x"}}]}, "invalid_value",
         "tools[1].parameters.properties", True),
        ({"tools": [{"name": "a"}, {"name": "a"}]}, "invalid_value", "tools[1].name", True),
        ({"tools": [{"name": "bad name!"}]}, "invalid_value", "tools[0].name", True),
        ({"tools": [{"name": "t", "timeout_seconds": 301}]}, "invalid_value", "tools[0].timeout_seconds", True),
        ({"tools": [{"name": "t", "execution_mode": "async"}]}, "invalid_value", "tools[0].execution_mode", True),
    ],
)  # fmt: skip
def test_first_update_errors_and_which_are_fatal(session: dict[str, Any], code: str, param: str, fatal: bool) -> None:
    with pytest.raises(proto.ProtocolError) as info:
        first(session)
    assert (info.value.code, info.value.param, info.value.fatal) == (code, param, fatal)


def test_invalid_voice_message_lists_the_accepted_voices() -> None:
    with pytest.raises(proto.ProtocolError) as info:
        first({"output": {"voice": "dawn"}})
    assert info.value.message == "Invalid voice 'dawn'. Must be one of: ivy, alba, eve"


BASE = {"greeting": "Hello.", "output": {"voice": "alba", "format": {"encoding": "audio/pcmu"}}}


@pytest.mark.parametrize(
    "update,code,param",
    [
        ({"greeting": "Bye."}, "immutable_field", "greeting"),
        ({"output": {"voice": "eve"}}, "immutable_field", "output.voice"),
        ({"output": {"format": {"encoding": "audio/pcm"}}}, "immutable_field", "output.format"),
        ({"agent_id": "agent_x"}, "agent_id_not_first", "agent_id"),
        ({"llm": {}}, "invalid_value", "llm"),
        (
            {"tools": [{"name": "t", "parameters": {"properties": 1}}]},
            "invalid_value",
            "tools[0].parameters.properties",
        ),
        ({"output": {"voice": "dawn"}}, "immutable_field", "output.voice"),
    ],
)
def test_later_update_errors_are_never_fatal(update: dict[str, Any], code: str, param: str) -> None:
    cfg = first(BASE)
    with pytest.raises(proto.ProtocolError) as info:
        proto.apply_session_update(cfg, update, voices=VOICES)
    assert (info.value.code, info.value.param, info.value.fatal) == (code, param, False)
    if code == "immutable_field":
        assert info.value.message == f"'{param}' cannot be changed after the first session.update"


def test_later_updates_change_mutable_fields_accept_unchanged_immutable_ones_and_replace_tools() -> None:
    cfg = first({**BASE, "tools": [{"name": "a"}, {"name": "b"}], "input": {"keyterms": ["x"]}})
    new = proto.apply_session_update(
        cfg,
        {
            **BASE,  # the same greeting, voice and format again: not a change
            "system_prompt": "New.",
            "tools": [{"name": "c"}],
            "input": {"format": {"encoding": "audio/pcma"}, "turn_detection": {"max_silence": 2000}, "keyterms": []},
            "output": {"volume": None},
        },
        voices=VOICES,
    )
    assert new.system_prompt == "New." and [t.name for t in new.tools] == ["c"]
    assert new.input_format.encoding == "audio/pcma"
    assert new.turn_detection == proto.TurnDetection(max_silence=2000)
    assert new.input_extra["keyterms"] is None  # [] clears the list
    assert (new.greeting, new.voice, new.output_format) == (cfg.greeting, cfg.voice, cfg.output_format)
    assert proto.apply_session_update(new, {"tools": None}, voices=VOICES).tools == ()


def test_config_echo_has_the_live_shape_with_nulls_for_unset_fields() -> None:
    cfg = first({"input": {"format": {"encoding": "audio/pcmu"}}, "tools": [{"name": "t", "http": {"url": "u"}}]})
    echo = proto.config_echo(cfg, "sess_1")
    assert echo == {
        "id": "sess_1",
        "system_prompt": None,
        "greeting": None,
        "input": {
            "type": "audio",
            "format": {"encoding": "audio/pcmu", "sample_rate": 8000},
            "keyterms": None,
            "transcription_mode": None,
            "transcription_prompt": None,
            "language_codes": None,
            "voice_focus": None,
            "voice_focus_threshold": None,
            "continuous_partials": None,
            "turn_detection": None,
        },
        "output": {"type": "audio", "voice": "ivy", "format": {"encoding": "audio/pcm", "sample_rate": 24000},
                   "volume": None},
        "tools": [
            {"type": "function", "name": "t", "description": "", "parameters": {}, "timeout_seconds": 120,
             "execution_mode": "interactive", "http": {"url": "u"}, "response_instructions": None,
             "deployment_id": None, "session_update": None, "image_tag": None}
        ],
        "llm": [],
        "pre_connect_requests": [],
    }  # fmt: skip
    json.dumps(echo)  # serialisable as is


# ---- tokens and credentials


def test_minted_tokens_verify_until_their_window_ends_and_carry_the_session_cap() -> None:
    token = proto.mint_token(SECRET, now=1000.0, expires_in_s=60, max_session_s=600)
    assert proto.verify_token(SECRET, token, now=1000.0) == proto.Grant("token", max_session_s=600)
    assert proto.verify_token(SECRET, token, now=1059.9) is not None
    assert proto.verify_token(SECRET, token, now=1060.0) is None
    assert proto.verify_token(b"another-secret-0123456789abcdef", token, now=1000.0) is None


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # signature
        lambda t: t.split(".")[0] + "." + t.split(".")[1][:-2] + "xx." + t.split(".")[2],  # payload
        lambda t: "x" + t,
        lambda t: t.replace(".", "", 1),
        lambda t: "",
    ],
)
def test_tampered_tokens_do_not_verify(mangle: Any) -> None:
    token = proto.mint_token(SECRET, now=1000.0, expires_in_s=60, max_session_s=None)
    assert proto.verify_token(SECRET, mangle(token), now=1000.0) is None


def test_resume_tokens_grant_only_their_session() -> None:
    token = proto.mint_resume_token(SECRET, session_id="sess_a", expires_at=2000.0)
    assert proto.verify_token(SECRET, token, now=1999.0) == proto.Grant("resume", session_id="sess_a")
    assert proto.verify_token(SECRET, token, now=2000.0) is None


KEY = "the-key"
TOKEN = proto.mint_token(SECRET, now=1000.0, expires_in_s=60, max_session_s=None)


@pytest.mark.parametrize(
    "header,query,kind",
    [
        ("Bearer the-key", None, "key"),
        ("bearer the-key", None, "key"),
        ("the-key", None, "key"),
        (None, "the-key", "key"),
        (None, TOKEN, "token"),
        (f"Bearer {TOKEN}", None, "token"),
        ("Bearer wrong", TOKEN, "token"),
        ("Bearer wrong", None, None),
        (None, "wrong", None),
        ("Bearer ", None, None),
        (None, None, None),
        ("the-key-but-longer", None, None),
    ],
)
def test_authenticate_accepts_the_key_raw_or_bearer_and_tokens_in_the_query(
    header: str | None, query: str | None, kind: str | None
) -> None:
    grant = proto.authenticate(header, query, api_key=KEY, secret=SECRET, now=1000.0)
    assert (grant.kind if grant else None) == kind


@pytest.mark.parametrize(
    "auth,query,result",
    [
        ("k", {"expires_in_seconds": "60"}, ("k", 60, None)),
        ("Bearer k", {"expires_in_seconds": "1", "max_session_duration_seconds": "60"}, ("k", 1, 60)),
        ("k", {"expires_in_seconds": "600", "max_session_duration_seconds": "10800"}, ("k", 600, 10800)),
        ("k", {}, [("missing", ["query", "expires_in_seconds"])]),
        (None, {}, [("missing", ["header", "authorization"]), ("missing", ["query", "expires_in_seconds"])]),
        ("k", {"expires_in_seconds": "0"}, [("greater_than_equal", ["query", "expires_in_seconds"])]),
        ("k", {"expires_in_seconds": "601"}, [("less_than_equal", ["query", "expires_in_seconds"])]),
        ("k", {"expires_in_seconds": "1.5"}, [("int_parsing", ["query", "expires_in_seconds"])]),
        (
            "k",
            {"expires_in_seconds": "60", "max_session_duration_seconds": "10801"},
            [("less_than_equal", ["query", "max_session_duration_seconds"])],
        ),
    ],
)
def test_token_request_validation_matches_fastapi(auth: str | None, query: dict[str, str], result: Any) -> None:
    if isinstance(result, tuple):
        assert proto.validate_token_request(auth, query) == result
        return
    with pytest.raises(proto.TokenRequestInvalid) as info:
        proto.validate_token_request(auth, query)
    assert [(d["type"], d["loc"]) for d in info.value.detail] == result
    for d in info.value.detail:
        assert set(d) >= {"type", "loc", "msg", "input"}
        if d["type"] in ("greater_than_equal", "less_than_equal"):
            assert d["msg"].startswith("Input should be") and "ctx" in d


# ---- agent transcript timing


def test_reply_transcript_places_words_on_the_audio_timeline_and_cuts_at_what_was_heard() -> None:
    t = proto.ReplyTranscript()
    w1 = t.add_sentence("Hello there.", 0, 1000)
    w2 = t.add_sentence("How are you?", 1000, 2200)
    assert [w.delta for w in w1 + w2] == ["Hello", " there.", " How", " are", " you?"]
    assert t.text == "Hello there. How are you?"
    assert w1[0].start_ms == 0 and w1[-1].end_ms == 1000 and w2[0].start_ms == 1000 and w2[-1].end_ms == 2200
    assert all(a.end_ms == b.start_ms for a, b in itertools.pairwise(w1 + w2) if a in w1 and b in w1)
    assert t.heard(0) == ""
    assert t.heard(1) == "Hello"
    assert t.heard(1000) == "Hello there."
    assert t.heard(1001) == "Hello there. How"
    assert t.heard(10_000) == t.text
    assert t.add_sentence("   ", 2200, 2300) == []

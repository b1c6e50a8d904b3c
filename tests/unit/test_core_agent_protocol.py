"""Voice Agent API client protocol (gateway/agent/protocol.py), pinned to docs/architecture/agent-api.md#events,
#tool-results and #errors.

Server events come from golden fixtures in tests/fixtures/agent/ (one file per documented event or tolerated
variant); client events are parsed back with ``json`` and compared as dicts against the documented shapes.
"""

from __future__ import annotations

import base64
import functools
import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.agent import protocol as ap
from gateway.agent.protocol import (
    AgentTranscript,
    AgentTranscriptDelta,
    ReplyAudio,
    ReplyDone,
    ReplyError,
    ReplyStarted,
    SessionEnded,
    SessionError,
    SessionReady,
    SessionUpdated,
    SpeechStarted,
    SpeechStopped,
    ToolCall,
    UnknownEvent,
    UserTranscript,
    UserTranscriptDelta,
    parse_server_event,
)
from gateway.errors import AgentProtocolError, RemoteProtocolError

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "agent"
S = "sess_0f1e2d3c4b5a69788796a5b4c3d2e1f0"
R = "resp_9a8b7c6d5e4f30211203f4e5d6c7b8a9"
ITEM = "msg_11223344556677889900aabbccddeeff"


@functools.cache
def raw(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    return json.loads(raw(name))  # a fresh copy each time


# ---- server → client: every event of docs/architecture/agent-api.md#server-events, plus the tolerated variants -
EXPECTED: list[tuple[str, Any]] = [
    ("session.ready", SessionReady(S, fixture("session.ready")["config"], 1790214025.0, "rt_abc")),
    ("session.ready.iso_timestamp", SessionReady(S, {}, None, None)),
    ("session.updated", SessionUpdated(fixture("session.updated")["config"])),
    (
        "session.error",
        SessionError("invalid_value", "Invalid voice 'x'. Must be one of: alba, anna", "output.voice", S),
    ),
    ("session.error.upper_case", SessionError("unauthorized", "Authentication failed", None, None)),
    ("session.error.error_code", SessionError("session_expired", "Session duration cap reached", None, None)),
    ("error.legacy", SessionError("invalid_format", "Invalid JSON format.", None, None)),
    ("error.legacy_flat", SessionError("invalid_audio", "Invalid audio data", None, None)),
    ("session.ended", SessionEnded(42.5, None)),
    ("input.speech.started", SpeechStarted()),
    ("input.speech.stopped", SpeechStopped()),
    ("transcript.user.delta", UserTranscriptDelta(ITEM, "what time do you")),
    ("transcript.user", UserTranscript(ITEM, "What time do you open?")),
    ("reply.started", ReplyStarted(R, ITEM)),
    ("reply.audio", ReplyAudio(R, bytes(range(0, 240)) * 2)),
    ("transcript.agent.delta", AgentTranscriptDelta(R, " nine", ITEM, 480, 820)),
    ("transcript.agent.delta.null_times", AgentTranscriptDelta(R, "Hello", ITEM, None, None)),
    ("transcript.agent", AgentTranscript(R, "We open at nine.", False, ITEM)),
    ("transcript.agent.interrupted", AgentTranscript(R, "We open", True, ITEM)),
    ("reply.done.completed", ReplyDone(R, "completed")),
    ("reply.done.interrupted", ReplyDone(R, "interrupted")),
    ("reply.done.bare", ReplyDone(None, "completed")),  # early docs: a bare reply.done is a normal finish
    ("reply.interrupted", ReplyDone(R, "interrupted")),  # pre-launch name
    (
        "tool.call.object",
        ToolCall("chatcmpl-tool-0123456789abcdef", "lookup_order", {"order_id": "A-17", "verbose": True}),
    ),
    ("tool.call.json_string", ToolCall("call_abc", "lookup_order", {"order_id": "A-17", "verbose": True})),
    ("tool.call.args", ToolCall("call_abc", "lookup_order", {"order_id": "A-17", "verbose": True})),
    ("tool.call.no_arguments", ToolCall("call_abc", "end_call", {})),
    ("reply.error", ReplyError(R, "provider_error", "upstream LLM failed", True)),
    ("unknown", UnknownEvent("conversation.item.created", fixture("unknown"))),
]


@pytest.mark.parametrize(("name", "expected"), EXPECTED, ids=[e[0] for e in EXPECTED])
def test_server_event_fixture_parses_to_its_event(name: str, expected: Any) -> None:
    ev = parse_server_event(raw(name))
    assert type(ev) is type(expected)
    assert ev == expected


def test_every_server_event_type_of_the_spec_has_a_fixture() -> None:
    documented = {
        "session.ready",
        "session.updated",
        "session.error",
        "session.ended",
        "input.speech.started",
        "input.speech.stopped",
        "transcript.user.delta",
        "transcript.user",
        "reply.started",
        "reply.audio",
        "transcript.agent.delta",
        "transcript.agent",
        "reply.done",
        "tool.call",
        "reply.error",
    }
    covered = {fixture(name)["type"] for name, _ in EXPECTED}
    assert documented <= covered


@pytest.mark.parametrize("name", [n for n, _ in EXPECTED])
def test_server_events_parse_from_bytes_as_well_as_text(name: str) -> None:
    assert parse_server_event(raw(name).encode()) == parse_server_event(raw(name))


@pytest.mark.parametrize("timestamp", [1790210425.654429, 1790210425, "2026-09-24T10:40:25.654Z", None])
def test_timestamp_may_be_float_int_or_iso_string(timestamp: Any) -> None:
    msg = {**fixture("reply.done.completed"), "timestamp": timestamp}
    assert parse_server_event(json.dumps(msg)) == ReplyDone(R, "completed")


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("UNAUTHORIZED", "unauthorized"),
        ("Internal_Error", "internal_error"),
        ("FORBIDDEN", "forbidden"),
        ("invalid_format", "invalid_format"),
    ],
)
def test_error_codes_are_lower_cased(code: str, expected: str) -> None:
    msg = {"type": "session.error", "code": code, "message": "m", "timestamp": 1.0}
    assert parse_server_event(json.dumps(msg)).code == expected


def test_session_error_without_any_code_is_unknown() -> None:
    assert parse_server_event('{"type":"session.error","message":"?"}') == SessionError("unknown", "?")


def test_tool_call_arguments_as_empty_string_or_null_are_no_arguments() -> None:
    for args in ("", "  ", None, "null"):
        msg = {"type": "tool.call", "call_id": "c1", "name": "end_call", "arguments": args}
        assert parse_server_event(json.dumps(msg)).arguments == {}


def test_unknown_event_keeps_its_raw_message_for_the_caller_to_ignore() -> None:
    ev = parse_server_event('{"type":"future.thing","x":1}')
    assert ev == UnknownEvent("future.thing", {"type": "future.thing", "x": 1})


MALFORMED: list[tuple[str, str | bytes]] = [
    ("invalid_json", '{"type": "reply.done"'),
    ("empty", ""),
    ("invalid_utf8", b'{"type":"reply.done","x":"\xff"}'),
    ("array", '[{"type": "reply.done"}]'),
    ("string", '"reply.done"'),
    ("no_type", '{"reply_id": "resp_1"}'),
    ("type_not_string", '{"type": 5}'),
    ("type_null", '{"type": null}'),
    ("reply_audio_without_data", '{"type": "reply.audio", "reply_id": "r"}'),
    ("reply_audio_data_not_string", '{"type": "reply.audio", "data": 5}'),
    ("reply_audio_bad_base64", '{"type": "reply.audio", "data": "not base64!"}'),
    ("reply_audio_bad_padding", '{"type": "reply.audio", "data": "AAA"}'),
    ("session_ready_without_session_id", '{"type": "session.ready", "config": {}}'),
    ("session_ready_session_id_not_string", '{"type": "session.ready", "session_id": 7}'),
    ("tool_call_without_call_id", '{"type": "tool.call", "name": "x", "arguments": {}}'),
    ("tool_call_without_name", '{"type": "tool.call", "call_id": "c", "arguments": {}}'),
    ("tool_call_arguments_not_json", '{"type": "tool.call", "call_id": "c", "name": "x", "arguments": "{oops"}'),
    ("tool_call_arguments_json_array", '{"type": "tool.call", "call_id": "c", "name": "x", "arguments": "[1, 2]"}'),
    ("tool_call_arguments_list", '{"type": "tool.call", "call_id": "c", "name": "x", "arguments": [1, 2]}'),
    ("tool_call_arguments_number", '{"type": "tool.call", "call_id": "c", "name": "x", "arguments": 3}'),
    # Bug: the inner json.loads of string arguments does not catch RecursionError (the outer one does).
    (
        "tool_call_arguments_nested_too_deep",
        json.dumps({"type": "tool.call", "call_id": "c", "name": "x", "arguments": "[" * 100_000}),
    ),
    ("deeply_nested_message", '{"type": "x", "a": ' + "[" * 100_000 + "]" * 100_000 + "}"),
]


@pytest.mark.parametrize("text", [m[1] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_server_messages_raise_agent_protocol_error(text: str | bytes) -> None:
    with pytest.raises(AgentProtocolError) as info:
        parse_server_event(text)
    assert isinstance(info.value, RemoteProtocolError)


@pytest.mark.parametrize("field", ["start_ms", "end_ms"])
@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_word_times_are_unknown_not_a_crash(field: str, number: str) -> None:
    # Bug: Python's json accepts NaN/Infinity (and 1e400 overflows to inf); _opt_int() then calls int() on them and
    # ValueError/OverflowError escapes parse_server_event instead of an event or AgentProtocolError.
    text = '{"type":"transcript.agent.delta","reply_id":"r","delta":"hi","%s":%s}' % (field, number)
    ev = parse_server_event(text)
    assert isinstance(ev, AgentTranscriptDelta)
    assert getattr(ev, field) is None


def test_float_word_times_are_truncated_to_ints() -> None:
    ev = parse_server_event('{"type":"transcript.agent.delta","delta":"a","start_ms":480.0,"end_ms":819.6}')
    assert (ev.start_ms, ev.end_ms) == (480, 819)


# ---- SessionError.fatal: docs/architecture/agent-api.md#errors -------------------------------------------------
# Codes after which the server closes the socket (1008/1011) …
FATAL = [
    "unauthorized",
    "forbidden",
    "internal_error",
    "session_not_found",
    "session_forbidden",
    "session_expired",
    "agent_init_failed",
    "agent_timeout",
    "agent_not_found",
    "at_capacity",
    "concurrency_exceeded",
]
# … and codes after which the session stays open.
RECOVERABLE = [
    "agent_id_not_first",
    "invalid_format",
    "invalid_audio",
    "invalid_value",
    "immutable_field",
    "invalid_config",
    "audio_rate_violation",
    "unknown",
]


@pytest.mark.parametrize("code", FATAL)
def test_session_error_codes_that_close_the_session_are_fatal(code: str) -> None:
    assert parse_server_event(json.dumps({"type": "session.error", "code": code.upper(), "message": ""})).fatal


@pytest.mark.parametrize("code", RECOVERABLE)
def test_session_error_codes_that_keep_the_session_open_are_not_fatal(code: str) -> None:
    assert not parse_server_event(json.dumps({"type": "session.error", "code": code, "message": ""})).fatal


def test_final_resume_codes_and_retryable_connect_codes_match_the_spec() -> None:
    assert ap.FINAL_RESUME_CODES == {"session_not_found", "session_expired", "session_forbidden", "unauthorized"}
    assert ap.RETRYABLE_CONNECT_CODES == {"internal_error", "server_error", "at_capacity", "concurrency_exceeded"}


# ---- client → server: the documented shapes of docs/architecture/agent-api.md#client-events --------------------
def test_session_update_wraps_the_session_object() -> None:
    session = {
        "system_prompt": "Be brief.",
        "greeting": "Hello!",
        "input": {"format": {"encoding": "audio/pcm", "sample_rate": 24000}, "keyterms": ["Acme"]},
        "output": {"voice": "alba", "format": {"encoding": "audio/pcm", "sample_rate": 24000}},
        "tools": [{"type": "function", "name": "end_call", "description": "", "parameters": {}}],
    }
    assert json.loads(ap.session_update(session)) == {"type": "session.update", "session": session}


def test_session_update_drops_none_values_recursively() -> None:
    session = {
        "system_prompt": "p",
        # An explicit null greeting is rejected by the live server
        # (docs/architecture/agent-api.md#session-update).
        "greeting": None,
        "input": {
            "format": {"encoding": "audio/pcmu"},
            "keyterms": None,
            "turn_detection": {"min_silence": None, "max_silence": 2000},
        },
        "output": {"voice": "alba", "volume": None},
        "tools": [{"type": "function", "name": "t", "parameters": {"type": "object", "required": None}}],
    }
    assert json.loads(ap.session_update(session)) == {
        "type": "session.update",
        "session": {
            "system_prompt": "p",
            "input": {"format": {"encoding": "audio/pcmu"}, "turn_detection": {"max_silence": 2000}},
            "output": {"voice": "alba"},
            "tools": [{"type": "function", "name": "t", "parameters": {"type": "object"}}],
        },
    }


def test_session_update_keeps_falsy_values_that_are_not_none() -> None:
    session = {"system_prompt": "", "input": {"keyterms": []}, "output": {"volume": 0}, "x": False}
    assert json.loads(ap.session_update(session))["session"] == session


def test_session_update_does_not_modify_its_argument() -> None:
    session = {"greeting": None, "input": {"keyterms": None}}
    ap.session_update(session)
    assert session == {"greeting": None, "input": {"keyterms": None}}


def test_session_update_keeps_non_ascii_text_readable() -> None:
    out = ap.session_update({"greeting": "¡Hola, qué tal!"})
    assert "¡Hola, qué tal!" in out
    assert json.loads(out)["session"]["greeting"] == "¡Hola, qué tal!"


@pytest.mark.parametrize("audio", [b"", b"\x00", bytes(range(256)) * 10, b"\xff" * 160])
def test_input_audio_carries_base64_audio(audio: bytes) -> None:
    msg = json.loads(ap.input_audio(audio))
    assert msg == {"type": "input.audio", "audio": base64.b64encode(audio).decode("ascii")}
    assert base64.b64decode(msg["audio"], validate=True) == audio


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("call_1", '{"ok":true}'),
            {"type": "tool.result", "call_id": "call_1", "result": '{"ok":true}', "is_error": False},
        ),
        (
            ("call_2", "no such tool", True),
            {"type": "tool.result", "call_id": "call_2", "result": "no such tool", "is_error": True},
        ),
        (
            ("chatcmpl-tool-0123456789abcdef", ""),
            {"type": "tool.result", "call_id": "chatcmpl-tool-0123456789abcdef", "result": "", "is_error": False},
        ),
    ],
)
def test_tool_result_has_a_string_result_and_is_error(args: tuple[Any, ...], expected: dict[str, Any]) -> None:
    msg = json.loads(ap.tool_result(*args))
    assert msg == expected
    assert isinstance(msg["result"], str) and isinstance(msg["is_error"], bool)


@pytest.mark.parametrize(
    ("instructions", "expected"),
    [
        (None, {"type": "reply.create"}),
        ("", {"type": "reply.create"}),
        (
            "Tell the caller you are still checking.",
            {"type": "reply.create", "instructions": "Tell the caller you are still checking."},
        ),
    ],
)
def test_reply_create_with_and_without_instructions(instructions: str | None, expected: dict[str, Any]) -> None:
    assert json.loads(ap.reply_create(instructions)) == expected


def test_session_resume_names_the_session() -> None:
    assert json.loads(ap.session_resume(S)) == {"type": "session.resume", "session_id": S}


def test_session_end_has_no_other_fields() -> None:
    assert json.loads(ap.session_end()) == {"type": "session.end"}


# ---- property: nothing but AgentProtocolError escapes -------------------------------------------------------------
# The fields each event type reads, so that random values reach the parser's conversions.
FIELDS: dict[str, list[str]] = {
    "session.ready": ["session_id", "config", "expires_at", "resume_token"],
    "session.updated": ["config"],
    "session.error": ["code", "error_code", "message", "param", "session_id"],
    "error": ["code", "error", "message", "param", "session_id"],
    "session.ended": ["session_duration_seconds", "audio_duration_seconds"],
    "input.speech.started": ["item_id"],
    "transcript.user.delta": ["item_id", "text"],
    "transcript.user": ["item_id", "text"],
    "reply.started": ["reply_id", "item_id"],
    "reply.audio": ["reply_id", "data"],
    "transcript.agent.delta": ["reply_id", "item_id", "delta", "start_ms", "end_ms"],
    "transcript.agent": ["reply_id", "item_id", "text", "interrupted"],
    "reply.done": ["reply_id", "status"],
    "reply.interrupted": ["reply_id"],
    "tool.call": ["call_id", "name", "arguments", "args"],
    "reply.error": ["reply_id", "code", "message", "retryable"],
    "other": ["x"],
}
special = st.sampled_from([math.nan, math.inf, -math.inf, "", "{}", "[1]", '{"a": 1}', "AAAA", "not base64", "c"])
scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10)
values = special | st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


@st.composite
def server_messages(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(sorted(FIELDS)))
    names = draw(st.lists(st.sampled_from(FIELDS[kind]), unique=True))
    # json.dumps writes NaN/Infinity, and Python's json.loads accepts them back, so the parser must cope.
    return json.dumps({"type": kind, **{n: draw(values) for n in names}})


@settings(
    max_examples=600, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(text=server_messages())
def test_arbitrary_server_messages_never_raise_anything_but_agent_protocol_error(text: str) -> None:
    try:
        ev = parse_server_event(text)
    except AgentProtocolError:
        return
    assert isinstance(ev, SERVER_EVENTS)


SERVER_EVENTS = tuple(ap.ServerEvent.__args__)  # type: ignore[attr-defined]

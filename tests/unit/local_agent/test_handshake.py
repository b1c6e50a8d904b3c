"""Opening a local-agent socket (gateway/local_agent/handshake.py), synchronously: each test is a script of what
happened on the socket and what the machine says to do, with the time passed in. The same rules run over a real
socket in tests/integration/local_agent/test_conformance.py."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway.local_agent import protocol as proto
from gateway.local_agent.handshake import (
    TRANSITIONS,
    Close,
    Handshake,
    HandshakeMisuse,
    OpenSession,
    Phase,
    ResumeSession,
    Send,
)

VOICES = ("ivy", "james")
NOW = 1_700_000_000.25
KEY = proto.Grant("key")


def msg(type_: str, **fields: Any) -> str:
    return json.dumps({"type": type_, **fields})


def awaiting(grant: proto.Grant = KEY) -> Handshake:
    hs = Handshake(voices=VOICES)
    assert hs.authenticate(grant, now=NOW) == []
    assert hs.phase is Phase.AWAITING_FIRST
    return hs


def error(code: str, message: str, param: str | None = None) -> Send:
    return Send(proto.session_error(code, message, now=NOW, param=param))


def test_bad_credentials_get_unauthorized_then_close_1008_before_any_message() -> None:
    hs = Handshake(voices=VOICES)
    assert hs.authenticate(None, now=NOW) == [
        Send(
            {
                "type": "session.error",
                "code": "unauthorized",
                "message": "Authentication failed",
                "param": None,
                "session_id": None,
                "timestamp": NOW,
            }
        ),
        Close(1008, b"Authentication failed"),
    ]
    assert hs.phase is Phase.CLOSED


def test_a_first_session_update_opens_a_session_then_updated_and_ready_go_out() -> None:
    hs = awaiting()
    [action] = hs.receive(msg("session.update", session={"greeting": "Hi", "output": {"voice": "james"}}), now=NOW)
    assert isinstance(action, OpenSession) and hs.phase is Phase.OPENING
    assert (action.config.greeting, action.config.voice) == ("Hi", "james")
    out = hs.opened("sess_1", action.config, expires_at=NOW + 3600.9, resume_token="tok", now=NOW)
    echo = proto.config_echo(action.config, "sess_1")
    assert out == [
        Send({"type": "session.updated", "config": echo, "timestamp": NOW}),
        Send(
            {
                "type": "session.ready",
                "session_id": "sess_1",
                "config": echo,
                "expires_at": int(NOW + 3600.9),
                "resume_token": "tok",
                "timestamp": NOW,
            }
        ),
    ]
    assert hs.phase is Phase.READY


def test_session_resume_first_looks_the_session_up_and_answers_ready_with_the_same_id() -> None:
    hs = awaiting()
    assert hs.receive(msg("session.resume", session_id="sess_1"), now=NOW) == [ResumeSession("sess_1")]
    assert hs.phase is Phase.RESUMING
    config = proto.SessionConfig(voice="ivy")
    [send] = hs.resumed("sess_1", config, expires_at=NOW + 10, resume_token="tok", now=NOW)
    assert isinstance(send, Send) and send.event["type"] == "session.ready"
    assert send.event["session_id"] == "sess_1" and send.event["config"] == proto.config_echo(config, "sess_1")
    assert hs.phase is Phase.READY


def test_a_session_that_is_gone_is_session_not_found_and_1008() -> None:
    hs = awaiting()
    hs.receive(msg("session.resume", session_id="sess_gone"), now=NOW)
    assert hs.resume_failed("sess_gone", now=NOW) == [
        error("session_not_found", "Session 'sess_gone' not found"),
        Close(1008, b"Session 'sess_gone' not found"),
    ]
    assert hs.phase is Phase.CLOSED


def test_a_resume_token_resumes_only_its_own_session() -> None:
    hs = awaiting(proto.Grant("resume", session_id="sess_mine"))
    assert hs.receive(msg("session.resume", session_id="sess_other"), now=NOW) == [
        error("session_forbidden", "Session belongs to another credential"),
        Close(1008, b"Session belongs to another credential"),
    ]
    assert hs.phase is Phase.CLOSED
    hs = awaiting(proto.Grant("resume", session_id="sess_mine"))
    assert hs.receive(msg("session.resume", session_id="sess_mine"), now=NOW) == [ResumeSession("sess_mine")]


def test_a_resume_token_cannot_open_a_new_session() -> None:
    hs = awaiting(proto.Grant("resume", session_id="sess_mine"))
    assert hs.receive(msg("session.update", session={}), now=NOW) == [
        error("unauthorized", "Authentication failed"),
        Close(1008, b"Authentication failed"),
    ]


def test_session_end_before_a_session_ends_with_zero_duration_and_close_1000() -> None:
    hs = awaiting()
    assert hs.receive(msg("session.end"), now=NOW) == [
        Send(
            {
                "type": "session.ended",
                "session_duration_seconds": 0.0,
                "audio_duration_seconds": None,
                "timestamp": NOW,
            }
        ),
        Close(1000),
    ]
    assert hs.phase is Phase.CLOSED


NOT_READY = "Session not ready: the first message must be session.update or session.resume"


@pytest.mark.parametrize(
    "text,sent",
    [
        (msg("input.audio", audio="AAAA"), error("invalid_format", NOT_READY)),
        (msg("reply.create"), error("invalid_format", NOT_READY)),
        ("{not json", error("invalid_format", "Invalid JSON format.")),
        (None, error("invalid_format", "Invalid JSON format.")),  # a binary frame
        (
            msg("session.update", session={"greeting": None}),
            error("invalid_format", "Invalid message format for type 'session.update'", "greeting"),
        ),
    ],
    ids=["audio-first", "reply-create-first", "bad-json", "binary-frame", "greeting-null"],
)
def test_other_first_messages_are_invalid_format_and_the_socket_stays_open(text: str | None, sent: Send) -> None:
    hs = awaiting()
    assert hs.receive(text, now=NOW) == [sent]
    assert hs.phase is Phase.AWAITING_FIRST
    # …and a valid session.update still opens the session afterwards.
    assert isinstance(hs.receive(msg("session.update", session={}), now=NOW)[0], OpenSession)


def test_an_invalid_value_in_the_first_update_is_fatal_with_the_message_as_close_reason() -> None:
    hs = awaiting()
    out = hs.receive(msg("session.update", session={"output": {"voice": "nobody"}}), now=NOW)
    reason = "Invalid voice 'nobody'. Must be one of: ivy, james"
    assert out == [error("invalid_value", reason, "output.voice"), Close(1008, reason.encode())]
    assert hs.phase is Phase.CLOSED


def test_a_close_reason_is_cut_to_120_bytes() -> None:
    hs = awaiting()
    [sent, close] = hs.receive(msg("session.update", session={"output": {"voice": "x" * 300}}), now=NOW)
    assert isinstance(sent, Send) and isinstance(close, Close)
    assert close.message == sent.event["message"].encode()[:120] and len(close.message) == 120


def test_no_first_message_in_time_closes_1008_and_a_peer_gone_closes_quietly() -> None:
    hs = awaiting()
    assert hs.timed_out() == [Close(1008, b"no session.update received")]
    assert hs.phase is Phase.CLOSED
    hs = awaiting()
    assert hs.peer_closed() == [] and hs.phase is Phase.CLOSED


INPUTS = ("authenticate", "receive", "timed_out", "peer_closed", "opened", "resumed", "resume_failed")


def feed(hs: Handshake, input_: str) -> None:
    config = proto.SessionConfig(voice="ivy")
    calls = {
        "authenticate": lambda: hs.authenticate(KEY, now=NOW),
        "receive": lambda: hs.receive(msg("session.end"), now=NOW),
        "timed_out": hs.timed_out,
        "peer_closed": hs.peer_closed,
        "opened": lambda: hs.opened("s", config, expires_at=NOW, resume_token="t", now=NOW),
        "resumed": lambda: hs.resumed("s", config, expires_at=NOW, resume_token="t", now=NOW),
        "resume_failed": lambda: hs.resume_failed("s", now=NOW),
    }
    calls[input_]()


def in_phase(phase: Phase) -> Handshake:
    hs = Handshake(voices=VOICES)
    hs.phase = phase
    hs.grant = KEY
    return hs


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
@pytest.mark.parametrize("input_", INPUTS)
def test_every_input_is_taken_only_in_the_phases_the_table_lists(phase: Phase, input_: str) -> None:
    hs = in_phase(phase)
    if (phase, input_) in TRANSITIONS:
        feed(hs, input_)
        assert hs.phase in TRANSITIONS[(phase, input_)]
    else:
        with pytest.raises(HandshakeMisuse):
            feed(hs, input_)
        assert hs.phase is phase  # a misuse changes nothing

"""Asterisk chan_websocket, pure (gateway/carriers/asterisk_ws.py; docs/how-to/pbx/asterisk-websocket.md): MEDIA_START
in either control format fixes the audio and starts the stream with the upgrade's v() parameters, early audio is
dropped up to a bound, DTMF_END and MEDIA_MARK_PROCESSED parse, and commands go out in the format Asterisk used."""

from __future__ import annotations

import json
from urllib.parse import parse_qsl

import pytest

from gateway.carriers.asterisk_ws import SPEC, AsteriskWsStream
from gateway.carriers.base import Dialect
from gateway.carriers.events import AudioReceived, DtmfReceived, PlaybackCheckpoint, StreamError, StreamStarted
from gateway.carriers.spec import AnswerContext, Call, CarrierDoor, Door, Refusal, Upgrade
from gateway.errors import CarrierProtocolError

PARAMS = {"token": "v2.tok", "call": "1733.42", "to": "+15550002222"}
JSON_START = '{"event":"MEDIA_START","connection_id":"c-1","format":"ulaw","optimal_frame_size":160,"ptime":20}'
TEXT_START = "MEDIA_START connection_id:c-1 channel:WebSocket/gw-1 format:slin16 optimal_frame_size:640"


def test_media_start_in_json_starts_the_stream_and_commands_go_out_in_json() -> None:
    d = AsteriskWsStream(dict(PARAMS))
    assert isinstance(d, Dialect)
    assert d.parse(b"\xff" * 160) == []  # before MEDIA_START (asterisk issue 1712): dropped
    (start,) = d.parse(JSON_START)
    assert start == StreamStarted(
        "c-1", "1733.42", "", "audio/pcmu", 8000, custom_parameters={"token": "v2.tok", "to": "+15550002222"}
    )
    assert d.frame_bytes == 160 and d.parse(b"\xff" * 160) == [AudioReceived(b"\xff" * 160)]
    assert d.parse('{"event":"DTMF_END","digit":"*"}') == [DtmfReceived("*")]
    assert d.parse('{"event":"MEDIA_MARK_PROCESSED","correlation_id":"g1.3"}') == [PlaybackCheckpoint("g1.3")]
    assert d.parse('{"event":"MEDIA_XOFF"}') == [] and d.parse('{"event":"QUEUE_DRAINED"}') == []
    assert d.parse('{"event":"ERROR","error_text":"bad"}') == [StreamError("asterisk", "bad")]
    assert json.loads(d.build_clear()) == {"command": "FLUSH_MEDIA"}
    assert json.loads(d.build_mark("g1.4") or "") == {"command": "MARK_MEDIA", "correlation_id": "g1.4"}
    assert d.build_media(b"\x00" * 320) == b"\x00" * 320


def test_plain_text_control_messages_get_plain_text_commands_and_clock_marks() -> None:
    d = AsteriskWsStream(dict(PARAMS))
    (start,) = d.parse(TEXT_START)
    assert isinstance(start, StreamStarted) and (start.encoding, start.sample_rate) == ("audio/pcm", 16000)
    assert d.parse("DTMF_END digit:5") == [DtmfReceived("5")]
    assert d.parse("MEDIA_MARK_PROCESSED g2") == [PlaybackCheckpoint("g2")]
    assert d.build_clear() == "FLUSH_MEDIA" and d.build_mark("m") is None


@pytest.mark.parametrize(
    ("messages", "error"),
    [
        ([b"\x00" * 7000], "7000 bytes of audio before MEDIA_START"),
        (['{"event":"DTMF_END","digit":"1"}'], "before MEDIA_START"),
        ([JSON_START.replace("ulaw", "opus")], "format 'opus'"),
        ([JSON_START.replace("160", "320")], "optimal_frame_size 320"),
        ([TEXT_START, b"\x00" * 3], "odd length 3"),
        ([TEXT_START, TEXT_START], "second MEDIA_START"),
        ([TEXT_START, "{nope"], "invalid JSON"),
        ([TEXT_START, "hello there"], "neither JSON"),
        ([TEXT_START, "DTMF_END digit:x"], "not a DTMF digit"),
        ([TEXT_START, '{"event":"MEDIA_MARK_PROCESSED"}'], "without a correlation_id"),
    ],
)
def test_malformed_input_is_a_protocol_error(messages: list[str | bytes], error: str) -> None:
    d = AsteriskWsStream(dict(PARAMS))
    with pytest.raises(CarrierProtocolError, match=error):
        for message in messages:
            d.parse(message)


def test_a_stream_without_the_calls_parameters_is_refused() -> None:
    with pytest.raises(CarrierProtocolError, match="'call'"):
        AsteriskWsStream({"token": "t"}).parse(JSON_START)


def test_the_calls_answer_is_the_body_of_v_and_the_upgrade_needs_the_secret() -> None:
    ctx = AnswerContext("v2.tok", "ws://gw", CarrierDoor())
    body = SPEC.answer(Call("1733.42", called="+1 555", caller=""), ctx).body
    assert dict(parse_qsl(body.replace(",", "&"))) == {"token": "v2.tok", "call": "1733.42", "to": "+1 555"}
    assert " " not in body and "+" not in body  # URI-encoded, as v() requires
    door = Door(CarrierDoor(), {"secret": "s"})
    upgrade = Upgrade("ws://gw/asterisk-ws/stream", {"Authorization": "Basic YXN0ZXJpc2s6cw=="}, {})  # asterisk:s
    assert SPEC.check_upgrade(upgrade, door) is None
    assert isinstance(SPEC.check_upgrade(Upgrade("ws://gw/asterisk-ws/stream", {}, {}), door), Refusal)
    dialect = SPEC.dialect(Upgrade("ws://gw", {}, {**PARAMS, "other": "x"}))
    assert isinstance(dialect, AsteriskWsStream) and dict(dialect.transport_params) == PARAMS


@pytest.mark.parametrize("fmt", [[], {}, ["ulaw"]])
def test_a_media_start_whose_format_is_not_a_string_is_a_protocol_error(fmt: object) -> None:
    """``fmt not in FORMATS`` hashed a list or an object: TypeError, not the dialect's protocol error."""
    with pytest.raises(CarrierProtocolError):
        AsteriskWsStream({"call": "c1", "token": "t"}).parse(json.dumps({"event": "MEDIA_START", "format": fmt}))

"""Twilio's side of the protocol as the simulator plays it (pure): TwiML reading, message shapes, playout buffer."""

from __future__ import annotations

import json

import pytest

from gateway.carriers import twiml
from gateway.carriers.events import AudioReceived, PlaybackCheckpoint, StreamStarted, StreamStopped
from gateway.carriers.twilio import TwilioStream
from gateway.simulator.errors import CallRefused, GatewayProtocolError
from gateway.simulator.twilio_side import (
    SILENCE_FRAME,
    GatewayClear,
    GatewayMark,
    GatewayMedia,
    PlayoutBuffer,
    TwilioSide,
    new_sid,
    parse_twiml,
    resolve_stream_url,
    webhook_form,
)

SID = "MZ" + "a" * 32


def side() -> TwilioSide:
    s = TwilioSide(call_sid="CA" + "1" * 32, account_sid="AC" + "2" * 32, stream_sid=SID)
    s.start({})
    return s


# ---- TwiML ---------------------------------------------------------------------------------------------------------
def test_gateway_twiml_is_read_back_with_its_parameters():
    body = twiml.connect_stream("wss://voice.example.com/twilio/stream", {"token": "v1.x", "from": "+1"})
    got = parse_twiml(body)
    assert got.url == "wss://voice.example.com/twilio/stream"
    assert got.parameters == {"token": "v1.x", "from": "+1"}
    assert got.warnings == ()


def test_ws_scheme_is_accepted_with_a_warning():
    assert parse_twiml(twiml.connect_stream("ws://127.0.0.1:8080/twilio/stream", {})).warnings


@pytest.mark.parametrize(
    "body, error",
    [
        ("not xml", "well-formed"),
        ("<Foo/>", "root"),
        ('<Response><Start><Stream url="wss://h/s"/></Start></Response>', "one-way"),
        ("<Response><Connect><Stream/></Connect></Response>", "no url"),
        ('<Response><Connect><Stream url="https://h/s"/></Connect></Response>', "scheme"),
        ('<Response><Connect><Stream url="wss://h/s?token=1"/></Connect></Response>', "query string"),
        ('<Response><Connect><Stream url="wss://h/s" track="both_tracks"/></Connect></Response>', "31941"),
        ('<Response><Connect><Stream url="wss://h/a"/><Stream url="wss://h/b"/></Connect></Response>', "exactly one"),
        ('<Response><Connect><Stream url="wss://h/s"><Parameter name="a"/></Stream></Connect></Response>', "value"),
    ],
)
def test_twiml_twilio_would_reject_is_a_protocol_error(body, error):
    with pytest.raises(GatewayProtocolError, match=error):
        parse_twiml(body)


def test_say_and_hang_up_is_a_refusal_quoting_the_prompt():
    with pytest.raises(CallRefused, match="all our lines are busy"):
        parse_twiml(twiml.say_and_hang_up("Sorry, all our lines are busy."))


def test_trailing_verbs_and_long_parameters_warn():
    body = (
        '<Response><Connect><Stream url="wss://h/s"><Parameter name="p" value="'
        + "x" * 600
        + '"/></Stream></Connect><Pause length="40"/></Response>'
    )
    got = parse_twiml(body)
    assert len(got.warnings) == 2


def test_relative_stream_url_resolves_against_the_webhook_on_the_ws_scheme():
    body = '<Response><Connect><Stream url="/twilio/stream"/></Connect></Response>'
    assert parse_twiml(body, "https://voice.example.com/twilio/voice").url == "wss://voice.example.com/twilio/stream"


@pytest.mark.parametrize(
    "twiml_url, base, expected",
    [
        ("wss://voice.example.com/twilio/stream", "http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/stream"),
        ("wss://voice.example.com/twilio/stream", "https://localhost:8443", "wss://localhost:8443/twilio/stream"),
        ("ws://127.0.0.1:8080/twilio/stream", "http://127.0.0.1:8080", "ws://127.0.0.1:8080/twilio/stream"),
        ("wss://voice.example.com/twilio/stream", "https://voice.example.com", "wss://voice.example.com/twilio/stream"),
    ],
)
def test_stream_url_is_mapped_to_a_loopback_base_only(twiml_url, base, expected):
    assert resolve_stream_url(twiml_url, base) == expected


# ---- messages --------------------------------------------------------------------------------------------------
def test_messages_parse_with_the_gateways_own_dialect():
    """What the simulator sends is exactly what the gateway's Twilio parser accepts."""
    s = TwilioSide(call_sid="CA" + "1" * 32, account_sid="AC" + "2" * 32, stream_sid=SID)
    gw = TwilioStream()
    assert gw.parse(s.connected())
    start = gw.parse(s.start({"token": "t"}))
    assert isinstance(start, StreamStarted) and start.custom_parameters == {"token": "t"}
    media = gw.parse(s.media(b"\x01" * 160, 0))
    assert isinstance(media, AudioReceived) and media.payload == b"\x01" * 160 and media.chunk == 1
    assert isinstance(gw.parse(s.mark_echo("g0.1")), PlaybackCheckpoint)
    assert isinstance(gw.parse(s.stop()), StreamStopped)


def test_sequence_numbers_count_from_one_after_connected_and_are_strings():
    s = TwilioSide(call_sid="CA" + "1" * 32, account_sid="AC" + "2" * 32, stream_sid=SID)
    msgs = [json.loads(m) for m in (s.connected(), s.start({}), s.media(b"x", 0), s.media(b"x", 20), s.stop())]
    assert "sequenceNumber" not in msgs[0]
    assert [m["sequenceNumber"] for m in msgs[1:]] == ["1", "2", "3", "4"]
    assert [m["media"]["chunk"] for m in msgs[2:4]] == ["1", "2"]
    assert msgs[3]["media"]["timestamp"] == "20"


def test_gateway_messages_are_parsed():
    s = side()
    gw = TwilioStream()
    gw.stream_sid = SID
    assert s.parse(gw.build_media(b"\x00" * 160)) == GatewayMedia(b"\x00" * 160)
    assert s.parse(gw.build_mark("g0.1")) == GatewayMark("g0.1")
    assert s.parse(gw.build_clear()) == GatewayClear()


@pytest.mark.parametrize(
    "msg, error",
    [
        (b"\x00", "31950"),
        ("nope", "not JSON"),
        ("[]", "not a JSON object"),
        ({"event": "play", "streamSid": SID}, "unknown event"),
        ({"event": "clear", "streamSid": "MZother"}, "streamSid"),
        ({"event": "clear"}, "streamSid"),
        ({"event": "clear", "streamSid": SID, "extra": 1}, "shape"),
        ({"event": "media", "streamSid": SID, "media": {"payload": "***"}}, "base64"),
        ({"event": "media", "streamSid": SID, "media": {"payload": ""}}, "empty"),
        ({"event": "media", "streamSid": SID, "media": {"payload": "AA==", "x": 1}}, "payload"),
        ({"event": "mark", "streamSid": SID, "mark": {}}, "name"),
    ],
)
def test_malformed_gateway_messages_are_protocol_errors(msg, error):
    with pytest.raises(GatewayProtocolError, match=error):
        side().parse(msg if isinstance(msg, (str, bytes)) else json.dumps(msg))


def test_anything_before_start_is_a_protocol_error():
    s = TwilioSide(call_sid="CA1", account_sid="AC1", stream_sid=SID)
    with pytest.raises(GatewayProtocolError, match="before 'start'"):
        s.parse(json.dumps({"event": "clear", "streamSid": SID}))


def test_sids_look_like_twilios():
    assert len(new_sid("CA")) == 34 and new_sid("MZ").startswith("MZ")
    form = webhook_form("CA1", "AC1", "+1", "+2")
    assert form["CallStatus"] == "ringing" and form["Direction"] == "inbound" and form["To"] == "+2"


# ---- playout -----------------------------------------------------------------------------------------------------
def test_audio_plays_one_frame_per_tick_then_silence():
    b = PlayoutBuffer()
    b.push_audio(b"\x01" * 320)
    assert b.tick() == (b"\x01" * 160, True, [])
    assert b.tick() == (b"\x01" * 160, True, [])
    assert b.tick() == (SILENCE_FRAME, False, [])


def test_partial_frame_is_padded_with_silence():
    b = PlayoutBuffer()
    b.push_audio(b"\x01" * 100)
    frame, had_audio, _ = b.tick()
    assert frame == b"\x01" * 100 + b"\xff" * 60 and had_audio


def test_mark_echoes_only_after_the_audio_before_it_has_played():
    b = PlayoutBuffer()
    b.push_audio(b"\x01" * 480)  # 60 ms
    assert b.push_mark("m") == []
    b.push_audio(b"\x02" * 160)
    echoes = [b.tick()[2] for _ in range(5)]
    # ticks 0-2 play the 60 ms; the mark is due as tick 3 starts (the 60 ms have elapsed), before its frame plays
    assert echoes == [[], [], [], ["m"], []]


def test_mark_on_an_idle_buffer_echoes_at_once():
    b = PlayoutBuffer()
    assert b.push_mark("m") == ["m"]


def test_mark_while_the_last_frame_still_plays_waits_for_it():
    b = PlayoutBuffer()
    b.push_audio(b"\x01" * 160)
    b.tick()  # the only frame is now playing for 20 ms
    assert b.push_mark("m") == []
    assert b.tick()[2] == ["m"]


def test_mark_inside_a_frame_is_due_when_that_frame_has_played():
    b = PlayoutBuffer()
    b.push_audio(b"\x01" * 80)
    b.push_mark("m")
    b.push_audio(b"\x02" * 80)
    frame, _, due = b.tick()
    assert frame == b"\x01" * 80 + b"\x02" * 80 and due == []
    assert b.tick()[2] == ["m"]


def test_clear_drops_unplayed_audio_and_flushes_pending_marks():
    b = PlayoutBuffer()
    b.push_audio(b"\x01" * 800)
    b.push_mark("a")
    b.push_audio(b"\x01" * 800)
    b.push_mark("b")
    b.tick()
    cleared = b.clear()
    assert cleared.dropped_bytes == 1600 - 160 and cleared.marks == ("a", "b")
    assert b.queued_bytes == 0 and b.pending_marks == 0
    assert b.tick() == (SILENCE_FRAME, False, [])

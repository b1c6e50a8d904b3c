"""Property-based fuzzing of the Twilio dialect (gateway.carriers.twilio), pure and synchronous: whatever text
arrives, ``parse`` returns a carrier event or raises CarrierProtocolError (never anything else), never accepts a
message of another stream, and what we build always parses back."""

from __future__ import annotations

import base64
import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.carriers.events import AudioReceived, StreamStarted
from gateway.carriers.twilio import TwilioStream
from gateway.errors import CarrierProtocolError

SID = "MZ" + "a" * 32
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _start(**over: object) -> dict:
    start = {
        "streamSid": SID,
        "callSid": "CA" + "b" * 32,
        "accountSid": "AC" + "0" * 32,
        "tracks": ["inbound"],
        "customParameters": {"token": "t"},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    start.update(over)
    return {"event": "start", "sequenceNumber": "1", "streamSid": SID, "start": start}


def _started() -> TwilioStream:
    d = TwilioStream()
    d.parse(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
    d.parse(json.dumps(_start()))
    return d


def _parse_or_protocol_error(d: TwilioStream, text: str | bytes) -> object:
    try:
        return d.parse(text)
    except CarrierProtocolError:
        return None


@FUZZ
@given(st.text(max_size=200) | st.binary(max_size=200))
def test_any_text_or_bytes_parses_or_raises_a_protocol_error(text):
    for d in (TwilioStream(), _started()):
        _parse_or_protocol_error(d, text)  # anything else escaping is a crash


@FUZZ
@given(json_values)
def test_any_json_value_parses_or_raises_a_protocol_error(value):
    for d in (TwilioStream(), _started()):
        _parse_or_protocol_error(d, json.dumps(value))


@FUZZ
@given(
    st.sampled_from(["media", "mark", "dtmf", "stop", "start", "connected", "clear", "bogus"]),
    st.dictionaries(
        st.sampled_from(["streamSid", "media", "mark", "dtmf", "stop", "start", "sequenceNumber"]),
        json_values,
        max_size=5,
    ),
)
def test_known_events_with_arbitrary_fields_parse_or_raise_a_protocol_error(event, fields):
    for d in (TwilioStream(), _started()):
        _parse_or_protocol_error(d, json.dumps({"event": event, **fields}))


@FUZZ
@given(st.text(min_size=1, max_size=40).filter(lambda s: s != SID), st.binary(max_size=400))
def test_media_of_another_stream_is_always_refused(other_sid, payload):
    d = _started()
    msg = {
        "event": "media",
        "streamSid": other_sid,
        "media": {"track": "inbound", "payload": base64.b64encode(payload).decode()},
    }
    assert _parse_or_protocol_error(d, json.dumps(msg)) is None


@FUZZ
@given(st.binary(max_size=1000))
def test_media_payload_round_trips_through_build_and_parse(payload):
    d = _started()
    built = json.loads(d.build_media(payload))
    assert built["streamSid"] == SID
    back = d.parse(json.dumps({"event": "media", "streamSid": SID, "media": {"track": "inbound", **built["media"]}}))
    assert isinstance(back, AudioReceived) and back.payload == payload


@FUZZ
@given(st.lists(st.sampled_from(["connected", "start", "media", "mark", "stop", "dtmf"]), max_size=8))
def test_out_of_order_sequences_never_yield_events_before_start_or_after_stop(order):
    d = TwilioStream()
    started = stopped = False
    for event in order:
        msg = {
            "connected": {"event": "connected"},
            "start": _start(),
            "media": {"event": "media", "streamSid": SID, "media": {"payload": ""}},
            "mark": {"event": "mark", "streamSid": SID, "mark": {"name": "m"}},
            "dtmf": {"event": "dtmf", "streamSid": SID, "dtmf": {"digit": "5"}},
            "stop": {"event": "stop", "streamSid": SID, "stop": {}},
        }[event]
        ev = _parse_or_protocol_error(d, json.dumps(msg))
        if event in ("media", "mark", "dtmf", "stop"):
            assert (ev is not None) == (started and not stopped)
            stopped = stopped or (ev is not None and event == "stop")
        elif event == "start":
            assert (ev is not None) == (not started)
            started = True
            assert ev is None or isinstance(ev, StreamStarted)


@FUZZ
@given(st.text(min_size=1, max_size=80))
def test_a_stream_sid_that_could_break_our_json_is_refused(sid):
    d = TwilioStream()
    ev = _parse_or_protocol_error(d, json.dumps({**_start(streamSid=sid), "streamSid": sid}))
    if ev is not None:  # accepted: then everything we build must be valid JSON naming exactly that SID
        assert json.loads(d.build_media(b"\xff" * 160))["streamSid"] == sid
        assert json.loads(d.build_mark("x"))["streamSid"] == sid

"""Twilio Media Streams dialect (gateway/carriers/twilio.py), pinned to docs/architecture/twilio-media-streams.md
(#messages-in to #ordering).

Inbound messages come from golden fixtures in tests/fixtures/twilio/ built from the documented shapes; outbound
messages are parsed back with ``json`` and compared as dicts against golden fixtures of the documented shapes.
"""

from __future__ import annotations

import base64
import copy
import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.carriers.events import (
    AudioReceived,
    DtmfReceived,
    PlaybackCheckpoint,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from gateway.carriers.twilio import MULAW_FRAME_BYTES, TwilioStream
from gateway.errors import CarrierProtocolError, RemoteProtocolError

CARRIER_EVENTS = (StreamConnected, StreamStarted, AudioReceived, DtmfReceived, PlaybackCheckpoint, StreamStopped)
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "twilio"
SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
CALL = "CA3c6cd4b6aab2d2b1f3d5c7c9e1f0a2b4"
ACC = "AC5f5a2b3c4d5e6f708192a3b4c5d6e7f8"


@functools.cache
def raw(name: str) -> str:
    return (FIXTURES / f"{name}.json").read_text(encoding="utf-8")


def fixture(name: str) -> dict[str, Any]:
    return json.loads(raw(name))  # a fresh copy each time: tests mutate it


def text(msg: Any) -> str:
    return json.dumps(msg)


def started() -> TwilioStream:
    """A stream that has seen ``connected`` and ``start``."""
    t = TwilioStream()
    t.parse(text(fixture("connected")))
    t.parse(text(fixture("start")))
    return t


def with_changes(name: str, change: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    msg = copy.deepcopy(fixture(name))
    change(msg)
    return msg


# ---- inbound: the documented shapes --------------------------------------------------------------------------------
def test_connected_parses_to_stream_connected_with_protocol_and_version() -> None:
    assert TwilioStream().parse(text(fixture("connected"))) == StreamConnected(protocol="Call", version="1.0.0")


def test_start_parses_sids_tracks_custom_parameters_and_maps_mulaw_to_agent_encoding() -> None:
    t = TwilioStream()
    ev = t.parse(text(fixture("start")))
    assert ev == StreamStarted(
        stream_id=SID,
        call_id=CALL,
        account_id=ACC,
        encoding="audio/pcmu",
        sample_rate=8000,
        channels=1,
        tracks=("inbound",),
        custom_parameters={"token": "v1.1790000000.q2r3s4t5", "to": "+18005551212", "tenant": "acme"},
    )
    assert (t.stream_sid, t.call_sid, t.stopped) == (SID, CALL, False)


def test_media_decodes_base64_payload_and_string_numbers() -> None:
    ev = started().parse(text(fixture("media")))
    assert ev == AudioReceived(payload=bytes(range(96, 256)), timestamp_ms=5, chunk=1)
    assert len(ev.payload) == MULAW_FRAME_BYTES


def test_dtmf_parses_digit() -> None:
    assert started().parse(text(fixture("dtmf"))) == DtmfReceived("1")


def test_mark_echo_parses_to_playback_checkpoint() -> None:
    assert started().parse(text(fixture("mark"))) == PlaybackCheckpoint("g0.1")


def test_stop_parses_call_sid_and_marks_the_stream_stopped() -> None:
    t = started()
    assert t.parse(text(fixture("stop"))) == StreamStopped(call_id=CALL)
    assert t.stopped


def test_a_whole_call_in_documented_order_parses_event_by_event() -> None:
    t = TwilioStream()
    kinds = [type(t.parse(text(fixture(n)))) for n in ("connected", "start", "media", "mark", "dtmf", "media", "stop")]
    assert kinds == [
        StreamConnected,
        StreamStarted,
        AudioReceived,
        PlaybackCheckpoint,
        DtmfReceived,
        AudioReceived,
        StreamStopped,
    ]


def test_parse_accepts_real_and_string_numbers_alike() -> None:
    def fmt_as_strings(m: dict[str, Any]) -> None:
        m["start"]["mediaFormat"].update(sampleRate="8000", channels="1")

    t = TwilioStream()
    assert t.parse(text(with_changes("start", fmt_as_strings))).sample_rate == 8000

    def numbers_as_ints(m: dict[str, Any]) -> None:
        m["media"].update(timestamp=12345, chunk=7)

    ev = t.parse(text(with_changes("media", numbers_as_ints)))
    assert (ev.timestamp_ms, ev.chunk) == (12345, 7)


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("timestamp", "0", 0),
        ("timestamp", "987654321", 987654321),
        ("timestamp", "-5", None),  # not a counter Twilio would send: unknown rather than wrong
        ("timestamp", "5.5", None),
        ("timestamp", "", None),
        ("timestamp", True, None),  # bool is not a number here
        ("timestamp", None, None),
        ("chunk", "42", 42),
        ("chunk", "x", None),
    ],
)
def test_media_numeric_fields_are_parsed_from_strings_or_left_unknown(
    field: str, value: Any, expected: int | None
) -> None:
    ev = started().parse(text(with_changes("media", lambda m: m["media"].update({field: value}))))
    assert getattr(ev, "timestamp_ms" if field == "timestamp" else "chunk") == expected


def test_media_without_track_is_taken_as_inbound() -> None:
    ev = started().parse(text(with_changes("media", lambda m: m["media"].pop("track"))))
    assert isinstance(ev, AudioReceived)


def test_start_without_custom_parameters_gives_an_empty_mapping() -> None:
    ev = TwilioStream().parse(text(with_changes("start", lambda m: m["start"].pop("customParameters"))))
    assert ev.custom_parameters == {}


@pytest.mark.parametrize("digit", list("0123456789*#"))
def test_every_keypad_digit_is_accepted(digit: str) -> None:
    ev = started().parse(text(with_changes("dtmf", lambda m: m["dtmf"].update(digit=digit))))
    assert ev == DtmfReceived(digit)


# ---- inbound: protocol violations ------------------------------------------------------------------------------
def _set(path: tuple[str, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _drop(path: tuple[str, ...]) -> Callable[[dict[str, Any]], None]:
    def change(m: dict[str, Any]) -> None:
        target = m
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


def _start_sid(sid: str) -> Callable[[dict[str, Any]], None]:
    """Give ``start`` this streamSid, in both places it appears."""

    def change(m: dict[str, Any]) -> None:
        m["streamSid"] = sid
        m["start"]["streamSid"] = sid

    return change


# Each row: a stream state ("fresh" or "started"), the raw message, and the error text we expect to see.
BAD_MESSAGES: list[tuple[str, str, str | bytes, str]] = [
    ("invalid_json", "fresh", '{"event": "connected"', "invalid JSON"),
    ("empty_text", "fresh", "", "invalid JSON"),
    ("json_array", "fresh", "[1, 2]", "not a JSON object"),
    ("json_string", "fresh", '"start"', "not a JSON object"),
    ("json_null", "fresh", "null", "not a JSON object"),
    ("binary_frame", "fresh", json.dumps(fixture("connected")).encode(), "binary"),
    ("binary_frame_after_start", "started", json.dumps(fixture("media")).encode(), "binary"),
    ("media_before_start", "fresh", text(fixture("media")), "before 'start'"),
    ("mark_before_start", "fresh", text(fixture("mark")), "before 'start'"),
    ("stop_before_start", "fresh", text(fixture("stop")), "before 'start'"),
    ("second_start", "started", text(fixture("start")), "second 'start'"),
    (
        "media_wrong_stream_sid",
        "started",
        text(with_changes("media", _set(("streamSid",), "MZ" + "0" * 32))),
        "streamSid",
    ),
    ("media_without_stream_sid", "started", text(with_changes("media", _drop(("streamSid",)))), "streamSid"),
    ("mark_wrong_stream_sid", "started", text(with_changes("mark", _set(("streamSid",), "MZother"))), "streamSid"),
    ("stop_wrong_stream_sid", "started", text(with_changes("stop", _set(("streamSid",), "MZother"))), "streamSid"),
    ("media_bad_base64", "started", text(with_changes("media", _set(("media", "payload"), "not base64!"))), "base64"),
    ("media_base64_bad_padding", "started", text(with_changes("media", _set(("media", "payload"), "/w"))), "base64"),
    ("media_payload_missing", "started", text(with_changes("media", _drop(("media", "payload")))), "payload"),
    ("media_payload_not_string", "started", text(with_changes("media", _set(("media", "payload"), 123))), "payload"),
    ("media_object_missing", "started", text(with_changes("media", _drop(("media",)))), "media"),
    ("media_outbound_track", "started", text(with_changes("media", _set(("media", "track"), "outbound"))), "track"),
    (
        "start_wrong_encoding",
        "fresh",
        text(with_changes("start", _set(("start", "mediaFormat", "encoding"), "audio/x-alaw"))),
        "mediaFormat",
    ),
    (
        "start_wrong_rate",
        "fresh",
        text(with_changes("start", _set(("start", "mediaFormat", "sampleRate"), 16000))),
        "mediaFormat",
    ),
    (
        "start_wrong_rate_string",
        "fresh",
        text(with_changes("start", _set(("start", "mediaFormat", "sampleRate"), "16000"))),
        "mediaFormat",
    ),
    (
        "start_stereo",
        "fresh",
        text(with_changes("start", _set(("start", "mediaFormat", "channels"), 2))),
        "mediaFormat",
    ),
    (
        "start_media_format_missing",
        "fresh",
        text(with_changes("start", _drop(("start", "mediaFormat")))),
        "mediaFormat",
    ),
    ("start_object_missing", "fresh", text(with_changes("start", _drop(("start",)))), "start"),
    ("start_stream_sid_missing", "fresh", text(with_changes("start", _drop(("start", "streamSid")))), "streamSid"),
    ("start_call_sid_missing", "fresh", text(with_changes("start", _drop(("start", "callSid")))), "callSid"),
    ("start_sids_disagree", "fresh", text(with_changes("start", _set(("streamSid",), "MZother"))), "disagree"),
    (
        "start_custom_parameter_number",
        "fresh",
        text(with_changes("start", _set(("start", "customParameters"), {"token": 5}))),
        "customParameters",
    ),
    (
        "start_custom_parameter_object",
        "fresh",
        text(with_changes("start", _set(("start", "customParameters"), {"token": {"v": "1"}}))),
        "customParameters",
    ),
    (
        "start_custom_parameter_null",
        "fresh",
        text(with_changes("start", _set(("start", "customParameters"), {"token": None}))),
        "customParameters",
    ),
    (
        "start_custom_parameters_string",
        "fresh",
        text(with_changes("start", _set(("start", "customParameters"), "token=x"))),
        "customParameters",
    ),
    ("start_tracks_not_list", "fresh", text(with_changes("start", _set(("start", "tracks"), "inbound"))), "tracks"),
    ("dtmf_two_digits", "started", text(with_changes("dtmf", _set(("dtmf", "digit"), "12"))), "dtmf"),
    ("dtmf_letter", "started", text(with_changes("dtmf", _set(("dtmf", "digit"), "x"))), "dtmf"),
    ("dtmf_empty", "started", text(with_changes("dtmf", _set(("dtmf", "digit"), ""))), "dtmf"),
    ("dtmf_number", "started", text(with_changes("dtmf", _set(("dtmf", "digit"), 1))), "dtmf"),
    ("mark_without_name", "started", text(with_changes("mark", _drop(("mark", "name")))), "mark"),
    ("mark_empty_name", "started", text(with_changes("mark", _set(("mark", "name"), ""))), "mark"),
    ("unknown_event", "started", text({"event": "hello", "streamSid": SID}), "unknown event"),
    ("clear_is_ours_not_twilios", "started", text({"event": "clear", "streamSid": SID}), "unknown event"),
    ("no_event_field", "started", text({"streamSid": SID}), "unknown event"),
    # A streamSid is templated into every message we send: quotes or backslashes must never get that far.
    ("start_stream_sid_with_quote", "fresh", text(with_changes("start", _start_sid('MZ1"}'))), "SID"),
    ("start_stream_sid_with_backslash", "fresh", text(with_changes("start", _start_sid("MZ1\\"))), "SID"),
    ("start_stream_sid_with_space", "fresh", text(with_changes("start", _start_sid("MZ 1"))), "SID"),
    ("start_stream_sid_too_long", "fresh", text(with_changes("start", _start_sid("M" * 65))), "SID"),
    (
        "media_stream_sid_with_quote",
        "started",
        text(with_changes("media", _set(("streamSid",), SID + '"'))),
        "streamSid",
    ),
    # Lookalike digits: str.isdigit() is true for them but int() refuses them.
    (
        "start_rate_superscript_digit",
        "fresh",
        text(with_changes("start", _set(("start", "mediaFormat", "sampleRate"), "²"))),
        "mediaFormat",
    ),
]


@pytest.mark.parametrize(("state", "raw", "needle"), [r[1:] for r in BAD_MESSAGES], ids=[r[0] for r in BAD_MESSAGES])
def test_protocol_violations_raise_carrier_protocol_error(state: str, raw: str | bytes, needle: str) -> None:
    t = started() if state == "started" else TwilioStream()
    with pytest.raises(CarrierProtocolError) as info:
        t.parse(raw)
    assert needle.lower() in str(info.value).lower()
    assert isinstance(info.value, RemoteProtocolError)  # blame the peer, not us


@pytest.mark.parametrize("field", ["timestamp", "chunk"])
@pytest.mark.parametrize("lookalike", ["²", "①", "³⁴"])
def test_media_numbers_made_of_digit_lookalikes_are_unknown_not_a_crash(field: str, lookalike: str) -> None:
    # Bug: _int_or_none() uses str.isdigit(), which is true for superscripts and circled digits, then int() raises
    # ValueError, which escapes parse() instead of a CarrierProtocolError (or None).
    t = started()
    ev = t.parse(text(with_changes("media", lambda m: m["media"].update({field: lookalike}))))
    assert getattr(ev, "timestamp_ms" if field == "timestamp" else "chunk") is None


@pytest.mark.parametrize("field", ["timestamp", "chunk"])
@pytest.mark.parametrize("parser", ["parse", "parse_plain"])
def test_media_numbers_too_long_for_int_are_unknown_not_a_crash(field: str, parser: str) -> None:
    # Bug: a 5,000-digit string passed isdigit() and reached int(), which refuses more than 4,300 digits with a
    # ValueError that escaped parse() (the call's reader), for one malformed message.
    t = started()
    ev = getattr(t, parser)(text(with_changes("media", lambda m: m["media"].update({field: "7" * 5000}))))
    assert isinstance(ev, AudioReceived)
    assert getattr(ev, "timestamp_ms" if field == "timestamp" else "chunk") is None


def test_a_rejected_start_leaves_the_stream_unstarted() -> None:
    t = TwilioStream()
    with pytest.raises(CarrierProtocolError):
        t.parse(text(with_changes("start", _set(("start", "mediaFormat", "channels"), 2))))
    assert t.stream_sid is None and t.call_sid is None
    assert isinstance(t.parse(text(fixture("start"))), StreamStarted)


@pytest.mark.parametrize("name", ["media", "mark", "dtmf", "stop", "start"])
def test_nothing_is_accepted_after_stop(name: str) -> None:
    t = started()
    t.parse(text(fixture("stop")))
    with pytest.raises(CarrierProtocolError):
        t.parse(text(fixture(name)))


# ---- outbound: the documented shapes -----------------------------------------------------------------------------
def test_build_media_is_exactly_the_documented_shape() -> None:
    audio = bytes([0xFF]) * 80 + bytes(range(80))
    assert json.loads(started().build_media(audio)) == fixture("outbound_media")


def test_build_media_payload_round_trips_through_base64() -> None:
    audio = bytes(range(256)) * 2
    msg = json.loads(started().build_media(audio))
    assert base64.b64decode(msg["media"]["payload"], validate=True) == audio


def test_build_mark_is_exactly_the_documented_shape() -> None:
    assert json.loads(started().build_mark("g0.1")) == fixture("outbound_mark")


@pytest.mark.parametrize("name", ['quote"d', "back\\slash", "ünïcode", "new\nline", ""])
def test_build_mark_escapes_any_name(name: str) -> None:
    assert json.loads(started().build_mark(name)) == {"event": "mark", "streamSid": SID, "mark": {"name": name}}


def test_build_clear_is_exactly_the_documented_shape() -> None:
    assert json.loads(started().build_clear()) == fixture("outbound_clear")


@pytest.mark.parametrize(
    "build",
    [lambda t: t.build_media(b"\xff" * 160), lambda t: t.build_mark("m"), lambda t: t.build_clear()],
    ids=["media", "mark", "clear"],
)
def test_building_before_start_is_our_bug_and_raises_runtime_error(build: Callable[[TwilioStream], str]) -> None:
    t = TwilioStream()
    t.parse(text(fixture("connected")))
    with pytest.raises(RuntimeError):
        build(t)


def test_outbound_messages_carry_the_stream_sid_of_start() -> None:
    other = "MZ" + "ab" * 16

    def change(m: dict[str, Any]) -> None:
        m["streamSid"] = other
        m["start"]["streamSid"] = other

    t = TwilioStream()
    t.parse(text(with_changes("start", change)))
    assert {json.loads(s)["streamSid"] for s in (t.build_media(b"\xff"), t.build_mark("x"), t.build_clear())} == {other}


# ---- property: nothing but CarrierProtocolError escapes ------------------------------------------------------------
# Strings that look like what Twilio sends, and lookalikes of them (superscript/full-width digits pass str.isdigit()).
tricky_strings = st.sampled_from(["", "1", "8000", "inbound", "outbound", "audio/x-mulaw", "²", "８０００", "-1", SID])
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**40), max_value=2**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars | tricky_strings,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
field_values = tricky_strings | json_values


def _shaped(draw: st.DrawFn) -> dict[str, Any]:
    """A message that resembles a documented one with random fields replaced, to reach deep into the parser."""
    name = draw(st.sampled_from(["connected", "start", "media", "dtmf", "mark", "stop"]))
    msg = fixture(name)
    inner = msg[name] if isinstance(msg.get(name), dict) else msg
    for key in draw(st.lists(st.sampled_from(sorted(inner)), max_size=3, unique=True)):
        inner[key] = draw(field_values)
    fmt = inner.get("mediaFormat") if name == "start" else None
    if isinstance(fmt, dict) and fmt and draw(st.booleans()):  # fmt may itself have been replaced by {}
        for key in draw(st.lists(st.sampled_from(sorted(fmt)), min_size=1, unique=True)):
            fmt[key] = draw(field_values)
    if draw(st.integers(0, 3)) == 0:
        msg[draw(st.sampled_from(["event", "streamSid", name]))] = draw(field_values)
    return msg


@st.composite
def messages(draw: st.DrawFn) -> str | bytes:
    kind = draw(st.sampled_from(["text", "binary", "json", "shaped", "shaped", "shaped"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "binary":
        return draw(st.binary(max_size=20))
    if kind == "json":
        return json.dumps(draw(json_values))
    return json.dumps(_shaped(draw))


@settings(
    max_examples=400, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)
@given(stream_started=st.booleans(), raws=st.lists(messages(), min_size=1, max_size=4))
def test_arbitrary_input_never_raises_anything_but_carrier_protocol_error(
    stream_started: bool, raws: list[str | bytes]
) -> None:
    t = started() if stream_started else TwilioStream()
    for raw in raws:
        try:
            ev = t.parse(raw)
        except CarrierProtocolError:
            continue
        assert isinstance(ev, CARRIER_EVENTS)


@pytest.mark.parametrize("bad", [[], "", 0, False])
def test_custom_parameters_that_are_not_an_object_are_refused(bad):
    stream = TwilioStream()
    msg = json.loads(raw("start"))
    msg["start"]["customParameters"] = bad
    with pytest.raises(CarrierProtocolError, match="customParameters"):
        stream.parse(json.dumps(msg))


def test_connected_after_start_is_refused():
    stream = TwilioStream()
    stream.parse(raw("start"))
    with pytest.raises(CarrierProtocolError, match="connected"):
        stream.parse(raw("connected"))

"""Asterisk AudioSocket's framing, pure (gateway/carriers/audiosocket.py; docs/how-to/pbx/asterisk-audiosocket.md):
frames parse the same however TCP splits them, what Asterisk may not send is a protocol error at once (an oversized
frame before its payload arrives), the end of the stream is the hang-up unless it cuts a frame short, what we send is
one whole frame per message, and issued UUIDs are single use with a time-to-live."""

from __future__ import annotations

import struct
import uuid
from typing import Any

import pytest

from gateway.carriers.audiosocket import (
    HANGUP_FRAME,
    SPEC,
    AudioSocketSettings,
    AudioSocketStream,
    IssuedCalls,
    network_allowed,
    parse_listen,
)
from gateway.carriers.base import Dialect
from gateway.carriers.events import AudioReceived, DtmfReceived, StreamStarted, StreamStopped
from gateway.carriers.spec import Door, Refusal, Webhook
from gateway.errors import CallEnded, CarrierProtocolError, LocalProtocolError, Outcome

CALL = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BH", kind, len(payload)) + payload


STREAM = frame(0x01, CALL.bytes) + frame(0x10, b"\x01\x00" * 160) + frame(0x03, b"7") + frame(0x10, b"\x02\x00" * 80)
EXPECTED = [
    StreamStarted(str(CALL), str(CALL), "", "audio/pcm", 8000, custom_parameters={"token": "t", "to": "+1"}),
    AudioReceived(b"\x01\x00" * 160),
    DtmfReceived("7"),
    AudioReceived(b"\x02\x00" * 80),
]


def stream(rate: int = 8000) -> AudioSocketStream:
    return AudioSocketStream(rate, credentials=lambda u: {"token": "t", "to": "+1"} if u == str(CALL) else None)


def test_it_is_a_dialect_with_twenty_ms_messages_and_no_mark_or_clear() -> None:
    d = stream()
    assert isinstance(d, Dialect)
    assert (d.frame_bytes, d.min_message_ms, d.max_message_ms, d.max_lead_ms) == (320, 20, 20, 40)
    assert stream(16000).frame_bytes == 640 and d.build_mark("m") is None and d.build_clear() == b""


def test_frames_parse_the_same_wherever_tcp_splits_them() -> None:
    for cut in range(1, len(STREAM)):
        d = stream()
        assert d.parse(STREAM[:cut]) + d.parse(STREAM[cut:]) == EXPECTED, cut
        assert d.parse(b"") == [StreamStopped(str(CALL))]  # Asterisk's hang-up: the connection closes


def test_one_byte_at_a_time_too() -> None:
    d = stream()
    assert [ev for i in range(len(STREAM)) for ev in d.parse(STREAM[i : i + 1])] == EXPECTED


def test_an_unknown_uuid_starts_a_stream_without_a_token_so_the_session_refuses_it() -> None:
    other = uuid.uuid4()
    (started,) = stream().parse(frame(0x01, other.bytes))
    assert isinstance(started, StreamStarted) and started.call_id == str(other) and started.custom_parameters == {}


def test_what_we_send_is_one_whole_frame_per_message() -> None:
    d = stream(16000)
    with pytest.raises(LocalProtocolError):
        d.build_media(b"\x00" * 640)  # before the UUID: our bug
    d.parse(frame(0x01, CALL.bytes))
    assert d.build_media(b"\x01\x02" * 320) == b"\x12\x02\x80" + b"\x01\x02" * 320  # kind 0x12: 16 kHz
    assert HANGUP_FRAME == b"\x00\x00\x00"


MALFORMED = {
    "unknown kind": (frame(0x42, b"xx"), "unknown frame kind 0x42"),
    "silence kind (Go library only)": (frame(0x02), "unknown frame kind 0x02"),
    "oversized, refused on its header": (struct.pack(">BH", 0x10, 60000), "audio frame of 60000 bytes"),
    "odd audio": (frame(0x10, b"\x00" * 321), "audio frame of 321 bytes"),
    "empty audio": (frame(0x10), "audio frame of 0 bytes"),
    "another rate": (frame(0x12, b"\x00" * 640), "16000 Hz .*carriers.audiosocket.sample_rate"),
    "second uuid": (frame(0x01, uuid.uuid4().bytes), "second UUID"),
    "error frame": (frame(0xFF, b"\x04"), "error frame from the PBX \\(code 0x04\\)"),
    "long dtmf": (frame(0x03, b"12"), "DTMF frame of 2 bytes"),
    "not a digit": (frame(0x03, b"x"), "not a DTMF digit"),
    "hang-up with payload": (frame(0x00, b"x"), "hang-up frame with"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_frame_is_a_protocol_error(case: str) -> None:
    data, message = MALFORMED[case]
    d = stream()
    d.parse(frame(0x01, CALL.bytes))
    with pytest.raises(CarrierProtocolError, match=message):
        d.parse(data)


@pytest.mark.parametrize(
    ("first", "message"),
    [
        (frame(0x10, b"\x00" * 320), "kind 0x10 before the UUID"),
        (frame(0x01, b"\x01" * 15), "UUID frame of 15 bytes"),
        (frame(0x01, b"\x01" * 17), "UUID frame of 17 bytes"),
    ],
)
def test_the_uuid_comes_first_and_is_sixteen_bytes(first: bytes, message: str) -> None:
    with pytest.raises(CarrierProtocolError, match=message):
        stream().parse(first)


def test_the_end_of_the_stream() -> None:
    with pytest.raises(CallEnded) as ended:
        stream().parse(b"")  # connected, closed, no UUID: the application does that when the channel is not up
    assert ended.value.reason == Outcome.CARRIER_CLOSED
    d = stream()
    d.parse(frame(0x01, CALL.bytes) + struct.pack(">BH", 0x10, 320) + b"\x00" * 100)
    with pytest.raises(CarrierProtocolError, match="100 of its 320 bytes"):
        d.parse(b"")
    d = stream()
    d.parse(frame(0x01, CALL.bytes) + b"\x10\x01")
    with pytest.raises(CarrierProtocolError, match="inside a frame header"):
        d.parse(b"")
    d = stream()
    assert d.parse(frame(0x01, CALL.bytes) + frame(0x00))[1:] == [StreamStopped(str(CALL))]
    assert d.parse(b"") == []  # the close after a hang-up frame says nothing more
    with pytest.raises(CarrierProtocolError, match="after the hang-up"):
        d.parse(frame(0x10, b"\x00" * 320))


def test_issued_uuids_are_single_use_expire_and_are_bounded() -> None:
    issued = IssuedCalls(ttl_s=30.0, limit=2)
    issued.issue("a", {"token": "ta"}, now=100.0)
    assert issued.claim("a", now=110.0) == {"token": "ta"}
    assert issued.claim("a", now=110.0) is None  # once
    issued.issue("b", {"token": "tb"}, now=100.0)
    assert issued.claim("b", now=130.0) is None  # expired
    for name in "cde":
        issued.issue(name, {}, now=200.0)
    assert len(issued) == 2 and issued.claim("c", now=200.0) is None  # the oldest went


def test_networks_and_listen_addresses() -> None:
    assert network_allowed("10.1.2.3", ["10.0.0.0/8"]) and network_allowed("::ffff:10.1.2.3", ["10.0.0.0/8"])
    assert not network_allowed("192.0.2.1", ["10.0.0.0/8"]) and not network_allowed(None, ["10.0.0.0/8"])
    assert parse_listen("0.0.0.0:9092") == ("0.0.0.0", 9092) and parse_listen("[::1]:0") == ("::1", 0)
    for bad in ("9092", "host:", ":9092", "h:99999"):
        with pytest.raises(ValueError):
            parse_listen(bad)


def _hook(headers: dict[str, str], remote: str = "192.0.2.9") -> Webhook:
    return Webhook("GET", "/audiosocket/calls", headers, {"to": "+15550002222", "from": "+1555"}, remote=remote)


def test_the_uuid_endpoint_takes_the_secret_as_basic_password_or_bearer_or_an_allowed_network() -> None:
    door: Door[Any] = Door(AudioSocketSettings(allowed_networks=("10.0.0.0/8",)), {"secret": "s3"})
    assert SPEC.verify(_hook({"Authorization": "Bearer s3"}), door) is None
    assert SPEC.verify(_hook({"Authorization": "Basic YXN0ZXJpc2s6czM="}), door) is None  # asterisk:s3
    assert SPEC.verify(_hook({}, remote="10.9.9.9"), door) is None
    for headers in ({}, {"Authorization": "Bearer s4"}, {"Authorization": "Basic !!"}, {"Authorization": "s3"}):
        assert isinstance(SPEC.verify(_hook(headers), door), Refusal)
    call = SPEC.read_call(_hook({}))
    assert not isinstance(call, type(None)) and (call.called, call.caller) == ("+15550002222", "+1555")


def test_settings_are_checked() -> None:
    bad = AudioSocketSettings(listen="nope", sample_rate=11025, allowed_networks=("x",), uuid_ttl_s=0.0)
    keys = [k for k, _ in SPEC.check(Door(bad, {}))]
    assert keys == [
        "carriers.audiosocket.listen",
        "carriers.audiosocket.sample_rate",
        "carriers.audiosocket.allowed_networks[0]",
        "carriers.audiosocket.uuid_ttl_s",
    ]
    assert list(SPEC.check(Door(AudioSocketSettings(listen="127.0.0.1:9092"), {}))) == []

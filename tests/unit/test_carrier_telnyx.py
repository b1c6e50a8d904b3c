"""Telnyx dialect (gateway/carriers/telnyx.py), pinned to docs/how-to/carriers/telnyx.md#protocol: snake_case events
with ``stream_id``, clear/mark, frames reordered by ``sequence_number`` in a bounded window, Ed25519-signed webhooks."""

from __future__ import annotations

import base64
import json
from xml.etree import ElementTree

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from gateway.carriers.base import Dialect, pcm16_swap
from gateway.carriers.events import (
    AudioReceived,
    DtmfReceived,
    MediaFault,
    PlaybackCheckpoint,
    StreamConnected,
    StreamError,
    StreamStarted,
    StreamStopped,
)
from gateway.carriers.telnyx import TelnyxStream, streaming_start_params, texml_stream, verify_telnyx_signature
from gateway.errors import CarrierProtocolError
from tests.support.carrier_fixtures import changed, fixture, text

C = "telnyx"
NOW = 1_790_000_000


def started(**kw: object) -> TelnyxStream:
    d = TelnyxStream(**kw)  # type: ignore[arg-type]
    d.parse(text(fixture(C, "connected")))
    d.parse(text(fixture(C, "start")))
    return d


def media(seq: int, byte: int = 0) -> str:
    return changed(
        C,
        "media_1",
        lambda m: (
            m.update(sequence_number=str(seq)),
            m["media"].update(payload=base64.b64encode(bytes([byte]) * 160).decode()),
        ),
    )


def payloads(events: list[object]) -> list[int]:
    return [e.payload[0] for e in events if isinstance(e, AudioReceived)]


def test_connected_and_start_parse_to_the_shared_events() -> None:
    d = TelnyxStream()
    assert isinstance(d, Dialect)
    assert d.parse(text(fixture(C, "connected"))) == [StreamConnected(version="1.0.0")]
    (ev,) = d.parse(text(fixture(C, "start")))
    start = fixture(C, "start")
    assert ev == StreamStarted(
        stream_id=start["stream_id"],
        call_id=start["start"]["call_control_id"],  # = TeXML's CallSid, what the token is bound to
        account_id=start["start"]["user_id"],
        encoding="audio/pcmu",
        sample_rate=8000,
        custom_parameters={"token": "v1.1790000000.q2r3s4t5", "from": "+13122010094", "to": "+13122123456"},
    )


def test_media_mark_dtmf_error_stop_in_order() -> None:
    d = started()
    (m1,) = d.parse(text(fixture(C, "media_1")))
    assert m1 == AudioReceived(bytes([0]) * 160, timestamp_ms=0, chunk=1)
    d.parse(text(fixture(C, "media_2")))
    d.parse(text(fixture(C, "media_3")))
    assert d.parse(text(fixture(C, "mark"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(text(fixture(C, "dtmf"))) == [DtmfReceived("5")]
    assert d.parse(text(fixture(C, "error"))) == [StreamError("100002", "An unknown error has occurred")]
    assert d.parse(text(fixture(C, "stop"))) == [StreamStopped(call_id=fixture(C, "start")["start"]["call_control_id"])]
    assert d.reordered_frames == 0 and d.late_frames == 0


def test_out_of_order_frames_are_put_back_in_sequence_order() -> None:
    d = started()
    assert d.parse(media(3, 3)) == []  # 2 is missing: held
    assert d.parse(media(4, 4)) == []
    assert payloads(d.parse(media(2, 2))) == [2, 3, 4]  # the gap fills: all three, in order
    assert d.reordered_frames == 2


def test_marks_pass_straight_through_and_count_as_seen_numbers() -> None:
    d = started()
    assert d.parse(changed(C, "mark", lambda m: m.update(sequence_number="3"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(media(4, 4)) == []  # 2 still missing
    assert payloads(d.parse(media(2, 2))) == [2, 4]  # 3 was the mark: no gap left


def test_the_reorder_window_is_bounded_and_a_late_frame_is_dropped() -> None:
    d = started(reorder_window=3)
    out: list[object] = []
    for seq in (3, 4, 5):
        out += d.parse(media(seq, seq))
    assert out == []
    out = d.parse(media(6, 6))  # a 4th frame held: give up on 2
    assert payloads(out) == [3, 4, 5, 6]
    assert d.parse(media(2, 2)) == [] and d.late_frames == 1


def test_stop_delivers_held_frames_first() -> None:
    d = started()
    d.parse(media(3, 3))
    out = d.parse(changed(C, "stop", lambda m: m.update(sequence_number="9")))
    assert payloads(out) == [3] and isinstance(out[-1], StreamStopped)


def test_l16_start_at_16k_swaps_byte_order_both_ways() -> None:
    d = TelnyxStream()
    d.parse(
        changed(
            C,
            "start",
            lambda m: m["start"].update(media_format={"encoding": "L16", "sample_rate": 16000, "channels": 1}),
        )
    )
    assert (d.encoding, d.sample_rate, d.frame_bytes) == ("audio/pcm", 16000, 640)
    frame = bytes(range(256)) * 2 + bytes(range(128))  # 640 bytes: 20 ms
    (ev,) = d.parse(changed(C, "media_1", lambda m: m["media"].update(payload=base64.b64encode(frame).decode())))
    assert ev.payload == pcm16_swap(frame) and ev.payload[:2] == b"\x01\x00"
    # half a sample is refused (and its sequence number still counts, so the next frame is not held back)
    assert d.parse(changed(C, "media_2", lambda m: m["media"].update(payload=base64.b64encode(b"\x01").decode()))) == [
        MediaFault("odd_length", 1, refused=True)
    ]
    assert d.media_faults == {"odd_length": 1}
    assert json.loads(d.build_media(b"\x02\x01"))["media"]["payload"] == base64.b64encode(b"\x01\x02").decode()


def test_outbound_messages_have_the_documented_shapes() -> None:
    d = started()
    assert json.loads(d.build_media(bytes(range(96, 256)))) == fixture(C, "outbound_media")
    assert json.loads(d.build_mark("g0.1")) == fixture(C, "outbound_mark")
    assert json.loads(d.build_clear()) == fixture(C, "outbound_clear")
    with pytest.raises(RuntimeError):
        TelnyxStream().build_clear()


@pytest.mark.parametrize(
    ("name", "change"),
    [
        ("start", lambda m: m["start"].update(media_format={"encoding": "OPUS", "sample_rate": 16000, "channels": 1})),
        ("start", lambda m: m["start"].update(media_format={"encoding": "PCMU", "sample_rate": 16000, "channels": 1})),
        ("start", lambda m: m["start"].pop("call_control_id")),
        ("start", lambda m: m.pop("stream_id")),
        ("start", lambda m: m["start"].update(custom_parameters={"token": 1})),
    ],
)
def test_bad_starts_are_protocol_errors(name: str, change: object) -> None:
    with pytest.raises(CarrierProtocolError):
        TelnyxStream().parse(changed(C, name, change))  # type: ignore[arg-type]


def test_bad_messages_after_start_are_protocol_errors() -> None:
    d = started()
    for bad in (
        changed(C, "media_1", lambda m: m.update(stream_id="other")),
        changed(C, "media_1", lambda m: m["media"].update(payload="***")),
        changed(C, "dtmf", lambda m: m["dtmf"].update(digit="x")),
        text({"event": "nonsense", "stream_id": fixture(C, "start")["stream_id"]}),
        "not json",
        b"\x00",
    ):
        with pytest.raises(CarrierProtocolError):
            d.parse(bad)
    with pytest.raises(CarrierProtocolError):
        TelnyxStream().parse(text(fixture(C, "media_1")))  # before start


def test_texml_stream_is_bidirectional_rtp_with_matching_codecs() -> None:
    body = texml_stream("wss://gw.example.com/telnyx/stream", {"token": "t"}, codec="PCMA")
    stream = ElementTree.fromstring(body).find("./Connect/Stream")
    assert stream is not None
    a = stream.attrib
    assert (a["bidirectionalMode"], a["codec"], a["bidirectionalCodec"], a["bidirectionalSamplingRate"]) == (
        "rtp",
        "PCMA",
        "PCMA",
        "8000",
    )
    assert [p.attrib["value"] for p in stream.findall("Parameter")] == ["t"]
    with pytest.raises(ValueError):
        texml_stream("wss://x/y", {}, codec="L16", sampling_rate=16000)  # L16 is Call Control only


def test_call_control_streaming_start_parameters() -> None:
    body = streaming_start_params("wss://gw/telnyx/stream", {"token": "t"}, codec="L16", sampling_rate=24000)
    assert body["stream_bidirectional_mode"] == "rtp"
    assert body["stream_codec"] == body["stream_bidirectional_codec"] == "L16"
    assert body["stream_bidirectional_sampling_rate"] == 24000
    assert body["custom_parameters"] == [{"name": "token", "value": "t"}]


def _keypair() -> tuple[Ed25519PrivateKey, str]:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return key, base64.b64encode(raw).decode()


def test_ed25519_webhook_signature_real_key_pair_valid_and_forged() -> None:
    key, public = _keypair()
    body = b'{"data":{"event_type":"call.initiated"}}'
    ts = str(NOW)
    sig = base64.b64encode(key.sign(ts.encode() + b"|" + body)).decode()
    assert verify_telnyx_signature(public, body, ts, sig, now=NOW + 5)
    # forged: signed by another key, body changed, timestamp changed, or replayed too late
    other, _ = _keypair()
    forged = base64.b64encode(other.sign(ts.encode() + b"|" + body)).decode()
    assert not verify_telnyx_signature(public, body, ts, forged, now=NOW)
    assert not verify_telnyx_signature(public, body + b" ", ts, sig, now=NOW)
    assert not verify_telnyx_signature(public, body, str(NOW + 1), sig, now=NOW)
    assert not verify_telnyx_signature(public, body, ts, sig, now=NOW + 301)
    assert not verify_telnyx_signature(public, body, ts, "not base64!", now=NOW)
    assert not verify_telnyx_signature(public, body, None, sig, now=NOW)
    assert not verify_telnyx_signature("", body, ts, sig, now=NOW)


def test_a_timestamp_too_long_for_int_is_refused_not_a_crash() -> None:
    # Bug: "Never raises for bad input", but a 5,000-digit telnyx-timestamp header passed isdigit() and reached
    # int(), which raises ValueError past 4,300 digits: the webhook handler failed instead of refusing it.
    key, public = _keypair()
    ts = "9" * 5000
    sig = base64.b64encode(key.sign(ts.encode() + b"|{}")).decode()
    assert not verify_telnyx_signature(public, b"{}", ts, sig, now=NOW)

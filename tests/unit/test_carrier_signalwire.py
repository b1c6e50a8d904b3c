"""SignalWire dialect (gateway/carriers/signalwire.py), pinned to docs/how-to/carriers/signalwire.md#protocol
(Twilio-compatible events, the ``codec`` attribute, Twilio-compatible signatures with the signing key)."""

from __future__ import annotations

import base64
import json
from xml.etree import ElementTree

import pytest

from gateway.carriers.base import Dialect
from gateway.carriers.events import (
    AudioReceived,
    DtmfReceived,
    MediaFault,
    PlaybackCheckpoint,
    StreamStarted,
    StreamStopped,
)
from gateway.carriers.signalwire import CODECS, SignalWireStream, connect_stream, validate_signalwire_signature
from gateway.errors import CarrierProtocolError
from gateway.security import twilio_signature
from tests.support.carrier_fixtures import changed, fixture, text

C = "signalwire"


def started(start: str = "start_l16_24k", **kw: object) -> SignalWireStream:
    d = SignalWireStream(**kw)  # type: ignore[arg-type]
    d.parse(text(fixture(C, "connected")))
    d.parse(text(fixture(C, start)))
    return d


def test_is_a_dialect_and_speaks_json_text() -> None:
    assert isinstance(SignalWireStream(), Dialect)
    with pytest.raises(CarrierProtocolError, match="binary"):
        SignalWireStream().parse(b"\x00\x01")


def test_l16_at_24k_start_maps_to_pcm_24000_so_a_pcm24k_agent_needs_no_resampling() -> None:
    d = SignalWireStream()
    (ev,) = d.parse(text(fixture(C, "start_l16_24k")))
    assert isinstance(ev, StreamStarted)
    assert (ev.encoding, ev.sample_rate, ev.call_id) == (
        "audio/pcm",
        24000,
        fixture(C, "start_l16_24k")["start"]["callSid"],
    )
    assert ev.custom_parameters["token"] == "v1.1790000000.q2r3s4t5"
    assert d.frame_bytes == 960  # 20 ms of 24 kHz PCM16


def test_pcma_start_maps_to_alaw_8k() -> None:
    d = started("start_pcma")
    assert (d.encoding, d.sample_rate, d.frame_bytes, d.silence) == ("audio/pcma", 8000, 160, 0xD5)


def test_a_g711_streams_media_template_is_build_media_around_the_payload_and_l16_has_none() -> None:
    # The compiled message lane builds the steady state's media message from it (gateway/audio/fir_message.py).
    d = started("start_pcma")
    head, tail = d.media_template()  # type: ignore[misc]
    payload = bytes(range(160))
    assert (head + base64.b64encode(payload) + tail).decode() == d.build_media(payload)
    assert started().media_template() is None  # L16: the samples are swapped, not a template's base64
    assert SignalWireStream().media_template() is None  # before start: no streamSid yet


def test_l16_payloads_are_swapped_from_network_byte_order_both_ways() -> None:
    d = started()
    # (4 bytes are not a whole 20 ms frame: passed on, after a one-time notice)
    fault, ev = d.parse(text(fixture(C, "media_l16")))
    assert fault == MediaFault("mis_sized", 4, refused=False)
    assert ev == AudioReceived(bytes([0x02, 0x01, 0x04, 0x03]), timestamp_ms=5, chunk=1)
    assert json.loads(d.build_media(bytes([0x01, 0x02, 0x03, 0x04]))) == fixture(C, "outbound_media_l16")


def test_mark_dtmf_stop_and_outbound_mark_clear_have_twilio_shapes() -> None:
    d = started()
    assert d.parse(text(fixture(C, "mark"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(text(fixture(C, "dtmf"))) == [DtmfReceived("7")]
    assert json.loads(d.build_mark("g0.1")) == fixture(C, "outbound_mark")
    assert json.loads(d.build_clear()) == fixture(C, "outbound_clear")
    assert d.parse(text(fixture(C, "stop"))) == [StreamStopped(call_id=fixture(C, "stop")["stop"]["callSid"])]


def test_transport_params_override_the_start_messages() -> None:
    d = SignalWireStream(transport_params={"token": "from-path"})
    (ev,) = d.parse(text(fixture(C, "start_pcma")))
    assert ev.custom_parameters["token"] == "from-path"


@pytest.mark.parametrize(
    "fmt",
    [
        {"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1},  # G.711 is 8 kHz only
        {"encoding": "audio/x-l16", "sampleRate": 44100, "channels": 1},
        {"encoding": "audio/opus", "sampleRate": 8000, "channels": 1},
        {"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 2},
    ],
)
def test_unsupported_media_formats_are_protocol_errors(fmt: dict[str, object]) -> None:
    with pytest.raises(CarrierProtocolError, match="mediaFormat"):
        SignalWireStream().parse(changed(C, "start_l16_24k", lambda m: m["start"].update(mediaFormat=fmt)))


def test_malformed_messages_are_protocol_errors() -> None:
    d = started()
    with pytest.raises(CarrierProtocolError):
        d.parse(changed(C, "media_l16", lambda m: m.update(streamSid="MZother")))
    with pytest.raises(CarrierProtocolError):
        SignalWireStream().parse(text(fixture(C, "mark")))  # before start


def test_cxml_connect_stream_carries_codec_and_parameters_and_no_trailing_verb() -> None:
    body = connect_stream("wss://gw.example.com/signalwire/stream", {"token": "t", "to": "+1"}, codec="L16@24000h")
    root = ElementTree.fromstring(body)
    (connect,) = list(root)
    assert connect.tag == "Connect"
    stream = connect.find("Stream")
    assert stream is not None and stream.attrib["codec"] == "L16@24000h"
    assert {p.attrib["name"]: p.attrib["value"] for p in stream.findall("Parameter")} == {"token": "t", "to": "+1"}
    assert set(CODECS) == {"PCMU", "PCMA", "L16", "L16@16000h", "L16@24000h"}
    with pytest.raises(ValueError):
        connect_stream("wss://x/y", {}, codec="OPUS")


@pytest.mark.parametrize("header", ["X-SignalWire-Signature", "X-Twilio-Signature"])
def test_signature_with_the_signing_key_is_accepted_and_a_forged_one_refused(header: str) -> None:
    key, url, params = "PSK_signing_key", "https://gw.example.com/signalwire/voice", {"CallSid": "CA1", "To": "+1"}
    good = twilio_signature(key, url, params)
    assert validate_signalwire_signature(key, url, params, {header: good})
    forged = twilio_signature("another-key", url, params)
    assert not validate_signalwire_signature(key, url, params, {header: forged})
    assert not validate_signalwire_signature(key, url, {**params, "To": "+2"}, {header: good})
    assert not validate_signalwire_signature(key, url, params, {})
    assert base64.b64decode(good)  # a real base64 HMAC-SHA1


@pytest.mark.parametrize(
    ("field", "value"),
    [("sampleRate", 16000.0), ("sampleRate", "9" * 5000), ("channels", "1" * 5000), ("channels", "\u00b2")],
    ids=["float-rate", "rate-of-5000-digits", "channels-of-5000-digits", "superscript-two"],
)
def test_a_start_whose_numbers_are_unreadable_is_a_protocol_error(field: str, value: object) -> None:
    """16000.0 passed the rate check and failed an assert; digit strings too long for int(), or digits int() does not
    read ('²'.isdigit()), raised ValueError: each must be the dialect's protocol error, as any malformed start is."""
    start = fixture("signalwire", "start_l16_24k")
    start["start"]["mediaFormat"][field] = value
    with pytest.raises(CarrierProtocolError):
        SignalWireStream().parse(text(start))

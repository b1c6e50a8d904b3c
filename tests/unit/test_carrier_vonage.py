"""Vonage dialect (gateway/carriers/vonage.py), pinned to docs/how-to/carriers/vonage.md#protocol: a text
``websocket:connected`` with the NCCO headers, then binary 16-bit PCM; ``clear``/``notify`` commands; JWT-signed
webhooks."""

from __future__ import annotations

import hashlib
import json

import jwt
import pytest

from gateway.carriers.base import Dialect
from gateway.carriers.events import AudioReceived, DtmfReceived, PlaybackCheckpoint, PlaybackCleared, StreamStarted
from gateway.carriers.vonage import VonageStream, ncco_connect, verify_vonage_jwt
from gateway.errors import CarrierProtocolError
from tests.support.carrier_fixtures import changed, fixture, text

C = "vonage"
NOW = 1_790_000_000
SECRET = "vonage-signature-secret-0123456789abcdef"


def started() -> VonageStream:
    d = VonageStream()
    d.parse(text(fixture(C, "connected")))
    return d


def test_websocket_connected_is_the_start_with_headers_as_parameters() -> None:
    d = VonageStream()
    assert isinstance(d, Dialect)
    (ev,) = d.parse(text(fixture(C, "connected")))
    msg = fixture(C, "connected")
    assert ev == StreamStarted(
        stream_id=msg["uuid"],
        call_id=msg["uuid"],
        account_id="",
        encoding="audio/pcm",
        sample_rate=16000,
        custom_parameters={k: v for k, v in msg.items() if k not in ("event", "content-type")},
    )
    assert (d.frame_bytes, d.min_message_ms, d.max_message_ms) == (640, 20, 20)
    assert d.max_lead_ms is not None and d.max_lead_ms <= 3072 * 20


def test_legacy_first_message_without_event_key_and_8k() -> None:
    d = VonageStream()
    d.parse(changed(C, "connected", lambda m: (m.pop("event"), m.update({"content-type": "audio/l16;rate=8000"}))))
    assert (d.sample_rate, d.frame_bytes) == (8000, 320)


def test_binary_audio_and_text_events() -> None:
    d = started()
    assert d.parse(bytes(640)) == [AudioReceived(bytes(640))]
    assert d.parse(text(fixture(C, "dtmf"))) == [DtmfReceived("3")]
    assert d.parse(text(fixture(C, "notify"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(text(fixture(C, "cleared"))) == [PlaybackCleared()]
    assert d.parse(text({"event": "websocket:something_new"})) == []


def test_outbound_is_binary_audio_and_text_commands() -> None:
    d = started()
    assert d.build_media(b"\x01\x02" * 320) == b"\x01\x02" * 320
    assert d.build_media(b"\x01\x02\x03") == b"\x01\x02\x03\x00"  # odd length padded
    assert json.loads(d.build_mark("g0.1")) == fixture(C, "outbound_notify")
    assert json.loads(d.build_clear()) == fixture(C, "outbound_clear")
    with pytest.raises(RuntimeError):
        VonageStream().build_media(b"\x00\x00")


def test_protocol_errors() -> None:
    for bad in (
        bytes(640),  # audio before websocket:connected
        changed(C, "connected", lambda m: m.update({"content-type": "audio/l16;rate=24000"})),
        changed(C, "connected", lambda m: m.pop("uuid")),
        text(fixture(C, "notify")),
    ):
        with pytest.raises(CarrierProtocolError):
            VonageStream().parse(bad)
    d = started()
    for bad in (
        text(fixture(C, "connected")),
        text({"event": "nope"}),
        changed(C, "notify", lambda m: m.update(payload={})),
        changed(C, "dtmf", lambda m: m.update(digit="!")),
    ):
        with pytest.raises(CarrierProtocolError):
            d.parse(bad)


def test_ncco_connects_a_websocket_with_headers() -> None:
    (action,) = ncco_connect("wss://gw.example.com/vonage/stream", {"token": "t", "uuid": "u"}, 16000)
    assert action["action"] == "connect"
    (ep,) = action["endpoint"]
    assert ep == {
        "type": "websocket",
        "uri": "wss://gw.example.com/vonage/stream",
        "content-type": "audio/l16;rate=16000",
        "headers": {"token": "t", "uuid": "u"},
    }
    with pytest.raises(ValueError):
        ncco_connect("wss://x", {"big": "x" * 600})


def test_signed_webhook_jwt_valid_and_forged() -> None:
    body = b'{"status":"answered"}'
    claims = {"iat": NOW, "jti": "j1", "iss": "Vonage", "payload_hash": hashlib.sha256(body).hexdigest()}
    good = "Bearer " + jwt.encode(claims, SECRET, algorithm="HS256")
    assert verify_vonage_jwt(SECRET, good, body, now=NOW + 10)
    assert not verify_vonage_jwt(SECRET, good, body + b"x", now=NOW)  # body tampered
    assert not verify_vonage_jwt(SECRET, good, body, now=NOW + 3600)  # stale
    forged = "Bearer " + jwt.encode(claims, "x" * 32, algorithm="HS256")
    assert not verify_vonage_jwt(SECRET, forged, body, now=NOW)
    unsigned = "Bearer " + jwt.encode(claims, None, algorithm="none")
    assert not verify_vonage_jwt(SECRET, unsigned, body, now=NOW)
    assert not verify_vonage_jwt(SECRET, None, body, now=NOW)
    no_hash = "Bearer " + jwt.encode({"iat": NOW}, SECRET, algorithm="HS256")
    assert verify_vonage_jwt(SECRET, no_hash, b"", now=NOW)  # GET answer_url: nothing to hash

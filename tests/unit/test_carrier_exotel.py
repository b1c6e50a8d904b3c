"""Exotel dialect (gateway/carriers/exotel.py), pinned to docs/how-to/carriers/exotel.md#protocol and
docs/architecture/audio.md#framing: snake_case events, raw PCM16 base64 at 8/16/24 kHz, outbound chunks ≥ 100 ms and ≥
3.2 KB, ≤ 100 KB, multiples of 320; Basic auth / IP list."""

from __future__ import annotations

import base64
import json

import pytest

from gateway.carriers.base import Dialect
from gateway.carriers.events import (
    AudioReceived,
    DtmfReceived,
    PlaybackCheckpoint,
    StreamConnected,
    StreamStarted,
    StreamStopped,
)
from gateway.carriers.exotel import ExotelStream, ip_allowed, min_message_ms_for, stream_url_document, verify_basic_auth
from gateway.errors import CarrierProtocolError
from tests.support.carrier_fixtures import changed, fixture, text

C = "exotel"


def started() -> ExotelStream:
    d = ExotelStream()
    d.parse(text(fixture(C, "connected")))
    d.parse(text(fixture(C, "start")))
    return d


def test_connected_and_start() -> None:
    d = ExotelStream()
    assert isinstance(d, Dialect)
    assert d.parse(text(fixture(C, "connected"))) == [StreamConnected()]
    (ev,) = d.parse(text(fixture(C, "start")))
    s = fixture(C, "start")["start"]
    assert ev == StreamStarted(
        stream_id=s["stream_sid"],
        call_id=s["call_sid"],
        account_id=s["account_sid"],
        encoding="audio/pcm",
        sample_rate=8000,
        custom_parameters={"token": "v1.1790000000.q2r3s4t5", "from": s["from"], "to": s["to"]},
    )
    assert (d.frame_bytes, d.min_message_ms) == (320, 200)  # 3.2 KB at 8 kHz is 200 ms


@pytest.mark.parametrize(("rate", "frame", "min_ms"), [(8000, 320, 200), (16000, 640, 100), (24000, 960, 100)])
def test_rates_set_frame_size_and_minimum_message(rate: int, frame: int, min_ms: int) -> None:
    d = ExotelStream()
    d.parse(changed(C, "start", lambda m: m["start"]["media_format"].update(sample_rate=str(rate))))
    assert (d.sample_rate, d.frame_bytes, d.min_message_ms, min_message_ms_for(rate)) == (rate, frame, min_ms, min_ms)
    assert frame % 320 == 0 and rate * 2 * min_ms // 1000 >= 3200


def test_media_dtmf_mark_stop() -> None:
    d = started()
    (ev,) = d.parse(text(fixture(C, "media")))
    assert isinstance(ev, AudioReceived) and len(ev.payload) == 1600 and ev.timestamp_ms == 100
    assert d.parse(text(fixture(C, "dtmf"))) == [DtmfReceived("4")]
    assert d.parse(text(fixture(C, "mark"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(text(fixture(C, "stop"))) == [StreamStopped(call_id=fixture(C, "start")["start"]["call_sid"])]


def test_outbound_shapes_and_chunk_rules() -> None:
    d = started()
    pcm = base64.b64decode(fixture(C, "outbound_media")["media"]["payload"])
    assert len(pcm) == 3200
    assert json.loads(d.build_media(pcm)) == fixture(C, "outbound_media")
    assert json.loads(d.build_mark("g0.1")) == fixture(C, "outbound_mark")
    assert json.loads(d.build_clear()) == fixture(C, "outbound_clear")
    for bad in (bytes(320), bytes(3200 + 2), bytes(102400 + 320)):  # too short, not a multiple of 320, too long
        with pytest.raises(RuntimeError):
            d.build_media(bad)


def test_protocol_errors() -> None:
    for bad in (
        changed(C, "start", lambda m: m["start"]["media_format"].update(encoding="audio/x-mulaw")),
        changed(C, "start", lambda m: m["start"]["media_format"].update(sample_rate="44100")),
        changed(C, "start", lambda m: m["start"].pop("call_sid")),
        text(fixture(C, "media")),  # before start
        b"\x00",
    ):
        with pytest.raises(CarrierProtocolError):
            ExotelStream().parse(bad)
    d = started()
    for bad in (
        changed(C, "media", lambda m: m.update(stream_sid="other")),
        text({"event": "stranger", "stream_sid": fixture(C, "start")["stream_sid"]}),
    ):
        with pytest.raises(CarrierProtocolError):
            d.parse(bad)


def test_dynamic_url_document() -> None:
    doc = stream_url_document("wss://gw.example.com/exotel/stream", 16000, {"token": "v1.1.abc"})
    assert doc == {"url": "wss://gw.example.com/exotel/stream?sample-rate=16000&token=v1.1.abc"}
    with pytest.raises(ValueError):
        stream_url_document("wss://x", 16000, {"a": "1", "b": "2", "c": "3", "d": "4"})
    with pytest.raises(ValueError):
        stream_url_document("wss://x", 16000, {"a": "x" * 300})


def test_basic_auth_valid_and_forged() -> None:
    good = "Basic " + base64.b64encode(b"key:token").decode()
    assert verify_basic_auth(good, "key", "token")
    assert not verify_basic_auth("Basic " + base64.b64encode(b"key:guess").decode(), "key", "token")
    assert not verify_basic_auth("Basic !!!", "key", "token")
    assert not verify_basic_auth(None, "key", "token")
    assert not verify_basic_auth("Bearer x", "key", "token")


def test_ip_allow_list() -> None:
    nets = ["182.76.143.0/24", "10.0.0.5"]
    assert ip_allowed("182.76.143.61", nets) and ip_allowed("10.0.0.5", nets)
    assert not ip_allowed("182.76.144.1", nets) and not ip_allowed("nonsense", nets) and not ip_allowed(None, nets)

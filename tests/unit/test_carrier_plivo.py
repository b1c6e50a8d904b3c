"""Plivo dialect (gateway/carriers/plivo.py), pinned to docs/how-to/carriers/plivo.md#protocol: ``playAudio``,
``checkpoint`` → ``playedStream`` (only after playback), ``clearAudio`` → ``clearedAudio``, V3 signatures with a
nonce."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from xml.etree import ElementTree

import pytest

from gateway.carriers.base import Dialect
from gateway.carriers.events import AudioReceived, DtmfReceived, PlaybackCheckpoint, PlaybackCleared, StreamStarted
from gateway.carriers.plivo import PlivoStream, plivo_v3_signature, stream_xml, validate_plivo_v3_signature
from gateway.errors import CarrierProtocolError
from tests.support.carrier_fixtures import changed, fixture, text

C = "plivo"


def started(**kw: object) -> PlivoStream:
    d = PlivoStream(**kw)  # type: ignore[arg-type]
    d.parse(text(fixture(C, "start")))
    return d


def test_start_reads_format_extra_headers_and_path_token() -> None:
    d = PlivoStream(transport_params={"token": "tok-from-path"})
    assert isinstance(d, Dialect)
    (ev,) = d.parse(text(fixture(C, "start")))
    start = fixture(C, "start")["start"]
    assert ev == StreamStarted(
        stream_id=start["streamId"],
        call_id=start["callId"],
        account_id=start["accountId"],
        encoding="audio/pcm",
        sample_rate=16000,
        custom_parameters={"to": "+18005551212", "from": "+15550001111", "token": "tok-from-path"},
    )
    assert (d.frame_bytes, d.silence) == (640, 0)


@pytest.mark.parametrize("headers", ["to=18005551212,from=15550001111", {"X-PH-to": "18005551212"}])
def test_extra_headers_in_key_value_or_object_form(headers: object) -> None:
    (ev,) = PlivoStream().parse(changed(C, "start", lambda m: m.update(extra_headers=headers)))
    assert ev.custom_parameters["to"] == "+18005551212"


def test_media_dtmf_played_stream_and_cleared_audio() -> None:
    d = started()
    (ev,) = d.parse(text(fixture(C, "media")))
    assert isinstance(ev, AudioReceived) and len(ev.payload) == 640 and ev.chunk == 1
    assert d.parse(text(fixture(C, "dtmf"))) == [DtmfReceived("9")]
    assert d.parse(text(fixture(C, "played_stream"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(changed(C, "played_stream", lambda m: m.update(event="played"))) == [PlaybackCheckpoint("g0.1")]
    assert d.parse(text(fixture(C, "cleared_audio"))) == [PlaybackCleared()]


def test_outbound_play_audio_checkpoint_and_clear_audio() -> None:
    d = started()
    pcm = base64.b64decode(fixture(C, "outbound_play_audio")["media"]["payload"])
    assert json.loads(d.build_media(pcm)) == fixture(C, "outbound_play_audio")
    assert json.loads(d.build_mark("g0.1")) == fixture(C, "outbound_checkpoint")
    assert json.loads(d.build_clear()) == fixture(C, "outbound_clear_audio")


def test_mulaw_stream_plays_mulaw() -> None:
    d = PlivoStream()
    d.parse(
        changed(C, "start", lambda m: m["start"].update(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 8000}))
    )
    assert json.loads(d.build_media(b"\xff" * 160))["media"]["contentType"] == "audio/x-mulaw"
    assert (d.frame_bytes, d.silence) == (160, 0xFF)


def test_malformed_messages_are_protocol_errors() -> None:
    for bad in (
        changed(
            C, "start", lambda m: m["start"].update(mediaFormat={"encoding": "audio/x-mulaw", "sampleRate": 16000})
        ),
        changed(C, "start", lambda m: m.update(extra_headers="novalue")),
        changed(C, "start", lambda m: m["start"].pop("callId")),
    ):
        with pytest.raises(CarrierProtocolError):
            PlivoStream().parse(bad)
    d = started()
    for bad in (
        changed(C, "media", lambda m: m.update(streamId="other")),
        changed(C, "played_stream", lambda m: m.pop("name")),
        text({"event": "whatever", "streamId": fixture(C, "start")["start"]["streamId"]}),
        b"\x01",
    ):
        with pytest.raises(CarrierProtocolError):
            d.parse(bad)
    with pytest.raises(CarrierProtocolError):
        PlivoStream().parse(text(fixture(C, "media")))


def test_stream_xml_is_bidirectional_keeps_the_call_and_checks_extra_headers() -> None:
    body = stream_xml("wss://gw.example.com/plivo/stream/v1.17.abc", "audio/x-l16;rate=16000", {"to": "+18005551212"})
    stream = ElementTree.fromstring(body).find("Stream")
    assert stream is not None and stream.text == "wss://gw.example.com/plivo/stream/v1.17.abc"
    a = stream.attrib
    assert (a["bidirectional"], a["keepCallAlive"], a["contentType"], a["extraHeaders"]) == (
        "true",
        "true",
        "audio/x-l16;rate=16000",
        "to=18005551212",
    )
    with pytest.raises(ValueError):
        stream_xml("wss://x", extra_headers={"token": "v1.2.a-b"})  # not alphanumeric


def _reference_v3(token: str, url_base: str, nonce: str) -> str:
    return base64.b64encode(hmac.new(token.encode(), f"{url_base}.{nonce}".encode(), hashlib.sha256).digest()).decode()


def test_v3_signature_construction_for_post_and_get() -> None:
    params = {"To": "+1800", "CallUUID": "abc", "From": "+1555"}
    # POST: URL + "?" + params sorted by name as name+value, then ".nonce" (plivo-python signature_v3.py)
    expected = _reference_v3("tok", "https://gw.example.com/plivo/answer?CallUUIDabcFrom+1555To+1800", "12345")
    assert plivo_v3_signature("tok", "POST", "https://gw.example.com/plivo/answer", params, "12345") == expected
    # GET: the sorted query string
    expected_get = _reference_v3("tok", "https://gw.example.com/plivo/answer?a=1&b=2", "n")
    assert plivo_v3_signature("tok", "GET", "https://gw.example.com/plivo/answer?b=2&a=1", {}, "n") == expected_get


def test_v3_signature_valid_and_forged() -> None:
    url, params = "https://gw.example.com/plivo/answer", {"CallUUID": "abc", "To": "+1800"}
    good = plivo_v3_signature("auth-token", "POST", url, params, "nonce-1")
    assert validate_plivo_v3_signature("auth-token", "POST", url, params, "nonce-1", good)
    assert validate_plivo_v3_signature("auth-token", "POST", url, params, "nonce-1", f"old-sig,{good}")
    assert not validate_plivo_v3_signature("auth-token", "POST", url, params, "nonce-2", good)  # other nonce
    assert not validate_plivo_v3_signature("auth-token", "POST", url, {**params, "To": "+1"}, "nonce-1", good)
    forged = plivo_v3_signature("other-token", "POST", url, params, "nonce-1")
    assert not validate_plivo_v3_signature("auth-token", "POST", url, params, "nonce-1", forged)
    assert not validate_plivo_v3_signature("auth-token", "POST", url, params, None, good)


def test_extra_headers_nested_too_deep_to_parse_is_a_protocol_error() -> None:
    """extra_headers may be a JSON string of an object; one nested 1,500 deep (about 10 KB, under the message limit)
    made json.loads raise RecursionError, which escaped the dialect before the token was checked."""
    start = fixture("plivo", "start")
    start["extra_headers"] = "{" + '"a":{' * 1500
    assert len(text(start)) < 65536
    with pytest.raises(CarrierProtocolError):
        PlivoStream({"token": "t"}).parse(text(start))

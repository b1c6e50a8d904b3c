"""Media payloads that are not what the carriers' docs say one is (docs/how-to/carriers/index.md#media-faults): an
empty payload and half a 16-bit sample are refused (dropped), a payload that is not a whole number of 20 ms frames is
passed on; every one is counted in the dialect's ``media_faults`` and the first of each reason per stream is reported
as a MediaFault event (which the call logs once and counts in metrics)."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from gateway.carriers.events import AudioReceived, MediaFault
from gateway.carriers.exotel import ExotelStream
from gateway.carriers.plivo import PlivoStream
from gateway.carriers.signalwire import SignalWireStream
from gateway.carriers.telnyx import TelnyxStream
from gateway.carriers.twilio import TwilioDialect
from gateway.carriers.vonage import VonageStream
from tests.support.carrier_fixtures import fixture, text


def _json_media(carrier: str, name: str = "media") -> Callable[[bytes], str]:
    def build(payload: bytes) -> str:
        msg = fixture(carrier, name)
        msg["media"]["payload"] = base64.b64encode(payload).decode()
        return json.dumps(msg)

    return build


def _telnyx_media() -> Callable[[bytes], str]:
    seq = iter(range(3, 10**6))

    def build(payload: bytes) -> str:
        msg = fixture("telnyx", "media_1")
        msg["sequence_number"] = str(next(seq))
        msg["media"]["payload"] = base64.b64encode(payload).decode()
        return json.dumps(msg)

    return build


# carrier: (a started dialect, how a media message with a payload is written, bytes of 20 ms)
def _cases() -> dict[str, tuple[Any, Callable[[bytes], Any], int]]:
    twilio = TwilioDialect()
    twilio.parse(text(fixture("twilio", "start")))
    signalwire = SignalWireStream()
    signalwire.parse(text(fixture("signalwire", "start_l16_24k")))
    telnyx = TelnyxStream()
    start = fixture("telnyx", "start")
    start["sequence_number"] = "2"
    telnyx.parse(json.dumps(start))
    plivo = PlivoStream()
    plivo.parse(text(fixture("plivo", "start")))
    vonage = VonageStream()
    vonage.parse(text(fixture("vonage", "connected")))
    exotel = ExotelStream()
    exotel.parse(text(fixture("exotel", "start")))
    return {
        "twilio": (twilio, _json_media("twilio"), 160),
        "signalwire": (signalwire, _json_media("signalwire", "media_l16"), 960),
        "telnyx": (telnyx, _telnyx_media(), telnyx.frame_bytes),
        "plivo": (plivo, _json_media("plivo"), plivo.frame_bytes),
        "vonage": (vonage, lambda p: p, vonage.frame_bytes),
        "exotel": (exotel, _json_media("exotel"), exotel.frame_bytes),
    }


@pytest.mark.parametrize("carrier", ["twilio", "signalwire", "telnyx", "plivo", "vonage", "exotel"])
def test_empty_payloads_are_refused_odd_ones_too_and_mis_sized_ones_passed_on_all_counted(carrier: str) -> None:
    d, media, frame = _cases()[carrier]
    pcm = getattr(d, "encoding", "audio/pcmu") == "audio/pcm"
    whole = bytes(range(256)) * (frame // 256) + bytes(frame % 256)
    audio = [e for e in d.parse(media(whole)) if isinstance(e, AudioReceived)]
    assert len(audio) == 1 and len(audio[0].payload) == frame and d.media_faults == {}
    assert d.parse(media(b"")) == [MediaFault("empty", 0, refused=True)]
    assert d.parse(media(b"")) == []  # reported once per stream, counted every time
    short = whole[: frame // 2 + (frame // 2) % 2]  # half a frame, whole samples
    first = d.parse(media(short))
    assert first[0] == MediaFault("mis_sized", len(short), refused=False)
    assert [len(e.payload) for e in first[1:]] == [len(short)]
    again = d.parse(media(short))
    assert [len(e.payload) for e in again] == [len(short)]
    expected = {"empty": 2, "mis_sized": 2}
    if pcm:
        assert d.parse(media(whole[:3])) == [MediaFault("odd_length", 3, refused=True)]
        expected["odd_length"] = 1
    assert d.media_faults == expected
    # and the stream goes on: the next whole frame is delivered (Telnyx: not held for a refused sequence number)
    assert [len(e.payload) for e in d.parse(media(whole)) if isinstance(e, AudioReceived)] == [frame]

"""FreeSWITCH mod_audio_fork, pure (gateway/carriers/freeswitch.py; docs/how-to/pbx/freeswitch.md): the metadata the
dialplan fetches is one space-free JSON object, its echo as the first text frame starts the stream with its token,
binary frames are L16, marks come back as playout or cleared, keypresses travel as text, and what we send is binary
audio, ``killAudio`` and ``mark``."""

from __future__ import annotations

import json

import pytest

from gateway.carriers.base import Dialect
from gateway.carriers.events import AudioReceived, DtmfReceived, PlaybackCheckpoint, StreamStarted
from gateway.carriers.freeswitch import SPEC, FreeswitchSettings, FreeswitchStream, metadata
from gateway.carriers.spec import AnswerContext, Call, Door, Malformed, Refusal, Webhook
from gateway.errors import CarrierProtocolError, LocalProtocolError

META = metadata("v2.tok", "3f6c-uuid", "+15550001111", "+15550002222", 16000)


def started() -> FreeswitchStream:
    d = FreeswitchStream()
    d.parse(META)
    return d


def test_the_metadata_echo_starts_the_stream_with_its_token() -> None:
    d = FreeswitchStream()
    assert isinstance(d, Dialect) and " " not in META
    (start,) = d.parse(META)
    assert start == StreamStarted(
        "3f6c-uuid",
        "3f6c-uuid",
        "",
        "audio/pcm",
        16000,
        custom_parameters={"token": "v2.tok", "from": "+15550001111", "to": "+15550002222"},
    )
    assert d.frame_bytes == 640


def test_audio_marks_and_keys_in_and_what_we_send() -> None:
    d = FreeswitchStream()
    with pytest.raises(LocalProtocolError):
        d.build_clear()  # before the metadata: our bug
    d.parse(META)
    assert d.parse(b"\x01\x00" * 333) == [AudioReceived(b"\x01\x00" * 333)]  # any size that has accumulated
    for event in ("playout", "cleared"):
        mark = json.dumps({"type": "mark", "data": {"name": "m7", "event": event}})
        assert d.parse(mark) == [PlaybackCheckpoint("m7")]
    assert d.parse('{"type":"dtmf","digit":"#"}') == [DtmfReceived("#")]
    assert d.parse('{"type":"note","data":{}}') == []  # other send_text traffic
    assert d.parse(b"") == []  # nothing accumulated: nothing to do
    assert d.build_media(b"\x00\x01" * 320) == b"\x00\x01" * 320
    assert json.loads(d.build_clear()) == {"type": "killAudio"}
    assert json.loads(d.build_mark("m8")) == {"type": "mark", "data": {"name": "m8"}}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00\x00", "before the metadata"),
        ('{"token":"t"}', "usable 'uuid'"),
        ('{"token":"t","uuid":"u","rate":44100}', "rate 44100"),
        ("not json", "invalid JSON"),
    ],
)
def test_a_bad_start_is_a_protocol_error(data: str | bytes, message: str) -> None:
    with pytest.raises(CarrierProtocolError, match=message):
        FreeswitchStream().parse(data)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x00" * 3, "3 bytes"),
        ('{"type":"mark","data":{"name":"m"}}', "playout or cleared"),
        ('{"type":"dtmf","digit":"x"}', "not a DTMF digit"),
        (META, "second metadata"),
    ],
)
def test_bad_input_after_the_start_is_a_protocol_error(data: str | bytes, message: str) -> None:
    with pytest.raises(CarrierProtocolError, match=message):
        started().parse(data)


def test_the_metadata_endpoint() -> None:
    door = Door(FreeswitchSettings(), {"secret": "s"})
    hook = Webhook("GET", "/freeswitch/calls", {"Authorization": "Bearer s"}, {"uuid": "u-1", "to": "+1", "from": "+2"})
    assert SPEC.verify(hook, door) is None
    assert isinstance(SPEC.verify(Webhook("GET", "/", {}, {}), door), Refusal)
    assert SPEC.read_call(hook) == Call("u-1", called="+1", caller="+2")
    assert SPEC.read_call(Webhook("GET", "/", {}, {})) == Malformed("uuid missing or not an id")
    assert isinstance(SPEC.read_call(Webhook("GET", "/", {}, {"uuid": "u", "to": "a b"})), Malformed)
    answer = SPEC.answer(
        Call("u-1", "+1", "+2"), AnswerContext("v2.tok", "ws://gw", FreeswitchSettings(sample_rate=8000))
    )
    assert json.loads(answer.body) == {"token": "v2.tok", "uuid": "u-1", "from": "+2", "to": "+1", "rate": 8000}
    assert [k for k, _ in SPEC.check(Door(FreeswitchSettings(sample_rate=24000), {}))] == [
        "carriers.freeswitch.sample_rate"
    ]


def test_a_metadata_rate_that_is_a_float_is_a_protocol_error() -> None:
    """8000.0 equals 8000, so it passed the rate check, and the call's frames were then counted in floats: the
    goodbye prompt's framing raised TypeError (an internal error) later in the call."""
    with pytest.raises(CarrierProtocolError):
        FreeswitchStream().parse(json.dumps({"uuid": "u1", "token": "t", "rate": 8000.0}))

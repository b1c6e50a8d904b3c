"""The fast media path is byte-for-byte the plain one: same parsed events (or the same error), same audio bytes,
same outbound messages. Speed must never change behaviour (issue #7).

Fast path: msgspec structs for ``media`` and ``reply.audio`` (gateway/carriers/twilio.py, gateway/agent/protocol.py),
byte templates for ``media`` and ``input.audio``, agent chunks coalesced to whole frames before transcoding
(gateway/audio/transcode.py). Reference: the plain parsers kept in gateway/ as the fast parsers' fallback, and
tests/support/plain_media_path.py. Corpus: speech-like audio (tests/support/media_corpus.py) plus the golden
fixtures in tests/fixtures/, then hypothesis-made variants aimed at the edges where two JSON/base64 decoders can
disagree (padding, escapes, duplicate keys, non-finite numbers, lone surrogates, byte order marks, nesting).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.agent import protocol as ap
from gateway.audio import g711
from gateway.audio.resample import RESAMPLE_QUALITIES, FirResampler, StreamResampler, make_resampler
from gateway.audio.transcode import InboundAudio, OutboundAudio
from gateway.carriers.events import AudioReceived
from gateway.carriers.twilio import TwilioStream
from gateway.errors import AgentProtocolError, CarrierProtocolError
from tests.support.media_corpus import (
    STREAM_SID,
    agent_pcm24k,
    caller_ulaw8k,
    reply_audio_messages,
    twilio_media_messages,
)
from tests.support.plain_media_path import PlainInbound, PlainOutbound, plain_build_media, plain_input_audio

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
TWILIO_INBOUND = ["connected", "start", "media", "mark", "dtmf", "stop"]
EXAMPLES = settings(
    max_examples=400, deadline=None, database=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


def twilio_fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / "twilio" / f"{name}.json").read_text(encoding="utf-8"))


def start_text(sid: str = STREAM_SID) -> str:
    msg = twilio_fixture("start")
    msg["streamSid"] = msg["start"]["streamSid"] = sid
    return json.dumps(msg)


def outcome(parse: Callable[[Any], Any], raw: Any) -> tuple[Any, ...]:
    """What a parser did with one message: its event, or the kind and text of its error."""
    try:
        return ("event", parse(raw))
    except (CarrierProtocolError, AgentProtocolError) as exc:
        return ("error", type(exc), str(exc))


def twilio_pair(started: bool = True) -> tuple[TwilioStream, TwilioStream]:
    fast, plain = TwilioStream(), TwilioStream()
    if started:
        fast.parse(start_text())
        plain.parse_plain(start_text())
    return fast, plain


def assert_same_twilio(raws: list[Any], started: bool = True) -> None:
    fast, plain = twilio_pair(started)
    for raw in raws:
        frame = fast.audio_frame(raw)  # the call's fast road: only ever the payload parse returns, as its only event
        got, want = outcome(fast.parse, raw), outcome(plain.parse_plain, raw)
        assert got == want, raw
        if frame is not None:
            assert got[0] == "event" and type(got[1]) is AudioReceived and got[1].payload == frame, raw
            assert frame and len(frame) % 160 == 0, raw  # whole frames: what the dialect passes on unscreened
        assert (fast.stream_sid, fast.call_sid, fast.stopped) == (plain.stream_sid, plain.call_sid, plain.stopped)


# ---- carrier side: parsing -----------------------------------------------------------------------------------------
def test_speechlike_media_frames_parse_to_the_same_audio_as_the_plain_parser() -> None:
    messages = twilio_media_messages(caller_ulaw8k(3.0))
    fast, plain = twilio_pair()
    for raw in messages:
        ev = fast.parse(raw)
        assert ev == plain.parse_plain(raw)
        assert len(ev.payload) == 160
        assert fast.audio_frame(raw) == ev.payload  # every steady frame takes the fast road
    assert b"".join(fast.parse(m).payload for m in messages) == caller_ulaw8k(3.0)


def test_a_whole_call_of_golden_fixtures_parses_the_same_both_ways() -> None:
    raws = [json.dumps(twilio_fixture(n)) for n in ("connected", "start", "media", "mark", "dtmf", "media", "stop")]
    assert_same_twilio(raws + [json.dumps(twilio_fixture("media"))], started=False)


def test_media_before_start_and_after_stop_fail_the_same_way() -> None:
    media = json.dumps(twilio_fixture("media"))
    assert_same_twilio([media, start_text(), media, json.dumps(twilio_fixture("stop")), media], started=False)


# Texts where a second JSON or base64 decoder could disagree with json.loads + b64decode(validate=True).
TRICKY_MEDIA = [
    '{"event":"media","streamSid":"%s","media":{"payload":"AAAA===="}}',  # excess padding: b64decode accepts
    '{"event":"media","streamSid":"%s","media":{"payload":"AAA"}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"AA\\/A"}}',  # escaped slash is still base64
    '{"event":"media","streamSid":"%s","media":{"payload":"AA\\u003d="}}',  # escaped '='
    '{"event":"media","streamSid":"%s","media":{"payload":"AAAA\\n"}}',
    '{"event":"media","streamSid":"%s","media":{"payload":" AAAA"}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"A-_A"}}',
    '{"event":"media","streamSid":"%s","media":{"payload":""}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","track":null}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","timestamp":NaN}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","timestamp":1e400}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","timestamp":5.0,"chunk":-3}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","timestamp":123456789012345678901234567890}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","chunk":"\\u00b2"}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","chunk":true}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w=="},"event":"stop"}',  # duplicate key: last wins
    '{"event":"stop","streamSid":"%s","media":{"payload":"/w=="},"event":"media"}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","payload":"AAAA"}}',
    '{"event":"me\\u0064ia","streamSid":"%s","media":{"payload":"/w=="}}',
    '\ufeff{"event":"media","streamSid":"%s","media":{"payload":"/w=="}}',  # byte order mark
    ' \n{"event":"media","streamSid":"%s","media":{"payload":"/w=="}}\t ',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w=="}} x',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","x":"\\ud800"}}',  # lone surrogate escape
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","x":"\ud800"}}',  # lone surrogate in the str
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","x":' + "[" * 5000 + "]" * 5000 + "}}",
    '{"event":"media","streamSid":"%s","media":{"payload":"/w==","track":"outbound"}}',
    '{"event":"media","streamSid":"%s","media":null}',
    '{"event":"media","streamSid":"%s","media":[]}',
    '{"event":"media","streamSid":"%s"}',
    '{"event":"media","streamSid":null,"media":{"payload":"/w=="}}',
    '{"event":"media","media":{"payload":"/w=="}}',
    '{"event":"media","streamSid":"%s","media":{"payload":"/w=="},"sequenceNumber":NaN}',
    '["media","%s"]',
]


@pytest.mark.parametrize("template", TRICKY_MEDIA, ids=range(len(TRICKY_MEDIA)))
def test_tricky_media_texts_give_the_plain_parsers_event_or_error(template: str) -> None:
    raw = template.replace("%s", STREAM_SID) if "%s" in template else template
    assert_same_twilio([raw, raw.encode("utf-8", "surrogatepass")])
    # The same with a whole 20 ms frame, a payload the call's fast road (audio_frame) may take.
    whole = raw.replace('"/w=="', '"' + base64.b64encode(bytes(range(160))).decode() + '"')
    assert_same_twilio([whole, whole.encode("utf-8", "surrogatepass")])


b64_alphabet = st.sampled_from(
    list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")
    + ["="] * 6
    + ["-", "_", " ", "\n", "\\/", "\\u0041", "é"]
)
b64_texts = st.lists(b64_alphabet, max_size=12).map("".join) | (
    st.binary(max_size=20) | st.binary(min_size=160, max_size=160)
).map(lambda b: base64.b64encode(b).decode("ascii"))
field_values = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=6)
    | st.sampled_from(["1", "²", "٣", "0007", "-1", "inbound", "outbound", STREAM_SID])
)


@st.composite
def media_variants(draw: st.DrawFn) -> str:
    media: dict[str, Any] = {"payload": draw(b64_texts)}
    if draw(st.integers(0, 9)) == 0:
        del media["payload"]
    for key in draw(st.lists(st.sampled_from(["track", "timestamp", "chunk", "payload"]), max_size=3, unique=True)):
        media[key] = draw(field_values | b64_texts)
    msg: dict[str, Any] = {
        "event": draw(st.sampled_from(["media"] * 4 + ["mark", "stop", "start", "clear", "Media"])),
        "streamSid": draw(st.sampled_from([STREAM_SID] * 4 + ["MZother", None, 5])),
        "media": media if draw(st.integers(0, 5)) else draw(field_values),
    }
    text = json.dumps(msg)
    # json.dumps writes "/" and "=" as is; an escaped form must decode to the same string.
    if draw(st.booleans()):
        text = text.replace("/", "\\/")
    return text


@EXAMPLES
@given(raws=st.lists(media_variants(), min_size=1, max_size=5))
def test_arbitrary_media_variants_give_the_plain_parsers_event_or_error(raws: list[str]) -> None:
    assert_same_twilio(raws)


@EXAMPLES
@given(payload=st.binary(max_size=400) | st.binary(min_size=160, max_size=160) | st.binary(min_size=320, max_size=320))
def test_any_payload_bytes_round_trip_through_the_fast_parser(payload: bytes) -> None:
    raw = json.dumps(
        {
            "event": "media",
            "streamSid": STREAM_SID,
            "media": {"track": "inbound", "payload": base64.b64encode(payload).decode()},
        }
    )
    fast, plain = twilio_pair()
    assert fast.parse(raw) == plain.parse_plain(raw)
    assert fast.parse(raw).payload == payload
    assert fast.audio_frame(raw) == (payload if payload and len(payload) % 160 == 0 else None)


# ---- carrier side: building ---------------------------------------------------------------------------------------
def test_media_frames_build_to_exactly_the_plain_json() -> None:
    t = TwilioStream()
    t.parse(start_text())
    ulaw = caller_ulaw8k(1.0)
    for pos in range(0, len(ulaw), 160):
        assert t.build_media(ulaw[pos : pos + 160]) == plain_build_media(STREAM_SID, ulaw[pos : pos + 160])
    golden = twilio_fixture("outbound_media")
    frame = base64.b64decode(golden["media"]["payload"])
    assert json.loads(t.build_media(frame)) == golden


@EXAMPLES
@given(payload=st.binary(max_size=800), sid=st.from_regex(r"[A-Za-z0-9_\-]{1,64}", fullmatch=True))
def test_any_payload_and_stream_sid_build_to_exactly_the_plain_json(payload: bytes, sid: str) -> None:
    t = TwilioStream()
    t.parse(start_text(sid))
    assert t.build_media(payload) == plain_build_media(sid, payload)


@EXAMPLES
@given(audio=st.binary(max_size=2000))
def test_input_audio_is_exactly_the_plain_json(audio: bytes) -> None:
    assert ap.input_audio(audio) == plain_input_audio(audio)


# ---- agent side: parsing ------------------------------------------------------------------------------------------
def assert_same_agent(raw: str | bytes) -> None:
    assert outcome(ap.parse_server_event, raw) == outcome(ap.parse_server_event_plain, raw), raw


def test_speechlike_reply_audio_parses_to_the_same_audio_as_the_plain_parser() -> None:
    pcm = agent_pcm24k(3.0)
    got = []
    for raw in reply_audio_messages(pcm, 10):
        ev = ap.parse_server_event(raw)
        assert ev == ap.parse_server_event_plain(raw)
        got.append(ev.data)
    assert b"".join(got) == pcm


@pytest.mark.parametrize("path", sorted((FIXTURES / "agent").glob("*.json")), ids=lambda p: p.stem)
def test_every_agent_fixture_parses_the_same_both_ways(path: Path) -> None:
    raw = path.read_text(encoding="utf-8")
    assert_same_agent(raw)
    assert_same_agent(raw.encode())


TRICKY_REPLY_AUDIO = [
    '{"type":"reply.audio","data":"AAAA===="}',
    '{"type":"reply.audio","data":"AAA"}',
    '{"type":"reply.audio","data":"AA\\/A","reply_id":"r"}',
    '{"type":"reply.audio","data":""}',
    '{"type":"reply.audio","data":null}',
    '{"type":"reply.audio","data":"AAAA","reply_id":5}',
    '{"type":"reply.audio","data":"AAAA","reply_id":null}',
    '{"type":"reply.audio","data":"AAAA","timestamp":NaN}',
    '{"type":"reply.audio","data":"AAAA","timestamp":"2026-09-24T10:40:25.654Z"}',
    '{"type":"reply.audio","data":"AAAA","type":"reply.done"}',
    '{"type":"reply.done","data":"AAAA","type":"reply.audio"}',
    '{"type":"reply.audio","data":"AAAA","data":"not base64"}',
    '{"type":"reply.audio","data":"not base64","data":"AAAA"}',
    '{"type":"reply.\\u0061udio","data":"AAAA"}',
    '\ufeff{"type":"reply.audio","data":"AAAA"}',
    '{"type":"reply.audio","data":"AAAA","x":"\\udc00"}',
    '{"type":"reply.audio","data":"AAAA","x":"\udc00"}',
    '{"type":"reply.audio","data":"AAAA","x":' + "[" * 5000 + "]" * 5000 + "}",
    '{"type":"reply.audio","data":"AAAA"} trailing',
    '{"type":"future.audio","data":"AAAA"}',
    '{"type":"session.ready","session_id":"s","data":"AAAA"}',
    '{"data":"AAAA"}',
    '{"reply_id":"r","data":"AAAA"}',  # every field of reply.audio but its type: not an event
    '{"type":"\\u0000","reply_id":"r","data":"AAAA"}',  # the fast decoder's placeholder type: an unknown event
    "[]",
    "",
]


@pytest.mark.parametrize("raw", TRICKY_REPLY_AUDIO, ids=range(len(TRICKY_REPLY_AUDIO)))
def test_tricky_reply_audio_texts_give_the_plain_parsers_event_or_error(raw: str) -> None:
    assert_same_agent(raw)
    assert_same_agent(raw.encode("utf-8", "surrogatepass"))
    assert_same_agent(raw.encode("utf-16", "surrogatepass"))  # json.loads detects UTF-16 in bytes; msgspec must agree


@st.composite
def reply_audio_variants(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["reply.audio"] * 5 + ["reply.done", "reply.started", None]))
    msg: dict[str, Any] = {} if kind is None else {"type": kind}
    for key in draw(st.lists(st.sampled_from(["data", "reply_id", "timestamp"]), max_size=3, unique=True)):
        msg[key] = draw(b64_texts | field_values)
    text = json.dumps(msg)
    return text.replace("/", "\\/") if draw(st.booleans()) else text


@EXAMPLES
@given(raw=reply_audio_variants())
def test_arbitrary_reply_audio_variants_give_the_plain_parsers_event_or_error(raw: str) -> None:
    assert_same_agent(raw)


# ---- audio: the resampler is a pure function of its input --------------------------------------------------------
def resample_in_chunks(r: StreamResampler | FirResampler, pcm: bytes, sizes: list[int]) -> bytes:
    out, pos, i = [], 0, 0
    while pos < len(pcm):
        n = sizes[i % len(sizes)]
        out.append(r.process(pcm[pos : pos + n]))
        pos, i = pos + n, i + 1
    return b"".join(out) + r.flush()


@pytest.mark.parametrize("quality", RESAMPLE_QUALITIES)
@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 24000), (24000, 8000)])
def test_resampler_output_does_not_depend_on_chunking_or_on_the_run(quality: str, in_rate: int, out_rate: int) -> None:
    pcm = agent_pcm24k(1.0) if in_rate == 24000 else g711.ulaw_to_pcm16(caller_ulaw8k(1.0))
    whole = resample_in_chunks(make_resampler(in_rate, out_rate, quality), pcm, [len(pcm)])
    assert whole == resample_in_chunks(make_resampler(in_rate, out_rate, quality), pcm, [len(pcm)])
    for sizes in ([in_rate // 50], [in_rate // 100], [961, 7, 320, 2]):
        assert resample_in_chunks(make_resampler(in_rate, out_rate, quality), pcm, sizes) == whole, sizes


@pytest.mark.parametrize("quality", ["QQ", "MQ", "HQ", "FIR"])
def test_a_reset_resampler_gives_what_a_new_one_gives(quality: str) -> None:
    pcm = agent_pcm24k(0.5)
    used = make_resampler(24000, 8000, quality)
    used.process(agent_pcm24k(0.3, seed=3) + b"\x01")
    used.reset()
    assert resample_in_chunks(used, pcm, [480]) == resample_in_chunks(make_resampler(24000, 8000, quality), pcm, [480])


# ---- audio: transcoders, fast (coalescing) against plain (per message) ----------------------------------------------
@pytest.mark.parametrize("quality", ["QQ", "LQ", "MQ", "HQ", "FIR"])
def test_inbound_audio_is_byte_identical_message_by_message(quality: str) -> None:
    fast = InboundAudio("audio/pcmu", 8000, "pcm24k", quality)
    plain = PlainInbound("audio/pcmu", 8000, "pcm24k", quality)
    ulaw = caller_ulaw8k(3.0)
    for pos in range(0, len(ulaw), 160):
        assert fast.convert(ulaw[pos : pos + 160]) == plain.convert(ulaw[pos : pos + 160])


def run_outbound(conv: Any, pcm: bytes, sizes: list[int], barge_at: int | None = None) -> list[list[bytes]]:
    """Frames handed out after each chunk (then the flush), with an optional barge-in reset at chunk ``barge_at``."""
    per_chunk, pos, i = [], 0, 0
    while pos < len(pcm):
        if i == barge_at:
            conv.reset()
        n = sizes[i % len(sizes)]
        per_chunk.append(conv.convert(pcm[pos : pos + n]))
        pos, i = pos + n, i + 1
    per_chunk.append(conv.flush())
    return per_chunk


CHUNKINGS = {"10ms": [480], "20ms": [960], "5ms": [240], "100ms": [4800], "ragged": [481, 479, 7, 1441, 2, 960]}


@pytest.mark.parametrize("quality", ["LQ", "MQ", "HQ", "FIR"])
@pytest.mark.parametrize("chunking", sorted(CHUNKINGS))
@pytest.mark.parametrize("barge_at", [None, 37])
def test_outbound_frames_are_byte_identical_whatever_the_agent_chunking(
    quality: str, chunking: str, barge_at: int | None
) -> None:
    pcm = agent_pcm24k(3.0)
    fast = run_outbound(OutboundAudio("pcm24k", "audio/pcmu", 8000, 160, quality), pcm, CHUNKINGS[chunking], barge_at)
    plain = run_outbound(PlainOutbound("pcm24k", "audio/pcmu", 8000, 160, quality), pcm, CHUNKINGS[chunking], barge_at)
    assert [f for fs in fast for f in fs] == [f for fs in plain for f in fs]
    assert all(len(f) == 160 for fs in fast for f in fs)


@pytest.mark.parametrize(
    ("agent_format", "quality"), [("pcm24k", "QQ"), ("pcm24k", "FIR"), ("pcm24k", "LQ"), ("pcma", "MQ")]
)
def test_coalescing_never_holds_a_complete_frame_back(agent_format: str, quality: str) -> None:
    # With a resampler that releases output per chunk (QQ, FIR) or none at all (A-law → μ-law), the frames after each
    # 10 ms chunk must be the plain path's exactly: coalescing waits only for input that a frame still needs.
    # LQ releases in blocks: there a frame may leave at most one chunk later, never earlier.
    width = 480 if agent_format == "pcm24k" else 80
    pcm = agent_pcm24k(2.0) if agent_format == "pcm24k" else caller_ulaw8k(2.0)
    fast = run_outbound(OutboundAudio(agent_format, "audio/pcmu", 8000, 160, quality), pcm, [width])
    plain = run_outbound(PlainOutbound(agent_format, "audio/pcmu", 8000, 160, quality), pcm, [width])
    fast_counts = [len(fs) for fs in fast]
    plain_counts = [len(fs) for fs in plain]
    cum_fast = [sum(fast_counts[: i + 1]) for i in range(len(fast_counts))]
    cum_plain = [sum(plain_counts[: i + 1]) for i in range(len(plain_counts))]
    if quality == "LQ":
        assert all(cum_plain[i - 1] <= cum_fast[i] <= cum_plain[i] for i in range(1, len(cum_fast)))
    else:
        assert cum_fast == cum_plain
    assert cum_fast[-1] == cum_plain[-1]


def test_passthrough_frames_are_byte_identical() -> None:
    ulaw = caller_ulaw8k(1.0)
    fast = run_outbound(OutboundAudio("pcmu", "audio/pcmu", 8000, 160, "MQ"), ulaw, [80, 33, 160])
    plain = run_outbound(PlainOutbound("pcmu", "audio/pcmu", 8000, 160, "MQ"), ulaw, [80, 33, 160])
    assert fast == plain

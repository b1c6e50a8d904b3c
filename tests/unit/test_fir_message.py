"""The compiled message lane's step (gateway/audio/fir_message.py): ``message`` is ``convert`` with the same state
after, and a lone frame's message is byte for byte the dialect's ``build_media`` of that frame."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.audio.fir_jit import FusedFirEncoder
from gateway.audio.fir_message import FusedFirMessages, b64_length
from gateway.carriers.twilio import TwilioStream
from tests.support.media_corpus import STREAM_SID


def _chunks(seed: int, sizes: list[int]) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-32768, 32768, (n + 1) // 2).astype("<i2").tobytes()[:n] for n in sizes]


@settings(max_examples=120, deadline=None, database=None, derandomize=True)
@given(
    sizes=st.lists(st.one_of(st.integers(0, 3000), st.just(480), st.just(960)), max_size=40),
    seed=st.integers(0, 2**16),
    frame_bytes=st.sampled_from([160, 161, 162, 80]),  # 160 B leaves one byte over three: every padding case
    ops=st.lists(st.sampled_from(["chunk", "chunk", "chunk", "flush", "reset"]), max_size=40),
)
def test_message_is_convert_and_its_message_is_the_template_around_the_frames_base64(sizes, seed, frame_bytes, ops):
    lane, plain = FusedFirMessages("audio/pcmu", frame_bytes, 0xFF), FusedFirEncoder("audio/pcmu", frame_bytes, 0xFF)
    lane.template(b'{"head":"', b'"}')
    chunks = iter(_chunks(seed, sizes))
    for op in ops:
        if op == "flush":
            assert lane.flush() == plain.flush()
        elif op == "reset":
            lane.reset()
            plain.reset()
        elif (data := next(chunks, None)) is not None:
            out, frames = lane.message(data), plain.convert(data)
            if type(out) is bytes:
                assert len(frames) == 1
                assert out == b'{"head":"' + base64.b64encode(frames[0]) + b'"}'
                assert lane.frame() == frames[0]
                assert len(out) == len(b'{"head":"') + b64_length(frame_bytes) + 2
            else:
                assert out == frames and len(frames) != 1
    # The same state after: the rest of the stream comes out the same on the plain road.
    tail = _chunks(seed + 1, [960] * 4)
    assert [lane.convert(c) for c in tail] == [plain.convert(c) for c in tail]


def test_a_reply_in_10ms_chunks_comes_out_as_one_message_per_frame():
    """The steady state the lane is for: every frame of a reply sent in 10 ms chunks leaves as its message."""
    lane = FusedFirMessages("audio/pcmu", 160, 0xFF)
    lane.template(b"<", b">")
    outs = [lane.message(c) for c in _chunks(3, [480] * 100)]
    messages = [o for o in outs if type(o) is bytes]
    assert len(messages) == 49 and all(o == [] for o in outs if type(o) is not bytes)  # the FIR holds 2 ms back


@pytest.mark.parametrize("payload_seed", range(5))
def test_twilios_media_template_is_build_media_around_the_payload(payload_seed):
    stream = TwilioStream()
    assert stream.media_template() is None  # before start: no streamSid to put in it
    stream.parse(json.dumps({"event": "start", "streamSid": STREAM_SID, "start": {
        "streamSid": STREAM_SID, "callSid": "CA1", "accountSid": "AC1",
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))  # fmt: skip
    head, tail = stream.media_template()  # type: ignore[misc]
    payload = _chunks(payload_seed, [160])[0]
    assert (head + base64.b64encode(payload) + tail).decode() == stream.build_media(payload)
    assert json.loads(stream.build_media(payload))["streamSid"] == STREAM_SID

"""The load generator's latency accounting (bench/loadgen.py): which agent chunk completes which carrier frame.
The tables come from the gateway's own converters; these pin down that they match the arithmetic for the live
service's chunkings, including μ-law's 300 B chunks, which do not divide a 160 B frame. Also what the generator
sends and counts without decoding: the agent's canned reply audio, and the caller audio counted by base64 length."""

from __future__ import annotations

import binascii
import math

import numpy as np
import pytest

from bench.loadgen import b64_decoded_len, inbound_table, outbound_table, reply_chunks
from gateway.audio import g711
from tests.support.media_corpus import agent_pcm24k, speechlike_pcm16


@pytest.mark.parametrize("agent_format", ["pcmu", "pcma"])
def test_g711_chunks_of_300_bytes_complete_frames_where_their_bytes_end(agent_format: str) -> None:
    table = outbound_table(agent_format, "MQ", 300, 200)
    # frame j (bytes 160 j … 160 j + 159) is complete once chunk k holds byte 160 (j + 1) - 1
    assert table[:200] == [math.ceil(160 * (j + 1) / 300) - 1 for j in range(200)]
    assert table[:5] == [0, 1, 1, 2, 2]  # one chunk completes one frame or two


def test_pcm24k_chunks_of_10_ms_are_mapped_through_the_resampler_delay() -> None:
    table = outbound_table("pcm24k", "MQ", 480, 100)
    assert table == sorted(table)
    assert table[:3] == [7, 7, 7]  # MQ releases in blocks: its first output only with the 8th 10 ms chunk
    assert abs((table[99] - table[50]) / 49 - 2) < 0.2  # then two 10 ms chunks per 20 ms frame on average


def test_inbound_passthrough_hands_over_each_frame_whole() -> None:
    assert inbound_table("pcmu", "QQ", 5) == [160, 320, 480, 640, 800]


@pytest.mark.parametrize("n", [*range(0, 13), 160, 480, 960])
def test_input_audio_is_counted_by_its_base64_length_as_decoding_would(n: int) -> None:
    data = bytes(range(256)) * 4
    assert b64_decoded_len(binascii.b2a_base64(data[:n], newline=False)) == n


@pytest.mark.parametrize(("agent_format", "chunk"), [("pcm24k", 480), ("pcmu", 300), ("pcma", 300)])
def test_the_agents_reply_is_speech_like_audio_in_its_format_in_whole_chunks(agent_format: str, chunk: int) -> None:
    chunks = [binascii.a2b_base64(c) for c in reply_chunks(agent_format, chunk, seconds=1.0)]
    assert {len(c) for c in chunks} == {chunk}
    audio = b"".join(chunks)
    if agent_format == "pcm24k":
        assert audio == agent_pcm24k(1.0)[: len(audio)]
        pcm = np.frombuffer(audio, np.int16)
    else:
        pcm8k = speechlike_pcm16(1.0, 8000, 11).tobytes()
        encode = g711.pcm16_to_alaw if agent_format == "pcma" else g711.pcm16_to_ulaw
        assert audio == encode(pcm8k)[: len(audio)]
        pcm = np.frombuffer(
            g711.alaw_to_pcm16(audio) if agent_format == "pcma" else g711.ulaw_to_pcm16(audio), np.int16
        )
    assert np.sqrt(np.mean(pcm.astype(np.float64) ** 2)) > 300  # speech-like, not silence

"""The load generator's latency accounting (bench/loadgen.py): which agent chunk completes which carrier frame.
The tables come from the gateway's own converters; these pin down that they match the arithmetic for the live
service's chunkings, including μ-law's 300 B chunks, which do not divide a 160 B frame."""

from __future__ import annotations

import math

import pytest

from bench.loadgen import inbound_table, outbound_table


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

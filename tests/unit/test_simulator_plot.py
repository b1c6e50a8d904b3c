"""The simulator's --plot renders a PNG of a timeline (matplotlib, the 'plot' extra; installed with 'test')."""

from __future__ import annotations

import struct

from gateway.simulator.plot import render_plot
from gateway.simulator.timeline import build_timeline
from tests.unit.test_simulator_timeline import record


def test_plot_is_a_png_of_the_expected_size(tmp_path):
    out = tmp_path / "call.png"
    render_plot(build_timeline(record()), out)
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (1320, 572)  # 12 x 5.2 in at 110 dpi
    assert len(data) > 20_000  # waveforms and labels, not an empty canvas

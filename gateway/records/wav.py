"""A two-channel 16-bit PCM WAV file written as the call goes. Not pure: file I/O, from the recording writer thread
(:mod:`gateway.records.recorder`), never from the event loop.

The RIFF and ``data`` sizes are rewritten after every :meth:`StereoWav.append`, and the data is flushed to the OS,
so a process killed mid-call (SIGKILL, a crash) leaves a valid WAV holding everything up to the last flush: every
player and ``wave`` reads it. :func:`read_header` checks one.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path

__all__ = ["HEADER_BYTES", "StereoWav", "header"]

HEADER_BYTES = 44


def header(data_bytes: int, rate: int = 8000, channels: int = 2) -> bytes:
    """The canonical 44-byte header of a PCM16 WAV holding ``data_bytes`` of samples."""
    block = channels * 2
    return (
        b"RIFF"
        + struct.pack("<I", 36 + data_bytes)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, rate, rate * block, block, 16)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


class StereoWav:
    """Appends interleaved int16 stereo samples to ``path``; the header is right after every append."""

    def __init__(self, path: Path, rate: int = 8000) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.rate = rate
        self.data_bytes = 0
        self._f = open(path, "wb")  # noqa: SIM115 - held open for the call; closed by close()
        self._f.write(header(0, rate))

    def append(self, interleaved: bytes) -> None:
        if not interleaved:
            return
        f = self._f
        f.seek(0, os.SEEK_END)
        f.write(interleaved)
        self.data_bytes += len(interleaved)
        # The sizes first in the file, then flushed: a kill after this leaves a file every reader accepts.
        f.seek(4)
        f.write(struct.pack("<I", 36 + self.data_bytes))
        f.seek(40)
        f.write(struct.pack("<I", self.data_bytes))
        f.flush()

    @property
    def seconds(self) -> float:
        return self.data_bytes / (4 * self.rate)

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

"""Cut a byte stream into fixed-size frames, carrying the remainder to the next push. Pure."""

from __future__ import annotations

__all__ = ["Reframer"]


class Reframer:
    """Collects bytes and hands out whole frames of ``frame_bytes`` (e.g. 160 bytes = 20 ms of 8 kHz μ-law)."""

    __slots__ = ("frame_bytes", "_buf")

    def __init__(self, frame_bytes: int) -> None:
        if frame_bytes <= 0:
            raise ValueError("frame_bytes must be positive")
        self.frame_bytes = frame_bytes
        self._buf = bytearray()

    @property
    def pending(self) -> int:
        """Bytes held back waiting for a whole frame."""
        return len(self._buf)

    def push(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        n = self.frame_bytes
        whole = len(buf) - len(buf) % n
        if not whole:
            return []
        frames = [bytes(buf[i : i + n]) for i in range(0, whole, n)]
        del buf[:whole]
        return frames

    def flush(self, pad: int) -> list[bytes]:
        """Return the remainder padded to a whole frame with ``pad`` bytes (or nothing if empty)."""
        if not self._buf:
            return []
        frame = bytes(self._buf) + bytes([pad]) * (self.frame_bytes - len(self._buf))
        self._buf.clear()
        return [frame]

    def clear(self) -> None:
        self._buf.clear()

"""Asterisk's side of an AudioSocket call for the load generator (docs/how-to/pbx/asterisk-audiosocket.md): a TCP
client that writes whole frames (1-byte kind, 16-bit big-endian length, payload) and hands every whole frame it reads
to ``on_frame(kind, payload)``. Written from the protocol's description, not from the gateway's dialect."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable

__all__ = ["AudioSocketClient", "frame"]

_HEADER = struct.Struct(">BH")


def frame(kind: int, payload: bytes = b"") -> bytes:
    return _HEADER.pack(kind, len(payload)) + payload


class AudioSocketClient(asyncio.Protocol):
    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.open = loop.create_future()
        self.closed = loop.create_future()
        self.transport: asyncio.WriteTransport | None = None
        self.on_frame: Callable[[int, bytes], None] = lambda kind, payload: None
        self._buf = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a TCP transport (uvloop's is no asyncio.Transport)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def data_received(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        pos, n = 0, len(buf)
        while n - pos >= 3:
            kind, length = _HEADER.unpack_from(buf, pos)
            if n - pos - 3 < length:
                break
            self.on_frame(kind, bytes(buf[pos + 3 : pos + 3 + length]))
            pos += 3 + length
        del buf[:pos]

    def send_bytes(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()  # Asterisk's hang-up: the connection closes

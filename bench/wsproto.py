"""Just enough RFC 6455 for the load generator's two peers, as asyncio protocols: unfragmented text frames, ping →
pong, close. Written out instead of using aiohttp or websockets so the generator spends less CPU per message than
the gateway it measures (it handles as many messages as the gateway does, and costs about what the floor prototype
costs: docs/architecture/performance.md#generator); that is also why the client masks with an all-zero key, which
RFC 6455 §5.3 allows and which makes masking free. Not for anything but the bench.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable

from websockets.speedups import apply_mask

__all__ = ["WsClient", "WsServerConn", "accept_key", "encode_frame"]

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()


def encode_frame(payload: bytes, opcode: int = OP_TEXT, masked: bool = False) -> bytes:
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = bytes((0x80 | opcode, mask_bit | n))
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, n)
    return head + _ZERO_MASK + payload if masked else head + payload


class _FrameReader(asyncio.Protocol):
    """Parses frames from the byte stream and calls ``on_text(bytes)`` for each text message, with its UTF-8 bytes
    (the load generator's peers look at a message's start before, or instead of, parsing it)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self.closed = asyncio.get_running_loop().create_future()
        self.on_text: Callable[[bytes], None] = lambda _t: None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def send_text(self, text: str) -> None:
        self.send_payload(text.encode())

    def send_payload(self, payload: bytes) -> None:
        """A text message already encoded as UTF-8."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(payload, OP_TEXT, self._mask_out))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode_frame(struct.pack("!H", 1000), OP_CLOSE, self._mask_out))
            self.transport.close()

    _mask_out = False

    def _frames(self) -> None:
        buf = self._buf
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            n = b1 & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = (buf[pos + 2] << 8) | buf[pos + 3]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                (n,) = struct.unpack_from("!Q", buf, pos + 2)
                head = 10
            masked = b1 & 0x80
            if masked:
                head += 4
            if end - pos < head + n:
                break
            payload = bytes(buf[pos + head : pos + head + n])
            if masked:
                payload = apply_mask(payload, bytes(buf[pos + head - 4 : pos + head]))
            pos += head + n
            op = b0 & 0x0F
            if op == OP_TEXT:
                self.on_text(payload)
            elif op == OP_PING and self.transport is not None:
                self.transport.write(encode_frame(payload, OP_PONG, self._mask_out))
            elif op == OP_CLOSE:
                self.close()
        del buf[:pos]


class WsClient(_FrameReader):
    """Client side (the Twilio peer): upgrade handshake, then frames."""

    _mask_out = True

    def __init__(self, host: str, path: str) -> None:
        super().__init__()
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._request = (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        self.open = asyncio.get_running_loop().create_future()
        self._upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.transport.write(self._request)  # type: ignore[union-attr]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError(f"closed during upgrade: {exc!r}"))
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._upgraded:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self._buf[:end]).decode("latin-1")
            del self._buf[: end + 4]
            if " 101 " not in head.split("\r\n", 1)[0] or accept_key(self._key) not in head:
                self.open.set_exception(ConnectionError(f"upgrade refused: {head.splitlines()[0]}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.open.set_result(None)
        self._frames()


class WsServerConn(_FrameReader):
    """Server side (the agent peer): reads the upgrade request, answers 101, then frames. ``on_open(path)`` is
    called once upgraded."""

    def __init__(self, on_open: Callable[[WsServerConn, str], None]) -> None:
        super().__init__()
        self._on_open = on_open
        self._upgraded = False

    def data_received(self, data: bytes) -> None:
        self._buf += data
        if not self._upgraded:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
            del self._buf[: end + 4]
            headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
            assert self.transport is not None
            self.transport.write(
                (
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept_key(headers.get('sec-websocket-key', ''))}\r\n\r\n"
                ).encode()
            )
            self._upgraded = True
            self._on_open(self, lines[0].split(" ")[1])
        self._frames()

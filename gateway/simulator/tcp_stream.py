"""The simulator's end of a PBX's TCP media connection (Asterisk AudioSocket), shaped like the aiohttp client
WebSocket the caller drives, so one call loop serves both: each AudioSocket frame (1-byte kind, 16-bit big-endian
length, payload) arrives as one binary message holding the whole frame; the connection's end arrives as CLOSE. Not
pure: asyncio streams.
"""

from __future__ import annotations

import asyncio
import struct

import aiohttp

from .errors import GatewayProtocolError

__all__ = ["TcpFrameStream"]

_CLOSE_TIMEOUT_S = 2.0


class TcpFrameStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self.close_code: int | None = None

    @classmethod
    async def open(cls, host: str, port: int) -> TcpFrameStream:
        reader, writer = await asyncio.open_connection(host, port)
        return cls(reader, writer)

    @property
    def closed(self) -> bool:
        return self._writer.is_closing()

    async def send_bytes(self, data: bytes) -> None:
        if self._writer.is_closing():
            raise ConnectionResetError("the connection is closed")
        self._writer.write(data)  # one frame, one write
        await self._writer.drain()

    async def send_str(self, data: str) -> None:
        raise GatewayProtocolError("AudioSocket carries binary frames only")  # pragma: no cover - sides send bytes

    async def receive(self, timeout: float | None = None) -> aiohttp.WSMessage:
        async with asyncio.timeout(timeout):
            try:
                header = await self._reader.readexactly(3)
            except asyncio.IncompleteReadError as exc:  # the end of the stream
                if exc.partial:
                    raise GatewayProtocolError(f"the gateway closed inside a frame header ({exc.partial!r})") from None
                return self._closed(1000)
            except ConnectionError:
                return self._closed(1006)
            (length,) = struct.unpack_from(">H", header, 1)
            try:
                payload = await self._reader.readexactly(length)
            except asyncio.IncompleteReadError as exc:
                raise GatewayProtocolError(
                    f"the gateway closed inside a frame ({len(exc.partial)} of {length} bytes)"
                ) from None
            except ConnectionError:
                return self._closed(1006)
        return aiohttp.WSMessage(aiohttp.WSMsgType.BINARY, header + payload, None)

    def _closed(self, code: int) -> aiohttp.WSMessage:
        self.close_code = code
        return aiohttp.WSMessage(aiohttp.WSMsgType.CLOSE, None, None)

    def exception(self) -> BaseException | None:
        return None

    async def close(self) -> None:
        """Hang up: close the connection (what Asterisk does)."""
        if self.close_code is None:
            self.close_code = 1000
        self._writer.close()
        try:
            async with asyncio.timeout(_CLOSE_TIMEOUT_S):
                await self._writer.wait_closed()
        except (TimeoutError, ConnectionError):
            pass

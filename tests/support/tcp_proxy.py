"""A TCP proxy between the gateway and an agent that can cut live connections: real socket faults, no hooks in
production code. The gateway dials the proxy's port (``AGENT_URL``); every accepted connection is relayed byte
for byte to the target, so WebSocket framing and auth pass through untouched.

Two ways to cut a link (both leave the agent's WebSocket without a close frame, i.e. an unclean drop,
docs/architecture/agent-api.md#resume):

- ``mode="fin"``: like a load balancer or agent host closing the client connection. The gateway side gets a FIN
  first and the agent's bytes stop at once; everything the gateway had already written (and writes until it
  notices the EOF and closes its end) is still relayed to the agent, however slowly the agent reads it, then the
  agent side is closed. Nothing the gateway sent before it *could* know is lost, so a test can demand that no
  caller audio is lost. (The wait is bounded: ``FIN_IDLE_S`` without a byte from the gateway that has not closed
  its end, or ``FIN_MAX_S`` in all.)
- ``mode="reset"``: both sides are aborted with a TCP RST at once; bytes in flight are lost (a hard network fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from dataclasses import dataclass, field

#: fin mode: give up relaying when the gateway sends nothing and does not close its end for this long ...
FIN_IDLE_S = 2.0
#: ... or after this long in all (a slow agent still reading what the gateway sent before the cut).
FIN_MAX_S = 30.0


@dataclass
class Link:
    gw_reader: asyncio.StreamReader
    gw_writer: asyncio.StreamWriter
    ag_reader: asyncio.StreamReader
    ag_writer: asyncio.StreamWriter
    up: asyncio.Task[None] | None = None  # gateway -> agent
    down: asyncio.Task[None] | None = None  # agent -> gateway
    cut: bool = False
    done: asyncio.Event = field(default_factory=asyncio.Event)
    bytes_up: int = 0  # relayed to the agent
    bytes_read_up: int = 0  # read from the gateway (relayed, or being relayed)


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.links: list[Link] = []
        self.cuts = 0
        self._server: asyncio.base_events.Server | None = None
        self.port = 0
        self.refusing = False  # True: every new connection is reset at once (the agent is unreachable)
        self.refused = 0

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    @property
    def live_links(self) -> list[Link]:
        return [link for link in self.links if not link.cut and not link.done.is_set()]

    def link_from(self, peer: tuple[str, int] | None) -> Link | None:
        """The live link whose agent-side socket is ``peer`` (what the agent sees as the client address)."""
        for link in self.live_links:
            if link.ag_writer.get_extra_info("sockname")[:2] == tuple(peer or ())[:2]:
                return link
        return None

    async def _accept(self, gw_reader: asyncio.StreamReader, gw_writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            self.refused += 1
            _abort(gw_writer)
            return
        try:
            ag_reader, ag_writer = await asyncio.open_connection(*self.target)
        except OSError:
            gw_writer.close()
            return
        link = Link(gw_reader, gw_writer, ag_reader, ag_writer)
        self.links.append(link)
        link.up = asyncio.create_task(self._pump(link, gw_reader, ag_writer, up=True))
        link.down = asyncio.create_task(self._pump(link, ag_reader, gw_writer, up=False))
        try:
            await asyncio.gather(link.up, link.down, return_exceptions=True)
        finally:
            for w in (gw_writer, ag_writer):
                w.close()
            link.done.set()

    async def _pump(self, link: Link, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, up: bool) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if link.cut and not up:
                    continue  # after a cut nothing from the agent reaches the gateway
                if up:
                    link.bytes_read_up += len(data)
                writer.write(data)
                await writer.drain()
                if up:
                    link.bytes_up += len(data)
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.cut:
                with contextlib.suppress(OSError):
                    if writer.can_write_eof():
                        writer.write_eof()

    async def cut(self, link: Link, mode: str = "fin") -> None:
        """Cut one link (see the module docstring)."""
        if link.cut or link.done.is_set():
            return
        link.cut = True
        self.cuts += 1
        if mode == "reset":
            for w in (link.gw_writer, link.ag_writer):
                _abort(w)
            return
        # FIN to the gateway; keep relaying what it still sends until it closes its end, then close the agent side
        # without a WebSocket close frame. A slow agent (one not reading: its own backpressure) only delays this:
        # cancelling the relay then would drop bytes the gateway rightly counts as sent.
        assert link.down is not None and link.up is not None
        link.down.cancel()
        with contextlib.suppress(OSError):
            link.gw_writer.write_eof()
        loop = asyncio.get_running_loop()
        give_up = loop.time() + FIN_MAX_S
        while not link.up.done() and loop.time() < give_up:
            read_before, relayed_before = link.bytes_read_up, link.bytes_up
            await asyncio.wait({link.up}, timeout=FIN_IDLE_S)
            idle = link.bytes_read_up == read_before and link.bytes_up == relayed_before
            if idle and link.bytes_up == link.bytes_read_up:
                break  # the gateway neither sent nor closed, and nothing is left to relay
        link.up.cancel()
        with contextlib.suppress(OSError):
            await link.ag_writer.drain()
        link.ag_writer.close()
        link.gw_writer.close()

    async def cut_all(self, mode: str = "fin") -> int:
        links = self.live_links
        await asyncio.gather(*(self.cut(link, mode) for link in links))
        return len(links)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self.links:
            for w in (link.gw_writer, link.ag_writer):
                _abort(w)
            for t in (link.up, link.down):
                if t is not None:
                    t.cancel()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)


def _abort(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            # SO_LINGER 0: close() sends RST instead of FIN and drops unsent data.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    writer.transport.abort()

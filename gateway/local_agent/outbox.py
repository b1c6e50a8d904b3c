"""A connection's outbound events: built and queued here, sent by the connection's writer. Not pure (asyncio
queue, wall-clock timestamps).

Backpressure: at most :data:`OUTBOUND_MAX` events wait; a producer waits for room up to ``send_timeout_s``, and a client
that cannot take them in that time is gone (:class:`~.endings.ConnectionDone` ``PEER_GONE``).
docs/reference/local-agent-api.md#limits.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from . import protocol as proto
from .endings import ConnectionDone, EndReason

__all__ = ["OUTBOUND_MAX", "Outbox"]

OUTBOUND_MAX = 200


class Outbox:
    """Events of one connection on their way to its writer, as JSON text."""

    def __init__(
        self, session_id: str, *, send_timeout_s: float, tap: Callable[[dict[str, Any]], None] | None = None
    ) -> None:
        self._session_id = session_id
        self._tap = tap  # sees every event queued (the session's recorder; it only appends to a deque)
        self._timeout = send_timeout_s
        self._queue: asyncio.Queue[str] = asyncio.Queue(maxsize=OUTBOUND_MAX)

    async def emit(self, type_: str, **fields: Any) -> None:
        await self.put(proto.server_event(type_, time.time(), **fields))

    async def emit_error(self, err: proto.ProtocolError) -> None:
        await self.put(
            proto.session_error(err.code, err.message, now=time.time(), param=err.param, session_id=self._session_id)
        )

    async def put(self, event: dict[str, Any]) -> None:
        if self._tap is not None:
            self._tap(event)
        try:
            async with asyncio.timeout(self._timeout):
                await self._queue.put(proto.json_dumps(event))
        except TimeoutError:
            raise ConnectionDone(EndReason.PEER_GONE) from None

    async def get(self) -> str:
        """The next event to send (the writer's side; waits until there is one)."""
        return await self._queue.get()

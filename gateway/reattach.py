"""Re-attach: a call whose media stream is replaced keeps its agent session. Not pure: it holds live agent sockets
and one expiry task per parked session.

Twilio ends a ``<Connect><Stream>`` whenever the call's TwiML is replaced (a REST redirect,
docs/architecture/twilio-media-streams.md#transfer), and the next ``<Connect><Stream>`` of the same call is a new socket
with a new ``streamSid``. The caller is still on the line and must not meet a new agent that has forgotten the
conversation.

Choice: **keep the agent socket open and hand it over** (rather than closing it and sending ``session.resume`` from
the new stream). When a stream stops and ``server.reattach_window_s`` > 0, the call session *parks* its agent
connection here instead of ending it; a new stream whose ``start`` names the same CallSid *claims* it, and carries
on with the same session (same ``session_id``, no new ``session.update``, no second greeting). Keeping the socket
lets the gateway end the session the moment it knows the call is over (``session.end`` stops billing at once,
docs/architecture/agent-api.md#client-events), where a closed socket would leave the server holding it, billed,
for its 30 s resume window (docs/architecture/decisions/0009-reattach-keeps-the-agent-socket.md). If the parked socket
dropped meanwhile, the new stream's session notices and resumes it by
``session_id`` as after any drop (:mod:`gateway.call.shell.agent_link`).

Twilio's ``stop`` does not say why a stream ended (caller hung up, or a redirect), so every stop of a live call
parks. A parked session ends (``session.end``) when the window passes, when the call's ``completed`` status
callback arrives (:meth:`ParkedAgents.release`; the authoritative end of a call,
docs/architecture/twilio-media-streams.md#call-status), or at shutdown. The cost of the window is agent time after
ordinary hang-ups, which is why it is off by default and best paired with status callbacks.

Across replicas (docs/architecture/scale-out.md#re-attach): a new stream that lands on another replica finds this one
in the shared registry and asks it for the session (``handover``): the parked socket is closed *without*
``session.end`` and the new replica resumes the session with ``session.resume`` (:class:`HandedOver`). ``on_park`` /
``on_gone`` tell the registry when a session parks here and when it is gone (ended or handed over).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from .agent.client import AgentConnection

__all__ = ["HandedOver", "ParkedAgent", "ParkedAgents"]

log = structlog.get_logger("gateway.reattach")


@dataclass
class ParkedAgent:
    call_sid: str
    agent: AgentConnection
    session_id: str
    profile_name: str
    profile: Any  # gateway.config.Profile (with the call's variables filled in)
    stream_sid: str  # the stream that stopped
    parked_at: float


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A parked session another replica gave up for this one: resume ``session_id`` (gateway.cluster.control)."""

    session_id: str
    profile_name: str
    stream_sid: str  # the stream that stopped there
    parked_ms: float


class ParkedAgents:
    """Parked agent sessions of this process, by CallSid."""

    def __init__(
        self, window_s: float, *, end_timeout_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.window_s = window_s
        self._end_timeout_s = end_timeout_s
        self._clock = clock
        self._parked: dict[str, ParkedAgent] = {}
        self._expiry: dict[str, asyncio.Task[None]] = {}
        self._ending: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        #: Told when a session parks here (the cluster registry marks the call parked) ...
        self.on_park: list[Callable[[ParkedAgent], None]] = []
        #: ... and when a parked session ends here or is handed over: (CallSid, the stream that parked it).
        self.on_gone: list[Callable[[str, str], None]] = []

    @property
    def enabled(self) -> bool:
        return self.window_s > 0

    def __len__(self) -> int:
        return len(self._parked)

    def __contains__(self, call_sid: object) -> bool:
        return call_sid in self._parked

    def park(self, parked: ParkedAgent) -> None:
        """Hold ``parked`` for a new stream of its call, at most ``window_s``."""
        old = self._parked.pop(parked.call_sid, None)
        # One live stream per call (docs/architecture/twilio-media-streams.md#twiml): this is defensive.
        if old is not None:  # pragma: no cover
            self._end(old, "replaced")
        self._parked[parked.call_sid] = parked
        self._expiry[parked.call_sid] = asyncio.get_running_loop().create_task(
            self._expire(parked.call_sid, parked), name="reattach_expiry"
        )
        self._changed.set()
        for hook in list(self.on_park):
            hook(parked)

    def stream_of(self, call_sid: str) -> str | None:
        """The stream whose stop parked ``call_sid``'s session here, if one is parked."""
        parked = self._parked.get(call_sid)
        return parked.stream_sid if parked is not None else None

    async def claim(
        self, call_sid: str, *, wait_s: float = 0.0, stopping: Callable[[], bool] = lambda: False
    ) -> ParkedAgent | None:
        """Take the parked session of ``call_sid``. While ``stopping()`` says the call's previous stream is still
        winding down (its ``stop`` arrived, its session has not parked yet), wait up to ``wait_s`` for it."""
        deadline = self._clock() + wait_s
        while call_sid not in self._parked and stopping():
            remaining = deadline - self._clock()
            if remaining <= 0:
                break
            self._changed.clear()
            try:
                async with asyncio.timeout(min(remaining, 0.05)):
                    await self._changed.wait()
            except TimeoutError:
                pass
        parked = self._parked.pop(call_sid, None)
        if parked is None:
            return None
        task = self._expiry.pop(call_sid, None)
        if task is not None:
            task.cancel()
        return parked

    def release(self, call_sid: str, reason: str) -> bool:
        """The call is over (``completed`` callback): end its parked session now. True if one was parked."""
        parked = self._parked.pop(call_sid, None)
        if parked is None:
            return False
        task = self._expiry.pop(call_sid, None)
        if task is not None:
            task.cancel()
        self._end(parked, reason)
        return True

    async def close(self) -> None:
        """Shutdown: end every parked session and wait (bounded) for the ends to go out."""
        for call_sid in list(self._parked):
            self.release(call_sid, "shutdown")
        if self._ending:
            await asyncio.wait(set(self._ending), timeout=self._end_timeout_s + 2.5)

    async def _expire(self, call_sid: str, parked: ParkedAgent) -> None:
        await asyncio.sleep(self.window_s)
        if self._parked.get(call_sid) is parked:
            del self._parked[call_sid]
            self._expiry.pop(call_sid, None)
            self._end(parked, "expired")

    def _end(self, parked: ParkedAgent, reason: str) -> None:
        for hook in list(self.on_gone):
            hook(parked.call_sid, parked.stream_sid)
        task = asyncio.get_running_loop().create_task(self._end_session(parked, reason), name="reattach_end")
        self._ending.add(task)
        task.add_done_callback(self._ending.discard)

    async def _end_session(self, parked: ParkedAgent, reason: str) -> None:
        """``session.end``, wait briefly for ``session.ended``, close (as a call's own teardown does)."""
        await parked.agent.end(self._end_timeout_s)
        log.info(
            "call.park_ended",
            call_sid=parked.call_sid,
            session_id=parked.session_id,
            reason=reason,
            parked_ms=round((self._clock() - parked.parked_at) * 1000, 1),
        )

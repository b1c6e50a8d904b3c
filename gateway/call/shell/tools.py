"""The call's tools, as the shell runs them: the agent's tool calls (:class:`~gateway.tools.registry.ToolRegistry`),
the call-control tools behind the registry's :class:`~gateway.tools.registry.CallControl` protocol, and the
carrier's own call control (REST hang-up, transfer) when the core asks for it. Not pure: it awaits tools, HTTP and
the caller's ears; what each answer means is the core's (:mod:`gateway.call.tooling`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

import structlog

from ...agent import protocol as ap
from ...errors import CallControlFailed
from ...tools import call_control as cc
from ...tools.registry import ToolOutcome, ToolRegistry
from .. import events as ev
from ..actions import Action, ControlRequest, LogLine
from ..core import CallCore
from .carrier_control import CarrierControl

__all__ = ["ToolPort"]

log = structlog.get_logger("gateway.call")


class ToolPort:
    """One call's tools. ``execute`` carries out the core's actions (the session's executor); ``wake_writer`` tells
    the carrier writer there is audio to send; ``emit`` publishes a call event."""

    def __init__(
        self,
        core: CallCore,
        tools: ToolRegistry,
        control: CarrierControl,
        *,
        execute: Callable[[Sequence[Action]], Awaitable[None]],
        wake_writer: Callable[[], None],
        emit: Callable[[ev.CallEvent], None],
        clock: Callable[[], float],
    ) -> None:
        self._core = core
        self._tools = tools
        self._control = control
        self._execute = execute
        self._wake_writer = wake_writer
        self._emit = emit
        self._clock = clock
        self._tone_waiters: dict[str, asyncio.Event] = {}

    async def run_tool(self, call: ap.ToolCall) -> None:
        """A ``tool.call``: run it, and hand its result to the core (which sends it when the timing rule allows)."""
        outcome = await self._tools.run(call.name, call.arguments, self._core.profile, self._end_call, self)
        await self._execute(self._core.tool_done(call, outcome.result, outcome.is_error, self._clock()))

    async def _end_call(self, arguments: Mapping[str, Any]) -> None:
        await self._execute(self._core.request_hangup(self._clock()))

    async def carry_out(self, request: ControlRequest) -> None:
        """The carrier's call control, as the core asked (after the last words were heard)."""
        core, call_id = self._core, self._core.summary.call_sid
        try:
            if request.action == "hangup":
                ended_now = await self._control.hang_up(call_id)
                actions = core.control_done(request, self._clock(), ended_now=ended_now)
            else:
                await self._control.transfer(call_id, request.destination)
                actions = core.control_done(request, self._clock())
        except CallControlFailed as exc:
            actions = core.control_done(request, self._clock(), failure=exc)
        await self._execute(actions)

    def heard(self, tag: str) -> None:
        """The mark after tones tagged ``tag`` was echoed."""
        if (waiter := self._tone_waiters.get(tag)) is not None:
            waiter.set()

    # ---- CallControl (gateway.tools.registry) ------------------------------------------------------------------
    async def transfer_call(self, destination: str, announcement: str) -> ToolOutcome:
        """``transfer_call`` (destination already normalized and allow-listed by the registry): the result asks the
        agent to say the announcement; once that was heard, the carrier's call control transfers the call."""
        core, now = self._core, self._clock()
        if not self._control.available:
            # This carrier has no call control here (docs/how-to/call-control.md#carriers: none configured, or none on
            # this carrier): the agent hears it as a tool error and the call goes on.
            log.warning("call.transfer_refused", reason=self._control.unavailable_reason)
            self._emit(ev.ControlAction("transfer", "refused", t=core.t(now)))
            return ToolOutcome(cc.error_result("transfers are not available on this carrier"), True)
        why, actions = core.request_transfer(destination, now)
        await self._execute(actions)
        if why is not None:
            return ToolOutcome(cc.error_result(why), True)
        return ToolOutcome(cc.transfer_accepted(announcement))

    async def send_dtmf(self, digits: str) -> ToolOutcome:
        """``send_dtmf``: the tones go out as ordinary audio frames in the stream's own format, paced and marked like
        agent audio, so the stream stays up. The result waits for the mark after them (bounded)."""
        core = self._core
        try:
            plan = core.play_tones(digits, self._clock())
        except ValueError as exc:
            return ToolOutcome(cc.error_result(str(exc)), True)
        heard = self._tone_waiters[plan.tag] = asyncio.Event()
        self._wake_writer()
        try:
            async with asyncio.timeout(plan.wait_s):
                await heard.wait()
        except TimeoutError:
            pass
        finally:
            self._tone_waiters.pop(plan.tag, None)
        await self._execute(core.tones_done(digits, plan, heard.is_set(), self._clock()))
        if not heard.is_set():  # cleared by a barge-in, or the line is not playing out
            return ToolOutcome(cc.error_result("the tones were not confirmed as played"), True)
        return ToolOutcome(json.dumps({"ok": True, "digits": len(digits)}))

    def read_dtmf(self) -> ToolOutcome:
        digits, actions = self._core.read_dtmf(self._clock())
        for action in actions:
            if isinstance(action, LogLine):
                getattr(log, action.level)(action.event, **action.fields)
        return ToolOutcome(json.dumps({"digits": digits}))

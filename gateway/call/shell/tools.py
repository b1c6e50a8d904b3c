"""The call's tools, as the shell runs them: the agent's tool calls (:class:`~gateway.tools.registry.ToolRegistry`),
the call-control tools behind the registry's :class:`~gateway.tools.registry.CallControl` protocol, and the
carrier's own call control (REST hang-up, transfer) when the core asks for it. Not pure: it awaits tools, HTTP and
the caller's ears; what each answer means is the core's (:mod:`gateway.call.tooling`).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import structlog

from ...agent import protocol as ap
from ...conference import whisper_text
from ...errors import CallControlFailed, CallEnded
from ...tools import call_control as cc
from ...tools.registry import ToolOutcome, ToolRegistry
from .. import events as ev
from ..actions import Action, ControlRequest, LogLine
from ..core import CallCore
from .carrier_control import CarrierControl

if TYPE_CHECKING:
    from ...warm_transfer_http import WarmDialer

__all__ = ["ToolPort", "publish_nothing"]

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
        warm: WarmDialer | None = None,
        on_warm_result: Callable[[str], None] | None = None,
    ) -> None:
        self._core = core
        self._warm = warm  # warm transfers (gateway.warm_transfer_http); None: not offered here
        self._on_warm_result = on_warm_result or _ignore
        self._tools = tools
        self._control = control
        self._execute = execute
        self._wake_writer = wake_writer
        self._emit = emit
        self._clock = clock
        self._tone_waiters: dict[str, asyncio.Event] = {}

    def release(self) -> None:
        """The call is over: let go of the call's callbacks (each points back at the call: a reference cycle)."""
        self._execute, self._on_warm_result, self._emit = _execute_nothing, _ignore, publish_nothing

    async def run_tool(self, call: ap.ToolCall) -> None:
        """A ``tool.call``: run it, and hand its result to the core (which sends it when the timing rule allows).
        A tool that raises (a bug, ours or in what it talks to) is a failed tool, never a failed call: the agent gets
        an ``is_error`` result and ``tool.internal_error`` logs the exception once. The call's own endings
        (:class:`~gateway.errors.CallEnded`, cancellation) pass through."""
        try:
            outcome = await self._tools.run(call.name, call.arguments, self._core.profile, self._end_call, self)
        except CallEnded:
            raise
        except Exception as exc:  # noqa: BLE001 - one broken tool must not end the call (its task group's)
            log.error("tool.internal_error", tool=call.name, call_id=call.call_id, error=repr(exc)[:200], exc_info=exc)
            outcome = ToolOutcome(cc.error_result(f"the tool failed: {exc.__class__.__name__}"), True)
        await self._execute(self._core.tool_done(call, outcome.result, outcome.is_error, self._clock()))

    async def _end_call(self, arguments: Mapping[str, Any]) -> None:
        await self._execute(self._core.request_hangup(self._clock()))

    async def carry_out(self, request: ControlRequest) -> None:
        """The carrier's call control, as the core asked (after the last words were heard)."""
        core, call_id = self._core, self._core.summary.call_sid
        if request.action.startswith("warm_"):
            await self._warm_step(request)
            return
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

    async def _warm_step(self, request: ControlRequest) -> None:
        """A warm transfer's step (docs/how-to/conversation.md#warm-transfer): dial the human, join the caller to
        them, or cancel the human's leg."""
        core, warm, call_id = self._core, self._warm, self._core.summary.call_sid
        if request.action == "warm_cancel":
            if warm is not None:
                await warm.cancel(request.destination)
            return
        try:
            if warm is None:
                raise CallControlFailed(0, None, "warm transfers are not available here")
            if request.action == "warm_dial":
                settings = core.profile.warm_transfer
                human = await warm.dial(
                    caller_sid=call_id,
                    from_=core.own_number,
                    destination=request.destination,
                    whisper=whisper_text(settings.whisper_prefix, core.warm_summary),
                    timeout_s=settings.timeout_s,
                    on_result=self._on_warm_result,
                )
                actions = core.warm_dialled(human, self._clock())
            else:
                await warm.join(call_id)
                actions = core.warm_joined(self._clock())
        except CallControlFailed as exc:
            if request.action == "warm_dial":
                actions = core.warm_dialled("", self._clock(), exc)
            else:
                actions = core.warm_joined(self._clock(), exc)
        await self._execute(actions)

    async def warm_abandon(self) -> None:
        """The call is over: stop any human leg still ringing for it."""
        if self._warm is not None:
            for sid in self._warm.abandon(self._core.summary.call_sid):
                await self._warm.cancel(sid)

    def heard(self, tag: str) -> None:
        """The mark after tones tagged ``tag`` was echoed."""
        if (waiter := self._tone_waiters.get(tag)) is not None:
            waiter.set()

    # ---- CallControl (gateway.tools.registry) ------------------------------------------------------------------
    async def transfer_call(
        self, destination: str, announcement: str, *, mode: str = "cold", summary: str = ""
    ) -> ToolOutcome:
        """``transfer_call`` (destination already normalized and allow-listed by the registry): the result asks the
        agent to say the announcement; once that was heard, the carrier's call control transfers the call. Mode
        ``warm``: the human is dialled and briefed with ``summary`` first (docs/how-to/conversation.md)."""
        core, now = self._core, self._clock()
        if mode == "warm":
            if self._warm is None or not self._warm.available or not self._control.available:
                log.warning("call.transfer_refused", reason="warm_not_available")
                self._emit(ev.ControlAction("transfer", "refused", t=core.t(now)))
                return ToolOutcome(cc.error_result("warm transfers need Twilio with a public URL here"), True)
            why, actions = core.request_transfer(destination, now, warm_summary=summary)
            await self._execute(actions)
            if why is not None:
                return ToolOutcome(cc.error_result(why), True)
            return ToolOutcome(cc.transfer_accepted(announcement or "Tell the caller to hold while you connect them."))
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


async def _execute_nothing(actions: Sequence[Action]) -> None:
    """A released port's executor: the call is over, nothing is left to act on."""


def _ignore(result: str) -> None:
    """A released port's warm-transfer listener."""


def publish_nothing(event: ev.CallEvent) -> None:
    """A released call's (and port's) emitter: the call is over, its events were published."""

"""The tools a call's agent may use: declarations for ``session.update`` and execution of ``tool.call``s.

Built in: ``end_call`` (the call waits for the goodbye to play, proven by a mark echo, then hangs up), and the
call-control tools ``transfer_call``, ``send_dtmf``, ``read_dtmf`` (:mod:`gateway.tools.call_control`: their
arguments are checked here, purely; the call does the rest through :class:`CallControl`).
Configured: HTTP tools (``[tools.NAME]`` in config): the arguments object is POSTed as JSON to the URL (tool name in
the ``X-Voice-Gateway-Tool`` header); a 2xx body is
the result string; anything else (status, timeout, connection error, a body that is not text in its charset) comes
back with ``is_error: true``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from ..config import HttpTool, Profile
from . import call_control as cc

__all__ = ["ToolRegistry", "ToolOutcome", "CallControl", "END_CALL"]

END_CALL = "end_call"

_END_CALL_DECL: dict[str, Any] = {
    "type": "function",
    "name": END_CALL,
    "description": "Hang up the phone call. Use it once the caller says goodbye or asks to end the call, "
    "after you have said goodbye.",
    "parameters": {
        "type": "object",
        "properties": {"reason": {"type": "string", "description": "Why the call ends, in a few words."}},
        "required": [],
    },
}


@dataclass(frozen=True, slots=True)
class ToolOutcome:
    result: str
    is_error: bool = False


class CallControl(Protocol):
    """What the call-control tools need from the call (implemented by :class:`gateway.call.shell.tools.ToolPort`)."""

    async def transfer_call(
        self, destination: str, announcement: str, *, mode: str = "cold", summary: str = ""
    ) -> ToolOutcome: ...

    async def send_dtmf(self, digits: str) -> ToolOutcome: ...

    def read_dtmf(self) -> ToolOutcome: ...


class ToolRegistry:
    def __init__(self, http_tools: Mapping[str, HttpTool], http: aiohttp.ClientSession | None) -> None:
        self._http_tools = dict(http_tools)
        self._http = http

    def declarations(self, profile: Profile) -> list[dict[str, Any]]:
        decls: list[dict[str, Any]] = []
        for name in profile.tools:
            if name == END_CALL:
                decls.append(dict(_END_CALL_DECL))
                continue
            if name in cc.CALL_CONTROL_TOOLS:
                decls.append(cc.declaration(name))
                continue
            t = self._http_tools[name]
            decls.append(
                {
                    "type": "function",
                    "name": name,
                    "description": t.description,
                    "parameters": dict(t.parameters) or {"type": "object", "properties": {}},
                    "execution_mode": t.execution_mode,
                    "timeout_seconds": max(1, min(300, int(t.timeout_s) + 1)),
                }
            )
        return decls

    async def run(
        self,
        name: str,
        arguments: Mapping[str, Any],
        profile: Profile,
        on_end_call: Callable[[Mapping[str, Any]], Awaitable[None]],
        control: CallControl | None = None,
    ) -> ToolOutcome:
        """Execute one tool call. Never raises for tool failures: they become ``is_error`` results."""
        if name not in profile.tools:
            return ToolOutcome(json.dumps({"error": f"unknown tool {name!r}"}), True)
        if name == END_CALL:
            await on_end_call(arguments)
            return ToolOutcome(json.dumps({"ok": True, "status": "hanging up after the goodbye"}))
        if name in cc.CALL_CONTROL_TOOLS:
            return await self._run_call_control(name, arguments, profile, control)
        return await self._run_http(name, self._http_tools[name], arguments)

    async def _run_call_control(
        self, name: str, arguments: Mapping[str, Any], profile: Profile, control: CallControl | None
    ) -> ToolOutcome:
        if control is None:  # pragma: no cover - the call always passes its ToolPort
            return ToolOutcome(cc.error_result("call control unavailable"), True)
        if name == cc.TRANSFER_CALL:
            # The allow-list is checked before anything else happens: a refused destination never reaches Twilio.
            destination, why = cc.check_destination(arguments.get("destination"), profile.transfer_allow)
            if destination is None:
                return ToolOutcome(cc.error_result(why), True)
            announcement = arguments.get("announcement")
            mode, summary = arguments.get("mode", "cold"), arguments.get("summary", "")
            if mode not in ("cold", "warm"):
                return ToolOutcome(cc.error_result("mode must be cold or warm"), True)
            return await control.transfer_call(
                destination,
                announcement if isinstance(announcement, str) else "",
                mode=str(mode),
                summary=summary if isinstance(summary, str) else "",
            )
        if name == cc.SEND_DTMF:
            try:
                digits = cc.parse_digits(arguments.get("digits"))
            except ValueError as exc:
                return ToolOutcome(cc.error_result(str(exc)), True)
            return await control.send_dtmf(digits)
        return control.read_dtmf()

    async def _run_http(self, name: str, tool: HttpTool, arguments: Mapping[str, Any]) -> ToolOutcome:
        if self._http is None:  # pragma: no cover - app always provides one
            return ToolOutcome(json.dumps({"error": "HTTP tools unavailable"}), True)
        try:
            async with asyncio.timeout(tool.timeout_s):
                async with self._http.post(
                    tool.url, json=dict(arguments), headers={"X-Voice-Gateway-Tool": name}
                ) as resp:
                    raw = await resp.read()
                    charset = resp.get_encoding()  # Content-Type's charset, else UTF-8 (JSON's, and aiohttp's default)
                    body, clean = _decode(raw, charset)
                    if not 200 <= resp.status < 300:
                        return ToolOutcome(json.dumps({"error": f"HTTP {resp.status}", "body": body[:500]}), True)
                    if not clean:
                        error = f"the answer is not valid {charset} text"
                        return ToolOutcome(json.dumps({"error": error, "body": body[:500]}), True)
                    return ToolOutcome(body)
        except TimeoutError:
            return ToolOutcome(json.dumps({"error": f"timed out after {tool.timeout_s:g} s"}), True)
        except aiohttp.ClientError as exc:
            return ToolOutcome(json.dumps({"error": f"request failed: {exc.__class__.__name__}"}), True)


def _decode(raw: bytes, charset: str) -> tuple[str, bool]:
    """A tool's answer as text, and whether all of it decoded in ``charset``. Never raises: bytes that do not decode
    become U+FFFD (and a charset Python does not know, UTF-8), so a tool's bad bytes are its error, not the call's."""
    try:
        return raw.decode(charset), True
    except UnicodeDecodeError:
        return raw.decode(charset, errors="replace"), False
    except LookupError:
        return raw.decode("utf-8", errors="replace"), False

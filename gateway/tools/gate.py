"""When to send ``tool.result``: the documented timing rule (docs/architecture/agent-api.md#tool-results). Pure.

Send results only while ``reply.done`` is the latest of {``reply.started``, ``input.speech.started``,
``reply.done``}; hold them otherwise and flush on the next ``reply.done``; discard held results when that
``reply.done`` says ``interrupted`` (results of tool calls made in an interrupted reply are discarded too, even if
they finish later). The live server also accepts early results (observed live, same section); we follow the documented
rule.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PendingResult", "ToolResultGate"]


@dataclass(frozen=True, slots=True)
class PendingResult:
    call_id: str
    result: str
    is_error: bool = False


class ToolResultGate:
    def __init__(self) -> None:
        self._latest = "reply.done"
        # Replies are counted, not keyed by reply_id: the parser lets reply_id be None (early docs), and one
        # interrupted id-less reply must not poison every later one.
        self._turn = 0
        self._held: list[PendingResult] = []
        self._call_turn: dict[str, int] = {}
        self._interrupted_turns: set[int] = set()
        self.discarded: list[str] = []  # call_ids whose results were dropped under the rule

    def on_reply_started(self, reply_id: str | None) -> None:
        self._latest = "reply.started"
        self._turn += 1

    def on_speech_started(self) -> None:
        self._latest = "input.speech.started"

    def on_tool_call(self, call_id: str) -> None:
        self._call_turn[call_id] = self._turn

    def on_reply_done(self, reply_id: str | None, status: str) -> list[PendingResult]:
        """Returns the held results to send now (none if the reply was interrupted)."""
        self._latest = "reply.done"
        held, self._held = self._held, []
        if status == "interrupted":
            self._interrupted_turns.add(self._turn)
            self.discarded.extend(r.call_id for r in held)
            return []
        return held

    def submit(self, result: PendingResult) -> list[PendingResult]:
        """A tool finished. Returns what to send now (possibly nothing: held or discarded)."""
        if self._call_turn.get(result.call_id, self._turn) in self._interrupted_turns:
            self.discarded.append(result.call_id)
            return []
        if self._latest == "reply.done":
            return [result]
        self._held.append(result)
        return []

    @property
    def held(self) -> int:
        return len(self._held)

"""A session's conversation history in the OpenAI chat shape. Pure.

The session records what was actually said (a reply cut by a barge-in as far as the caller heard it, tool calls under
the agent's own call ids, tool results); the reply engines read it (docs/architecture/local-agent.md#reply-engines).
Bounded: the oldest messages go first. It also keeps the intent engine's pending tool request (:attr:`slots`: the
arguments so far and the one the caller was just asked for; docs/how-to/local-agent.md#tool-arguments).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from .arguments import SlotFill

__all__ = ["Conversation"]


class Conversation:
    """Message history in the OpenAI chat shape, bounded to ``max_messages`` (oldest dropped first)."""

    __slots__ = ("messages", "slots", "_max")

    def __init__(self, max_messages: int = 60) -> None:
        self.messages: list[dict[str, Any]] = []
        #: A tool call waiting for the caller's answer (set by the engine's ``Remember`` step).
        self.slots: SlotFill | None = None
        self._max = max_messages

    def fork(self) -> Conversation:
        """No history but the same pending tool request: what a deterministic engine's reply may depend on,
        for working a turn out ahead."""
        other = Conversation(self._max)
        other.slots = self.slots
        return other

    def add_user(self, text: str) -> None:
        self._add({"role": "user", "content": text})

    def add_assistant(self, text: str, tool_calls: Sequence[tuple[str, str, Mapping[str, Any]]] = ()) -> None:
        msg: dict[str, Any] = {"role": "assistant", "content": text or None}
        if tool_calls:
            msg["tool_calls"] = [
                {"id": cid, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
                for cid, name, args in tool_calls
            ]
        if msg["content"] is None and not tool_calls:
            return
        self._add(msg)

    def add_tool_result(self, call_id: str, content: str) -> None:
        self._add({"role": "tool", "tool_call_id": call_id, "content": content})

    def _add(self, msg: dict[str, Any]) -> None:
        self.messages.append(msg)
        if len(self.messages) > self._max:
            del self.messages[: len(self.messages) - self._max]
            # Never start with tool results whose assistant tool_calls were dropped (the API rejects that).
            while self.messages and self.messages[0]["role"] == "tool":
                del self.messages[0]

    @property
    def last_assistant_text(self) -> str | None:
        for msg in reversed(self.messages):
            if msg["role"] == "assistant" and msg.get("content"):
                return str(msg["content"])
        return None

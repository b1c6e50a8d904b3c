"""A session's timeline: from its event log to the ``timeline`` artifact. Pure.

While a session runs, the recorder (:mod:`.recorder`) appends one JSON line per event that matters to
``timeline.jsonl``: ``{"t": <ms since the session opened>, "e": <event>, ...fields}``. The events are the server events
the client saw (``input.speech.started``/``stopped``, ``transcript.user``, ``reply.started``, ``transcript.agent``,
``reply.done``, ``tool.call``, ``session.error``), the client's ``tool.result`` and ``reply.create``, and two of the
agent's own: ``reply.trigger`` (what started a reply) and ``reply.first_audio`` (where its first audible chunk starts
in the recording). :func:`build_timeline` turns that log into the document ``GET /v1/sessions/{id}/timeline`` serves
(docs/reference/local-agent-api.md#timeline): the caller's and the agent's turns in order, the tool calls with their
results, and for each reply its ``trigger`` and ``time_to_first_audio_ms`` (from its trigger: the end of the caller's
turn, the ``tool.result`` or ``reply.create`` that asked for it, or the session opening for the greeting).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = ["LOGGED_CLIENT_EVENTS", "LOGGED_SERVER_EVENTS", "TRIGGERS", "build_timeline", "log_fields"]

#: Server events the log keeps, each with the fields kept.
LOGGED_SERVER_EVENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "input.speech.started": (),
    "input.speech.stopped": (),
    "transcript.user": ("item_id", "text"),
    "reply.started": ("reply_id", "item_id"),
    "transcript.agent": ("reply_id", "text", "interrupted"),
    "reply.done": ("reply_id", "status"),
    "tool.call": ("call_id", "name", "arguments"),
    "session.error": ("code", "message", "param"),
}
LOGGED_CLIENT_EVENTS: Final[Mapping[str, tuple[str, ...]]] = {
    "tool.result": ("call_id", "result", "is_error"),
    "reply.create": ("instructions",),
}
#: What can start a reply (the speaker's reply kinds).
TRIGGERS: Final = ("greeting", "user_speech", "tool_result", "reply_create")


def log_fields(event: Mapping[str, Any], keep: tuple[str, ...]) -> dict[str, Any]:
    return {k: event.get(k) for k in keep}


def build_timeline(entries: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """``{"turns": [...], "tool_calls": [...]}`` from a session's event log, in log order."""
    turns: list[dict[str, Any]] = []
    calls: dict[str, dict[str, Any]] = {}
    replies: dict[str, dict[str, Any]] = {}
    open_user: dict[str, Any] | None = None
    last_reply: dict[str, Any] | None = None
    last_at: dict[str, int] = {"greeting": 0}  # trigger kind → when its last trigger happened

    def reply_turn(reply_id: str) -> dict[str, Any]:
        turn = replies.get(reply_id)
        if turn is None:
            turn = replies[reply_id] = {
                "role": "agent",
                "reply_id": reply_id,
                "item_id": None,
                "trigger": None,
                "trigger_ms": None,
                "start_ms": None,
                "first_audio_ms": None,
                "end_ms": None,
                "time_to_first_audio_ms": None,
                "text": None,
                "status": None,
                "tool_calls": [],
            }
            turns.append(turn)
        return turn

    for ent in entries:
        t, e = int(ent.get("t", 0)), ent.get("e")
        if e == "input.speech.started":
            if open_user is None:
                open_user = {"role": "user", "item_id": None, "text": None, "start_ms": t, "end_ms": None}
                turns.append(open_user)
        elif e == "input.speech.stopped":
            last_at["user_speech"] = t
            if open_user is not None:
                open_user["end_ms"] = t
                open_user = None
        elif e == "transcript.user":
            user = next((x for x in reversed(turns) if x["role"] == "user" and x["text"] is None), None)
            if user is None:
                user = {"role": "user", "item_id": None, "text": None, "start_ms": None, "end_ms": t}
                turns.append(user)
            user["item_id"], user["text"] = ent.get("item_id"), ent.get("text")
        elif e in ("tool.result", "reply.create"):
            last_at["tool_result" if e == "tool.result" else "reply_create"] = t
            call = calls.get(str(ent.get("call_id")))
            if e == "tool.result" and call is not None and call["result_ms"] is None:
                call.update(result=ent.get("result"), is_error=bool(ent.get("is_error")), result_ms=t)
        elif e == "reply.trigger":
            turn = reply_turn(str(ent.get("reply_id")))
            kind = ent.get("trigger")
            turn["trigger"] = kind
            turn["trigger_ms"] = last_at.get(str(kind))
        elif e == "reply.started":
            turn = last_reply = reply_turn(str(ent.get("reply_id")))
            turn["item_id"], turn["start_ms"] = ent.get("item_id"), t
        elif e == "reply.first_audio":
            turn = reply_turn(str(ent.get("reply_id")))
            if turn["first_audio_ms"] is None:
                turn["first_audio_ms"] = t
                if turn["trigger_ms"] is not None:
                    turn["time_to_first_audio_ms"] = max(0, t - turn["trigger_ms"])
        elif e == "transcript.agent":
            reply_turn(str(ent.get("reply_id")))["text"] = ent.get("text")
        elif e == "reply.done":
            turn = reply_turn(str(ent.get("reply_id")))
            turn["status"], turn["end_ms"] = ent.get("status"), t
        elif e == "tool.call":
            call_id = str(ent.get("call_id"))
            reply_id = last_reply["reply_id"] if last_reply is not None else None
            calls[call_id] = {
                "call_id": call_id,
                "name": ent.get("name"),
                "arguments": ent.get("arguments"),
                "reply_id": reply_id,
                "called_ms": t,
                "result": None,
                "is_error": None,
                "result_ms": None,
            }
            if last_reply is not None:
                last_reply["tool_calls"].append(call_id)
    return {"turns": turns, "tool_calls": list(calls.values())}

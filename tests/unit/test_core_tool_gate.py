"""When ``tool.result`` may be sent (gateway/tools/gate.py), pinned to the documented rule of
docs/architecture/agent-api.md#tool-results:

send only while ``reply.done`` is the latest of {``reply.started``, ``input.speech.started``, ``reply.done``}; hold
results otherwise and flush them on the next completed ``reply.done``; discard them when that ``reply.done`` is
interrupted; and a result for a call made in an interrupted reply is discarded even when it arrives late.

Each row of the table is a sequence of agent events and tool completions, with what must be sent at each step.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gateway.tools.gate import PendingResult, ToolResultGate


@dataclass(frozen=True)
class Step:
    op: str  # started | speech | call | done | interrupted | result
    arg: str | None = None
    sends: tuple[str, ...] = ()  # call_ids whose results go out at this step


def started(reply: str | None) -> Step:
    return Step("started", reply)


def speech() -> Step:
    return Step("speech")


def call(call_id: str) -> Step:
    return Step("call", call_id)


def done(reply: str | None, *sends: str) -> Step:
    return Step("done", reply, sends)


def interrupted(reply: str | None) -> Step:
    return Step("interrupted", reply)


def result(call_id: str, *sends: str) -> Step:
    return Step("result", call_id, sends)


def run(steps: list[Step]) -> tuple[list[tuple[str, ...]], ToolResultGate]:
    gate = ToolResultGate()
    sent: list[tuple[str, ...]] = []
    for s in steps:
        out: list[PendingResult] = []
        if s.op == "started":
            gate.on_reply_started(s.arg)
        elif s.op == "speech":
            gate.on_speech_started()
        elif s.op == "call":
            assert s.arg is not None
            gate.on_tool_call(s.arg)
        elif s.op == "done":
            out = gate.on_reply_done(s.arg, "completed")
        elif s.op == "interrupted":
            out = gate.on_reply_done(s.arg, "interrupted")
        elif s.op == "result":
            assert s.arg is not None
            out = gate.submit(PendingResult(s.arg, f"result of {s.arg}"))
        else:  # pragma: no cover - a typo in the table
            raise AssertionError(s.op)
        sent.append(tuple(r.call_id for r in out))
    return sent, gate


TABLE: list[tuple[str, list[Step], list[str]]] = [
    # name, steps (with what each sends), call_ids discarded at the end
    (
        "fast_tool_waits_for_reply_done",
        [
            started("r1"),
            call("c1"),
            result("c1"),
            done("r1", "c1"),
        ],
        [],
    ),
    (
        "slow_tool_is_sent_at_once_when_reply_done_is_latest",
        [
            started("r1"),
            call("c1"),
            done("r1"),
            result("c1", "c1"),
        ],
        [],
    ),
    (
        "several_calls_in_one_reply_flush_together_in_finishing_order",
        [
            started("r1"),
            call("c1"),
            call("c2"),
            result("c2"),
            result("c1"),
            done("r1", "c2", "c1"),
        ],
        [],
    ),
    (
        "some_finish_before_and_some_after_reply_done",
        [
            started("r1"),
            call("c1"),
            call("c2"),
            result("c1"),
            done("r1", "c1"),
            result("c2", "c2"),
        ],
        [],
    ),
    (
        "held_while_a_new_reply_started_is_latest",
        [
            started("r1"),
            call("c1"),
            done("r1"),
            started("r2"),
            result("c1"),
            done("r2", "c1"),
        ],
        [],
    ),
    (
        "held_while_user_speech_is_latest",
        [
            started("r1"),
            call("c1"),
            done("r1"),
            speech(),
            result("c1"),
            started("r2"),
            done("r2", "c1"),
        ],
        [],
    ),
    (
        "speech_then_done_releases",
        [
            started("r1"),
            call("c1"),
            done("r1"),
            speech(),
            result("c1"),
            done(None, "c1"),
        ],
        [],
    ),
    (
        "interrupted_reply_done_discards_held_results",
        [
            started("r1"),
            call("c1"),
            result("c1"),
            speech(),
            interrupted("r1"),
        ],
        ["c1"],
    ),
    (
        "result_held_behind_a_later_reply_is_discarded_when_that_reply_is_interrupted",
        [
            started("r1"),
            call("c1"),
            done("r1"),
            started("r2"),
            result("c1"),
            interrupted("r2"),
        ],
        ["c1"],
    ),
    (
        "slow_result_for_a_call_in_an_interrupted_reply_is_discarded",
        [
            started("r1"),
            call("c1"),
            speech(),
            interrupted("r1"),
            result("c1"),
        ],
        ["c1"],
    ),
    (
        "slow_result_of_interrupted_reply_is_discarded_even_after_later_replies_complete",
        [
            started("r1"),
            call("c1"),
            interrupted("r1"),
            started("r2"),
            done("r2"),
            result("c1"),
        ],
        ["c1"],
    ),
    (
        "calls_of_the_next_reply_are_unaffected_by_an_earlier_interruption",
        [
            started("r1"),
            call("c1"),
            interrupted("r1"),
            started("r2"),
            call("c2"),
            done("r2"),
            result("c2", "c2"),
            result("c1"),
        ],
        ["c1"],
    ),
    (
        "interruption_without_reply_id_blames_the_current_reply",
        [
            started("r1"),
            call("c1"),
            interrupted(None),
            result("c1"),
        ],
        ["c1"],
    ),
    (
        "result_before_any_event_is_sent_at_once",
        [
            result("c0", "c0"),
        ],
        [],
    ),
    (
        "nothing_is_sent_twice",
        [
            started("r1"),
            call("c1"),
            result("c1"),
            done("r1", "c1"),
            started("r2"),
            done("r2"),
        ],
        [],
    ),
    # The server may omit reply_id (the parser tolerates it); calls must still be told apart from earlier,
    # interrupted replies, or every later result is dropped and the agent stalls waiting for it
    # (docs/architecture/agent-api.md#tool-results).
    (
        "replies_without_ids_do_not_inherit_an_earlier_interruption",
        [
            started(None),
            call("c1"),
            interrupted(None),
            started(None),
            call("c2"),
            done(None),
            result("c2", "c2"),
        ],
        [],
    ),
]


@pytest.mark.parametrize(("steps", "discarded"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE])
def test_tool_result_timing_follows_the_documented_rule(steps: list[Step], discarded: list[str]) -> None:
    sent, gate = run(steps)
    assert sent == [s.sends for s in steps]
    assert gate.discarded == discarded
    assert gate.held == 0


def test_held_counts_results_waiting_for_reply_done() -> None:
    gate = ToolResultGate()
    gate.on_reply_started("r1")
    gate.on_tool_call("c1")
    gate.on_tool_call("c2")
    assert gate.submit(PendingResult("c1", "a")) == []
    assert gate.held == 1
    assert gate.submit(PendingResult("c2", "b", is_error=True)) == []
    assert gate.held == 2
    flushed = gate.on_reply_done("r1", "completed")
    assert flushed == [PendingResult("c1", "a"), PendingResult("c2", "b", is_error=True)]  # content kept intact
    assert gate.held == 0

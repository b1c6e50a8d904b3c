"""Tool calls in flight (gateway/local_agent/tool_calls.py), with the clock passed in: results at any time, timeouts,
and one answer per reply once all of its calls are resolved (docs/reference/local-agent-api.md#implemented, Tools).
Over a real socket: tests/integration/local_agent/test_speech_session.py and test_llm_engine.py."""

from __future__ import annotations

from gateway.local_agent.brain import ToolOutcome
from gateway.local_agent.tool_calls import Resolution, ResultStatus, ToolCalls

CTX = {"intent": "book_table", "after": "Booked: {result}."}


def calls_of_one_reply() -> ToolCalls:
    calls = ToolCalls()
    calls.issue("c1", "book_table", {"party": 2}, CTX, group="resp_a", deadline=100.0)
    calls.issue("c2", "send_sms", {}, {}, group="resp_a", deadline=50.0)
    return calls


def test_a_reply_is_answered_once_every_one_of_its_calls_has_a_result() -> None:
    calls = calls_of_one_reply()
    assert calls.answer("c1", '{"ok": true}') is ResultStatus.RECORDED
    assert calls.resolve(10.0) == Resolution()  # c2 still waits
    assert [(c.call_id, c.resolved) for c in calls.pending.values()] == [("c1", True), ("c2", False)]
    assert calls.answer("c2", "failed", is_error=True) is ResultStatus.RECORDED
    assert calls.resolve(11.0) == Resolution(
        due=(
            (
                ToolOutcome("c1", "book_table", CTX, '{"ok": true}'),
                ToolOutcome("c2", "send_sms", {}, "failed", is_error=True),
            ),
        )
    )
    assert len(calls) == 0 and calls.pending == {} and calls.next_deadline() is None


def test_a_call_with_no_result_by_its_deadline_times_out_and_its_reply_is_answered() -> None:
    calls = calls_of_one_reply()
    calls.answer("c1", "done")
    assert calls.next_deadline() == 50.0
    assert calls.resolve(49.9) == Resolution()
    r = calls.resolve(50.0)
    assert [c.call_id for c in r.timed_out] == ["c2"]
    assert r.due == (
        (ToolOutcome("c1", "book_table", CTX, "done"), ToolOutcome("c2", "send_sms", {}, None, timed_out=True)),
    )


def test_a_result_after_the_reply_was_answered_is_late_and_one_never_asked_for_is_unknown() -> None:
    calls = calls_of_one_reply()
    calls.resolve(1000.0)  # both time out: the reply is answered
    assert calls.answer("c1", "too late") is ResultStatus.LATE
    assert calls.answer("c9", "who?") is ResultStatus.UNKNOWN


def test_a_second_result_for_a_call_is_ignored() -> None:
    calls = calls_of_one_reply()
    assert calls.answer("c1", "first") is ResultStatus.RECORDED
    assert calls.answer("c1", "second") is ResultStatus.IGNORED
    calls.resolve(50.0)  # c2 times out; the answer carries the first result
    assert calls.answer("c2", "after its timeout") is ResultStatus.LATE


def test_the_next_deadline_is_the_earliest_call_still_waiting() -> None:
    calls = calls_of_one_reply()
    calls.answer("c2", "done")
    assert calls.next_deadline() == 100.0
    assert ToolCalls().next_deadline() is None


def test_each_reply_is_answered_on_its_own_in_the_order_its_calls_were_made() -> None:
    calls = ToolCalls()
    calls.issue("a1", "t", {}, {}, group="resp_a", deadline=10.0)
    calls.issue("b1", "t", {}, {}, group="resp_b", deadline=99.0)
    calls.issue("a2", "t", {}, {}, group="resp_a", deadline=99.0)
    calls.answer("b1", "b")
    r = calls.resolve(0.0)
    assert [[o.call_id for o in group] for group in r.due] == [["b1"]]
    calls.answer("a2", "a")
    r = calls.resolve(10.0)  # a1 times out
    assert [[o.call_id for o in group] for group in r.due] == [["a1", "a2"]]


def test_only_the_last_finished_calls_are_remembered_as_late() -> None:
    calls = ToolCalls(remember=2)
    for i in range(3):
        calls.issue(f"c{i}", "t", {}, {}, group=f"r{i}", deadline=0.0)
    calls.resolve(0.0)
    assert calls.answer("c0", "x") is ResultStatus.UNKNOWN  # forgotten
    assert calls.answer("c2", "x") is ResultStatus.LATE

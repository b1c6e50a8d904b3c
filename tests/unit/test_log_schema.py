"""The JSON log schema is a contract (docs/reference/logs.md): dashboards, Loki queries and alerts key on event
names and keys. ``SCHEMA`` below is that contract, committed: real calls run through the real app (Twilio peer ⇄
gateway ⇄ fake agent) with their log lines captured, and every line must match it (name known, required keys
present, no undeclared key, every value of its declared type). A second check reads the code: every event name the
gateway logs is in ``SCHEMA``, with every literal key declared, and every event and key is documented in
docs/reference/logs.md. Renaming a key, or logging a new event without declaring it, fails here.

Events of the embedded local agent (``local_agent.*``) and of the call simulator (a client) are out of scope."""

from __future__ import annotations

import ast
import asyncio
import dataclasses
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import structlog
from structlog.contextvars import merge_contextvars
from structlog.processors import format_exc_info

from tests.support.audio import tone

ROOT = Path(__file__).resolve().parents[2]
#: The log reference of the documentation site: one table row per event, call.ended's keys in a table after it.
LOG_DOC = ROOT / "docs" / "reference" / "logs.md"
NUM = (int, float)
OPT_STR = (str, type(None))
OPT_INT = (int, type(None))
OPT_NUM = (int, float, type(None))


@dataclasses.dataclass(frozen=True)
class Event:
    required: dict[str, Any]
    optional: dict[str, Any] = dataclasses.field(default_factory=dict)


#: Context keys structlog merges into a line from contextvars (logs.configure_logging). A call's lines carry
#: call_sid and stream_sid once its ``start`` arrived, session_id once the agent session is ready; a worker's lines
#: (``serve --workers N``) carry worker and pid.
CONTEXT: dict[str, Any] = {"call_sid": OPT_STR, "stream_sid": str, "session_id": OPT_STR, "worker": int, "pid": int}
#: Every line has these (the JSON renderer's; capture_logs gives ``log_level`` instead of ``level`` and no ``ts``).
BASE: dict[str, Any] = {"event": str, "level": str, "ts": str}
CALL = {"call_sid": str, "stream_sid": str}

SCHEMA: dict[str, Event] = {
    # ---- process -----------------------------------------------------------------------------------------------
    "gateway.starting": Event(
        {
            "host": str,
            "port": int,
            "agent": str,
            "public_url": OPT_STR,
            "webhook_signatures": bool,
            "workers": int,
            "loop": str,
            "agent_transport": str,
        }
    ),
    "gateway.token_secret_generated": Event({"detail": str}),
    "carrier.unauthenticated": Event({"carrier": str, "detail": str}),
    "gateway.worker_started": Event({"worker": int, "pid": int, "metrics_port": OPT_INT}),
    "gateway.worker_exited": Event({"worker": int, "pid": OPT_INT, "exit_code": OPT_INT}),
    "gateway.listening": Event({"host": str, "port": int}),
    "audiosocket.listening": Event({"host": str, "port": int}),
    "gateway.signal": Event({"signal": str}),
    "gateway.signal_again": Event({"signal": str, "detail": str}),
    "gateway.drain_started": Event({"active_calls": int, "budget_s": NUM}),
    "gateway.drain_deadline": Event({"ending_calls": int, "waited_s": NUM}),
    "gateway.drain_finished": Event({"ended_by_gateway": int, "still_active": int, "drain_s": NUM}),
    "gateway.stopped": Event({}),
    # ---- HTTP doors ----------------------------------------------------------------------------------------------
    "webhook.answered": Event({"call_sid": str}, {"carrier": str}),
    "webhook.refused": Event({"reason": str, "call_sid": OPT_STR}, {"active": int, "carrier": str}),
    "stream.refused": Event({"reason": str}, {"carrier": str}),
    # ---- a call --------------------------------------------------------------------------------------------------
    "call.started": Event(
        {
            **CALL,
            "carrier": str,
            "account_sid": str,
            "from_": str,
            "to": str,
            "profile": str,
            "agent_format": str,
            "endpoint": str,
        }
    ),
    "call.refused": Event({**CALL, "reason": str}),
    "call.dtmf": Event(CALL),
    "carrier.stream_error": Event({**CALL, "carrier": str, "code": str, "detail": str}),
    "carrier.media_fault": Event({**CALL, "carrier": str, "reason": str, "bytes": int, "refused": bool}),
    "call.barge_in": Event(
        {
            **CALL,
            "reply_id": OPT_STR,
            "cause": str,
            "dropped_queued_ms": int,
            "dropped_unplayed_ms": int,
            "heard_ms": OPT_INT,
        }
    ),
    "call.end_call_timeout": Event({**CALL, "waited_s": NUM}),
    "call.end_requested": Event({"reason": str}),
    "call.prompt_played": Event({**CALL, "prompt": str, "heard": bool, "ms": int}),
    "call.idle_prompt": Event({**CALL, "step": str, "count": int, "after_s": NUM}),
    "call.amd": Event({**CALL, "answered_by": OPT_STR, "action": str}),
    "amd.result": Event({"call_sid": str, "answered_by": str, "detection_ms": OPT_INT}),
    "amd.refused": Event({"reason": str}, {"call_sid": OPT_STR, "answered_by": OPT_STR}),
    "call.hold_audio": Event({**CALL, "started": bool}, {"cause": str, "ms": int}),
    "call.protocol_error": Event({"side": str, "error": str}),
    "call.internal_error": Event({"exception": str}),
    "call.inbound_rate_limited": Event({**CALL, "rate_limit": NUM, "burst_s": NUM, "after_s": NUM}),
    # THE per-call summary: one line per call, always the call's last (CallSummary.log_fields).
    "call.ended": Event(
        {
            "outcome": str,
            "hung_up_by": str,
            "duration_s": NUM,
            "profile": str,
            "turns": int,
            "replies": int,
            "interruptions": int,
            "tool_calls": int,
            "frames_in": int,
            "frames_to_agent": int,
            "frames_dropped_to_agent": int,
            "frames_dropped_rate_limit": int,
            "frames_out": int,
            "agent_resumes": int,
            "time_to_first_agent_audio_ms": OPT_NUM,
            "response_latency_median_ms": OPT_NUM,
            "stale_mark_echoes": int,
            "agent_close_code": OPT_INT,
        },
        {"error": str, "prompt": str, "media_faults": dict},
    ),
    # ---- the agent session -----------------------------------------------------------------------------------------
    "agent.connect_failed": Event({**CALL, "attempt": int, "error": str}),
    "agent.unavailable": Event({"error": str}),
    "agent.session_ready": Event({**CALL, "session_id": str, "endpoint": str, "url": str, "ready_ms": NUM}),
    "agent.session_error": Event({"code": str, "message": str, "fatal": bool}, {"param": OPT_STR}),
    "agent.agent_not_found": Event({"agent_id": str, "message": str}),
    "agent.reply_interrupted": Event({"reply_id": OPT_STR, "heard_chars": int}),
    "agent.reply_error": Event({"reply_id": OPT_STR, "code": str, "message": str}),
    "agent.reply_cut": Event({"reply_id": OPT_STR}),
    "agent.dropped": Event({"close_code": OPT_INT, "reason": OPT_STR, "session_id": str}),
    "agent.resumed": Event(
        {"attempts": int, "gap_ms": NUM, "session_id": str, "confirmed": bool, "buffered_frames": int},
        {"new_session_id": str},
    ),
    "agent.resume_failed": Event(
        {"attempts": int, "gap_ms": NUM, "session_id": str, "error": str, "final_code": bool, "buffered_frames": int}
    ),
    "agent.closed": Event({"close_code": OPT_INT, "reason": OPT_STR, "session_id": OPT_STR, "endpoint": str}),
    "tool.called": Event({"tool": str, "call_id": str}),
    "tool.result": Event({"tool": str, "call_id": str, "is_error": bool, "ms": NUM, "sent": bool, "held": bool}),
    "tool.internal_error": Event({"tool": str, "call_id": str, "error": str}, {"exception": str}),
    # ---- the browser softphone (gateway.softphone) -----------------------------------------------------------------
    "softphone.enabled": Event({"mode": str, "path": str}),
    "softphone.dialled": Event({"call_sid": str}),
    "softphone.refused": Event({"reason": str, "path": str, "status": int}),
    # ---- call control (issue #8, docs/how-to/call-control.md) ---------------------------------------------------
    "call.dtmf_sent": Event({**CALL, "digits": int, "ms": int, "heard": bool}),
    "call.dtmf_delivered": Event({**CALL, "mode": str, "digits": int}),
    "call.hangup_rest": Event({**CALL, "already_ended": bool, "ms": NUM}),
    "call.hangup_rest_failed": Event({**CALL, "status": int, "code": OPT_INT, "error": str}),
    "call.transfer_started": Event({**CALL, "destination": str}, {"warm": bool}),
    "call.transferred": Event({**CALL, "destination": OPT_STR, "ms": NUM}),
    "call.transfer_failed": Event({**CALL, "destination": OPT_STR, "status": int, "code": OPT_INT, "error": str}),
    "call.warm_transfer": Event({**CALL, "result": str}, {"destination": OPT_STR, "ignored": bool}),
    "warm_transfer.callback": Event({"call_sid": str, "call_status": OPT_STR, "conference_event": OPT_STR}),
    "warm_transfer.refused": Event({"reason": str}, {"call_sid": OPT_STR}),
    "warm_transfer.cancel_failed": Event({"status": int, "code": OPT_INT, "error": str}),
    "call.transfer_refused": Event({**CALL, "reason": str}),
    "call.agent_parked": Event({**CALL, "session_id": str, "window_s": NUM}),
    "call.reattached": Event({**CALL, "session_id": str, "previous_stream_sid": str, "gap_ms": NUM}),
    "call.park_ended": Event({"call_sid": str, "session_id": str, "reason": str, "parked_ms": NUM}),
    # ---- scale-out (gateway.cluster, docs/architecture/scale-out.md) ---------------------------------------------
    "cluster.joined": Event({"replica": str, "address": OPT_STR, "store": str}),
    "state.unavailable": Event({"op": str, "error": str, "on_unavailable": str, "detail": str}),
    "state.recovered": Event({"down_s": NUM}),
    "call.handed_over": Event({"call_sid": str, "session_id": str, "parked_ms": NUM}),
    "call.reattach_remote_missed": Event({"call_sid": str, "replica": str, "status": int}),
    "call.reattach_failed": Event({**CALL, "session_id": str, "error": str}),
    "call_control.refused": Event({"reason": str, "status": int, "path": str}),
    "call_control.forward_failed": Event({"action": str, "call_sid": str, "replica": str, "error": str}),
    "call_control.forward_refused": Event({"reason": str, "path": str}),
    "call_control.hangup": Event({"call_sid": str}),
    "call_control.say": Event({"call_sid": str, "chars": int}),
    "call.status": Event({"call_sid": OPT_STR, "call_status": str, "call_duration_s": OPT_INT, "direction": OPT_STR}),
    "stream.status": Event({"call_sid": OPT_STR, "stream_sid": str, "stream_event": str, "stream_error": OPT_STR}),
    "status.refused": Event({"reason": str, "call_sid": OPT_STR}),
    "outbound.created": Event({"call_sid": str, "to": str, "profile": str, "variables": int}),
    "outbound.refused": Event({"reason": str, "status": int}, {"to": str}),
    "outbound.failed": Event({"status": int, "code": OPT_INT, "error": str}),
    # ---- call records (gateway.records, docs/how-to/call-records.md) ---------------------------------------------
    "recording.failed": Event({"path": str, "error": str}),
    "recording.writer_error": Event({"error": str}),
    "record.stored": Event({"call_sid": str, "record": str}, {"recording": OPT_STR}),
    "record.failed": Event({"call_sid": str, "record": OPT_STR}, {"recording": OPT_STR}),
    "record.store_retry": Event({"what": str, "attempt": int, "error": str}),
    "record.sweep_failed": Event({"error": str}),
    "record.retention_sweep": Event({"deleted": int, "retention_days": NUM}),
    "record.orphan_uploaded": Event({"recording": str}),
    "record.internal_error": Event({"where": str, "call_sid": str, "error": str}),
    "records.refused": Event({"reason": str, "path": str}),
    "records.storage_unavailable": Event({"error": str}, {"call_sid": str}),
    "webhook.queued": Event({"call_sid": str, "webhook_event": str, "webhook_id": str}),
    "webhook.outbox_failed": Event({"call_sid": str, "webhook_event": str, "error": str}),
    "webhook.delivered": Event({"webhook_id": str, "call_sid": str, "attempts": int}),
    "webhook.retry": Event({"webhook_id": str, "call_sid": str, "attempts": int, "error": str, "retry_in_s": NUM}),
    "webhook.dead_letter": Event(
        {"webhook_id": str, "call_sid": str, "webhook_event": str, "attempts": int, "error": str, "host": str}
    ),
    "webhook.outbox_error": Event({"error": str, "retry_in_s": NUM}),
}

#: Events the calls below must produce (the rest are checked by name and keys against the code only: process
#: lifecycle is exercised by tests/integration/test_workers.py, drain and resume by their own tests).
MUST_SEE = {
    "webhook.answered",
    "webhook.refused",
    "stream.refused",
    "call.started",
    "call.refused",
    "call.dtmf",
    "call.barge_in",
    "call.end_call_timeout",
    "call.prompt_played",
    "call.protocol_error",
    "call.internal_error",
    "call.ended",
    "agent.connect_failed",
    "agent.unavailable",
    "agent.session_ready",
    "agent.session_error",
    "agent.reply_interrupted",
    "agent.reply_error",
    "agent.reply_cut",
    "agent.dropped",
    "agent.resumed",
    "agent.closed",
    "tool.called",
    "tool.result",
    "gateway.starting",
    "gateway.token_secret_generated",
    "call.end_requested",
    "gateway.drain_started",
    "gateway.drain_deadline",
    "gateway.drain_finished",
}


def _is(value: Any, types: Any) -> bool:
    types = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool):
        return bool in types
    return isinstance(value, types)


def check_event(line: dict[str, Any]) -> None:
    """Raise AssertionError unless ``line`` (a JSON log line, or a captured one) matches ``SCHEMA``."""
    name = line.get("event")
    assert name in SCHEMA, f"undeclared log event {name!r}: add it to SCHEMA and to docs/reference/logs.md"
    spec = SCHEMA[name]
    for key in spec.required:
        assert key in line, f"{name}: required key {key!r} missing from {line}"
    for key, value in line.items():
        if key in ("event", "log_level", "level", "ts"):
            continue
        types = spec.required.get(key) or spec.optional.get(key) or CONTEXT.get(key)
        assert types is not None, f"{name}: undeclared key {key!r} (value {value!r})"
        assert _is(value, types), f"{name}.{key}: {value!r} is not {types}"


# ---- the code side -------------------------------------------------------------------------------------------------
_EVENT_NAME = re.compile(r"^[a-z_]+\.[a-z_.]+$")
_LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def _logged_in_code() -> list[tuple[str, str, list[str | None]]]:
    """(event, where, keyword names; None for a ``**splat``) of every structlog call in gateway/."""
    found = []
    for path in sorted((ROOT / "gateway").rglob("*.py")):
        rel = path.relative_to(ROOT / "gateway").as_posix()
        if rel.startswith(("local_agent/", "simulator/")):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in _LEVELS
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and _EVENT_NAME.match(node.args[0].value)
            ):
                found.append((node.args[0].value, f"{rel}:{node.lineno}", [k.arg for k in node.keywords]))
    return found


def test_every_event_the_code_logs_is_declared_with_its_keys():
    logged = _logged_in_code()
    assert len(logged) > 30  # the scan itself works
    for name, where, keys in logged:
        assert name in SCHEMA, f"{where}: event {name!r} is not in the log schema"
        spec = SCHEMA[name]
        declared = {**spec.required, **spec.optional, **CONTEXT, "exc_info": None}
        for key in keys:
            if key is not None:
                assert key in declared, f"{where}: {name} logs key {key!r} that the schema does not declare"
        if None not in keys:  # no **splat: every required key must be passed here or come from the context
            for key in spec.required:
                assert key in keys or key in CONTEXT or key == "exception", f"{where}: {name} lacks {key!r}"
    assert {n for n, _, _ in logged} == set(SCHEMA), "SCHEMA declares events the code no longer logs"


def test_every_event_and_key_is_documented():
    doc = LOG_DOC.read_text(encoding="utf-8")
    for name, spec in SCHEMA.items():
        row = next((line for line in doc.splitlines() if line.startswith(f"| `{name}`")), None)
        assert row is not None, f"{LOG_DOC.relative_to(ROOT)} has no row for {name}"
        # call.ended's keys have a table of their own, after the events table.
        where = doc[doc.index(row) :] if "see below" in row else row
        for key in [*spec.required, *spec.optional]:
            if key not in CALL:
                assert f"`{key}`" in where, f"{name}: key {key} not documented in {LOG_DOC.relative_to(ROOT)}"


def test_the_log_reference_documents_no_event_the_schema_lacks():
    """The other direction: a row for an event nobody logs any more is a stale page (local_agent.* rows are the
    embedded agent's, outside this schema)."""
    rows = re.findall(r"^\| `([a-z_]+\.[a-z_.]+)`", LOG_DOC.read_text(encoding="utf-8"), flags=re.MULTILINE)
    documented = {name for name in rows if not name.startswith("local_agent.")}
    assert documented - set(SCHEMA) == set(), f"documented but not in SCHEMA: {sorted(documented - set(SCHEMA))}"


# ---- real calls ----------------------------------------------------------------------------------------------------
@pytest.fixture
def captured():
    with structlog.testing.capture_logs(processors=[merge_contextvars, format_exc_info]) as logs:
        yield logs


async def test_real_calls_log_only_schema_conforming_events(
    start_gateway, new_peer, fake_agent, http, captured, monkeypatch, tmp_path
):
    from gateway import cli, drain
    from gateway.keys import CALLS
    from gateway.playout import PlayoutTracker

    cfg = tmp_path / "gateway.toml"
    cfg.write_text('[agent]\nconnect_attempts = 2\n[profiles.default]\ngreeting = "Hi"\nend_call_timeout_s = 0.3\n')
    gw = await start_gateway(str(cfg))

    # 1. A conversation: greeting, DTMF, a barge-in over a long reply, a tool call, agent errors, a dropped and
    #    resumed agent socket that cuts a reply, then the caller hangs up.
    peer = await new_peer(gw)
    await peer.connect()
    sess = await fake_agent.session()
    await sess.reply(tone(500, 0.2, 24000), realtime=False)
    await peer.send({"event": "dtmf", "streamSid": peer.stream_sid, "dtmf": {"track": "inbound_track", "digit": "5"}})
    long = asyncio.create_task(sess.reply(tone(700, 3.0, 24000), reply_id="resp_long", done=False))
    await peer.wait_for(lambda: len(peer.events("media")) >= 25)
    long.cancel()
    await sess.send("input.speech.started")
    await sess.send("transcript.agent", reply_id="resp_long", item_id="msg_1", text="cut", interrupted=True)
    await sess.send("reply.done", reply_id="resp_long", status="interrupted")
    await peer.wait_for(lambda: len(peer.events("clear")) == 1)
    await sess.send("tool.call", call_id="call_1", name="no_such_tool", arguments={})
    await sess.send("session.error", code="invalid_value", message="bad", param="output.voice")
    await sess.send("reply.error", reply_id="resp_x", code="llm_error", message="oops")
    await sess.send("reply.started", reply_id="resp_cut", item_id="msg_2")
    await asyncio.sleep(0.1)
    await sess.ws.close(code=1011)  # unclean drop mid-reply: the gateway resumes the session
    await _wait(lambda: any(e["event"] == "agent.resumed" for e in captured))
    await peer.stop()
    await peer.wait_for(lambda: peer.closed.is_set())

    # 2. A forged token; a carrier protocol error; an agent protocol error; a fatal agent error.
    forged = await new_peer(gw)
    await forged.connect(parameters=dict(forged.parameters, token="v1.9999999999.forged"))
    await forged.wait_for(lambda: forged.closed.is_set())
    bad = await new_peer(gw)
    await bad.connect()
    await fake_agent.session()
    await bad.ws.send_str('{"event": ')
    await bad.wait_for(lambda: bad.closed.is_set())
    rude = await new_peer(gw)
    await rude.connect()
    rude_sess = await fake_agent.session()
    await rude_sess.ws.send_str("{not json")
    await rude.wait_for(lambda: rude.closed.is_set())
    fatal = await new_peer(gw)
    await fatal.connect()
    fatal_sess = await fake_agent.session()
    await fatal_sess.send("session.error", code="agent_timeout", message="gone")
    await fatal.wait_for(lambda: len(fatal.events("media")) > 0)  # the apology starts: hang up on it
    await fatal.stop()
    await fatal.wait_for(lambda: fatal.closed.is_set())

    # 3. end_call whose goodbye never comes (end_call_timeout_s = 0.3).
    ender = await new_peer(gw)
    await ender.connect()
    ender_sess = await fake_agent.session()
    await ender_sess.send("tool.call", call_id="call_2", name="end_call", arguments={})
    await ender.wait_for(lambda: ender.closed.is_set())

    # 4. Our bug inside a call: logged once as call.internal_error, with the exception.
    original = PlayoutTracker.on_mark

    def broken(self: PlayoutTracker, name: str, now: float) -> None:
        raise RuntimeError("injected")

    monkeypatch.setattr(PlayoutTracker, "on_mark", broken)
    buggy = await new_peer(gw)
    await buggy.connect()
    buggy_sess = await fake_agent.session()
    await buggy_sess.reply(tone(400, 0.1, 24000), realtime=False)
    await buggy.wait_for(lambda: buggy.closed.is_set())
    monkeypatch.setattr(PlayoutTracker, "on_mark", original)

    # 5. Drain with a live call: the budget runs out, the call is asked to end (goodbye prompt; the caller hangs up).
    live = await new_peer(gw)
    await live.connect()
    await fake_agent.session()
    drained = asyncio.create_task(drain.drain(gw.app, 0.05))
    await live.wait_for(lambda: len(live.events("media")) > 0)
    await live.stop()
    await drained
    # ... and the webhook refuses while draining.
    async with http.post(gw.base_url + "/twilio/voice", data={"CallSid": "CA" + "2" * 32}) as r:
        assert r.status == 200 and "<Hangup" in await r.text()
    gw.app[CALLS].accepting = True

    # 6. The agent cannot be reached at all (two attempts).
    down = await start_gateway(str(cfg), AGENT_URL="ws://127.0.0.1:9/v1/ws")
    lost = await new_peer(down)
    await lost.connect()
    await lost.wait_for(lambda: len(lost.events("media")) > 0)  # the apology
    await lost.stop()
    await lost.wait_for(lambda: lost.closed.is_set())

    # 7. Webhook and stream upgrade with bad Twilio signatures.
    signed = await start_gateway(str(cfg), TWILIO_AUTH_TOKEN="tw-secret")
    async with http.post(signed.base_url + "/twilio/voice", data={"CallSid": "CA" + "3" * 32}) as r:
        assert r.status == 403
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await http.ws_connect(signed.base_url + "/twilio/stream", headers={"X-Twilio-Signature": "forged"})
    assert refused.value.status == 403

    # 8. The command line's start-up lines (the server itself is not started).
    async def no_serve(*args: Any, **kwargs: Any) -> None:
        return None

    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)
    monkeypatch.setattr(drain, "serve", no_serve)
    for key in ("GATEWAY_TOKEN_SECRET", "ASSEMBLYAI_API_KEY", "TWILIO_AUTH_TOKEN", "GATEWAY_CONFIG"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AGENT_URL", fake_agent.url)
    assert await asyncio.to_thread(cli.main, ["serve", "--port", "18999", "--config", str(cfg)]) == 0

    await asyncio.sleep(0.1)
    for line in captured:
        check_event(line)
    seen = {line["event"] for line in captured}
    assert MUST_SEE <= seen, f"not exercised: {sorted(MUST_SEE - seen)}"
    ended = [line for line in captured if line["event"] == "call.ended"]
    assert ended[0]["outcome"] == "caller_hangup" and ended[0]["session_id"] == sess.session_id
    assert {e["outcome"] for e in ended} >= {
        "refused",
        "protocol_error",
        "agent_error",
        "agent_hangup",
        "internal_error",
        "drained",
        "agent_unavailable",
    }


def test_a_renamed_key_fails_the_check():
    good = {
        "event": "tool.called",
        "log_level": "info",
        "tool": "end_call",
        "call_id": "c1",
        "call_sid": "CA1",
        "stream_sid": "MZ1",
    }
    check_event(good)
    with pytest.raises(AssertionError, match="required key 'tool'"):
        check_event({**{k: v for k, v in good.items() if k != "tool"}, "tool_name": "end_call"})
    with pytest.raises(AssertionError, match="undeclared key"):
        check_event({**good, "surprise": 1})
    with pytest.raises(AssertionError, match="is not"):
        check_event({**good, "tool": 7})
    with pytest.raises(AssertionError, match="undeclared log event"):
        check_event({**good, "event": "tool.invoked"})


async def _wait(pred: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.01)

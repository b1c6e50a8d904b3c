"""Prometheus metrics of one gateway process (``GET /metrics``). Not pure: it holds counters and runs one
background probe, but it never touches the media path.

Where each number comes from (docs/reference/metrics.md; charts: docs/how-to/operations/dashboards.md):

- per-call *events* (:meth:`GatewayMetrics.on_event`, subscribed to ``CallRegistry.listeners``): a handful per turn
  (first audio, barge-in, tool call, session error), never per audio frame;
- the per-call *summary* at hang-up (:meth:`GatewayMetrics.on_summary`, subscribed to ``CallRegistry.on_record``):
  outcome, duration, frames dropped (queue bound, inbound rate limit), barge-in → clear latencies, mark round trips;
- *scrape time* callbacks: active calls, accepting, the configured capacity;
- a loop-lag probe task (:func:`loop_lag_probe`) that sleeps a fixed interval and records the overshoot.

Every metric lives in a per-app :class:`prometheus_client.CollectorRegistry`, never the process-global default, so
many apps in one test process do not collide. Label values that come from a peer (agent error codes, tool names)
are bounded: anything unexpected is reported as ``other``.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

from . import __version__
from .call import events as ev
from .http_input import RequestHeadDeadline
from .session import CallSummary

__all__ = ["BUCKETS", "GatewayMetrics", "loop_lag_probe", "metrics_handler", "serve_metrics_on"]

PREFIX = "voice_gateway"
#: The classic text format: what generate_latest writes, and what every Prometheus 2.x/3.x parses.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Histogram buckets, in seconds, chosen for telephony (docs/reference/metrics.md#buckets explains each).
BUCKETS: dict[str, tuple[float, ...]] = {
    # Calls last seconds (wrong numbers, refusals) to an hour (server.max_call_s default).
    "call_duration": (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600),
    # Stream start → first agent audio (the greeting): session set-up plus TTS; > 2 s feels like a dead line.
    "first_audio": (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 8.0, 13.0),
    # Caller stopped speaking → first agent audio at the gateway: conversational turn gaps are ~0.2–1 s.
    "response": (0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 5.0),
    # Stream start → agent session.ready: one WebSocket handshake plus session set-up.
    "agent_ready": (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0),
    # Caller speech started → `clear` sent: pure gateway work, should be well under one 20 ms frame.
    "clear_latency": (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25),
    # Agent audio unplayed at the carrier when a barge-in cleared it: bounded by audio.playout_lead_ms (200).
    "unplayed": (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0),
    # Mark sent → echoed: the carrier's buffer ahead of the mark (≈ playout lead) plus network transit.
    "mark_round_trip": (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0, 5.0),
    # Agent socket dropped → session resumed (docs/architecture/agent-api.md#resume): backoff 0, 0.25, 0.5 … 2 s
    # within 25 s.
    "resume_gap": (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 25.0),
    # Event-loop overshoot: one 20 ms frame of lag is audible as a gap in paced output.
    "loop_lag": (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
}

_LABEL_VALUE = re.compile(r"^[a-z0-9_.\-]{1,48}$")
_MAX_LABEL_VALUES = 64  # per peer-controlled label; beyond it everything is "other"


class _BoundedLabel:
    """Keeps a peer-supplied label value from minting unbounded time series."""

    def __init__(self, known: Iterable[str] = ()) -> None:
        self._seen: set[str] = set(known)

    def __call__(self, value: object) -> str:
        v = str(value).lower() if value is not None else ""
        if v in self._seen:
            return v
        if not _LABEL_VALUE.match(v) or len(self._seen) >= _MAX_LABEL_VALUES:
            return "other"
        self._seen.add(v)
        return v


class _CallState:
    __slots__ = ("awaiting_response", "first_audio_seen")

    def __init__(self) -> None:
        self.first_audio_seen = False
        self.awaiting_response = False


class GatewayMetrics:
    """The gateway's metrics, in their own registry. Feed it with :meth:`on_event` and :meth:`on_summary`."""

    def __init__(
        self,
        *,
        active_calls: Callable[[], float],
        accepting: Callable[[], bool],
        max_concurrent_calls: int,
        tool_names: Iterable[str] = (),
        agent: str = "",
        registry: CollectorRegistry | None = None,
        process_metrics: bool = True,
    ) -> None:
        self.registry = reg = registry if registry is not None else CollectorRegistry()
        if process_metrics:
            ProcessCollector(registry=reg)  # process_resident_memory_bytes, process_cpu_seconds_total, …
        p = PREFIX
        Gauge(f"{p}_build_info", "Always 1; labels say what runs.", ["version", "agent"], registry=reg).labels(
            __version__, agent
        ).set(1)
        self.active_calls = Gauge(f"{p}_active_calls", "Calls in progress in this process.", registry=reg)
        self.active_calls.set_function(active_calls)
        self.accepting = Gauge(
            f"{p}_accepting_calls", "1 while this process takes new calls, 0 when draining.", registry=reg
        )
        self.accepting.set_function(lambda: 1.0 if accepting() else 0.0)
        self.capacity = Gauge(f"{p}_max_concurrent_calls", "Configured server.max_concurrent_calls.", registry=reg)
        self.capacity.set(max_concurrent_calls)
        self.calls = Counter(f"{p}_calls", "Calls ended, by outcome (call.ended outcome).", ["outcome"], registry=reg)
        self.refusals = Counter(
            f"{p}_call_refusals",
            "Calls turned away before a session, by stage and reason.",
            ["stage", "reason"],
            registry=reg,
        )
        self.duration = Histogram(
            f"{p}_call_duration_seconds",
            "Call length, stream start to hang-up.",
            buckets=BUCKETS["call_duration"],
            registry=reg,
        )
        self.first_audio = Histogram(
            f"{p}_time_to_first_agent_audio_seconds",
            "Stream start to the first agent audio of the call.",
            buckets=BUCKETS["first_audio"],
            registry=reg,
        )
        self.response = Histogram(
            f"{p}_response_latency_seconds",
            "Caller end of speech (input.speech.stopped) to first agent audio, at the gateway.",
            buckets=BUCKETS["response"],
            registry=reg,
        )
        self.agent_ready = Histogram(
            f"{p}_agent_session_ready_seconds",
            "Stream start to agent session.ready.",
            buckets=BUCKETS["agent_ready"],
            registry=reg,
        )
        self.barge_ins = Counter(
            f"{p}_barge_ins", "Barge-ins that cleared agent audio, by cause.", ["cause"], registry=reg
        )
        self.clear_latency = Histogram(
            f"{p}_barge_in_clear_latency_seconds",
            "Caller speech started to `clear` sent to the carrier.",
            buckets=BUCKETS["clear_latency"],
            registry=reg,
        )
        self.unplayed = Histogram(
            f"{p}_barge_in_unplayed_audio_seconds",
            "Agent audio queued at the carrier and dropped unplayed by a barge-in.",
            buckets=BUCKETS["unplayed"],
            registry=reg,
        )
        self.mark_rtt = Histogram(
            f"{p}_carrier_mark_round_trip_seconds",
            "Mark sent to mark echoed by the carrier: its playout buffer depth plus transit.",
            buckets=BUCKETS["mark_round_trip"],
            registry=reg,
        )
        self.drops = Counter(
            f"{p}_agent_drops", "Agent sockets lost without session.ended (a resume follows).", registry=reg
        )
        self.resumes = Counter(f"{p}_agent_resumes", "Agent sessions resumed after a dropped connection.", registry=reg)
        self.resume_gap = Histogram(
            f"{p}_agent_resume_gap_seconds",
            "Agent drop noticed to session resumed.",
            buckets=BUCKETS["resume_gap"],
            registry=reg,
        )
        self.frames_dropped = Counter(
            f"{p}_frames_dropped", "Audio frames dropped by a queue's bound, by queue.", ["queue"], registry=reg
        )
        # Its own counter, not a `reason` label on frames_dropped: that one counts a queue's bound (a slow or absent
        # agent), this one refused input (a peer sending faster than real time); and a new label would change the
        # label set of every existing frames_dropped series that dashboards and alerts already select.
        self.inbound_dropped = Counter(
            f"{p}_inbound_audio_dropped",
            "Caller audio messages dropped before reaching "
            "the agent, by reason (rate_limit: beyond server.inbound_rate_limit x real "
            "time plus server.inbound_burst_s).",
            ["reason"],
            registry=reg,
        )
        self.session_errors = Counter(
            f"{p}_agent_session_errors", "Agent session.error events, by code.", ["code", "fatal"], registry=reg
        )
        self.protocol_errors = Counter(
            f"{p}_protocol_errors", "Calls ended because a peer broke its protocol.", ["side"], registry=reg
        )
        self.tool_calls = Counter(
            f"{p}_tool_calls", "Tool calls requested by the agent, by tool.", ["tool"], registry=reg
        )
        # Call control (issue #8): keypad digits, status callbacks, REST actions, re-attached streams.
        self.dtmf_digits = Counter(
            f"{p}_dtmf_digits",
            "DTMF digits, by direction (in: caller keypresses; out: send_dtmf tones played).",
            ["direction"],
            registry=reg,
        )
        self.call_status = Counter(
            f"{p}_call_status_callbacks", "Twilio call status callbacks, by CallStatus.", ["status"], registry=reg
        )
        self.stream_status = Counter(
            f"{p}_stream_status_callbacks", "Twilio stream status callbacks, by StreamEvent.", ["event"], registry=reg
        )
        # Scale-out (gateway.cluster, docs/architecture/scale-out.md): the shared store failing; call control
        # forwarded between replicas.
        self.state_unavailable = Counter(
            f"{p}_state_unavailable",
            "Shared state store calls that failed or timed out (calls went on with this process's own view), by op.",
            ["op"],
            registry=reg,
        )
        self.forwards = Counter(
            f"{p}_call_control_forwards",
            "Call control for a call on another replica, forwarded to it (sent/failed) or from one (served/refused).",
            ["action", "result"],
            registry=reg,
        )
        self.call_control = Counter(
            f"{p}_call_control_actions",
            "Call-control actions over Twilio REST, by action (hangup/transfer/outbound) and result.",
            ["action", "result"],
            registry=reg,
        )
        self.reattaches = Counter(
            f"{p}_stream_reattaches", "New streams that took over a parked agent session.", registry=reg
        )
        # Call records (gateway.records; docs/how-to/call-records.md): never on the media path.
        self.records = Counter(
            f"{p}_call_records", "Call records stored, by result (written/failed).", ["result"], registry=reg
        )
        self.recordings = Counter(
            f"{p}_recordings", "Call recordings finished, by result (complete/failed).", ["result"], registry=reg
        )
        self.recording_batches_dropped = Counter(
            f"{p}_recording_batches_dropped",
            "Seconds of call audio the recording writer could not keep up with.",
            registry=reg,
        )
        self.storage_errors = Counter(
            f"{p}_record_storage_errors",
            "Failed record storage operations, by what (record/recording/sweep).",
            ["what"],
            registry=reg,
        )
        self.webhook_deliveries = Counter(
            f"{p}_webhook_deliveries",
            "Post-call webhook attempts, by event and result: delivered, failed (retried), dead, not_queued.",
            ["event", "result"],
            registry=reg,
        )
        self.loop_lag = Histogram(
            f"{p}_event_loop_lag_seconds",
            "How late the event loop woke a fixed-interval timer.",
            buckets=BUCKETS["loop_lag"],
            registry=reg,
        )
        self._code = _BoundedLabel()
        self._tool = _BoundedLabel(tool_names)
        self._status = _BoundedLabel(
            (
                "queued",
                "initiated",
                "ringing",
                "in-progress",
                "answered",
                "completed",
                "busy",
                "failed",
                "no-answer",
                "canceled",
                "stream-started",
                "stream-stopped",
                "stream-error",
            )
        )
        self._calls: dict[str, _CallState] = {}
        self.media_faults = Counter(
            f"{p}_carrier_media_faults",
            "Carrier media payloads that were not whole 20 ms frames, by reason (empty and odd_length: refused; "
            "mis_sized: passed on).",
            ["reason"],
            registry=reg,
        )
        # Pre-create the label sets dashboards plot, so a quiet gateway shows 0 instead of "no data".
        self.frames_dropped.labels("caller_to_agent")
        self.inbound_dropped.labels("rate_limit")
        for direction in ("in", "out"):
            self.dtmf_digits.labels(direction)
        for side in ("carrier", "agent"):
            self.protocol_errors.labels(side)

    @property
    def tracked_calls(self) -> int:
        """Calls with per-call state here (from ``CallStarted`` to their summary): 0 once every call has ended."""
        return len(self._calls)

    # ---- feeds ------------------------------------------------------------------------------------------------
    def on_event(self, call_sid: str, event: ev.CallEvent) -> None:
        """A ``CallRegistry`` listener: one call's timeline event (gateway.call.events)."""
        match event:
            case ev.CallStarted():
                self._calls[call_sid] = _CallState()
            case ev.AgentSessionReady():
                _observe(self.agent_ready, event.t)
            case ev.CallerSpeechStopped():
                if (state := self._calls.get(call_sid)) is not None:
                    state.awaiting_response = True
            case ev.AgentFirstAudio():
                state = self._calls.get(call_sid)
                if state is not None and not state.first_audio_seen:
                    state.first_audio_seen = True
                    _observe(self.first_audio, event.t)
                if state is not None and state.awaiting_response:
                    state.awaiting_response = False
                    _observe(self.response, _ms(event.latency_ms))
            case ev.BargeIn():
                self.barge_ins.labels(event.cause or "unknown").inc()
                _observe(self.unplayed, _ms(event.dropped_unplayed_ms))
            case ev.SessionErrorReport():
                self.session_errors.labels(self._code(event.code), "true" if event.fatal else "false").inc()
            case ev.ProtocolViolation():
                self.protocol_errors.labels(event.side if event.side in ("carrier", "agent") else "other").inc()
            case ev.ToolCalled():
                self.tool_calls.labels(self._tool(event.tool)).inc()
            case ev.AgentDrop():
                self.drops.inc()
            case ev.AgentResume():
                self.resumes.inc()
                _observe(self.resume_gap, _ms(event.gap_ms))
            case ev.CallerKeypress():
                self.dtmf_digits.labels("in").inc()
            case ev.TonesSent():
                if event.digits > 0:
                    self.dtmf_digits.labels("out").inc(event.digits)
            case ev.ControlAction():
                self.on_call_control(event.action, event.result)
            case ev.Reattach():
                self.reattaches.inc()
            case ev.CallEnd():
                self._calls.pop(call_sid, None)

    def on_summary(self, s: CallSummary) -> None:
        """A ``CallRegistry.on_record`` hook: the call is over."""
        self._calls.pop(s.call_sid, None)
        self.calls.labels(s.outcome or "unknown").inc()
        self.duration.observe(s.duration_s)
        if s.frames_dropped_to_agent:
            self.frames_dropped.labels("caller_to_agent").inc(s.frames_dropped_to_agent)
        if s.frames_dropped_rate_limit:
            self.inbound_dropped.labels("rate_limit").inc(s.frames_dropped_rate_limit)
        for reason, n in s.media_faults.items():
            self.media_faults.labels(reason).inc(n)
        for ms in s.clear_latencies_ms:
            self.clear_latency.observe(ms / 1000.0)
        for ms in s.mark_round_trips_ms:
            self.mark_rtt.observe(ms / 1000.0)

    def on_call_control(self, action: str, result: str) -> None:
        """A REST call-control action: hangup | transfer | outbound; result ok | already_ended | refused | failed."""
        self.call_control.labels(
            action if action in ("hangup", "transfer", "outbound") else "other",
            result if result in ("ok", "already_ended", "refused", "failed") else "other",
        ).inc()

    def on_status_callback(self, call_status: str | None, stream_event: str | None) -> None:
        """A ``POST /twilio/status``: a call status (CallStatus) or a stream status (StreamEvent)."""
        if call_status:
            self.call_status.labels(self._status(call_status)).inc()
        if stream_event:
            self.stream_status.labels(self._status(stream_event)).inc()

    def refused(self, stage: str, reason: str) -> None:
        """A webhook or stream upgrade turned away (stage: webhook | stream)."""
        self.refusals.labels(stage, reason).inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def _ms(v: object) -> float | None:
    return v / 1000.0 if isinstance(v, (int, float)) else None


def _observe(h: Histogram, v: object) -> None:
    if isinstance(v, (int, float)) and v >= 0:
        h.observe(float(v))


# ---- aiohttp glue --------------------------------------------------------------------------------------------
async def loop_lag_probe(
    metrics: GatewayMetrics, interval_s: float = 0.5, clock: Callable[[], float] = time.monotonic
) -> None:
    """Forever: sleep ``interval_s`` and record how much later than asked the loop woke us (until cancelled)."""
    while True:
        t0 = clock()
        await asyncio.sleep(interval_s)
        metrics.loop_lag.observe(max(0.0, clock() - t0 - interval_s))


def metrics_handler(metrics: GatewayMetrics) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    return handle


#: The per-worker metrics listener's request-head deadline (the main listener's is server.header_timeout_s).
METRICS_HEADER_TIMEOUT_S = 10.0


def serve_metrics_on(
    sock: socket.socket,
    metrics_of: Callable[[], GatewayMetrics],
) -> Callable[[web.Application], AsyncIterator[None]]:
    """A ``cleanup_ctx`` that also serves ``/metrics`` (and ``/healthz``) of this process on a listener of its own
    (``sock``, bound by the caller): with several workers on one SO_REUSEPORT port, a scrape of the shared port
    reaches a random worker, so each worker is scraped on its own port (docs/how-to/operations/workers.md)."""

    async def ctx(app: web.Application) -> AsyncIterator[None]:
        side = web.Application()

        async def healthz(request: web.Request) -> web.Response:
            return web.json_response({"status": "ok"})

        side.router.add_get("/metrics", metrics_handler(metrics_of()))
        side.router.add_get("/healthz", healthz)
        runner = web.AppRunner(side, access_log=None)
        await runner.setup()
        assert runner.server is not None  # set by setup()
        # The same slow-header defence as the main listener (docs/security.md), at its default.
        RequestHeadDeadline(METRICS_HEADER_TIMEOUT_S).install(runner.server)
        await web.SockSite(runner, sock).start()
        try:
            yield
        finally:
            await runner.cleanup()

    return ctx

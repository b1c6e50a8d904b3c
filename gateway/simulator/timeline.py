"""What happened on a simulated call, from the caller's ear. Pure: a :class:`CallRecord` in; a :class:`Timeline`
(text, JSON-ready dict) and :class:`PlotData` out. No I/O, no clock.

The record is what the asyncio shell (:mod:`gateway.simulator.caller`) collected: the audio the caller *heard*
(one 160-byte μ-law frame per 20 ms from the moment the stream started, silence included, so sample positions
are times), the audio it *said* on the same clock, and timestamped events (turns, marks, clears, hang-up).
Everything about the agent (greeting, replies, when it stopped after a barge-in, response latency) is derived
from the heard audio, because that is what a person on the line experiences: it includes the gateway's pacing,
Twilio's buffer and the agent's own latency.

JSON keys (``Timeline.to_dict()``, ``version`` 1; times in seconds since the stream started, latencies in ms):

- ``version``, ``outcome`` (``completed`` | ``refused`` | ``protocol_error`` | ``connect_failed``),
  ``exit_code`` (0 | 1 | 3), ``errors`` [str], ``warnings`` [str]
- ``call``: ``call_sid``, ``account_sid``, ``stream_sid``, ``from``, ``to``
- ``webhook``: ``url``, ``status``, ``ms``, ``signed``
- ``stream``: ``twiml_url``, ``connected_url``, ``parameters`` (names only: values such as the call token are
  credentials)
- ``duration_s``; ``out_wav`` (path or null)
- ``records``: where the gateway stored the call (``record``, ``recording``: locations or null; ``url``), or null
  when not asked (no ``--api-key``) or none was found
- ``greeting``: {``start_s``, ``end_s``} or null (agent audio before the caller's first turn)
- ``turns``: [{``index`` (1-based), ``source`` (``say`` | ``wav``), ``label``, ``start_s``, ``end_s``,
  ``barge_in`` (the caller started it into a reply: ``--barge-in-after``, or agent audio was playing),
  ``clear_after_ms`` (barge-in turns: first ``clear`` after the turn started, null if none came),
  ``agent_stopped_after_ms`` (barge-in turns: when the interrupted reply's audio ended, from the turn's start),
  ``reply`` ({``start_s``, ``end_s``} or null), ``response_latency_ms`` (end of the caller's turn → first agent
  audio heard after it; after a barge-in, the first audio after both the turn's end and the ``clear``)}]
- ``agent_audio``: [{``start_s``, ``end_s``}] (every stretch of audible agent audio)
- ``clears``: [{``at_s``, ``dropped_ms``, ``flushed_marks`` [str]}]
- ``marks``: [{``name``, ``received_s``, ``echoed_s``, ``flushed``}] (``flushed``: echoed by a ``clear``, so it
  does not prove playback, docs/architecture/twilio-media-streams.md#marks-and-clear)
- ``hangup``: {``by`` (``caller`` | ``gateway``), ``at_s``, ``reason``} or null
- ``tone_check``: {``loud_s``, ``flatness``, ``noise``}: whether what the caller heard was a voice or a tone, or
  noise (the median spectral flatness of its loud 32 ms windows; a wrong L16 byte order makes noise of any voice:
  :mod:`gateway.simulator.tone_check`). Noise also adds a warning.
- ``counts``: ``media_sent``, ``media_received``, ``media_received_ms``, ``marks_received``, ``marks_played``,
  ``marks_flushed``, ``clears``
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..audio import g711
from .tone_check import ToneCheck, tone_check
from .turn_taking import AUDIBLE_RMS
from .twilio_side import FRAME_BYTES, FRAME_S

__all__ = [
    "EXIT_CODES",
    "SCHEMA_VERSION",
    "CallRecord",
    "ClearReport",
    "Event",
    "MarkReport",
    "PlotData",
    "Span",
    "Timeline",
    "TurnReport",
    "TurnSpec",
    "audible_spans",
    "build_timeline",
    "frame_levels",
    "plot_data",
]

SCHEMA_VERSION = 1
EXIT_CODES = {"completed": 0, "protocol_error": 1, "refused": 3, "connect_failed": 3}
#: Gaps in agent audio shorter than this are pauses between words, not the end of speaking.
MERGE_GAP_S = 0.3


@dataclass(frozen=True)
class Event:
    """Something the caller saw or did, ``t`` seconds after the stream started.

    Kinds: ``turn_started`` {index, barge_in}, ``turn_ended`` {index}, ``mark_received`` {name}, ``mark_echoed``
    {name, flushed}, ``clear`` {dropped_ms, marks}, ``hangup`` {by, reason}, ``protocol_error`` {message}.
    """

    t: float
    kind: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TurnSpec:
    source: str  # say | wav
    label: str  # the text, or the WAV's path


@dataclass
class CallRecord:
    """Everything the shell observed on one call (filled in as the call runs)."""

    base_url: str = ""
    call_sid: str = ""
    account_sid: str = ""
    stream_sid: str = ""
    from_: str = ""
    to: str = ""
    webhook_url: str = ""
    webhook_status: int | None = None
    webhook_ms: float | None = None
    signed: bool = False
    twiml_url: str = ""
    connected_url: str = ""
    parameter_names: tuple[str, ...] = ()
    turns: tuple[TurnSpec, ...] = ()
    heard: bytearray = field(default_factory=bytearray)  # μ-law, FRAME_BYTES per 20 ms from stream start
    said: bytearray = field(default_factory=bytearray)  # μ-law the caller sent, same clock
    events: list[Event] = field(default_factory=list)
    media_sent: int = 0
    media_received: int = 0
    media_received_bytes: int = 0
    #: The caller's --pause: agent silence that ends a reply (used to tell an interrupted reply from the answer).
    pause_s: float = 1.2
    outcome: str = "completed"
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    out_wav: str | None = None
    #: Where the gateway stored this call's record and recording (GET /calls/{call_sid}, with --api-key), or None.
    stored: dict[str, Any] | None = None
    #: Event-loop time of the stream's frame 0 (every ``t`` above counts from it), to line up in-process logs.
    stream_t0: float = 0.0

    def add(self, t: float, kind: str, **fields: Any) -> None:
        self.events.append(Event(round(t, 4), kind, fields))


@dataclass(frozen=True)
class Span:
    start_s: float
    end_s: float

    def to_dict(self) -> dict[str, float]:
        return {"start_s": round(self.start_s, 3), "end_s": round(self.end_s, 3)}


@dataclass(frozen=True)
class TurnReport:
    index: int  # 1-based
    source: str
    label: str
    start_s: float
    end_s: float | None
    barge_in: bool
    clear_after_ms: float | None
    agent_stopped_after_ms: float | None
    reply: Span | None
    response_latency_ms: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "source": self.source,
            "label": self.label,
            "start_s": _s(self.start_s),
            "end_s": _s(self.end_s),
            "barge_in": self.barge_in,
            "clear_after_ms": _ms(self.clear_after_ms),
            "agent_stopped_after_ms": _ms(self.agent_stopped_after_ms),
            "reply": self.reply.to_dict() if self.reply else None,
            "response_latency_ms": _ms(self.response_latency_ms),
        }


@dataclass(frozen=True)
class ClearReport:
    at_s: float
    dropped_ms: float
    flushed_marks: tuple[str, ...]


@dataclass(frozen=True)
class MarkReport:
    name: str
    received_s: float
    echoed_s: float | None
    flushed: bool


def _s(v: float | None) -> float | None:
    return None if v is None else round(v, 3)


def _ms(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


# ---- audio analysis ----------------------------------------------------------------------------------------------
def frame_levels(ulaw: bytes | bytearray) -> np.ndarray:
    """RMS level (PCM16 units) of each whole 20 ms frame."""
    n = len(ulaw) // FRAME_BYTES
    if n == 0:
        return np.zeros(0)
    x = np.frombuffer(g711.ulaw_to_pcm16(bytes(ulaw[: n * FRAME_BYTES])), dtype="<i2").astype(np.float64)
    levels: np.ndarray = np.sqrt(np.mean(x.reshape(n, FRAME_BYTES) ** 2, axis=1))
    return levels


def audible_spans(levels: np.ndarray, threshold: float = AUDIBLE_RMS, merge_gap_s: float = MERGE_GAP_S) -> list[Span]:
    """Stretches of frames above ``threshold``; gaps shorter than ``merge_gap_s`` are bridged."""
    spans: list[Span] = []
    on = np.flatnonzero(levels > threshold)
    if on.size == 0:
        return spans
    gap = max(1, round(merge_gap_s / FRAME_S))
    start = prev = int(on[0])
    for i in on[1:]:
        i = int(i)
        if i - prev > gap:
            spans.append(Span(start * FRAME_S, (prev + 1) * FRAME_S))
            start = i
        prev = i
    spans.append(Span(start * FRAME_S, (prev + 1) * FRAME_S))
    return spans


# ---- the timeline ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Timeline:
    record: CallRecord
    greeting: Span | None
    turns: tuple[TurnReport, ...]
    agent_audio: tuple[Span, ...]
    clears: tuple[ClearReport, ...]
    marks: tuple[MarkReport, ...]
    hangup: Mapping[str, Any] | None
    duration_s: float
    tone: ToneCheck = ToneCheck(0.0, None, False)

    @property
    def warnings(self) -> list[str]:
        """The record's warnings, and the tone check's when the caller heard noise."""
        noise = (
            [f"the caller heard noise, not a voice (spectral flatness {self.tone.flatness:.2f}): wrong L16 byte order?"]
            if self.tone.noise and self.tone.flatness is not None
            else []
        )
        return list(self.record.warnings) + noise

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.record.outcome, 1)

    def to_dict(self) -> dict[str, Any]:
        r = self.record
        return {
            "version": SCHEMA_VERSION,
            "outcome": r.outcome,
            "exit_code": self.exit_code,
            "errors": list(r.errors),
            "warnings": self.warnings,
            "call": {"call_sid": r.call_sid, "account_sid": r.account_sid, "stream_sid": r.stream_sid,
                     "from": r.from_, "to": r.to},
            "webhook": {"url": r.webhook_url, "status": r.webhook_status, "ms": _ms(r.webhook_ms),
                        "signed": r.signed},
            "stream": {"twiml_url": r.twiml_url, "connected_url": r.connected_url,
                       "parameters": list(r.parameter_names)},
            "duration_s": _s(self.duration_s),
            "out_wav": r.out_wav,
            "records": r.stored,
            "greeting": self.greeting.to_dict() if self.greeting else None,
            "turns": [t.to_dict() for t in self.turns],
            "agent_audio": [s.to_dict() for s in self.agent_audio],
            "clears": [{"at_s": _s(c.at_s), "dropped_ms": _ms(c.dropped_ms), "flushed_marks": list(c.flushed_marks)}
                       for c in self.clears],
            "marks": [{"name": m.name, "received_s": _s(m.received_s), "echoed_s": _s(m.echoed_s),
                       "flushed": m.flushed} for m in self.marks],
            "hangup": dict(self.hangup) if self.hangup else None,
            "tone_check": self.tone.to_dict(),
            "counts": {
                "media_sent": r.media_sent,
                "media_received": r.media_received,
                "media_received_ms": r.media_received_bytes // 8,
                "marks_received": len(self.marks),
                "marks_played": sum(1 for m in self.marks if m.echoed_s is not None and not m.flushed),
                "marks_flushed": sum(1 for m in self.marks if m.flushed),
                "clears": len(self.clears),
            },
        }  # fmt: skip

    def format_text(self) -> str:
        """A human-readable timeline, one line per moment, in time order."""
        r = self.record
        head = f"call {r.call_sid or '-'}  stream {r.stream_sid or '-'}  via {r.base_url}"
        lines = [head]
        if r.webhook_status is not None:
            lines.append(
                f"  webhook {r.webhook_url} -> {r.webhook_status} in {r.webhook_ms or 0:.0f} ms"
                + (" (signed)" if r.signed else " (unsigned)")
            )
        if r.connected_url:
            lines.append(
                f"  stream  {r.connected_url}" + (f"  (TwiML: {r.twiml_url})" if r.twiml_url != r.connected_url else "")
            )
        rows: list[tuple[float, int, str]] = []

        def row(t: float, who: str, text: str, order: int = 0) -> None:
            rows.append((t, order, f"{t:8.2f} s  {who:<7} {text}"))

        if r.connected_url:
            row(0.0, "stream", "started")
        if self.greeting:
            g = self.greeting
            row(g.start_s, "agent", "greeting starts")
            row(g.end_s, "agent", f"greeting ends ({g.end_s - g.start_s:.2f} s)")
        for t in self.turns:
            label = t.label if len(t.label) <= 60 else t.label[:57] + "..."
            extra = "  (barge-in)" if t.barge_in else ""
            row(t.start_s, "caller", f"turn {t.index} starts: {label!r}{extra}", 1)
            if t.end_s is not None:
                row(t.end_s, "caller", f"turn {t.index} ends", 1)
            if t.agent_stopped_after_ms is not None:
                row(
                    t.start_s + t.agent_stopped_after_ms / 1000,
                    "agent",
                    f"stops talking ({t.agent_stopped_after_ms:.0f} ms after turn {t.index} started)",
                )
            if t.reply is not None:
                lat = f" (response latency {t.response_latency_ms:.0f} ms)" if t.response_latency_ms is not None else ""
                row(t.reply.start_s, "agent", f"reply to turn {t.index} starts{lat}")
                row(t.reply.end_s, "agent", f"reply to turn {t.index} ends ({t.reply.end_s - t.reply.start_s:.2f} s)")
            elif t.end_s is not None:
                row(t.end_s, "agent", f"no reply to turn {t.index}", 2)
        for c in self.clears:
            flushed = f", echoed {len(c.flushed_marks)} pending mark(s) unplayed" if c.flushed_marks else ""
            row(c.at_s, "clear", f"dropped {c.dropped_ms:.0f} ms of unplayed agent audio{flushed}")
        for m in self.marks:
            if m.echoed_s is None:
                row(m.received_s, "mark", f"{m.name} received, never echoed")
            elif m.flushed:
                row(m.echoed_s, "mark", f"{m.name} echoed by the clear (not played)")
            else:
                row(m.echoed_s, "mark", f"{m.name} echoed after {m.echoed_s - m.received_s:.2f} s of playout")
        if self.hangup:
            h = self.hangup
            row(float(h["at_s"]), "hangup", f"by {h['by']} ({h['reason']})", 3)
        for e in r.events:
            if e.kind == "protocol_error":
                row(e.t, "ERROR", str(e.fields.get("message")), 3)
        lines += [text for _t, _o, text in sorted(rows, key=lambda x: (x[0], x[1]))]
        latencies = [tr.response_latency_ms for tr in self.turns if tr.response_latency_ms is not None]
        summary = f"  {len(self.turns)} turn(s), {len(self.clears)} clear(s), " + (
            f"response latency {min(latencies):.0f}–{max(latencies):.0f} ms" if latencies else "no replies heard"
        )
        lines.append(summary + f", call {self.duration_s:.2f} s, outcome {r.outcome}")
        if r.stored:
            lines.append(f"  record    {r.stored.get('record') or '-'}  ({r.stored.get('url')})")
            lines.append(f"  recording {r.stored.get('recording') or '- (this profile does not record)'}")
        lines += [f"  warning: {w}" for w in self.warnings]
        lines += [f"  error: {e}" for e in r.errors]
        return "\n".join(lines)


def build_timeline(record: CallRecord) -> Timeline:
    """Derive the timeline from what the caller heard, said and saw."""
    levels = frame_levels(record.heard)
    agent = audible_spans(levels)
    duration = (len(record.heard) // FRAME_BYTES) * FRAME_S
    started: dict[int, Event] = {}
    ended: dict[int, Event] = {}
    clears: list[ClearReport] = []
    marks: dict[str, MarkReport] = {}
    order: list[str] = []
    hangup: dict[str, Any] | None = None
    for e in record.events:
        f = e.fields
        if e.kind == "turn_started":
            started[int(f["index"])] = e
        elif e.kind == "turn_ended":
            ended[int(f["index"])] = e
        elif e.kind == "clear":
            clears.append(ClearReport(e.t, float(f.get("dropped_ms", 0.0)), tuple(f.get("marks", ()))))
        elif e.kind == "mark_received":
            name = str(f["name"])
            marks[name] = MarkReport(name, e.t, None, False)
            order.append(name)
        elif e.kind == "mark_echoed":
            name = str(f["name"])
            prev = marks.get(name)
            marks[name] = MarkReport(name, prev.received_s if prev else e.t, e.t, bool(f.get("flushed")))
            if prev is None:
                order.append(name)
        elif e.kind == "hangup" and hangup is None:
            hangup = {"by": f.get("by"), "at_s": _s(e.t), "reason": f.get("reason")}
    first_turn = started[min(started)].t if started else None
    before = [s for s in agent if first_turn is None or s.start_s < first_turn]
    greeting = Span(before[0].start_s, before[-1].end_s) if before else None
    turns: list[TurnReport] = []
    indexes = sorted(started)
    # First pass: where each turn's answer may start. After a barge-in that is after both the turn's end and the
    # clear (audio before the clear is the interrupted reply's tail); otherwise the turn's end.
    bounds: list[tuple[float, float | None, bool, ClearReport | None, float | None]] = []
    for pos, i in enumerate(indexes):
        t0 = started[i].t
        t1 = ended[i].t if i in ended else None
        nxt = started[indexes[pos + 1]].t if pos + 1 < len(indexes) else float("inf")
        barge = bool(started[i].fields.get("barge_in")) or any(s.start_s <= t0 < s.end_s for s in agent)
        clear = next((c for c in clears if t0 <= c.at_s < nxt), None) if barge else None
        lower = t1
        if barge and clear is not None and t1 is not None:
            lower = max(t1, clear.at_s)
        bounds.append((t0, t1, barge, clear, lower))
    for pos, i in enumerate(indexes):
        t0, t1, barge, clear, lower = bounds[pos]
        if pos + 1 < len(bounds):
            n0, _n1, n_barge, _nc, n_lower = bounds[pos + 1]
            upper = n_lower if n_barge and n_lower is not None else n0
        else:
            upper = float("inf")
        reply = None
        latency = None
        if t1 is not None and lower is not None:
            mine = [s for s in agent if lower <= s.start_s < upper]
            if barge and clear is None:
                # No clear: the interrupted reply may go on after the turn; the answer follows a pause (as the
                # caller's turn-taking decides it).
                ends = [0.0] + [s.end_s for s in agent]
                starts = [s.start_s for s in agent]
                gap_ok = {st for k, st in enumerate(starts) if st - ends[k] >= record.pause_s - 1e-6}
                while mine and mine[0].start_s not in gap_ok:
                    mine.pop(0)
            if mine:
                reply = Span(mine[0].start_s, max(s.end_s for s in mine))
                latency = (reply.start_s - t1) * 1000
        clear_after = stopped_after = None
        if barge:
            clear_after = (clear.at_s - t0) * 1000 if clear else None
            # The interrupted reply: agent audio still going at the turn's start, up to where the answer begins.
            if clear is not None or lower is None:
                edge = lower if lower is not None else t0 + FRAME_S
            else:
                edge = reply.start_s if reply is not None else upper
            over = [s for s in agent if s.end_s > t0 and s.start_s < edge]
            stopped_after = (max(s.end_s for s in over) - t0) * 1000 if over else 0.0
        spec = record.turns[i] if i < len(record.turns) else TurnSpec("?", "?")
        turns.append(TurnReport(
            index=i + 1, source=spec.source, label=spec.label, start_s=t0, end_s=t1, barge_in=barge,
            clear_after_ms=clear_after, agent_stopped_after_ms=stopped_after, reply=reply, response_latency_ms=latency,
        ))  # fmt: skip
    return Timeline(
        record=record,
        greeting=greeting,
        turns=tuple(turns),
        agent_audio=tuple(agent),
        clears=tuple(clears),
        marks=tuple(marks[n] for n in order),
        hangup=hangup,
        duration_s=duration,
        tone=tone_check(record.heard),
    )


# ---- plot data ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlotData:
    """Waveform envelopes on one time axis plus what to mark on them (rendered by :mod:`gateway.simulator.plot`)."""

    t: np.ndarray  # bucket start times, s
    caller_min: np.ndarray  # normalised to [-1, 1]
    caller_max: np.ndarray
    agent_min: np.ndarray
    agent_max: np.ndarray
    turns: tuple[tuple[int, Span, bool], ...]  # (1-based index, span, barge_in)
    agent_speech: tuple[tuple[str, Span], ...]  # ("greeting" | "reply N", span)
    clears: tuple[float, ...]
    latencies: tuple[tuple[float, float, float], ...]  # (turn end, reply start, ms)
    duration_s: float


def _envelope(ulaw: bytes | bytearray, n_samples: int, bucket: int) -> tuple[np.ndarray, np.ndarray]:
    pcm = np.frombuffer(g711.ulaw_to_pcm16(bytes(ulaw)), dtype="<i2").astype(np.float32) / 32768.0
    x = np.zeros(n_samples, dtype=np.float32)
    x[: min(n_samples, pcm.size)] = pcm[:n_samples]
    buckets = x.reshape(-1, bucket)
    return buckets.min(axis=1), buckets.max(axis=1)


def plot_data(timeline: Timeline, max_points: int = 4000) -> PlotData:
    r = timeline.record
    n = max(len(r.heard), len(r.said), 1)
    bucket = max(1, -(-n // max_points))
    n_samples = -(-n // bucket) * bucket
    cmin, cmax = _envelope(r.said, n_samples, bucket)
    amin, amax = _envelope(r.heard, n_samples, bucket)
    speech: list[tuple[str, Span]] = []
    if timeline.greeting:
        speech.append(("greeting", timeline.greeting))
    latencies: list[tuple[float, float, float]] = []
    turns: list[tuple[int, Span, bool]] = []
    for t in timeline.turns:
        turns.append((t.index, Span(t.start_s, t.end_s if t.end_s is not None else timeline.duration_s), t.barge_in))
        if t.reply:
            speech.append((f"reply {t.index}", t.reply))
            if t.end_s is not None and t.response_latency_ms is not None:
                latencies.append((t.end_s, t.reply.start_s, t.response_latency_ms))
    return PlotData(
        t=np.arange(n_samples // bucket) * bucket / 8000.0,
        caller_min=cmin,
        caller_max=cmax,
        agent_min=amin,
        agent_max=amax,
        turns=tuple(turns),
        agent_speech=tuple(speech),
        clears=tuple(c.at_s for c in timeline.clears),
        latencies=tuple(latencies),
        duration_s=timeline.duration_s,
    )

"""The call record: one JSON document per call, built from the typed call events. Pure (no clock: times come in).

:class:`RecordBuilder` is fed every :mod:`gateway.call.events` event of one call (as metrics and the softphone are)
and, at the end, the call's summary and the per-reply send/play times of its
:class:`~gateway.records.recorder.CallTap`; :meth:`RecordBuilder.finish` returns the document whose schema
docs/reference/call-record.md describes (``schema_version`` :data:`SCHEMA_VERSION`; a field is only ever added
within a version). Every time in it is seconds on the call clock (since the stream started), but ``started_at`` and
``ended_at`` (UTC, ISO 8601).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..call import events as ev

__all__ = ["SCHEMA", "SCHEMA_VERSION", "RecordBuilder", "mask"]

SCHEMA = "voice-gateway/call-record"
SCHEMA_VERSION = 1


def mask(number: str, rule: str) -> str:
    """A caller or called number as the record shows it (``storage.mask_numbers``): ``last4`` keeps the last four
    characters of the number or SIP user (``+*******4567``, ``sip:****1234@pbx.example``), ``hidden`` keeps nothing,
    ``none`` everything."""
    if not number or rule == "none":
        return number
    if rule == "hidden":
        return "***"
    scheme, sep, rest = number.partition(":") if number.startswith(("sip:", "sips:", "client:")) else ("", "", number)
    user, at, host = rest.partition("@")
    keep = user[-4:] if len(user) > 4 else ""
    lead = "+" if user.startswith("+") else ""
    return f"{scheme}{sep}{lead}{'*' * (len(user) - len(keep) - len(lead))}{keep}{at}{host}"


def _iso(epoch_s: float) -> str:
    return dt.datetime.fromtimestamp(epoch_s, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


@dataclass
class _Speech:
    start_s: float
    end_s: float | None = None
    text: str | None = None


@dataclass
class RecordBuilder:
    """One call's record in the making. ``started_epoch_s``: the stream's start on the wall clock."""

    call_sid: str
    stream_sid: str
    carrier: str
    profile: str
    from_: str
    to: str
    started_epoch_s: float
    mask_rule: str = "last4"
    session_id: str = ""
    _speech: list[_Speech] = field(default_factory=list)
    _replies: dict[str | None, dict[str, Any]] = field(default_factory=dict)
    _first_audio: list[tuple[ev.AgentFirstAudio, float | None]] = field(default_factory=list)
    _last_stop: float | None = None
    _barges: list[dict[str, Any]] = field(default_factory=list)
    _tools: dict[str, dict[str, Any]] = field(default_factory=dict)
    _dtmf: list[dict[str, Any]] = field(default_factory=list)
    _resumes: list[dict[str, Any]] = field(default_factory=list)
    _drops: list[dict[str, Any]] = field(default_factory=list)
    _errors: list[dict[str, Any]] = field(default_factory=list)

    def event(self, e: ev.CallEvent) -> None:
        """One call event, in the order they happened."""
        match e:
            case ev.AgentSessionReady() | ev.Reattach():
                self.session_id = e.session_id
            case ev.CallerSpeechStarted():
                self._speech.append(_Speech(e.t))
            case ev.CallerSpeechStopped():
                open_ = next((s for s in reversed(self._speech) if s.end_s is None), None)
                if open_ is None:
                    self._speech.append(_Speech(e.t, e.t))
                else:
                    open_.end_s = e.t
                self._last_stop = e.t
            case ev.CallerTranscript():
                waiting = next((s for s in self._speech if s.text is None and s.end_s is not None), None)
                if waiting is None:
                    waiting = next((s for s in self._speech if s.text is None), None)
                if waiting is None:
                    waiting = _Speech(e.t, e.t)
                    self._speech.append(waiting)
                waiting.text = e.text
            case ev.AgentReplyStarted():
                self._replies.setdefault(e.reply_id, {"reply_id": e.reply_id, "started_s": e.t})
            case ev.AgentFirstAudio():
                self._replies.setdefault(e.reply_id, {"reply_id": e.reply_id, "started_s": e.t})
                self._first_audio.append((e, self._last_stop))
                self._last_stop = None
            case ev.AgentTranscript():
                reply = self._replies.setdefault(e.reply_id, {"reply_id": e.reply_id, "started_s": e.t})
                reply["text"], reply["interrupted"] = e.text, e.interrupted
            case ev.BargeIn():
                self._barges.append(
                    {"t": e.t, "reply_id": e.reply_id, "cause": e.cause, "dropped_unplayed_ms": e.dropped_unplayed_ms}
                )
                if e.reply_id in self._replies:
                    self._replies[e.reply_id]["interrupted"] = True
            case ev.ToolCalled():
                self._tools[e.call_id] = {
                    "call_id": e.call_id,
                    "tool": e.tool,
                    "arguments": dict(e.arguments),
                    "start_s": e.t,
                    "result": None,
                    "is_error": None,
                    "duration_ms": None,
                }
            case ev.ToolFinished():
                tool = self._tools.setdefault(e.call_id, {"call_id": e.call_id, "tool": e.tool, "arguments": {}})
                tool.update(result=e.result, is_error=e.is_error, duration_ms=e.duration_ms)
            case ev.CallerKeypress():
                self._dtmf.append({"t": e.t})  # the digit itself is never kept (it may be a PIN)
            case ev.AgentDrop():
                self._drops.append({"t": e.t, "close_code": e.close_code})
            case ev.AgentResume():
                self._resumes.append({"t": e.t, "attempts": e.attempts, "gap_ms": e.gap_ms})
            case ev.SessionErrorReport():
                self._errors.append({"t": e.t, "code": e.code, "fatal": e.fatal})
            case _:
                pass

    def header(self) -> dict[str, Any]:
        """What is known when the call starts (the ``call.started`` webhook's data)."""
        return {
            "schema": SCHEMA,
            "schema_version": SCHEMA_VERSION,
            "call_sid": self.call_sid,
            "stream_sid": self.stream_sid,
            "carrier": self.carrier,
            "profile": self.profile,
            "from": mask(self.from_, self.mask_rule),
            "to": mask(self.to, self.mask_rule),
            "started_at": _iso(self.started_epoch_s),
        }

    def finish(
        self,
        summary: Mapping[str, Any],
        *,
        duration_s: float,
        first_sent: Mapping[str | None, tuple[float, float]],
        play_end: Mapping[str | None, float],
        clear_latencies_ms: list[float],
        recording: Mapping[str, Any] | None,
    ) -> dict[str, Any]:
        """The document. ``summary``: the call's ``call.ended`` fields (CallSummary.log_fields);
        ``first_sent``/``play_end``: per reply id, when its first audio was sent and started playing, and when its
        last audio stopped playing (cut at a clear); ``recording``: where the recording went, if any."""
        utterances: list[dict[str, Any]] = []
        for s in self._speech:
            if s.text:
                utterances.append({"speaker": "caller", "text": s.text, "start_s": s.start_s, "end_s": s.end_s})
        for rid, reply in self._replies.items():
            if not reply.get("text") and rid not in first_sent:
                continue
            sent = first_sent.get(rid)
            utterances.append(
                {
                    "speaker": "agent",
                    "reply_id": rid,
                    "text": reply.get("text", ""),
                    "start_s": _r(sent[1] if sent else reply["started_s"]),
                    "end_s": _r(play_end.get(rid)),
                    "interrupted": bool(reply.get("interrupted", False)),
                }
            )
        utterances.sort(key=lambda u: (u["start_s"] is None, u["start_s"] or 0.0))
        turns: list[dict[str, Any]] = []
        for e, stopped in self._first_audio:
            sent = first_sent.get(e.reply_id)
            turn: dict[str, Any] = {
                "reply_id": e.reply_id,
                "greeting": stopped is None and not turns,
                "caller_end_s": stopped,
                "first_audio_received_s": e.t,
                "first_audio_sent_s": _r(sent[0]) if sent else None,
                "first_audio_heard_s": _r(sent[1]) if sent else None,
            }
            if stopped is not None:
                turn["latency_received_ms"] = e.latency_ms
                turn["latency_sent_ms"] = _r((sent[0] - stopped) * 1000, 1) if sent else None
                turn["latency_heard_ms"] = _r((sent[1] - stopped) * 1000, 1) if sent else None
            turns.append(turn)
        barges = [
            {**b, "reaction_ms": _r(clear_latencies_ms[i], 1) if i < len(clear_latencies_ms) else None}
            for i, b in enumerate(self._barges)
        ]
        out: dict[str, Any] = {
            **self.header(),
            "session_id": self.session_id or None,
            "ended_at": _iso(self.started_epoch_s + duration_s),
            "duration_s": round(duration_s, 3),
            "outcome": summary.get("outcome", ""),
            "hung_up_by": summary.get("hung_up_by", ""),
            "error": summary.get("error"),
            "utterances": utterances,
            "turns": turns,
            "barge_ins": barges,
            "tool_calls": list(self._tools.values()),
            "dtmf": self._dtmf,
            "agent_drops": self._drops,
            "resumes": self._resumes,
            "session_errors": self._errors,
            "recording": dict(recording) if recording is not None else None,
            "stats": {k: summary[k] for k in _STATS if k in summary},
        }
        return out


_STATS = (
    "turns",
    "replies",
    "interruptions",
    "tool_calls",
    "frames_in",
    "frames_out",
    "frames_dropped_to_agent",
    "frames_dropped_rate_limit",
    "agent_resumes",
    "time_to_first_agent_audio_ms",
    "response_latency_median_ms",
    "prompt",
)

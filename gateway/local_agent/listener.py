"""A connection's listener: the caller's audio → 16 kHz → VAD (in the worker pool) → turn detector → speech events,
barge-ins, turns worked out ahead at a pause, and finished turns queued as jobs. Not pure.

Semantic barge-in (docs/architecture/local-agent.md#barge-in): sound over an interruptible reply holds the reply
(:meth:`~.speaker.Speaker.hold`); at the caller's first pause their words so far are transcribed and judged
(:func:`~.backchannel.is_interruption`); an interruption commits the barge-in, anything else lets the reply go on.

Its state is the session's :class:`~.hearing.Hearing`, so a socket that drops mid-turn leaves everything where the
next connection's listener picks it up (:meth:`Listener.run` catches up first). The decisions are the pure
:class:`~.turns.TurnDetector`'s and :func:`~.turns.pause_verdict`'s (docs/architecture/local-agent.md#turn-detection).
"""

from __future__ import annotations

import asyncio
import functools
from typing import TYPE_CHECKING

import structlog

from .backchannel import JUDGE_PROMPT, is_interruption
from .brain import Decided
from .hearing import INBOUND_MAX, Hearing, Speculation
from .jobs import Prepared, TurnJob
from .outbox import Outbox
from .replier import Replier
from .runtime import AgentRuntime
from .session import Session
from .speaker import Speaker
from .turns import (
    BargeIn,
    OverlapPausing,
    OverlapStarted,
    OverlapVerdict,
    SpeechDiscarded,
    SpeechStarted,
    TurnEnded,
    TurnEvent,
    TurnPausing,
    pause_verdict,
)

if TYPE_CHECKING:
    from .speech.stt import Transcriber

__all__ = ["Listener", "judge_words"]

log = structlog.get_logger("local_agent")


def judge_words(stt: Transcriber, audio: bytes) -> str:
    """The words of held speech over a reply, as the barge-in judge reads them: Whisper's short window, primed with
    acknowledgements (:data:`~.backchannel.JUDGE_PROMPT`). Blocking: run it in the worker pool."""
    return stt.transcribe(audio, JUDGE_PROMPT, quick=True)


class Listener:
    """Hears one session's caller on one connection."""

    def __init__(
        self,
        runtime: AgentRuntime,
        session: Session,
        hearing: Hearing,
        outbox: Outbox,
        speaker: Speaker,
        replier: Replier,
    ) -> None:
        self.rt = runtime
        self.session = session
        self.hearing = hearing
        self.outbox = outbox
        self.speaker = speaker
        self.replier = replier
        self._tg: asyncio.TaskGroup | None = None
        #: Semantic barge-in: the start of the caller's speech the reply is held for, the number of the latest
        #: hold or pause of it (a verdict counts only for that one) and the transcription judging it.
        self._held_for: int | None = None
        self._overlap_seq = 0
        self._judging: asyncio.Task[None] | None = None

    async def run(self, tg: asyncio.TaskGroup) -> None:
        """Hear inbound audio until the connection ends; speculation tasks go into ``tg``."""
        self._tg = tg
        h = self.hearing
        await self._catch_up()
        while True:
            try:
                async with asyncio.timeout(30.0):
                    first = await h.inbound.get()
            except TimeoutError:
                continue
            chunks = [first]
            while not h.inbound.empty() and len(chunks) < 50:
                chunks.append(h.inbound.get_nowait())
            if h.inbound.qsize() < INBOUND_MAX:
                h.room.set()
            pcm = b"".join(h.decoder.decode(c) for c in chunks)
            if not pcm:
                await self._handle_backlog()  # woken with no audio (a verdict is in: _judge)
                continue
            h.utterance.push(pcm)
            # The VAD stream's state advances in the pool whether or not we are still here to read the result, so
            # the call is shielded and kept on the session: if this socket closes during it, the next connection
            # feeds its probabilities to the detector first and the detector's clock stays in step with the audio.
            h.vad_pending = asyncio.get_running_loop().run_in_executor(self.rt.executor, h.vad.push, pcm)
            probs = await asyncio.shield(h.vad_pending)
            h.vad_pending = None
            self._detect(probs)
            await self._handle_backlog()

    async def _catch_up(self) -> None:
        """On a resumed session: finish what the previous socket left (a VAD result, turn events, speculation)."""
        h = self.hearing
        if h.vad_pending is not None:
            probs = await asyncio.shield(h.vad_pending)
            h.vad_pending = None
            self._detect(probs)
        spec = h.spec
        if spec is not None and (spec.task is None or spec.task.cancelled()):
            # Cancelled with the previous socket's task group: start it again on this one.
            self._start_preparation(spec)
        await self._handle_backlog()

    def _detect(self, probs: list[float]) -> None:
        h = self.hearing
        sp = self.speaker
        h.backlog.extend(h.detector.push(probs, agent_speaking=sp.speaking, interruptible=sp.interruptible))
        if not h.detector.caller_has_turn:
            h.turn_over.set()

    async def _handle_backlog(self) -> None:
        # An event leaves the backlog only once handled: one interrupted by the socket closing (say, while its
        # event was being queued for a socket that is gone) is handled again, whole, on the resumed connection.
        backlog = self.hearing.backlog
        while backlog:
            await self._on_turn_event(backlog[0])
            backlog.popleft()

    async def _on_turn_event(self, ev: TurnEvent) -> None:
        h = self.hearing
        if isinstance(ev, SpeechStarted):
            await self.outbox.emit("input.speech.started")
        elif isinstance(ev, OverlapStarted):
            self._new_overlap_step()
            self._held_for = ev.start_sample
            self.speaker.hold()
        elif isinstance(ev, OverlapPausing):
            self._new_overlap_step()
            assert self._tg is not None
            audio = h.turn_audio(ev.start_sample, ev.end_sample)
            self._judging = self._tg.create_task(self._judge(ev, audio, self._overlap_seq), name="turn:judge")
        elif isinstance(ev, OverlapVerdict):
            await self._on_verdict(ev)
        elif isinstance(ev, BargeIn):
            # Still held while it is cut: nothing more of the reply goes out (cut() lets go of the hold).
            self._new_overlap_step()
            self._held_for = None
            if ev.continuation:
                # The caller went on after a turn ended early: answer both parts together, as when they go on
                # before the reply starts (turn_merge).
                h.merge.continuation()
            if not await self.replier.interrupt():
                self.speaker.release()
                await self.outbox.emit("input.speech.started")
        elif isinstance(ev, TurnPausing):
            # Start Whisper (~0.3 s) and, for a deterministic engine, the reply's first sentence now, so they are
            # ready when the silence timer confirms the end of turn; thrown away if the caller speaks again.
            self._drop_speculation()
            spec = Speculation(ev.start_sample, ev.end_sample, h.turn_audio(ev.start_sample, ev.end_sample))
            h.spec = spec
            self._start_preparation(spec)
        elif isinstance(ev, TurnEnded):
            await self.outbox.emit("input.speech.stopped")
            now = asyncio.get_running_loop().time()
            ahead, h.spec = h.spec, None
            if ahead is not None and (ahead.start, ahead.end) == (ev.start_sample, ev.end_sample):
                self.session.enqueue(
                    TurnJob(ahead.audio, now, prepared=ahead.task, end_reason=ev.reason, end_sample=ev.end_sample)
                )
            else:
                if ahead is not None and ahead.task is not None:
                    ahead.task.cancel()
                self.session.enqueue(
                    TurnJob(
                        h.turn_audio(ev.start_sample, ev.end_sample),
                        now,
                        end_reason=ev.reason,
                        end_sample=ev.end_sample,
                    )
                )
        else:
            assert isinstance(ev, SpeechDiscarded)
            if self._held_for == ev.start_sample and self._judging is not None and not self._judging.done():
                return  # its words are still being judged: the verdict decides (a late "stop" still stops)
            self._end_overlap()
            log.debug("local_agent.backchannel", session_id=self.session.id, voiced_ms=ev.voiced_ms)

    def _new_overlap_step(self) -> None:
        """A new hold or pause of the caller's speech over a reply: any judgement still running is out of date."""
        self._overlap_seq += 1
        if self._judging is not None:
            self._judging.cancel()
            self._judging = None

    def _end_overlap(self) -> None:
        """The held speech is decided or over: let the reply go on (a barge-in has cut it first)."""
        self._new_overlap_step()
        if self._held_for is not None:
            self._held_for = None
            self.speaker.release()

    async def _judge(self, ev: OverlapPausing, audio: bytes, seq: int) -> None:
        """Transcribe the held speech so far and queue the verdict with the detector's events."""
        try:
            text = await self.rt.run_blocking(judge_words, self.rt.models.stt, audio)
        except Exception:
            log.exception("local_agent.judge_failed", session_id=self.session.id)
            text = ""  # an unreadable overlap lets the reply go on; long speech still interrupts on its duration
        self.hearing.backlog.append(OverlapVerdict(ev.start_sample, ev.end_sample, is_interruption(text), seq, text))
        self.hearing.inbound.put_nowait(b"")  # wake the loop even if the client sends no audio meanwhile

    async def _on_verdict(self, ev: OverlapVerdict) -> None:
        h = self.hearing
        if ev.seq != self._overlap_seq or self._held_for != ev.start_sample:
            return  # the caller spoke on (judged again at their next pause), or it was decided meanwhile
        self._judging = None
        log.info(
            "local_agent.overlap_judged", session_id=self.session.id, interrupt=ev.interrupt, words=len(ev.text.split())
        )
        # The caller's words only at debug level (what a misjudged overlap was heard as: bench/barge_in.py).
        log.debug("local_agent.overlap_heard", session_id=self.session.id, interrupt=ev.interrupt, text=ev.text)
        if not ev.interrupt:
            self._end_overlap()
            return
        barge = h.detector.commit_overlap(ev.start_sample)
        if barge is not None:
            await self._on_turn_event(barge)  # the caller's speech goes on as their turn
            return
        # The detector had already let it go as over (the verdict came late): interrupt, and the words are a turn.
        self._held_for = None
        if await self.replier.interrupt():
            await self._on_turn_event(TurnEnded(ev.start_sample, ev.end_sample, "overlap"))
        else:
            self.speaker.release()

    def _start_preparation(self, spec: Speculation) -> None:
        assert self._tg is not None
        spec.task = self._tg.create_task(self.replier.prepare(spec.audio), name="turn:prepare")
        spec.task.add_done_callback(functools.partial(self._judge_pause, spec))

    def _judge_pause(self, spec: Speculation, task: asyncio.Task[Prepared]) -> None:
        """Adaptive end of turn: once the pause's words are known, move the end of this turn earlier (a finished,
        confidently understood request) or later (words that stop mid-sentence). Only when the client left
        ``min_silence``/``max_silence`` unset: live, setting either turns adaptive waiting off. Sends nothing: the
        turn still ends through the detector, so events and their order are as without it."""
        h = self.hearing
        if h.spec is not spec or task.cancelled() or task.exception() is not None:
            return
        td = self.session.config.turn_detection
        if td is not None and (td.min_silence is not None or td.max_silence is not None):
            return
        prepared = task.result()
        s = self.rt.settings
        knobs = h.detector.knobs
        decided = next((st for st in prepared.steps or () if isinstance(st, Decided)), None)
        ms = pause_verdict(
            prepared.text,
            decided.intent if decided is not None else None,
            decided.score if decided is not None else None,
            min_silence_ms=knobs.min_silence_ms,
            early_ms=s.early_silence_ms or knobs.min_silence_ms,
            late_ms=s.late_silence_ms,
            confident=s.early_min_score,
        )
        if ms is not None:
            h.detector.set_pause_verdict(spec.end, ms)

    def _drop_speculation(self) -> None:
        h = self.hearing
        spec, h.spec = h.spec, None
        if spec is not None and spec.task is not None:
            spec.task.cancel()

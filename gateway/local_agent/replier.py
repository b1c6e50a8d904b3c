"""A connection's replier: runs the session's jobs one at a time (the greeting, a caller's turn = STT + brain +
speech, ``reply.create``, tool answers), fires tool-call timeouts, and stops the reply on a barge-in. Not pure.

Each job runs as its own task in the connection's task group, so a barge-in can cancel just the reply. Which
transcribed turn is answered when is :mod:`.turn_merge`'s rule; what to say is the engine's (:mod:`.brain`);
speaking it is the :class:`~.speaker.Speaker`'s. docs/architecture/local-agent.md#barge-in.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import aclosing
from datetime import datetime

import structlog

from . import protocol as proto
from .arguments import speech_hint
from .brain import (
    BrainContext,
    CreateRequest,
    Decided,
    Remember,
    Say,
    Step,
    ToolsAnswered,
    Trigger,
    UserTurn,
    first_speech_chunks,
)
from .hearing import Hearing
from .jobs import CreateJob, GreetJob, Job, Prepared, TurnJob
from .outbox import Outbox
from .runtime import AgentRuntime
from .session import Session
from .speaker import Reply, Speaker, steps_of
from .turn_merge import Hold

__all__ = ["MAX_WAIT_FOR_TURN_S", "Replier"]

log = structlog.get_logger("local_agent")

#: How long a turn transcribed late waits for the caller's new turn to end before it is answered anyway.
MAX_WAIT_FOR_TURN_S = 30.0


class Replier:
    """Jobs of one session, run on one connection."""

    def __init__(
        self, runtime: AgentRuntime, session: Session, hearing: Hearing, outbox: Outbox, speaker: Speaker
    ) -> None:
        self.rt = runtime
        self.session = session
        self.hearing = hearing
        self.outbox = outbox
        self.speaker = speaker
        self._job_task: asyncio.Task[None] | None = None
        self.turns = 0  # caller turns answered on this connection (logged with local_agent.session_closed)

    async def run(self, tg: asyncio.TaskGroup) -> None:
        """Take jobs off the session's queue, one at a time, until the connection ends; time out tool calls."""
        session = self.session
        loop = asyncio.get_running_loop()
        while True:
            deadline = session.next_deadline()
            timeout = 60.0 if deadline is None else max(0.0, min(60.0, deadline - loop.time()))
            try:
                async with asyncio.timeout(timeout):
                    job = await session.jobs.get()
            except TimeoutError:
                session.resolve_calls(loop.time())
                continue
            task = tg.create_task(self._run_job(job), name=f"job:{type(job).__name__}")
            self._job_task = task
            session.job_running = True
            try:
                await asyncio.wait({task})
            finally:
                self._job_task = None
                session.job_running = False
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                # ConnectionDone ends the connection; anything else is our bug, logged once at the boundary.
                raise exc

    async def interrupt(self) -> bool:
        """Barge-in: stop the reply now and report it, three events back to back
        (docs/architecture/local-agent.md#barge-in). False when no reply may be interrupted."""
        reply = self.speaker.cut()
        if reply is None:
            return False
        assert reply.cut_text is not None
        task = self._job_task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=5.0)
        emit = self.outbox.emit
        await emit("input.speech.started")
        await emit(
            "transcript.agent", reply_id=reply.reply_id, item_id=reply.item_id, text=reply.cut_text, interrupted=True
        )
        await emit("reply.done", reply_id=reply.reply_id, status="interrupted")
        self.speaker.flushed()
        log.info(
            "local_agent.barge_in",
            session_id=self.session.id,
            reply_id=reply.reply_id,
            heard_chars=len(reply.cut_text),
            full_chars=len(reply.transcript.text),
        )
        return True

    def _answer_hint(self) -> str | None:
        """The words the caller's turn is likely to hold: the choices of a tool-argument question just asked, else
        the declared tools' enum values. They prime the transcription (docs/how-to/local-agent.md#tool-arguments)."""
        declared = [t.parameters for t in self.session.config.tools]
        return speech_hint(declared, self.session.conversation.slots) or None

    async def prepare(self, audio: bytes) -> Prepared:
        """Work a turn out ahead, while the caller pauses: its text and, for a deterministic engine, the reply's
        steps and its first clause synthesized."""
        text = await self.rt.run_blocking(self.rt.models.stt.transcribe, audio, self._answer_hint())
        engine = self.rt.engine
        if not text or not getattr(engine, "deterministic", False):
            return Prepared(text)
        cfg = self.session.config
        # A deterministic engine's reply depends only on the text, the declared tools and the pending tool
        # request, not on history.
        conversation = self.session.conversation.fork()
        ctx = BrainContext(cfg.system_prompt, cfg.tools, conversation, datetime.now().astimezone())
        async with aclosing(engine.reply(UserTurn(text), ctx)) as gen:
            steps = tuple([step async for step in gen])
        first = next((st for st in steps if isinstance(st, Say)), None)
        sentences = self.rt.split_sentences(first.text) if first else []
        if not sentences:
            return Prepared(text, steps, slots=conversation.slots)
        chunk = first_speech_chunks(sentences[0])[0]
        pieces = await self.speaker.synth(chunk, fixed=first.fixed if first else False)
        return Prepared(text, steps, (chunk, pieces), slots=conversation.slots)

    async def _run_job(self, job: Job) -> None:
        session = self.session
        if isinstance(job, GreetJob):
            # The greeting goes straight to TTS, word for word, not through the brain.
            await self.speaker.speak(steps_of([Say(job.text, fixed=True)]), kind="greeting")
        elif isinstance(job, TurnJob):
            await self._user_turn(job)
        elif isinstance(job, CreateJob):
            await self._respond(CreateRequest(job.instructions), kind="reply_create")
        else:
            for o in job.outcomes:
                content = "error: the tool timed out" if o.timed_out else (o.result or "")
                if o.is_error and not o.timed_out:
                    content = f"error: {content}"
                session.conversation.add_tool_result(o.call_id, content)
            await self._respond(ToolsAnswered(job.outcomes), kind="tool_result")

    async def _user_turn(self, job: TurnJob) -> None:
        session = self.session
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        # A preparation cancelled with an earlier socket (the turn was queued before a drop) is redone here.
        usable = job.prepared is not None and not job.prepared.cancelled()
        prepared = await job.prepared if usable and job.prepared is not None else None
        if prepared is not None:
            text = prepared.text
        else:
            text = await self.rt.run_blocking(self.rt.models.stt.transcribe, job.audio16k, self._answer_hint())
        stt_s = loop.time() - t0  # time the turn waited for its text (less than Whisper's run when speculated)
        if not text:
            log.info("local_agent.turn_empty", session_id=session.id, stt_ms=round(stt_s * 1000))
            return
        self.turns += 1
        item_id = proto.new_item_id()
        # Whisper is not streaming: one delta carrying the whole (final) text, then the final.
        await self.outbox.emit("transcript.user.delta", item_id=item_id, text=text)
        await self.outbox.emit("transcript.user", item_id=item_id, text=text)
        session.conversation.add_user(text)
        h = self.hearing
        start = h.detector.turn_start
        decision = h.merge.transcribed(text, end_sample=job.end_sample, turn_start=start)
        if isinstance(decision, Hold):
            # The caller went on talking soon after this turn's speech ended: the end of turn was called too
            # early. Hold this reply and answer both parts together at the end of the new turn.
            log.info("local_agent.turn_held", session_id=session.id)
            return
        text = decision.text
        if decision.after_turn is not None:
            # A turn of its own, merely transcribed late: answered once the caller's new turn is over, so the
            # reply is not spoken over them (and that new turn after it).
            try:
                async with asyncio.timeout(MAX_WAIT_FOR_TURN_S):
                    while h.detector.turn_start == decision.after_turn:
                        h.turn_over.clear()
                        await h.turn_over.wait()
            except TimeoutError:
                pass
            log.info("local_agent.turn_deferred", session_id=session.id)
        h.merge.answering(text, end_reason=job.end_reason)
        # Worked out ahead for other words, or while another tool request was pending: work it out again.
        stale = prepared is None or text != prepared.text or prepared.slots is not session.conversation.slots
        await self._respond(
            UserTurn(text),
            kind="user_speech",
            turn_ended_at=job.ended_at,
            end_reason=job.end_reason,
            stt_s=stt_s,
            prepared=None if stale else prepared,
        )

    async def _respond(
        self,
        trigger: Trigger,
        *,
        kind: str,
        turn_ended_at: float | None = None,
        end_reason: str | None = None,
        stt_s: float | None = None,
        prepared: Prepared | None = None,
    ) -> None:
        session = self.session
        cfg = session.config
        ctx = BrainContext(cfg.system_prompt, cfg.tools, session.conversation, datetime.now().astimezone())
        decided: list[Decided] = []
        planned = prepared.steps if prepared is not None else None

        async def steps() -> AsyncIterator[Step]:
            source = steps_of(planned) if planned is not None else self.rt.engine.reply(trigger, ctx)
            async with aclosing(source) as engine_steps:
                async for step in engine_steps:
                    if isinstance(step, Decided):
                        decided.append(step)
                        continue
                    if isinstance(step, Remember):  # the engine's pending tool request, for the next turn
                        session.conversation.slots = step.slots
                        continue
                    yield step

        presynth = prepared.first_sentence if prepared is not None else None
        replies: list[Reply] = []
        try:
            await self.speaker.speak(steps(), kind=kind, presynth=presynth, started=replies.append)
        finally:
            # Logged even when the reply was interrupted or the connection went away mid-reply.
            if kind == "user_speech":
                reply = replies[0] if replies else None
                d = decided[0] if decided else None
                first_audio = reply.first_audio_at if reply is not None else None
                log.info(
                    "local_agent.turn",
                    session_id=session.id,
                    engine=self.rt.engine.name,
                    intent=d.intent if d else None,
                    score=round(d.score, 3) if d and d.score is not None else None,
                    end_reason=end_reason,
                    stt_wait_ms=round(stt_s * 1000) if stt_s is not None else None,
                    # From the end-of-turn decision (min_silence after the VAD's last speech window).
                    first_audio_ms=round((first_audio - turn_ended_at) * 1000)
                    if first_audio is not None and turn_ended_at is not None
                    else None,
                    tool_calls=len(reply.tool_calls) if reply else 0,
                    interrupted=bool(reply and reply.cut_text is not None),
                    prepared=planned is not None,
                    system_prompt_set=bool(session.config.system_prompt),
                )

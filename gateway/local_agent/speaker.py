"""Speaking one reply: synthesis sentence by sentence in the worker pool, audio paced at real time, word deltas,
tool calls, and what the caller heard when a reply is cut. Not pure (asyncio, the event loop's clock).

A reply is ``reply.started``, audio in live-sized chunks at most ``reply_lead_ms`` ahead of the client's playout,
``transcript.agent.delta`` in one burst per sentence as its audio starts, ``tool.call`` where the engine made one,
then ``transcript.agent`` and ``reply.done`` (docs/reference/local-agent-api.md#implemented). Fixed text comes from
(and goes to) the runtime's :class:`~.synth_cache.SynthCache`.

While the caller's speech over a reply is being judged the reply is *held* (:meth:`Speaker.hold`): none of its
audio goes out, silence is sent in its place at the same pace, so the caller hears silence once the lead already
sent has played, and :meth:`Speaker.release` carries on from the next chunk, where it stopped
(docs/architecture/local-agent.md#barge-in). Silence, not nothing: the client's playout runs on as through any pause
in a reply, and a barge-in committed during the hold finds audio still queued, so the gateway clears the line as for
any barge-in. A hold that nobody releases ends by itself after :data:`HOLD_MAX_S`.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import structlog

from gateway.audio.g711 import ALAW_SILENCE, ULAW_SILENCE

from . import protocol as proto
from .brain import CallTool, Say, Step, first_speech_chunks
from .codec import OutputEncoder, apply_volume, audible
from .outbox import Outbox
from .runtime import AgentRuntime
from .session import Session
from .synth_cache import Pieces

__all__ = ["HOLD_MAX_S", "Reply", "Speaker", "steps_of", "trim_leading_silence"]

log = structlog.get_logger("local_agent")

#: Between synthesis and pacing: a few sentences' pieces (or tool calls) at most; synthesis waits for pacing.
_Item = tuple[str, bytes] | CallTool | None
#: The longest a reply stays held without a decision (the turn detector ends any held speech well before this).
HOLD_MAX_S = 3.0
_SILENCE_BYTE = {"audio/pcmu": ULAW_SILENCE, "audio/pcma": ALAW_SILENCE}  # audio/pcm: zero bytes


@dataclass(slots=True)
class Reply:
    reply_id: str
    item_id: str
    interruptible: bool
    transcript: proto.ReplyTranscript = field(default_factory=proto.ReplyTranscript)
    sent_s: float = 0.0  # reply audio handed to the socket so far (not the silence sent while it was held)
    held_silence_s: float = 0.0  # silence sent while held, since the last of the reply's audio
    audio_started: bool = False
    finished: bool = False
    cut_text: str | None = None  # set on interruption: what the caller heard
    first_audio_at: float | None = None  # loop time of the first non-silent chunk
    tool_calls: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)


class Speaker:
    """The reply in progress on one connection, and the client's playout clock it is paced against."""

    def __init__(self, runtime: AgentRuntime, session: Session, outbox: Outbox) -> None:
        self.rt = runtime
        self.session = session
        self.outbox = outbox
        self.reply: Reply | None = None
        self.play_end = 0.0  # loop time the client will have played everything sent so far
        self.held_at: float | None = None  # loop time the current hold began; None: not held

    @property
    def speaking(self) -> bool:
        """A reply is being sent right now (what the turn detector calls ``agent_speaking``)."""
        return self.reply is not None and not self.reply.finished

    @property
    def interruptible(self) -> bool:
        return bool(self.reply and self.reply.interruptible)

    def heard_s(self, reply: Reply) -> float:
        """How much of ``reply``'s audio the client has played by now (silence sent while held comes last: what is
        not played yet is that silence first)."""
        ahead = max(0.0, self.play_end - asyncio.get_running_loop().time())
        return max(0.0, reply.sent_s - max(0.0, ahead - reply.held_silence_s))

    @property
    def held(self) -> bool:
        return self.held_at is not None

    def hold(self) -> None:
        """Send no more of the reply until :meth:`release` (the caller may be interrupting)."""
        if self.held_at is None:
            self.held_at = asyncio.get_running_loop().time()

    def release(self) -> None:
        """Carry on with the reply where :meth:`hold` stopped it."""
        self.held_at = None

    def cut(self) -> Reply | None:
        """Barge-in: end the reply in progress where the caller's playout is, if it may be interrupted."""
        reply = self.reply
        if reply is None or reply.finished or not reply.interruptible:
            return None
        self.release()  # the next reply starts unheld
        reply.cut_text = reply.transcript.heard(self.heard_s(reply) * 1000)
        reply.finished = True
        return reply

    def flushed(self) -> None:
        """The client flushed its playback (it does on an interrupted ``reply.done``): nothing is buffered."""
        self.play_end = asyncio.get_running_loop().time()

    def _interruptible(self, kind: str) -> bool:
        td = self.session.config.turn_detection
        return not (td and td.uninterruptible_turns and kind in td.uninterruptible_turns)

    async def speak(
        self,
        steps: AsyncIterator[Step],
        *,
        kind: str,
        presynth: tuple[str, Pieces] | None = None,
        started: Callable[[Reply], None] | None = None,
    ) -> Reply:
        """One reply: reply.started, audio paced at real time (TTS sentence by sentence in the pool), word
        deltas per sentence, tool.calls, transcript.agent, reply.done."""
        session = self.session
        emit = self.outbox.emit
        reply = Reply(proto.new_reply_id(), proto.new_item_id(), self._interruptible(kind))
        self.reply = reply
        self.release()
        session.recorder.reply_trigger(reply.reply_id, kind)
        if started is not None:
            started(reply)
        try:
            await emit("reply.started", reply_id=reply.reply_id, item_id=reply.item_id)
            queue: asyncio.Queue[_Item] = asyncio.Queue(maxsize=3)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._synthesize(steps, queue, presynth))
                tg.create_task(self._pace(reply, queue))
            # Normal end.
            reply.finished = True
            text = reply.transcript.text
            if text:
                await emit(
                    "transcript.agent", reply_id=reply.reply_id, item_id=reply.item_id, text=text, interrupted=False
                )
            await emit("reply.done", reply_id=reply.reply_id, status="completed")
            session.conversation.add_assistant(text, reply.tool_calls)
            return reply
        except asyncio.CancelledError:
            # Barge-in (events already sent by the replier's interrupt) or the connection went away (a reply cut by a
            # disconnect is ended, not replayed: docs/reference/local-agent-api.md#implemented, resume). Record what the
            # caller heard.
            reply.finished = True
            heard = reply.cut_text
            if heard is None:
                heard = reply.transcript.heard(self.heard_s(reply) * 1000)
            session.conversation.add_assistant(heard, reply.tool_calls)
            raise
        finally:
            if self.reply is reply:
                self.reply = None

    async def synth(self, chunk: str, *, fixed: bool) -> Pieces:
        """Synthesize one chunk in the pool; a chunk of fixed text comes from (and goes to) the runtime's cache."""
        cache = self.rt.synth_cache
        if fixed:
            hit = cache.get(chunk)
            if hit is not None:
                return hit
        pieces = await self.rt.run_blocking(_synth_all, self.rt.models.tts, chunk)
        if fixed:
            cache.put(chunk, pieces)
        return pieces

    async def _synthesize(
        self, steps: AsyncIterator[Step], queue: asyncio.Queue[_Item], presynth: tuple[str, Pieces] | None = None
    ) -> None:
        first = True
        try:
            async for step in steps:
                if isinstance(step, CallTool):
                    await queue.put(step)
                    continue
                if not isinstance(step, Say):
                    continue
                # Our own sentence split, one pool call per sentence (the first one cut at a comma when long),
                # so the first audio is ready early and no generator is ever shared between threads.
                for sentence in self.rt.split_sentences(step.text):
                    chunks = first_speech_chunks(sentence) if first else [sentence]
                    first = False
                    for chunk in chunks:
                        if presynth is not None and presynth[0] == chunk:
                            pieces, presynth = presynth[1], None  # synthesized while the caller paused
                        else:
                            pieces = await self.synth(chunk, fixed=step.fixed)
                        for piece in pieces:
                            await queue.put(piece)
        finally:
            aclose = getattr(steps, "aclose", None)
            if aclose is not None:
                await aclose()
        await queue.put(None)

    async def _pace(self, reply: Reply, queue: asyncio.Queue[_Item]) -> None:
        loop = asyncio.get_running_loop()
        cfg = self.session.config
        enc = OutputEncoder(cfg.output_format, self.rt.settings.reply_chunk_ms)
        audio_s = 0.0  # reply audio produced so far (the transcript timeline)
        while True:
            async with asyncio.timeout(60.0):
                item = await queue.get()
            if item is None:
                break
            if isinstance(item, CallTool):
                await self._emit_tool_call(reply, item)
                continue
            sentence, pcm24k = item
            if audio_s == 0.0:
                pcm24k = trim_leading_silence(pcm24k)  # Piper opens every sentence with ~40 ms of it
            pcm24k = apply_volume(pcm24k, self.session.config.volume)
            frames, dur = enc.push(pcm24k)
            words = reply.transcript.add_sentence(sentence, audio_s * 1000, (audio_s + dur) * 1000)
            audio_s += dur
            # transcript.agent.delta comes in bursts: one per sentence, as its audio starts.
            for w in words:
                await self.outbox.emit(
                    "transcript.agent.delta",
                    reply_id=reply.reply_id,
                    item_id=reply.item_id,
                    delta=w.delta,
                    start_ms=w.start_ms,
                    end_ms=w.end_ms,
                )
            for frame in frames:
                await self._send_audio(reply, frame, enc.chunk_s, loop)
        for frame in enc.flush():
            await self._send_audio(reply, frame, enc.chunk_s, loop)

    async def _send_audio(self, reply: Reply, frame: bytes, chunk_s: float, loop: asyncio.AbstractEventLoop) -> None:
        # Real-time pacing with a lead of at most reply_lead_ms over the client's playout clock: live sends at real-time
        # pace and the client's jitter buffer absorbs the lead (docs/reference/local-agent-api.md#implemented).
        encoding = self.session.config.output_format.encoding
        silence = None
        while True:
            await self._pace_chunk(loop)
            if reply.finished:
                return  # cut while this chunk waited (a barge-in): it is never sent
            if self.held_at is None:
                break
            if loop.time() - self.held_at > HOLD_MAX_S:
                log.warning("local_agent.hold_expired", session_id=self.session.id, reply_id=reply.reply_id)
                self.release()
                break
            if silence is None:
                silence = bytes([_SILENCE_BYTE.get(encoding, 0)]) * len(frame)
            self.play_end = max(self.play_end, loop.time()) + chunk_s
            reply.held_silence_s += chunk_s
            await self.outbox.emit("reply.audio", reply_id=reply.reply_id, data=base64.b64encode(silence).decode())
        now = loop.time()
        self.play_end = max(self.play_end, now) + chunk_s
        reply.sent_s += chunk_s
        reply.held_silence_s = 0.0
        if reply.first_audio_at is None and audible(frame, encoding):
            reply.first_audio_at = now
        self.session.recorder.agent_audio(reply.reply_id, frame, self.play_end - chunk_s)
        await self.outbox.emit("reply.audio", reply_id=reply.reply_id, data=base64.b64encode(frame).decode("ascii"))

    async def _pace_chunk(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait until the next chunk may go: at most ``reply_lead_ms`` ahead of the client's playout."""
        wait = self.play_end - self.rt.settings.reply_lead_ms / 1000.0 - loop.time()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _emit_tool_call(self, reply: Reply, call: CallTool) -> None:
        session = self.session
        tool = session.config.tool(call.name)
        timeout = tool.timeout_seconds if tool else 120
        call_id = proto.new_call_id()
        args = dict(call.arguments)
        deadline = asyncio.get_running_loop().time() + timeout
        session.tool_calls.issue(call_id, call.name, args, call.context, group=reply.reply_id, deadline=deadline)
        reply.tool_calls.append((call_id, call.name, args))
        await self.outbox.emit("tool.call", call_id=call_id, name=call.name, arguments=args)
        log.info("local_agent.tool_call", session_id=session.id, tool=call.name, call_id=call_id)


#: Below this (PCM16) a sample is silence for :func:`trim_leading_silence` (about -50 dBFS); 5 ms of it is kept.
_QUIET = 100
_KEEP_SAMPLES = 120


def trim_leading_silence(pcm16: bytes) -> bytes:
    """``pcm16`` (24 kHz) without the silence it opens with, bar 5 ms: a reply's first audio is then audible in its
    first chunk, not 40 ms later. Once per reply, never on the media path's per-frame work."""
    samples = np.frombuffer(pcm16[: len(pcm16) - len(pcm16) % 2], dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > _QUIET)
    if loud.size == 0:
        return pcm16
    start = max(0, int(loud[0]) - _KEEP_SAMPLES)
    return pcm16[2 * start :]


def _synth_all(tts: Any, sentence: str) -> Pieces:
    """Runs in the pool: synthesize one sentence completely (the generator never leaves this thread)."""
    return list(tts.synthesize(sentence))


async def steps_of(items: Iterable[Step]) -> AsyncGenerator[Step, None]:
    """Steps already known (the greeting, a reply worked out ahead) as the async stream :meth:`Speaker.speak`
    takes."""
    for item in items:
        yield item

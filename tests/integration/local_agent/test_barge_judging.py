"""Semantic barge-in through the real local agent (real VAD, Whisper, Piper): speech over a reply holds it, and
its words decide. A back-channel ("Yeah.") lets the reply go on from where it was held, with no event at all; a
one-word "Stop." (as short as a back-channel, so the duration rule alone never stopped the agent) interrupts it
(docs/architecture/local-agent.md#barge-in)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.local_agent.codec import audible
from gateway.local_agent.speech import SpeechModels
from tests.support.caller_voice import caller_ulaw8k
from tests.support.logcapture import capture_call_logs, wait_event

from .agent_client import LinePump
from .conftest import AgentServer

pytestmark = pytest.mark.speech

ULAW = {"format": {"encoding": "audio/pcmu"}}
TEXT = (
    "Let me tell you a little about us. We opened our doors twenty years ago, right by the harbour. "
    "Everything is cooked fresh each day, and the fish comes straight off the boats every single morning."
)


async def test_a_back_channel_lets_the_reply_go_on_and_a_one_word_stop_interrupts_it(
    agent: AgentServer, speech_models: SpeechModels
) -> None:
    yeah = caller_ulaw8k(speech_models.tts, "Yeah.")
    stop = caller_ulaw8k(speech_models.tts, "Stop.")
    with capture_call_logs() as logs:
        c, ready = await agent.session(input=ULAW, output=ULAW)
        sid = ready["session_id"]
        pump = LinePump(c).start()
        try:
            await c.send("reply.create", instructions=TEXT)
            reply_id = (await c.expect("reply.started"))["reply_id"]
            await c.nothing_for(1.0)
            pump.say(yeah)
            judged = await wait_event(logs, "local_agent.overlap_judged", timeout=20, session_id=sid)
            assert judged["interrupt"] is False, judged
            # The reply goes on: speech comes again after the judgement (silence filled the hold), and nothing else
            # has happened.
            sent = len(c.audio[reply_id])
            async with asyncio.timeout(10):
                while not audible(bytes(c.audio[reply_id][sent:]), "audio/pcmu"):
                    await asyncio.sleep(0.02)
            seen = {r.type for r in c.events}
            assert not seen & {"input.speech.started", "transcript.agent", "reply.done", "transcript.user"}, seen
            pump.say(stop)
            events = await c.collect_until(lambda r: r.type == "reply.done", timeout=20)
            # "Stop." is the caller's next turn, transcribed as such (the line keeps running: the detector's clock is
            # the audio).
            user = await c.expect("transcript.user", timeout=20)
        finally:
            await pump.stop()
    tail = [r.type for r in events[-3:]]
    assert tail == ["input.speech.started", "transcript.agent", "reply.done"], [r.type for r in events]
    cut = events[-2].event
    assert cut["interrupted"] is True and cut["reply_id"] == reply_id
    assert len(cut["text"]) < len(TEXT), cut
    assert events[-1].event["status"] == "interrupted"
    assert [e["interrupt"] for e in logs if e.get("event") == "local_agent.overlap_judged"][-1] is True
    assert "stop" in user["text"].lower(), user
    await c.close()


def test_a_clipped_one_word_stop_interrupts_wherever_it_falls_on_the_vads_windows(speech_models: SpeechModels) -> None:
    """A slow "Stop." (Piper at length_scale 1.2, no generator noise, 25 dB line noise, phone path) that Whisper's
    short window, unprompted, reads as "stuff." at some offsets against Silero's 32 ms windows: the judge reads the
    held speech as the listener does (primed with acknowledgements) and every offset is an interruption."""
    import zlib

    from gateway.local_agent.backchannel import is_interruption
    from gateway.local_agent.codec import InputDecoder
    from gateway.local_agent.hearing import POSTROLL_SAMPLES, PREROLL_SAMPLES
    from gateway.local_agent.listener import judge_words
    from gateway.local_agent.protocol import AudioFormat
    from gateway.local_agent.speech.phone import phone_path
    from gateway.local_agent.turns import OverlapPausing, TurnDetector, TurnKnobs, UtteranceBuffer
    from gateway.simulator.caller import trim_silence
    from tests.support.caller_voice import add_white_noise

    tts = speech_models.tts
    pcm = b"".join(c for _s, c in tts.synthesize("Stop.", length_scale=1.2, noise_scale=0.0, noise_w_scale=0.0))
    pad = bytes(2 * tts.SAMPLE_RATE // 5)
    noisy = add_white_noise(pad + pcm + pad, 25.0, seed=zlib.crc32(b"x:Stop."), reference=pcm)
    stop = trim_silence(phone_path(noisy, tts.SAMPLE_RATE))
    heard: dict[int, str] = {}
    for lead in (0, 30, 80, 150, 220, 290, 300, 310):  # 8 kHz samples of line silence before the word
        line = b"\xff" * (8000 + lead) + stop + b"\xff" * 8000
        decoder, vad = InputDecoder(AudioFormat("audio/pcmu")), speech_models.vad.stream()
        detector, buf = (
            TurnDetector(TurnKnobs(judge_overlap=True, speculate_ms=96, backchannel_max_ms=1000)),
            UtteranceBuffer(),
        )
        for i in range(0, len(line), 160):  # 20 ms frames, as a carrier sends them
            pcm16 = decoder.decode(line[i : i + 160])
            buf.push(pcm16)
            pauses = [e for e in detector.push(vad.push(pcm16), agent_speaking=True) if isinstance(e, OverlapPausing)]
            if pauses and lead not in heard:
                ev = pauses[0]
                held = buf.slice(ev.start_sample - PREROLL_SAMPLES, ev.end_sample + POSTROLL_SAMPLES)
                heard[lead] = judge_words(speech_models.stt, held)
    assert len(heard) == 8, heard
    assert all(is_interruption(text) for text in heard.values()), heard

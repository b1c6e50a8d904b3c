"""The call simulator against the real gateway on loopback, wired to the spec-following fake agent; plus two
deliberately broken gateways (fault injection) for the simulator's protocol checks."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from aiohttp import web

from gateway.audio import g711
from gateway.carriers import twiml
from gateway.simulator.caller import CallerTurn, SimulatorConfig, simulate_call, wav_turn, write_wav
from gateway.simulator.timeline import build_timeline
from tests.support.audio import dominant_freq, rms, tone

ROOT = Path(__file__).resolve().parents[2]


def _write_wav(path: Path, pcm: bytes, rate: int, channels: int = 1) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return path


def _heard_pcm(heard: bytes | bytearray, start_s: float, end_s: float) -> bytes:
    return g711.ulaw_to_pcm16(bytes(heard[int(start_s * 8000) : int(end_s * 8000)]))


async def _greet(fake_agent: Any, pcm: bytes, **kw: Any) -> Any:
    sess = await fake_agent.session(timeout=10)
    await sess.reply(pcm, **kw)
    return sess


async def test_greeting_is_heard_in_real_time_and_written_to_the_wav(start_gateway, fake_agent, tmp_path):
    gw = await start_gateway()
    agent = asyncio.create_task(_greet(fake_agent, tone(1000, 1.0, 24000)))
    record = await simulate_call(SimulatorConfig(url=gw.base_url, pause_s=0.6, greeting_timeout_s=5))
    await asyncio.wait_for(agent, 5)
    tl = build_timeline(record)
    assert record.outcome == "completed" and tl.exit_code == 0, record.errors
    assert tl.greeting is not None
    assert tl.greeting.end_s - tl.greeting.start_s == pytest.approx(1.0, abs=0.06)
    assert 0 < tl.greeting.start_s < 2.0
    assert tl.hangup is not None and tl.hangup["by"] == "caller" and tl.hangup["reason"] == "script_done"
    # the caller hung up one pause (0.6 s) after the greeting ended
    assert tl.hangup["at_s"] - tl.greeting.end_s == pytest.approx(0.62, abs=0.05)
    # a real line carries frames all the time: one 20 ms frame sent per 20 ms of call
    assert record.media_sent == pytest.approx(tl.duration_s / 0.02, abs=2)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("simulator.")], "task leak"

    out = tmp_path / "heard.wav"
    write_wav(out, record.heard)
    with wave.open(str(out), "rb") as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        pcm = w.readframes(w.getnframes())
    assert len(pcm) / 16000 == pytest.approx(tl.duration_s, abs=0.001)  # silence included: the timeline is true
    g = tl.greeting

    def at(s: float) -> int:
        return 2 * round(s * 8000)

    assert dominant_freq(pcm[at(g.start_s) : at(g.end_s)], 8000) == pytest.approx(1000, abs=5)
    assert rms(pcm[: at(g.start_s - 0.02)]) < 50  # nothing before the greeting


async def test_marks_are_echoed_only_after_the_audio_before_them_played(start_gateway, fake_agent, tmp_path):
    # A long playout lead: the gateway puts ~1.5 s at "Twilio" ahead of playback, and marks every 200 ms.
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[audio]\nplayout_lead_ms = 1500\nmark_interval_ms = 200\n")
    gw = await start_gateway(str(cfg))
    agent = asyncio.create_task(_greet(fake_agent, tone(600, 2.0, 24000), realtime=False))
    record = await simulate_call(SimulatorConfig(url=gw.base_url, pause_s=0.5))
    await asyncio.wait_for(agent, 5)
    tl = build_timeline(record)
    assert tl.greeting is not None and len(tl.marks) >= 8
    assert all(m.echoed_s is not None and not m.flushed for m in tl.marks)
    waits = [m.echoed_s - m.received_s for m in tl.marks]
    # marks arrive well ahead of playback (the lead), so each waits for its audio to play: ~1.5 s of it
    assert max(waits) > 1.2, waits
    last = max(m.echoed_s for m in tl.marks)
    # the final mark (sent after the reply) echoes when the whole greeting has played, not before
    assert last >= tl.greeting.end_s - 0.03
    assert last - tl.greeting.end_s < 0.1
    assert record.media_received_bytes == pytest.approx(2.0 * 8000, abs=160)
    # the gateway got every echo and counted none as stale
    summary = await _summary(gw)
    assert summary.stale_mark_echoes == 0


async def _summary(gw: Any) -> Any:
    from gateway.keys import CALLS

    calls = gw.app[CALLS]
    async with asyncio.timeout(5):
        while not calls.completed:
            await asyncio.sleep(0.02)
    return calls.completed[-1]


async def test_clear_discards_unplayed_audio_and_flushes_pending_marks(start_gateway, fake_agent, tmp_path):
    cfg = tmp_path / "gw.toml"
    cfg.write_text("[audio]\nplayout_lead_ms = 1000\nmark_interval_ms = 200\n")
    gw = await start_gateway(str(cfg))

    async def agent_interrupted() -> None:
        sess = await fake_agent.session(timeout=10)
        await sess.reply(tone(700, 4.0, 24000), reply_id="resp_long", realtime=False, done=False)
        await asyncio.sleep(1.5)  # let the caller hear some of it; ~1 s more sits unplayed at "Twilio"
        await sess.send("input.speech.started")
        await sess.send("reply.done", reply_id="resp_long", status="interrupted")

    agent = asyncio.create_task(agent_interrupted())
    record = await simulate_call(SimulatorConfig(url=gw.base_url, pause_s=0.8))
    await asyncio.wait_for(agent, 5)
    tl = build_timeline(record)
    assert len(tl.clears) == 1, tl.format_text()
    clear = tl.clears[0]
    assert 700 <= clear.dropped_ms <= 1100  # the lead's worth of audio was queued and is dropped, not played
    assert clear.flushed_marks and all(m.flushed for m in tl.marks if m.name in clear.flushed_marks)
    assert tl.greeting is not None
    # the agent went quiet right when the clear arrived (one 20 ms frame may still have been playing)
    assert tl.greeting.end_s == pytest.approx(clear.at_s, abs=0.05)
    after = _heard_pcm(record.heard, clear.at_s + 0.05, tl.duration_s)
    assert rms(after) < 30, "unplayed audio was played after the clear"
    assert record.media_received_bytes / 8000 > tl.greeting.end_s - tl.greeting.start_s + 0.6


async def test_caller_turn_from_a_stereo_wav_reaches_the_agent_and_the_reply_latency_is_measured(
    start_gateway, fake_agent, tmp_path
):
    gw = await start_gateway()
    left = np.frombuffer(tone(440, 1.0, 16000), dtype="<i2")
    stereo = np.stack([left, left], axis=1).astype("<i2").tobytes()
    lead = bytes(2 * 2 * 8000)  # 0.5 s of silence in the file is trimmed off
    wav = _write_wav(tmp_path / "caller.wav", lead + stereo + lead, 16000, channels=2)
    turn = wav_turn(wav)
    assert len(turn.ulaw) / 8000 == pytest.approx(1.0 + 2 * 0.1, abs=0.04)

    async def agent_replies() -> Any:
        sess = await fake_agent.session(timeout=10)
        await sess.reply(tone(1000, 0.5, 24000))  # greeting
        # wait for the caller's tone to start and then stop (the last 100 ms fall silent)
        async with asyncio.timeout(15):
            while rms(bytes(sess.audio[-4800:])) < 1000:
                await asyncio.sleep(0.02)
            while rms(bytes(sess.audio[-4800:])) > 200:
                await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await sess.reply(tone(1500, 0.8, 24000))
        return sess

    agent = asyncio.create_task(agent_replies())
    record = await simulate_call(SimulatorConfig(url=gw.base_url, turns=(turn,), pause_s=0.6))
    sess = await asyncio.wait_for(agent, 5)
    tl = build_timeline(record)
    assert [t.source for t in tl.turns] == ["wav"]
    t = tl.turns[0]
    assert t.reply is not None and t.response_latency_ms is not None, tl.format_text()
    assert 300 < t.response_latency_ms < 900
    assert t.reply.end_s - t.reply.start_s == pytest.approx(0.8, abs=0.06)
    pcm = _heard_pcm(record.heard, t.reply.start_s, t.reply.end_s)
    assert dominant_freq(pcm, 8000) == pytest.approx(1500, abs=5)
    # the agent heard the caller's tone (8 kHz μ-law → 24 kHz PCM)
    samples = np.frombuffer(bytes(sess.audio), dtype="<i2")
    loud = samples[: len(samples) // 480 * 480].reshape(-1, 480).astype(float)
    voiced = np.flatnonzero(np.sqrt((loud**2).mean(axis=1)) > 1000)
    assert len(voiced) * 0.02 == pytest.approx(1.0, abs=0.1)
    speech = bytes(sess.audio)[voiced[0] * 960 : (voiced[-1] + 1) * 960]
    assert dominant_freq(speech, 24000) == pytest.approx(440, abs=5)


async def _run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "call", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=str(ROOT),
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_cli_json_timeline_has_the_documented_keys(start_gateway, fake_agent, tmp_path):
    gw = await start_gateway()
    wav = _write_wav(tmp_path / "t.wav", tone(440, 0.6, 8000), 8000)

    async def agent_replies() -> None:
        sess = await fake_agent.session(timeout=15)
        await sess.reply(tone(1000, 0.4, 24000))
        async with asyncio.timeout(20):
            while rms(bytes(sess.audio[-4800:])) < 1000:
                await asyncio.sleep(0.02)
            while rms(bytes(sess.audio[-4800:])) > 200:
                await asyncio.sleep(0.02)
        await sess.reply(tone(1500, 0.4, 24000))

    agent = asyncio.create_task(agent_replies())
    out_wav = tmp_path / "heard.wav"
    png = tmp_path / "call.png"
    code, out, err = await _run_cli(
        "--url", gw.base_url, "--wav", str(wav), "--pause", "0.6", "--json", "--out", str(out_wav), "--plot", str(png)
    )
    await asyncio.wait_for(agent, 5)
    assert code == 0, err
    d = json.loads(out)
    assert set(d) == {
        "version",
        "outcome",
        "exit_code",
        "errors",
        "warnings",
        "call",
        "webhook",
        "stream",
        "duration_s",
        "out_wav",
        "records",
        "greeting",
        "turns",
        "agent_audio",
        "clears",
        "marks",
        "hangup",
        "tone_check",
        "counts",
    }
    assert d["outcome"] == "completed" and d["errors"] == []
    assert d["records"] is None  # no --api-key: the simulator does not ask where the call was stored
    assert d["call"]["call_sid"].startswith("CA") and len(d["call"]["call_sid"]) == 34
    assert d["call"]["stream_sid"].startswith("MZ") and len(d["call"]["stream_sid"]) == 34
    assert d["webhook"]["status"] == 200 and d["webhook"]["signed"] is False
    assert d["stream"]["parameters"] == ["from", "to", "token"]
    assert d["greeting"]["end_s"] > d["greeting"]["start_s"]
    assert d["turns"][0]["source"] == "wav" and d["turns"][0]["response_latency_ms"] > 0
    assert d["hangup"]["by"] == "caller"
    assert d["counts"]["marks_played"] >= 2 and d["out_wav"] == str(out_wav)
    with wave.open(str(out_wav), "rb") as w:
        assert w.getnframes() / 8000 == pytest.approx(d["duration_s"], abs=0.001)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_signed_call_is_accepted_by_a_gateway_with_an_auth_token(start_gateway, fake_agent):
    gw = await start_gateway(TWILIO_AUTH_TOKEN="tw-secret", GATEWAY_PUBLIC_URL="https://voice.example.com")
    agent = asyncio.create_task(_greet(fake_agent, tone(1000, 0.3, 24000)))
    record = await simulate_call(
        SimulatorConfig(url=gw.base_url, auth_token="tw-secret", public_url="https://voice.example.com", pause_s=0.4)
    )
    await asyncio.wait_for(agent, 5)
    assert record.outcome == "completed", record.errors
    assert record.signed and record.webhook_status == 200
    # the TwiML names the public host; the stream was opened on loopback but signed over the TwiML's URL
    assert record.twiml_url == "wss://voice.example.com/twilio/stream"
    assert record.connected_url == gw.base_url.replace("http://", "ws://") + "/twilio/stream"
    assert build_timeline(record).greeting is not None


async def test_wrong_auth_token_is_refused_and_the_cli_exits_non_zero(start_gateway):
    gw = await start_gateway(TWILIO_AUTH_TOKEN="tw-secret")
    record = await simulate_call(SimulatorConfig(url=gw.base_url, auth_token="not-the-token"))
    assert record.outcome == "refused" and record.webhook_status == 403
    assert build_timeline(record).exit_code == 3
    code, out, _err = await _run_cli("--url", gw.base_url, "--auth-token", "not-the-token")
    assert code == 3 and "403" in out
    # unsigned against a gateway that checks signatures: refused too
    code, _out, _err = await _run_cli("--url", gw.base_url, "--auth-token", "", env={"TWILIO_AUTH_TOKEN": ""})
    assert code == 3


async def test_unreachable_gateway_exits_3(unused_tcp_port):
    code, out, _err = await _run_cli("--url", f"http://127.0.0.1:{unused_tcp_port}")
    assert code == 3 and "could not reach" in out


# ---- broken gateways (fault injection) ---------------------------------------------------------------------------
async def _broken_gateway(aiohttp_server: Any, body: str, on_stream: Any = None) -> Any:
    """A gateway that answers with ``body`` and runs ``on_stream(ws, start)`` on the stream; ``server.stopped`` is
    set when the caller's ``stop`` arrives."""
    app = web.Application()
    stopped = asyncio.Event()

    async def voice(request: web.Request) -> web.Response:
        url = str(request.url.with_path("/twilio/stream").with_scheme("ws"))
        return web.Response(text=body.replace("{STREAM}", url), content_type="application/xml")

    async def stream(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        first = json.loads((await ws.receive(timeout=5)).data)
        assert first["event"] == "connected"
        start = json.loads((await ws.receive(timeout=5)).data)
        await on_stream(ws, start)
        async with asyncio.timeout(5):
            async for msg in ws:
                if json.loads(msg.data)["event"] == "stop":
                    stopped.set()
                    break
        return ws

    app.router.add_post("/twilio/voice", voice)
    app.router.add_get("/twilio/stream", stream)
    server = await aiohttp_server(app)
    server.stopped = stopped
    return server


async def test_one_way_stream_twiml_is_a_protocol_error(aiohttp_server):
    server = await _broken_gateway(aiohttp_server, '<Response><Start><Stream url="{STREAM}"/></Start></Response>')
    record = await simulate_call(SimulatorConfig(url=str(server.make_url("")).rstrip("/")))
    assert record.outcome == "protocol_error" and "one-way" in record.errors[0]
    assert build_timeline(record).exit_code == 1


async def test_media_with_a_wrong_stream_sid_is_a_protocol_error_and_the_caller_hangs_up(aiohttp_server):
    async def bad_media(ws: web.WebSocketResponse, start: dict[str, Any]) -> None:
        await ws.send_str(json.dumps({"event": "media", "streamSid": "MZwrong", "media": {"payload": "/w=="}}))

    body = twiml.connect_stream("{STREAM}", {"token": "x"})
    server = await _broken_gateway(aiohttp_server, body, bad_media)
    record = await simulate_call(SimulatorConfig(url=str(server.make_url("")).rstrip("/")))
    assert record.outcome == "protocol_error" and "streamSid" in record.errors[0]
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("simulator.")], "task leak"
    tl = build_timeline(record)
    assert tl.exit_code == 1 and tl.hangup == {
        "by": "caller",
        "at_s": pytest.approx(0, abs=0.5),
        "reason": "protocol_error",
    }
    await asyncio.wait_for(server.stopped.wait(), 3)


async def test_gateway_hanging_up_is_recorded_as_such(aiohttp_server):
    async def hang_up(ws: web.WebSocketResponse, start: dict[str, Any]) -> None:
        assert start["start"]["customParameters"] == {"token": "x"}
        assert start["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}
        await asyncio.sleep(0.3)
        await ws.close()

    body = twiml.connect_stream("{STREAM}", {"token": "x"})
    server = await _broken_gateway(aiohttp_server, body, hang_up)
    record = await simulate_call(
        SimulatorConfig(url=str(server.make_url("")).rstrip("/"), turns=(CallerTurn("wav", "x", b"\x00" * 8000),))
    )
    tl = build_timeline(record)
    assert record.outcome == "completed" and tl.hangup is not None
    assert tl.hangup["by"] == "gateway" and tl.hangup["at_s"] == pytest.approx(0.3, abs=0.15)

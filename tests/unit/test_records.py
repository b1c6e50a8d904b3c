"""The pure parts of call records (gateway/records/): the recording's sample clock (mixer), the WAV kept valid while
it grows, the call record built from call events, number masking, Standard Webhooks signatures, the retry backoff,
and the per-call tap's reply timing; then the recording writer's thread when its disk stalls or its queue is full
(real WAV files, no sockets): call set-up never waits for it."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
import wave
from pathlib import Path

import numpy as np
import pytest
import structlog
from standardwebhooks import Webhook

from gateway.call import events as ev
from gateway.records import recorder
from gateway.records.mixer import GAP_S, RATE, WINDOW_FRAMES, Mixer
from gateway.records.outbox import MAX_BACKOFF_S, backoff_s
from gateway.records.record import RecordBuilder, mask
from gateway.records.recorder import QUEUE_BATCHES, CallTap, RecordingWriter
from gateway.records.signing import signed_headers
from gateway.records.wav import StereoWav

FRAME = 160


def pcm_frame(value: int) -> bytes:
    return np.full(FRAME, value, dtype="<i2").tobytes()


def raw(payload: bytes) -> np.ndarray:
    return np.frombuffer(payload, dtype="<i2")


def mixer() -> Mixer:
    return Mixer(raw, raw)


# ---- the mixer: one sample clock -------------------------------------------------------------------------------------
def test_caller_frames_are_laid_end_to_end_whatever_their_jitter():
    m = mixer()
    arrivals = [0.02, 0.04, 0.13, 0.135, 0.14, 0.16, 0.18]  # a 90 ms stall, then a burst that catches up
    for i, t in enumerate(arrivals):
        m.caller(pcm_frame(i + 1), t)
    out = m.commit(len(arrivals) * FRAME).reshape(-1, 2)
    assert [int(out[i * FRAME, 0]) for i in range(len(arrivals))] == [1, 2, 3, 4, 5, 6, 7]
    assert not out[:, 1].any()  # nothing on the agent's channel


def test_a_caller_gap_longer_than_the_window_skips_forward_to_the_call_clock():
    m = mixer()
    t = 0.02
    for _ in range(10):
        m.caller(pcm_frame(1), t)
        t += 0.02
    t += 1.0  # the carrier sent nothing for a second
    for _ in range(WINDOW_FRAMES + 5):
        m.caller(pcm_frame(2), t)
        t += 0.02
    out = m.commit(int(t * RATE)).reshape(-1, 2)[:, 0]
    last = int(np.flatnonzero(out == 2)[-1]) + 1
    assert abs(last - round((t - 0.02) * RATE)) <= GAP_S * RATE  # the latest frame sits where it arrived
    # the gap became about a second of silence (inserted once the lateness proved persistent, not jitter)
    assert abs(int((out[:last] == 0).sum()) - RATE) <= GAP_S * RATE + FRAME


def test_the_first_caller_frame_goes_where_it_arrived():
    m = mixer()
    m.caller(pcm_frame(5), 0.5)
    out = m.commit(int(0.5 * RATE)).reshape(-1, 2)[:, 0]
    assert (out[: int(0.48 * RATE)] == 0).all() and (out[int(0.48 * RATE) :] == 5).all()


def test_agent_audio_goes_where_it_plays_and_a_clear_cuts_what_had_not_played():
    m = mixer()
    m.agent(pcm_frame(7) * 10, 1.0)  # 200 ms that start playing at 1.0 s
    m.clear(1.1)  # the carrier flushed what it had not played at 1.1 s
    m.agent(pcm_frame(9), 1.5)
    right = m.commit(2 * RATE).reshape(-1, 2)[:, 1]
    assert (right[:8000] == 0).all()
    assert (right[8000:8800] == 7).all() and (right[8800:12000] == 0).all()
    assert (right[12000:12160] == 9).all() and (right[12160:] == 0).all()


def test_commit_in_pieces_gives_the_same_samples_as_at_once():
    def feed(m: Mixer) -> None:
        for i in range(50):
            m.caller(pcm_frame(i), 0.02 * (i + 1))
        m.agent(pcm_frame(3) * 20, 0.33)

    whole, pieces = mixer(), mixer()
    feed(whole)
    feed(pieces)
    a = whole.commit(RATE)
    b = np.concatenate([pieces.commit(n) for n in (1234, 4000, 4001, RATE)])
    assert np.array_equal(a, b) and len(a) == 2 * RATE


# ---- the WAV: valid after every append -------------------------------------------------------------------------------
def test_the_wav_header_is_right_after_every_append_so_a_killed_process_leaves_a_readable_file(tmp_path: Path):
    path = tmp_path / "call.wav"
    w = StereoWav(path)
    for second in range(3):
        w.append(np.full(2 * RATE, second + 1, dtype="<i2").tobytes())
        # read it as another process would, with the file still open for writing
        with wave.open(str(path)) as r:
            assert (r.getnchannels(), r.getframerate(), r.getsampwidth()) == (2, RATE, 2)
            assert r.getnframes() == (second + 1) * RATE
            frames = np.frombuffer(r.readframes(r.getnframes()), dtype="<i2")
        assert frames[-1] == second + 1
    w.close()
    assert w.seconds == 3.0


# ---- the call record -------------------------------------------------------------------------------------------------
def test_the_record_holds_both_sides_the_barge_in_tools_keypresses_and_latencies():
    b = RecordBuilder(
        call_sid="CA1", stream_sid="MZ1", carrier="twilio", profile="default", from_="+15551234567",
        to="+15557654321", started_epoch_s=1_800_000_000.0,
    )  # fmt: skip
    for e in (
        ev.AgentSessionReady("sess_1", t=0.2),
        ev.AgentReplyStarted("r0", t=0.3),
        ev.AgentFirstAudio("r0", 120.0, t=0.4),
        ev.AgentTranscript("r0", "Hello!", False, t=1.0),
        ev.CallerSpeechStarted(t=2.0),
        ev.CallerSpeechStopped(t=3.0),
        ev.CallerTranscript("what time do you open", t=3.2),
        ev.AgentReplyStarted("r1", t=3.3),
        ev.AgentFirstAudio("r1", 500.0, t=3.5),
        ev.CallerKeypress(t=4.0),
        ev.ToolCalled("lookup", "c1", {"day": "monday"}, t=4.1),
        ev.ToolFinished("lookup", "c1", '{"open": "9"}', False, 80.0, t=4.18),
        ev.CallerSpeechStarted(t=5.0),
        ev.BargeIn("r1", "speech_started", 150, t=5.0),
        ev.AgentTranscript("r1", "We open at", True, t=5.1),
        ev.AgentResume(1, 300.0, t=6.0),
    ):
        b.event(e)
    doc = b.finish(
        {"outcome": "caller_hangup", "hung_up_by": "caller", "turns": 1},
        duration_s=8.0,
        first_sent={"r0": (0.4, 0.45), "r1": (3.5, 3.6)},
        play_end={"r0": 1.4, "r1": 5.0},
        clear_latencies_ms=[0.4],
        recording=None,
    )
    assert doc["schema_version"] == 1 and doc["session_id"] == "sess_1"
    assert (doc["from"], doc["to"]) == ("+*******4567", "+*******4321")
    assert doc["started_at"] == "2027-01-15T08:00:00.000Z" and doc["ended_at"] == "2027-01-15T08:00:08.000Z"
    assert [(u["speaker"], u["text"], u["start_s"], u["end_s"]) for u in doc["utterances"]] == [
        ("agent", "Hello!", 0.45, 1.4),
        ("caller", "what time do you open", 2.0, 3.0),
        ("agent", "We open at", 3.6, 5.0),
    ]
    assert doc["utterances"][2]["interrupted"] is True
    greeting, answer = doc["turns"]
    assert greeting["greeting"] and "latency_sent_ms" not in greeting
    assert answer["caller_end_s"] == 3.0 and answer["latency_received_ms"] == 500.0
    assert answer["latency_sent_ms"] == 500.0 and answer["latency_heard_ms"] == 600.0
    assert doc["barge_ins"] == [
        {"t": 5.0, "reply_id": "r1", "cause": "speech_started", "dropped_unplayed_ms": 150, "reaction_ms": 0.4}
    ]
    assert doc["tool_calls"] == [
        {"call_id": "c1", "tool": "lookup", "arguments": {"day": "monday"}, "start_s": 4.1,
         "result": '{"open": "9"}', "is_error": False, "duration_ms": 80.0}
    ]  # fmt: skip
    assert doc["dtmf"] == [{"t": 4.0}]  # when, never which digit
    assert doc["resumes"] == [{"t": 6.0, "attempts": 1, "gap_ms": 300.0}]


@pytest.mark.parametrize(
    ("number", "rule", "shown"),
    [
        ("+15551234567", "last4", "+*******4567"),
        ("sip:alice1234@pbx.example.com", "last4", "sip:*****1234@pbx.example.com"),
        ("+15551234567", "hidden", "***"),
        ("+15551234567", "none", "+15551234567"),
        ("123", "last4", "***"),
        ("", "last4", ""),
    ],
)
def test_numbers_are_masked_by_the_configured_rule(number: str, rule: str, shown: str):
    assert mask(number, rule) == shown


# ---- webhooks --------------------------------------------------------------------------------------------------------
def test_signatures_verify_with_the_standard_webhooks_reference_implementation():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"type":"call.ended","data":{}}'
    import time

    headers = signed_headers(b"k" * 32, "msg_1", int(time.time()), body)
    assert Webhook(secret).verify(body, headers) == {"type": "call.ended", "data": {}}
    tampered = {**headers, "webhook-id": "msg_2"}
    with pytest.raises(Exception, match="(?i)signature"):
        Webhook(secret).verify(body, tampered)


def test_retries_back_off_exponentially_with_jitter_up_to_half_an_hour():
    assert [backoff_s(n, 5.0, rand=lambda: 0.5) for n in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert backoff_s(30, 5.0, rand=lambda: 0.5) == MAX_BACKOFF_S
    assert backoff_s(1, 5.0, rand=lambda: 0.0) == pytest.approx(4.0)
    assert backoff_s(1, 5.0, rand=lambda: 1.0) == pytest.approx(6.0)


# ---- the per-call tap ------------------------------------------------------------------------------------------------
def test_the_tap_notes_each_replys_first_send_and_play_and_a_clear_cuts_its_end():
    tap = CallTap(100.0, record=True, bytes_per_s=8000)
    tap.sent("r1", b"\xff" * 160, 101.0, 101.0)
    tap.sent("r1", b"\xff" * 160, 101.0, 101.02)
    tap.sent("r2", b"\xff" * 1600, 102.0, 102.1)
    tap.cleared(102.15)
    assert tap.first_sent == {"r1": (1.0, 1.0), "r2": (2.0, pytest.approx(2.1))}
    assert tap.play_end["r1"] == pytest.approx(1.04) and tap.play_end["r2"] == pytest.approx(2.15)
    caller, times, agent = tap.take()
    assert caller == [] and len(agent) == 4 and agent[-1] == (None, 102.15)
    assert tap.take() == ([], [], [])


def test_the_writer_takes_the_calls_in_parts_each_once_per_round(tmp_path):
    """``tick(now, part, parts)`` hands over only that part's calls (gateway/records/recorder.py, TICK_PARTS): the
    app spreads the hand-over of every call's second of audio over the second instead of one burst on the loop."""
    writer = RecordingWriter()  # not started: tick only queues
    taps = [CallTap(100.0, record=True, bytes_per_s=8000) for _ in range(10)]
    for i, tap in enumerate(taps):
        writer.open(tap, tmp_path / f"{i}.wav", "audio/x-mulaw", 8000)
        tap.caller_audio(b"\xff" * 160, 100.5)
    writer.tick(101.0, 3, 10)
    pending = [bool(tap.take()[0]) for tap in taps]
    assert pending == [i != 3 for i in range(10)]
    for tap in taps:
        tap.caller_audio(b"\xff" * 160, 101.5)
    for part in range(5):
        writer.tick(102.0, part, 5)
    assert all(tap.take() == ([], [], []) for tap in taps)


def test_a_batch_is_placed_exactly_as_frame_by_frame():
    rng = np.random.default_rng(7)
    payloads = [rng.integers(-3000, 3000, FRAME, dtype="<i2").tobytes() for _ in range(80)]
    times = [0.3 + 0.02 * i + (0.09 if 20 <= i < 24 else 0.0) for i in range(40)]  # jitter
    times += [times[-1] + 0.8 + 0.02 * i for i in range(40)]  # then a gap
    agent = [(pcm_frame(i + 1), 0.5 + 0.02 * i) for i in range(30)]
    agent[10:10] = [(None, 0.68)]  # a clear among them
    agent.append((pcm_frame(99), 2.0))
    one, batch = mixer(), Mixer(raw, raw, agent_bytes_per_s=2 * RATE)
    for p, t in zip(payloads, times, strict=True):
        one.caller(p, t)
    for data, t in agent:
        one.clear(t) if data is None else one.agent(data, t)
    batch.add_caller(payloads[:33], times[:33])
    batch.add_caller(payloads[33:], times[33:])
    batch.add_agent(agent)
    end = int(4 * RATE)
    assert np.array_equal(one.commit(end), batch.commit(end))


# ---- the writer thread on a stalled disk: never the call's set-up ----------------------------------------------------
async def test_a_stalled_recording_disk_never_holds_the_loops_default_executor(tmp_path, monkeypatch):
    """Nothing added for records slows call set-up. With the writer thread stuck in a write (a hung disk or NFS)
    its queue fills (the tick drops batches, as designed), yet calls keep starting and ending: their open and close
    must not park threads of the loop's *default* executor in a blocking put, or everything else that uses it waits
    too: loop.getaddrinfo (aiohttp's default resolver, so every agent socket opened to a host name),
    asyncio.to_thread (FileStorage). A slow disk must not stop new calls from reaching the agent."""
    gate = threading.Event()
    append = StereoWav.append

    def stalled(self: StereoWav, data: bytes) -> None:
        gate.wait(30)
        append(self, data)

    monkeypatch.setattr(StereoWav, "append", stalled)
    writer = RecordingWriter()
    writer.start()
    now = time.monotonic()
    first = CallTap(now - 10, record=True, bytes_per_s=8000)
    writer.open(first, tmp_path / "first.wav", "audio/pcmu", 8000)
    writer.tick(now)  # the thread takes it and hangs in the write
    await asyncio.sleep(0.2)
    for _ in range(QUEUE_BATCHES):  # the queue fills (a few seconds of a busy gateway); further batches drop
        writer.tick(now)
    for i in range(40):  # calls start meanwhile
        writer.open(CallTap(now, record=True, bytes_per_s=8000), tmp_path / f"{i}.wav", "audio/pcmu", 8000)
    await asyncio.sleep(0.2)
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(3):
            await loop.getaddrinfo("localhost", 80)
        waited = None
    except TimeoutError:
        waited = time.monotonic() - t0
    finally:
        gate.set()
        await asyncio.to_thread(writer.stop)
    assert waited is None, f"a DNS lookup on the loop waited {waited:.1f} s+ behind a stalled recording disk"


LOUD = b"\x10" * FRAME  # a G.711 u-law frame far from silence


def caller_second(tap: CallTap, at: float) -> None:
    for i in range(50):
        tap.caller_audio(LOUD, at + 0.02 * i)


def channels(path: Path) -> np.ndarray:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").reshape(-1, 2)


async def test_a_call_that_starts_and_ends_on_a_full_queue_is_written_open_audio_close_in_order(tmp_path):
    """A full queue drops a tick's batch, but the call's open and close never wait for room, and its last batch has
    room of its own: handled in their order (open, batches, close), the call's last second is in the file."""
    drops: list[int] = []
    writer = RecordingWriter(on_drop=lambda: drops.append(1))  # started at the end: until then nothing is taken
    tap = CallTap(100.0, record=True, bytes_per_s=8000)
    writer.open(tap, tmp_path / "call.wav", "audio/pcmu", 8000)
    for _ in range(QUEUE_BATCHES):
        writer.tick(100.0)  # the queue fills
    caller_second(tap, 100.0)
    writer.tick(101.0)  # no room: that second is dropped, counted
    assert drops == [1]
    caller_second(tap, 102.0)
    closing = asyncio.create_task(writer.close(tap, 103.0))
    await asyncio.sleep(0)
    assert drops == [1] and not closing.done()  # its last batch went in: nothing waits for the thread
    writer.start()
    try:
        result = await asyncio.wait_for(closing, 30)
    finally:
        await asyncio.to_thread(writer.stop)
    assert result.ok and result.seconds == pytest.approx(3.0)
    caller = channels(result.path)[:, 0]
    assert not caller[: int(1.9 * RATE)].any()  # the dropped second: silence
    assert caller[int(2.05 * RATE) : int(2.95 * RATE)].all()  # the last second, as said


async def test_a_calls_last_batch_beyond_the_room_kept_for_it_is_dropped_counted_and_logged(tmp_path, monkeypatch):
    """A disk hung long enough fills even the room kept for calls' ends: memory stays bounded, so that call's last
    batch is dropped and counted, and the recording says it is not whole (``recording.failed``); the call still
    ends at once and its file still has the call's length."""
    monkeypatch.setattr(recorder, "_END_BATCHES", 0)
    drops: list[int] = []
    failures: list[str] = []
    writer = RecordingWriter(on_drop=lambda: drops.append(1), on_failure=failures.append)
    tap = CallTap(100.0, record=True, bytes_per_s=8000)
    writer.open(tap, tmp_path / "call.wav", "audio/pcmu", 8000)
    for _ in range(QUEUE_BATCHES):
        writer.tick(100.0)
    caller_second(tap, 100.0)
    closing = asyncio.create_task(writer.close(tap, 101.0))
    await asyncio.sleep(0)
    assert drops == [1]
    with structlog.testing.capture_logs() as logs:
        writer.start()
        try:
            result = await asyncio.wait_for(closing, 30)
        finally:
            await asyncio.to_thread(writer.stop)
    assert not result.ok and "last batch was dropped" in result.error and failures == ["dropped"]
    assert [x["path"] for x in logs if x["event"] == "recording.failed"] == [str(tmp_path / "call.wav")]
    assert result.seconds == pytest.approx(1.0) and not channels(result.path).any()

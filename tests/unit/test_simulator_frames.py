"""What the simulated carriers send (gateway/simulator/sides/): every media message carries exactly 20 ms of audio in
the carrier's format at every rate it offers (Exotel: its ~100 ms messages, 5 frames), never an empty payload or a
burst; the L16 byte order is the simulator's own and can be forced; advice in a carrier's docs is a warning, not a
protocol error; and the report's tone check tells a voice from what a wrong byte order makes of it."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest

from gateway.audio import g711
from gateway.carriers import exotel, plivo, signalwire, telnyx, twilio, vonage
from gateway.carriers.spec import AnswerContext, Call
from gateway.simulator.carrier_side import CallIds, SideOptions, new_carrier_side
from gateway.simulator.errors import GatewayProtocolError
from gateway.simulator.sides.common import ASSUMED_L16_ORDER, FrameResampler, swap16
from gateway.simulator.tone_check import tone_check
from gateway.simulator.twilio_side import GatewayMedia
from tests.support.audio import voice_like

IDS = CallIds("CA" + "1" * 32, "AC" + "0" * 32, "MZ" + "2" * 32, "+15550001111", "+15550002222")
CALL = Call(IDS.call_sid, called=IDS.to, caller=IDS.from_)

# (carrier, its settings for this format, simulator options) -> bytes of 20 ms on the wire
CASES: list[tuple[str, Any, SideOptions, int]] = [
    ("twilio", twilio.SPEC.options(), SideOptions(), 160),
    ("signalwire", signalwire.SignalWireSettings(codec="PCMU"), SideOptions(), 160),
    ("signalwire", signalwire.SignalWireSettings(codec="L16"), SideOptions(), 320),
    ("signalwire", signalwire.SignalWireSettings(codec="L16@16000h"), SideOptions(), 640),
    ("telnyx", telnyx.TelnyxSettings(codec="PCMA"), SideOptions(), 160),
    ("telnyx", telnyx.TelnyxSettings(), SideOptions(telnyx_codec="L16@8000"), 320),
    ("telnyx", telnyx.TelnyxSettings(), SideOptions(telnyx_codec="L16@16000"), 640),
    ("plivo", plivo.PlivoSettings(content_type="audio/x-mulaw;rate=8000"), SideOptions(), 160),
    ("plivo", plivo.PlivoSettings(content_type="audio/x-l16;rate=8000"), SideOptions(), 320),
    ("plivo", plivo.PlivoSettings(content_type="audio/x-l16;rate=16000"), SideOptions(), 640),
    ("vonage", vonage.VonageSettings(sample_rate=8000), SideOptions(), 320),
    ("vonage", vonage.VonageSettings(sample_rate=16000), SideOptions(), 640),
    ("exotel", exotel.ExotelSettings(sample_rate=8000), SideOptions(), 320),
    ("exotel", exotel.ExotelSettings(sample_rate=16000), SideOptions(), 640),
]
SPECS = {s.name: s for s in (twilio.SPEC, signalwire.SPEC, telnyx.SPEC, plivo.SPEC, vonage.SPEC, exotel.SPEC)}


def _side(carrier: str, settings: Any, options: SideOptions) -> tuple[Any, Any]:
    side = new_carrier_side(carrier, IDS, options)
    answer = SPECS[carrier].answer(CALL, AnswerContext("v2.tok", "wss://gw.example.com", settings))
    target = side.read_answer(answer.body, answer.content_type, "https://gw.example.com/voice")
    side.start(target)
    return side, target


def _payloads(carrier: str, messages: list[Any]) -> list[bytes]:
    out = []
    for m in messages:
        if isinstance(m, bytes):  # Vonage: binary PCM
            out.append(m)
        else:
            msg = json.loads(m)
            if msg.get("event") == "media":
                out.append(base64.b64decode(msg["media"]["payload"]))
    return out


def _voice(seconds: float = 1.0) -> bytes:
    return g711.pcm16_to_ulaw(voice_like(seconds, 8000))


@pytest.mark.parametrize(("carrier", "settings", "options", "frame_bytes"), CASES, ids=lambda v: str(v)[:24])
def test_every_media_message_carries_exactly_20_ms_at_every_rate(carrier, settings, options, frame_bytes):
    side, _target = _side(carrier, settings, options)
    voice = _voice(1.0)
    sent = []
    for i in range(50):  # one second, one 20 ms frame per tick as the caller's clock sends them
        sent += side.media(voice[i * 160 : (i + 1) * 160], i * 20)
    sent += [m for m in side.stop() if isinstance(m, str) and '"media"' in m]  # Telnyx: a held frame
    payloads = _payloads(carrier, sent)
    per_message = frame_bytes * (5 if carrier == "exotel" else 1)  # Exotel sends ~100 ms per message
    assert {len(p) for p in payloads} == {per_message}
    assert len(payloads) * per_message == 50 * frame_bytes


def test_the_16_khz_frames_carry_the_audio_not_just_the_right_size():
    side, _ = _side("vonage", vonage.VonageSettings(sample_rate=16000), SideOptions())
    tone = g711.pcm16_to_ulaw((np.sin(2 * np.pi * 1013 * np.arange(8000) / 8000) * 8000).astype("<i2").tobytes())
    pcm = b"".join(m for i in range(50) for m in side.media(tone[i * 160 : (i + 1) * 160], i * 20))
    x = np.frombuffer(pcm, dtype="<i2").astype(np.float64)[1600:]  # after the filter's first frames
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    assert abs(np.argmax(spectrum) * 16000 / len(x) - 1013) < 5
    assert 6000 < np.max(np.abs(x)) < 9000  # the level survives (μ-law rounding aside)


@pytest.mark.parametrize(("up", "down"), [(8000, 16000), (8000, 24000), (16000, 8000), (24000, 8000)])
def test_the_frame_resampler_gives_exact_sizes_whatever_the_chunks(up, down):
    r = FrameResampler(up, down)
    chunk = up // 50 * 2
    sizes = [len(r.process(bytes(chunk))) for _ in range(20)]
    assert sizes == [down // 50 * 2] * 20
    with pytest.raises(ValueError):
        FrameResampler(8000, 11025)


def test_the_l16_byte_order_is_the_simulators_own_and_can_be_forced():
    assert ASSUMED_L16_ORDER == {"signalwire": "big", "telnyx": "big", "plivo": "little", "vonage": "little",
                                 "exotel": "little"}  # fmt: skip
    frame = _voice(0.02)
    little = _payloads("telnyx", _side("telnyx", telnyx.TelnyxSettings(), SideOptions("little", "L16@8000"))[0]
                       .media(frame, 0))[0]  # fmt: skip
    big = _payloads("telnyx", _side("telnyx", telnyx.TelnyxSettings(), SideOptions("assumed", "L16@8000"))[0]
                    .media(frame, 0))[0]  # fmt: skip
    assert big == swap16(little) and big != little
    with pytest.raises(ValueError):
        SideOptions(l16_byte_order="middle")


def test_the_telnyx_l16_start_says_l16_at_the_rate_played():
    side = new_carrier_side("telnyx", IDS, SideOptions(telnyx_codec="L16@16000"))
    answer = telnyx.SPEC.answer(CALL, AnswerContext("v2.tok", "wss://gw", telnyx.TelnyxSettings()))
    target = side.read_answer(answer.body, answer.content_type, "https://gw/voice")
    (start,) = side.start(target)
    assert json.loads(start)["start"]["media_format"] == {"encoding": "L16", "sample_rate": 16000, "channels": 1}


def test_advice_in_the_carriers_docs_is_a_warning_and_a_stated_rule_an_error():
    side, _ = _side("exotel", exotel.ExotelSettings(sample_rate=8000), SideOptions())
    small = {
        "event": "media",
        "stream_sid": IDS.stream_sid,
        "media": {"payload": base64.b64encode(bytes(1000)).decode()},
    }
    assert isinstance(side.parse(json.dumps(small)), GatewayMedia)  # played, with a warning
    assert len(side.warnings) == 2 and "3,200" in side.warnings[0] and "320" in side.warnings[1]
    side, _ = _side("plivo", plivo.PlivoSettings(content_type="audio/x-mulaw;rate=8000"), SideOptions())
    play = {"event": "playAudio", "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000,
                                            "payload": base64.b64encode(bytes(160)).decode(), "extra": 1}}  # fmt: skip
    assert isinstance(side.parse(json.dumps(play)), GatewayMedia) and "extra" in side.warnings[0]
    # Telnyx states 20 ms to 30 s per RTP-mode message: less is an error.
    side, _ = _side("telnyx", telnyx.TelnyxSettings(), SideOptions())
    short = {"event": "media", "media": {"payload": base64.b64encode(bytes(80)).decode()}}
    with pytest.raises(GatewayProtocolError, match="20 ms to 30 s"):
        side.parse(json.dumps(short))


def test_the_tone_check_tells_a_voice_from_a_swapped_one():
    voice = _voice(2.0)
    swapped = g711.pcm16_to_ulaw(swap16(g711.ulaw_to_pcm16(voice)))
    clean, noise = tone_check(voice), tone_check(swapped)
    assert not clean.noise and clean.flatness is not None and clean.flatness < 0.1 and clean.loud_s > 1.0
    assert noise.noise and noise.flatness is not None and noise.flatness > 0.4
    assert tone_check(bytes([0xFF]) * 8000) == tone_check(b"")  # silence is not judged

"""A profile's conversation keys (gateway/profile_options.py): typed session fields, a stored agent, idle, hold
audio, voicemail and warm transfer settings, and the start-up errors that name the bad key."""

from __future__ import annotations

import wave
from pathlib import Path

import pytest

from gateway.call.setup import session_config, stored_agent_update
from gateway.config import Profile, load_settings
from gateway.errors import ConfigError
from gateway.profile_options import HoldAudioSettings, TurnDetection, input_options

ENV = {"GATEWAY_TOKEN_SECRET": "test-secret"}
TOOLS = [{"type": "function", "name": "end_call", "description": "", "parameters": {}}]


def load(tmp_path: Path, profile: str) -> Profile:
    path = tmp_path / "gateway.toml"
    path.write_text(f"[profiles.default]\n{profile}\n", encoding="utf-8")
    return load_settings(path, env=ENV).profiles["default"]


def write_wav(path: Path, *, rate: int = 8000, channels: int = 1, seconds: float = 1.0) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"\x10\x00" * int(rate * seconds) * channels)
    return path


def test_every_session_field_is_typed_and_reaches_the_first_session_update(tmp_path):
    p = load(
        tmp_path,
        'keyterms = ["Harbour Kitchen"]\ntranscription_mode = "max_accuracy"\n'
        'transcription_prompt = "A restaurant booking line."\nlanguage_codes = ["en", "es"]\n'
        'voice_focus = "near-field"\nvoice_focus_threshold = 0.4\ncontinuous_partials = true\nvolume = 80\n'
        "[profiles.default.turn_detection]\nvad_threshold = 0.3\nmin_silence = 500\nmax_silence = 2000\n"
        'interrupt_response = true\ninterruption_delay = 200\nuninterruptible_turns = ["greeting"]\n',
    )
    assert p.turn_detection == TurnDetection(0.3, 500, 2000, True, 200, ("greeting",))
    session = session_config(p, "pcmu", TOOLS)
    assert session["input"] == {
        "format": {"encoding": "audio/pcmu"},
        "keyterms": ["Harbour Kitchen"],
        "turn_detection": {
            "vad_threshold": 0.3,
            "min_silence": 500,
            "max_silence": 2000,
            "interrupt_response": True,
            "interruption_delay": 200,
            "uninterruptible_turns": ["greeting"],
        },
        "transcription_mode": "max_accuracy",
        "transcription_prompt": "A restaurant booking line.",
        "voice_focus": "near-field",
        "language_codes": ["en", "es"],
        "voice_focus_threshold": 0.4,
        "continuous_partials": True,
    }
    assert session["output"]["volume"] == 80
    assert stored_agent_update(p, "pcmu", TOOLS) is None  # no stored agent: nothing follows


def test_unset_session_fields_are_not_sent():
    assert input_options(Profile()) == {}
    assert session_config(Profile(), "pcm24k", [])["input"] == {
        "format": {"encoding": "audio/pcm", "sample_rate": 24000}
    }
    assert "volume" not in session_config(Profile(), "pcm24k", [])["output"]


def test_a_stored_agent_is_named_alone_first_and_the_profile_follows_on_top(tmp_path):
    p = load(tmp_path, 'agent_id = "agent_0123"\nkeyterms = ["Kitchen"]\nsystem_prompt = "Be brief."\nvolume = 70')
    assert session_config(p, "pcmu", TOOLS) == {"agent_id": "agent_0123"}
    assert stored_agent_update(p, "pcmu", TOOLS) == {
        "input": {"format": {"encoding": "audio/pcmu"}, "keyterms": ["Kitchen"]},
        "system_prompt": "Be brief.",
        "output": {"volume": 70},
        "tools": TOOLS,
    }
    # the built-in default prompt is not sent over the stored agent's own, and tools = [] keeps the agent's tools
    bare = load(tmp_path, 'agent_id = "agent_0123"\ntools = []')
    assert stored_agent_update(bare, "pcmu", []) == {"input": {"format": {"encoding": "audio/pcmu"}}}


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("[profiles.default.turn_detection]\nvad_threshold = 1.5", "profiles.default.turn_detection.vad_threshold"),
        ('[profiles.default.turn_detection]\nvad_threshold = "x"', "profiles.default.turn_detection.vad_threshold"),
        ("[profiles.default.turn_detection]\nmin_silence = 900\nmax_silence = 500", "turn_detection.max_silence"),
        ('[profiles.default.turn_detection]\nuninterruptible_turns = ["x"]', "uninterruptible_turns[0]"),
        ("[profiles.default.turn_detection]\nwhatever = 1", "profiles.default.turn_detection.whatever"),
        ('transcription_mode = "fast"', "profiles.default.transcription_mode"),
        ('transcription_prompt = "' + "x" * 1751 + '"', "profiles.default.transcription_prompt"),
        ('language_codes = ["english language"]', "profiles.default.language_codes[0]"),
        ('voice_focus = "medium"', "profiles.default.voice_focus"),
        ("voice_focus_threshold = 2.0", "profiles.default.voice_focus_threshold"),
        ("volume = 101", "profiles.default.volume"),
        ('agent_id = "agent 1"', "profiles.default.agent_id"),
        ("[profiles.default.idle]\nafter_s = 0.1", "profiles.default.idle.after_s"),
        ("[profiles.default.idle]\nafter_s = 5\nmax_prompts = 0", "profiles.default.idle.max_prompts"),
        ('[profiles.default.idle]\ninstructions = " "', "profiles.default.idle.instructions"),
        ("[profiles.default.hold_audio]\nafter_ms = 10", "profiles.default.hold_audio.after_ms"),
        ("[profiles.default.voicemail]\nbeep_timeout_s = 0", "profiles.default.voicemail.beep_timeout_s"),
        ("[profiles.default.warm_transfer]\ntimeout_s = 500", "profiles.default.warm_transfer.timeout_s"),
    ],
)
def test_bad_conversation_settings_fail_start_up_naming_the_key(tmp_path, toml, key):
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, toml)
    assert key in str(exc.value)


@pytest.mark.parametrize(
    ("kw", "why"),
    [({"rate": 16000}, "8 kHz mono"), ({"channels": 2}, "8 kHz mono"), ({"seconds": 31.0}, "0..30 s")],
)
def test_a_hold_wav_that_is_not_8khz_mono_or_is_too_long_fails_start_up(tmp_path, kw, why):
    write_wav(tmp_path / "hold.wav", **kw)
    with pytest.raises(ConfigError) as exc:
        load(tmp_path, '[profiles.default.hold_audio]\nenabled = true\nwav = "hold.wav"')
    assert str(exc.value).startswith("profiles.default.hold_audio.wav: ") and why in str(exc.value)


def test_a_missing_hold_wav_fails_start_up_and_a_good_one_loads(tmp_path):
    with pytest.raises(ConfigError, match=r"profiles\.default\.hold_audio\.wav: .*does not exist"):
        load(tmp_path, '[profiles.default.hold_audio]\nwav = "nope.wav"')
    write_wav(tmp_path / "hold.wav", seconds=2.0)
    p = load(tmp_path, '[profiles.default.hold_audio]\nenabled = true\nwav = "hold.wav"')
    assert p.hold_audio.wav == "hold.wav" and p.hold_audio.enabled


def test_the_bundled_hold_sound_is_what_its_script_makes_soft_and_loops_without_a_click():
    import importlib.util

    import numpy as np

    from gateway.audio import g711
    from gateway.hold_sound import BUNDLED_HOLD, hold_sound_for

    spec = importlib.util.spec_from_file_location("make_hold_sound", Path("scripts/make_hold_sound.py").resolve())
    assert spec is not None and spec.loader is not None
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    committed = BUNDLED_HOLD.read_bytes()
    assert script.render() == committed  # generated, deterministic: a re-run gives the committed bytes
    assert len(committed) % 160 == 0 and len(committed) == 4 * 8000
    pcm = np.frombuffer(g711.ulaw_to_pcm16(committed), dtype="<i2").astype(np.float64)
    assert 0.05 * 32768 < np.max(np.abs(pcm)) < 0.12 * 32768  # soft: about -20 dBFS at its peak
    assert np.max(np.abs(pcm[-80:])) < 0.002 * 32768 and np.max(np.abs(pcm[:8])) < 0.01 * 32768  # quiet seam
    assert hold_sound_for(Profile(hold_audio=HoldAudioSettings(enabled=True)), Path(".")) == committed
    assert hold_sound_for(Profile(), Path(".")) == b""  # off: nothing loaded

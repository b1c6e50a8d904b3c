"""A profile's conversation settings, typed and checked at start-up (docs/reference/configuration.md#conversation):
the Voice Agent API session fields (docs/architecture/agent-api.md#session-update), a stored agent (``agent_id``),
the idle caller, hold audio, voicemail and warm transfer. Pure apart from :func:`check_profiles` reading a profile's
hold WAV once, at start-up.

:class:`ConversationProfile` is the base of :class:`gateway.config.Profile`, so its keys are ordinary profile keys
(``[profiles.NAME]``, ``[profiles.NAME.idle]``…); the loader of ``gateway.config`` builds them, and
:func:`check_profiles` checks their ranges, naming the bad key.
"""

from __future__ import annotations

import math
import wave
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ConfigError

__all__ = [
    "HOLD_WAV_MAX_S",
    "TRANSCRIPTION_MODES",
    "UNINTERRUPTIBLE_TURNS",
    "VOICE_FOCUS",
    "ConversationProfile",
    "HoldAudioSettings",
    "IdleSettings",
    "TurnDetection",
    "VoicemailSettings",
    "WarmTransferSettings",
    "check_profiles",
    "hold_wav_ulaw",
    "input_options",
]

VOICE_FOCUS = ("near-field", "far-field")
TRANSCRIPTION_MODES = ("min_latency", "balanced", "max_accuracy")
UNINTERRUPTIBLE_TURNS = ("greeting", "dtmf_prompt", "tool_refused_ask")
#: A profile's hold sound loops; a long file is a mistake (and memory per profile).
HOLD_WAV_MAX_S = 30.0
_MAX_KEYTERMS = 100
_MAX_TRANSCRIPTION_PROMPT = 1750


@dataclass(frozen=True)
class TurnDetection:
    """``input.turn_detection`` (docs/architecture/agent-api.md#session-update). Unset fields (None) are not sent:
    the service then adapts to each speaker, which its docs advise."""

    vad_threshold: float | None = None  # 0..1, lower is more sensitive
    min_silence: int | None = None  # ms of silence for a confident end of turn
    max_silence: int | None = None  # ms of silence that forces the end of a turn
    interrupt_response: bool | None = None  # false: the caller cannot barge in
    interruption_delay: int | None = None  # ms
    uninterruptible_turns: tuple[str, ...] = ()  # greeting | dtmf_prompt | tool_refused_ask

    @property
    def interruptible(self) -> bool:
        return self.interrupt_response is not False

    def wire(self) -> dict[str, Any] | None:
        out: dict[str, Any] = {
            k: v
            for k, v in (
                ("vad_threshold", self.vad_threshold),
                ("min_silence", self.min_silence),
                ("max_silence", self.max_silence),
                ("interrupt_response", self.interrupt_response),
                ("interruption_delay", self.interruption_delay),
            )
            if v is not None
        }
        if self.uninterruptible_turns:
            out["uninterruptible_turns"] = list(self.uninterruptible_turns)
        return out or None


@dataclass(frozen=True)
class IdleSettings:
    """``[profiles.NAME.idle]``: a caller who says nothing after the agent finished speaking (off when after_s = 0)."""

    after_s: float = 0.0
    max_prompts: int = 2
    instructions: str = "The caller has said nothing for a while. Briefly ask whether they are still there."
    goodbye: str = "The caller is not answering. Say a short, polite goodbye; the call will end."


@dataclass(frozen=True)
class HoldAudioSettings:
    """``[profiles.NAME.hold_audio]``: a soft looped sound while a tool runs longer than after_ms (a hold-mode tool:
    all along). ``wav``: a 16-bit PCM, 8 kHz mono WAV (relative to the config directory); empty: the bundled one."""

    enabled: bool = False
    after_ms: int = 1500
    wav: str = ""


@dataclass(frozen=True)
class VoicemailSettings:
    """``[profiles.NAME.voicemail]``: what an outbound call answered by a machine leaves after the beep (the agent
    speaks it: ``reply.create`` with these instructions); empty: hang up without a message."""

    message: str = ""
    beep_timeout_s: float = 30.0  # no end of greeting in this long: leave the message anyway


@dataclass(frozen=True)
class WarmTransferSettings:
    """``[profiles.NAME.warm_transfer]``: ``transfer_call`` with mode "warm" (Twilio)."""

    timeout_s: int = 20  # the human has this long to answer
    whisper_prefix: str = "Incoming transfer from the voice agent."


@dataclass(frozen=True)
class ConversationProfile:
    """The conversation keys of a profile (the base of :class:`gateway.config.Profile`)."""

    # A stored agent (Voice Agent API): configured once on the provider's side. With it the first session.update
    # carries agent_id alone, as the protocol requires; the fields below that are set follow once it is ready.
    agent_id: str = ""
    keyterms: tuple[str, ...] = ()
    turn_detection: TurnDetection = field(default_factory=TurnDetection)
    transcription_mode: str = ""  # min_latency | balanced | max_accuracy; empty: the service's default
    transcription_prompt: str = ""
    language_codes: tuple[str, ...] = ()
    voice_focus: str = ""  # near-field | far-field; empty: the service's default
    voice_focus_threshold: float | None = None
    continuous_partials: bool | None = None
    volume: int | None = None  # output.volume 0..100
    idle: IdleSettings = field(default_factory=IdleSettings)
    hold_audio: HoldAudioSettings = field(default_factory=HoldAudioSettings)
    voicemail: VoicemailSettings = field(default_factory=VoicemailSettings)
    warm_transfer: WarmTransferSettings = field(default_factory=WarmTransferSettings)


def input_options(p: ConversationProfile) -> dict[str, Any]:
    """The profile's ``session.input`` fields that are set (the format aside)."""
    out: dict[str, Any] = {}
    if p.keyterms:
        out["keyterms"] = list(p.keyterms)
    if (td := p.turn_detection.wire()) is not None:
        out["turn_detection"] = td
    for key in ("transcription_mode", "transcription_prompt", "voice_focus"):
        if value := getattr(p, key):
            out[key] = value
    if p.language_codes:
        out["language_codes"] = list(p.language_codes)
    for key in ("voice_focus_threshold", "continuous_partials"):
        if (value := getattr(p, key)) is not None:
            out[key] = value
    return out


def hold_wav_ulaw(path: Path) -> bytes:
    """A hold WAV as 8 kHz μ-law (whole 20 ms frames). Raises ConfigError (without the key: the caller adds it)."""
    from .audio import g711

    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            raw = w.readframes(n)
    except FileNotFoundError:
        raise ConfigError(f"{path} does not exist") from None
    except (wave.Error, EOFError) as exc:
        raise ConfigError(f"{path} is not a PCM WAV file ({exc})") from None
    if channels != 1 or rate != 8000 or width != 2:
        raise ConfigError(
            f"{path} must be 16-bit PCM, 8 kHz mono (it is {width * 8}-bit, {rate} Hz, {channels} channel(s)); "
            "convert it, e.g. sox in.wav -r 8000 -c 1 -b 16 hold.wav"
        )
    if n == 0 or n / rate > HOLD_WAV_MAX_S:
        raise ConfigError(f"{path} must be 0..{HOLD_WAV_MAX_S:g} s long (it is {n / rate:.1f} s)")
    ulaw = g711.pcm16_to_ulaw(raw)
    return ulaw[: len(ulaw) - len(ulaw) % 160] or ulaw.ljust(160, b"\xff")


def check_profiles(profiles: Mapping[str, ConversationProfile], config_dir: Path) -> None:
    """Start-up checks of every profile's conversation keys; raises ConfigError naming the bad key."""
    for name, p in profiles.items():
        _check_one(f"profiles.{name}", p, config_dir)


def _check_one(key: str, p: ConversationProfile, config_dir: Path) -> None:
    def need(cond: bool, sub: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}.{sub}: {msg}")

    need(p.agent_id == p.agent_id.strip() and " " not in p.agent_id, "agent_id", "must not contain spaces")
    need(len(p.keyterms) <= _MAX_KEYTERMS, "keyterms", f"at most {_MAX_KEYTERMS} entries")
    need(all(t.strip() for t in p.keyterms), "keyterms", "entries must not be empty")
    td = p.turn_detection
    need(td.vad_threshold is None or 0.0 <= td.vad_threshold <= 1.0, "turn_detection.vad_threshold", "must be 0..1")
    for sub in ("min_silence", "max_silence", "interruption_delay"):
        v = getattr(td, sub)
        need(v is None or 0 <= v <= 60000, f"turn_detection.{sub}", "must be 0..60000 (ms)")
    need(
        td.min_silence is None or td.max_silence is None or td.max_silence >= td.min_silence,
        "turn_detection.max_silence",
        "must be at least min_silence",
    )
    for i, turn in enumerate(td.uninterruptible_turns):
        need(
            turn in UNINTERRUPTIBLE_TURNS,
            f"turn_detection.uninterruptible_turns[{i}]",
            f"must be one of {', '.join(UNINTERRUPTIBLE_TURNS)}",
        )
    need(
        p.transcription_mode in ("", *TRANSCRIPTION_MODES),
        "transcription_mode",
        f"must be one of {', '.join(TRANSCRIPTION_MODES)}",
    )
    need(
        len(p.transcription_prompt) <= _MAX_TRANSCRIPTION_PROMPT,
        "transcription_prompt",
        f"at most {_MAX_TRANSCRIPTION_PROMPT} characters",
    )
    for i, code in enumerate(p.language_codes):
        need(
            2 <= len(code) <= 8 and code.replace("-", "").isalpha(),
            f"language_codes[{i}]",
            "must be a language code such as en, es or pt-BR",
        )
    need(p.voice_focus in ("", *VOICE_FOCUS), "voice_focus", f"must be one of {', '.join(VOICE_FOCUS)}")
    need(
        p.voice_focus_threshold is None or 0.0 <= p.voice_focus_threshold <= 1.0,
        "voice_focus_threshold",
        "must be 0..1",
    )
    need(p.volume is None or 0 <= p.volume <= 100, "volume", "must be 0..100")
    idle = p.idle
    need(idle.after_s == 0 or 0.5 <= idle.after_s <= 600, "idle.after_s", "must be 0 (off) or 0.5..600")
    need(1 <= idle.max_prompts <= 10, "idle.max_prompts", "must be 1..10")
    need(bool(idle.instructions.strip()), "idle.instructions", "must not be empty")
    need(bool(idle.goodbye.strip()), "idle.goodbye", "must not be empty")
    need(100 <= p.hold_audio.after_ms <= 60000, "hold_audio.after_ms", "must be 100..60000")
    if p.hold_audio.wav:
        try:
            hold_wav_ulaw(resolve(config_dir, p.hold_audio.wav))
        except ConfigError as exc:
            raise ConfigError(f"{key}.hold_audio.wav: {exc}") from None
    vm = p.voicemail
    need(
        math.isfinite(vm.beep_timeout_s) and 1 <= vm.beep_timeout_s <= 120,
        "voicemail.beep_timeout_s",
        "must be 1..120",
    )
    wt = p.warm_transfer
    need(5 <= wt.timeout_s <= 120, "warm_transfer.timeout_s", "must be 5..120")
    need(len(wt.whisper_prefix) <= 500, "warm_transfer.whisper_prefix", "at most 500 characters")


def resolve(config_dir: Path, path: str) -> Path:
    p = Path(path)
    return p if p.is_absolute() else config_dir / p

"""Typed settings of the embedded local agent. Pure: no environment reads except in :func:`settings_from_env`.

One frozen :class:`LocalAgentSettings` is built at start-up (by the gateway from its TOML config with
:func:`settings_from_app`, or by the standalone runner from flags), completed with the secrets the environment
holds by :func:`settings_from_env`, validated there, and passed explicitly to
:func:`gateway.local_agent.app.create_local_agent_app`. Secrets (the API key, the token secret, the LLM key) travel
only inside these objects, never in their ``repr`` and never in logs. docs/reference/local-agent-api.md#settings.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.errors import ConfigError

if TYPE_CHECKING:
    from gateway.config import Settings

__all__ = [
    "DEFAULT_INTENTS_PATH",
    "default_data_dir",
    "DEFAULT_VOICES",
    "LlmSettings",
    "LocalAgentSettings",
    "SettingsError",
    "settings_from_app",
    "settings_from_env",
]

#: Voice ids the local agent accepts in ``output.voice`` (the union of the mid-2026 docs list and the list the live
#: service accepted in September 2026; docs/architecture/agent-api.md#voices). The local agent speaks every one of
#: them with its single Piper voice; the list only exists so clients written for the cloud API validate the same way.
DEFAULT_VOICES: tuple[str, ...] = (
    "ivy", "james", "tyler", "winter", "sam", "mia", "bella", "david", "jack", "kyle", "helen", "martha", "river",
    "emma", "victor", "eleanor", "sophie", "oliver", "arjun", "ethan", "dmitri", "lukas", "lena", "pierre", "mina",
    "ren", "mei", "joon", "giulia", "luca", "lucia", "hana", "mateo", "diego", "claire", "alba", "anna", "charles",
    "estelle", "eve", "george", "giovanni", "iris", "jane", "jean", "juergen", "lola", "mary", "michael", "paul",
    "rafael", "reid", "vera",
)  # fmt: skip

#: The committed demo persona (written with the speech models; see docs/how-to/local-agent.md#intents-file).
DEFAULT_INTENTS_PATH = Path(__file__).resolve().parents[2] / "config" / "local_agent" / "intents.toml"


class SettingsError(ConfigError, ValueError):
    """A setting is invalid (config invalid: a :class:`~gateway.errors.ConfigError`). The message starts with the
    bad key (without the ``local_agent.`` prefix :func:`settings_from_app` adds)."""


@dataclass(frozen=True, slots=True)
class LlmSettings:
    """An OpenAI-compatible chat-completions endpoint for the optional LLM reply engine (llm.py)."""

    #: e.g. ``http://127.0.0.1:8000/v1``; ``/chat/completions`` is appended.
    base_url: str
    model: str
    #: Name of the environment variable holding the endpoint's API key; :func:`settings_from_env` reads it into
    #: ``api_key`` at start-up.
    api_key_env: str | None = None
    #: Upper bound on one whole streamed completion; also the connect/read timeout.
    timeout_s: float = 30.0
    temperature: float | None = None
    max_tokens: int | None = 300
    #: The endpoint's API key (``None``: send no Authorization header). A secret: left out of ``repr``.
    api_key: str | None = field(default=None, repr=False)

    def validate(self) -> None:
        if not self.base_url.startswith(("http://", "https://")):
            raise SettingsError(f"llm.base_url must be an http(s) URL, got {self.base_url!r}")
        if not self.model:
            raise SettingsError("llm.model must not be empty")
        if self.timeout_s <= 0:
            raise SettingsError(f"llm.timeout_s must be positive, got {self.timeout_s}")


@dataclass(frozen=True, slots=True)
class LocalAgentSettings:
    """Everything the local agent can be told. Defaults are what the gateway uses with no config."""

    #: The one API key this server accepts (Bearer or raw, or ``?token=``). ``None``: generate one per process
    #: (standalone mode prints it at start-up; embedded mode hands it to the gateway in-process). Left out of
    #: ``repr``, as the token secret is.
    api_key: str | None = field(default=None, repr=False)
    #: HMAC key for minted tokens and resume tokens. ``None``: 32 random bytes per process (tokens then do not
    #: survive a restart, which is fine: they are valid for at most 600 s).
    token_secret: bytes | None = field(default=None, repr=False)
    #: Accepted ``output.voice`` values; the first is the default when the client sets none.
    voices: tuple[str, ...] = DEFAULT_VOICES
    #: How long a session survives an unclean disconnect so ``session.resume`` can pick it up (30 s, as live:
    #: docs/reference/local-agent-api.md#implemented, resume).
    resume_window_s: float = 30.0
    #: The intent engine's table (format: docs/how-to/local-agent.md#intents-file).
    intents_path: Path = DEFAULT_INTENTS_PATH
    #: Duration of each ``reply.audio`` chunk. ``None`` copies the live service: 10 ms (480 B) for 24 kHz PCM,
    #: 37.5 ms (300 B) for μ-law/A-law (docs/reference/local-agent-api.md#implemented).
    reply_chunk_ms: float | None = None
    #: How far ahead of real time reply audio may run (a lead burst the client buffers in a 100–200 ms jitter
    #: buffer).
    reply_lead_ms: float = 200.0
    #: Caller speech over a reply that reaches this much voiced time interrupts it whatever its words; shorter
    #: speech holds the reply and its words decide (docs/architecture/local-agent.md#barge-in). 1000, not the 600 of
    #: the duration-only rule: a slow "mm-hmm" is 600-800 ms of voicing, and the words now catch a short "stop".
    backchannel_max_ms: int = 1000
    #: Default end-of-turn silence when the client sets no ``turn_detection.min_silence``. 600 ms rather than the
    #: cloud's 1000 ms: the local agent has no semantic end-of-turn model, so a plain silence timer is all there is, and
    #: 600 ms is the measured choice for a responsive phone agent (docs/architecture/local-agent.md#turn-detection).
    min_silence_ms: int = 600
    #: Adaptive end of turn, only when the client sets neither ``turn_detection.min_silence`` nor ``max_silence``
    #: (live, setting either turns the cloud's adaptive waiting off). The speculative
    #: transcript of a pause (after ``speculate_ms``) is judged by ``turns.pause_verdict``: a finished sentence
    #: the intent engine matched at ``early_min_score`` or better ends the turn after ``early_silence_ms`` of
    #: silence; words that stop mid-sentence ("…a table for", "my number is", "and") wait ``late_silence_ms``.
    #: 0 turns either off. Why these values: docs/architecture/local-agent.md#turn-detection.
    #: Silence inside a turn after which the turn so far is transcribed (and its reply prepared) speculatively
    #: (``TurnKnobs.speculate_ms``). 32 ms (one Silero window, which already trails the sound by ~0.1 s): with the
    #: adaptive end of turn, when that work is done is what decides the latency, and on the 22 committed phrases
    #: 32 ms starts 32 speculations for 22 turns where 96 and 160 ms start 31 (Silero's hysteresis bridges the gaps
    #: between words); docs/architecture/local-agent.md#latency.
    speculate_ms: int = 32
    early_silence_ms: int = 400
    late_silence_ms: int = 1000
    early_min_score: float = 0.45
    #: Default forced end of turn (silence since the last confident speech window; the cloud's default 3000).
    max_silence_ms: int = 3000
    #: Default Silero speech-probability threshold (the cloud's default 0.5).
    vad_threshold: float = 0.5
    #: Size of the one process-wide thread pool that runs every blocking model call (VAD, STT, TTS, embedding).
    #: 4 on a 2-core box: up to two calls can each have a transcription or synthesis running while VAD windows
    #: of the others still get a thread (the models themselves use ``model_cpu_threads`` each).
    threads: int = 4
    #: Intra-op threads of Whisper and Piper each. 2, although 1 looks right when calls may overlap on 2 cores:
    #: measured back to back on this 2-core machine, two callers at once answered faster
    #: with 2 (median 0.87 s vs 1.02 s) and one caller too (0.88 s vs 1.04 s): turns rarely transcribe at the
    #: same moment, so each Whisper run gets both cores most of the time (docs/architecture/local-agent.md#concurrency).
    model_cpu_threads: int = 2
    #: Optional LLM reply engine; ``None`` uses the deterministic intent engine.
    llm: LlmSettings | None = None
    #: How long a new socket may stay silent before its first ``session.update``/``session.resume``.
    first_message_timeout_s: float = 60.0
    #: Close a connected session whose client sent nothing at all for this long (the live service kept idle
    #: sessions open for > 100 s). WebSocket pings (``heartbeat_s``) catch dead peers much sooner.
    idle_timeout_s: float = 900.0
    heartbeat_s: float = 20.0
    #: A send to the client that cannot complete in this long means the peer is gone.
    send_timeout_s: float = 10.0
    #: Where stored agents, session records and recordings are kept (docs/reference/local-agent-api.md#data-directory).
    #: ``None``: a temporary directory for the app's lifetime (tests, embedding without config);
    #: :func:`settings_from_env` fills in :func:`default_data_dir` for the real entry points.
    data_dir: Path | None = None
    #: Ended sessions kept (records and files); the oldest beyond are deleted as new ones end.
    keep_sessions: int = 200
    #: Write each session's stereo recording (the timeline is always written).
    record_audio: bool = True
    #: Stored agents that must exist at start-up, as (config key, agent id): the gateway's profiles that name one
    #: (docs/how-to/conversation.md#stored-agents). A missing one stops start-up with a ConfigError naming the key.
    required_agents: tuple[tuple[str, str], ...] = ()
    #: ``session.ready.expires_at`` is now + this (live: ≈ 3600 regardless of the token cap;
    #: docs/reference/local-agent-api.md#auth).
    session_expiry_s: int = 3600

    def validate(self) -> None:
        """Raise :class:`SettingsError` naming the first bad key."""
        if self.api_key is not None and not self.api_key.strip():
            raise SettingsError("api_key must not be blank (leave it unset to generate one)")
        if self.token_secret is not None and len(self.token_secret) < 16:
            raise SettingsError("token_secret must be at least 16 bytes")
        if not self.voices:
            raise SettingsError("voices must list at least one voice")
        if self.resume_window_s < 0:
            raise SettingsError(f"resume_window_s must be >= 0, got {self.resume_window_s}")
        if self.reply_chunk_ms is not None and not 5 <= self.reply_chunk_ms <= 200:
            raise SettingsError(f"reply_chunk_ms must be within 5..200, got {self.reply_chunk_ms}")
        if not 0 <= self.reply_lead_ms <= 2000:
            raise SettingsError(f"reply_lead_ms must be within 0..2000, got {self.reply_lead_ms}")
        if not 0 <= self.backchannel_max_ms <= 5000:
            raise SettingsError(f"backchannel_max_ms must be within 0..5000, got {self.backchannel_max_ms}")
        if not 100 <= self.min_silence_ms <= 10000:
            raise SettingsError(f"min_silence_ms must be within 100..10000, got {self.min_silence_ms}")
        if not self.min_silence_ms <= self.max_silence_ms <= 30000:
            raise SettingsError(f"max_silence_ms must be within min_silence_ms..30000, got {self.max_silence_ms}")
        if not 0 <= self.speculate_ms <= 2000:
            raise SettingsError(f"speculate_ms must be within 0..2000, got {self.speculate_ms}")
        # Either only ever moves the end of turn towards it: an early one at or above min_silence_ms (or a late
        # one at or below) is simply never used.
        if self.early_silence_ms and not 100 <= self.early_silence_ms <= 10000:
            raise SettingsError(f"early_silence_ms must be 0 or within 100..10000, got {self.early_silence_ms}")
        if self.late_silence_ms and not 100 <= self.late_silence_ms <= 10000:
            raise SettingsError(f"late_silence_ms must be 0 or within 100..10000, got {self.late_silence_ms}")
        if not 0.0 <= self.early_min_score <= 1.0:
            raise SettingsError(f"early_min_score must be within 0..1, got {self.early_min_score}")
        if not 0.0 < self.vad_threshold < 1.0:
            raise SettingsError(f"vad_threshold must be within (0, 1), got {self.vad_threshold}")
        if not 1 <= self.threads <= 64:
            raise SettingsError(f"threads must be within 1..64, got {self.threads}")
        if not 1 <= self.model_cpu_threads <= 64:
            raise SettingsError(f"model_cpu_threads must be within 1..64, got {self.model_cpu_threads}")
        for key in ("first_message_timeout_s", "idle_timeout_s", "heartbeat_s", "send_timeout_s"):
            if getattr(self, key) <= 0:
                raise SettingsError(f"{key} must be positive")
        if not 0 <= self.keep_sessions <= 1_000_000:
            raise SettingsError(f"keep_sessions must be within 0..1000000, got {self.keep_sessions}")
        if self.session_expiry_s <= 0:
            raise SettingsError("session_expiry_s must be positive")
        if self.llm is not None:
            self.llm.validate()


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """``$XDG_DATA_HOME/voice-gateway/local-agent`` (``~/.local/share/...`` when unset): it outlives restarts and
    upgrades, and stays out of the source tree and the config directory, which may be read-only in a container
    (docs/reference/local-agent-api.md#data-directory)."""
    base = environ.get("XDG_DATA_HOME", "").strip()
    root = Path(base) if base else Path(environ.get("HOME") or Path.home()) / ".local" / "share"
    return root / "voice-gateway" / "local-agent"


def settings_from_env(
    base: LocalAgentSettings | None = None, environ: Mapping[str, str] | None = None
) -> LocalAgentSettings:
    """``base`` completed with the secrets the environment holds: ``LOCAL_AGENT_API_KEY`` when the base sets no key
    (the standalone runner's rule), and the LLM endpoint's key from the variable ``llm.api_key_env`` names when the
    base carries none. The one place the local agent reads the environment (at start-up)."""
    env = os.environ if environ is None else environ
    base = base or LocalAgentSettings()
    key = env.get("LOCAL_AGENT_API_KEY", "").strip()
    if base.api_key is None and key:
        base = replace(base, api_key=key)
    llm = base.llm
    if llm is not None and llm.api_key is None and llm.api_key_env:
        llm_key = env.get(llm.api_key_env, "").strip()
        if llm_key:
            base = replace(base, llm=replace(llm, api_key=llm_key))
    return base


def settings_from_app(settings: Settings, api_key: str | None) -> LocalAgentSettings:
    """The gateway's ``[local_agent]`` config as local-agent settings, validated: :class:`~gateway.errors.ConfigError`
    names the bad key (``local_agent.…``). Secrets are not read here: :func:`settings_from_env` adds them."""
    cfg = settings.local_agent
    llm = None
    if cfg.llm_base_url:
        llm = LlmSettings(base_url=cfg.llm_base_url, model=cfg.llm_model, api_key_env=cfg.llm_api_key_env or None)
    la = LocalAgentSettings(
        api_key=api_key,
        intents_path=settings.local_agent_intents_path(),
        resume_window_s=cfg.resume_window_s,
        backchannel_max_ms=cfg.backchannel_max_ms,
        min_silence_ms=cfg.min_silence_ms,
        threads=cfg.threads,
        model_cpu_threads=cfg.model_cpu_threads,
        llm=llm,
        data_dir=Path(cfg.data_dir).expanduser() if cfg.data_dir else None,
        keep_sessions=cfg.keep_sessions,
        required_agents=tuple(
            (f"profiles.{name}.agent_id", p.agent_id) for name, p in settings.profiles.items() if p.agent_id
        ),
    )
    try:
        la.validate()
    except SettingsError as exc:
        raise ConfigError(f"local_agent.{exc}") from None
    if not la.intents_path.exists():
        raise ConfigError(f"local_agent.intents: {la.intents_path} does not exist")
    return la

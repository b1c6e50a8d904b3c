"""Typed, validated settings. Committed defaults live in ``config/gateway.toml``; secrets come only from the
environment. Loaded once at start-up and passed explicitly; an invalid file fails start-up with an error that
names the bad key (``ConfigError("audio.playout_lead_ms: expected an integer, got 'x'")``).

Carriers configure themselves: each ``[carriers.NAME]`` table is its carrier module's settings class, its secrets the
environment variables its description names, its checks run at start-up (:mod:`gateway.carriers.registry`). Flat
``[carriers]`` keys of older configs (``signalwire_codec``…) still work, with a ``FutureWarning`` naming the new key.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import os
import secrets
import tomllib
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from .audio.resample import RESAMPLE_QUALITIES
from .audio.transcode import AGENT_FORMATS
from .carriers import registry
from .carriers.spec import CarrierDoor, Door
from .config_build import build
from .errors import ConfigError
from .profile_options import ConversationProfile, check_profiles
from .records.settings import StorageSettings, WebhookSettings, check_records
from .state.settings import StateSettings, state_settings

__all__ = [
    "DEFAULT_AGENT_URL",
    "EU_AGENT_URL",
    "REPO_CONFIG_DIR",
    "CarrierDoor",
    "CarrierSettings",
    "Secrets",
    "Settings",
    "load_settings",
]

REPO_CONFIG_DIR = Path(__file__).resolve().parent.parent / "config"
DEFAULT_AGENT_URL = "wss://agents.assemblyai.com/v1/ws"
EU_AGENT_URL = "wss://agents.eu.assemblyai.com/v1/ws"
US_AGENT_URL = "wss://agents.us.assemblyai.com/v1/ws"
# end_call (gateway.tools.registry); transfer_call, send_dtmf, read_dtmf (gateway.tools.call_control, issue #8)
BUILTIN_TOOLS = frozenset({"end_call", "transfer_call", "send_dtmf", "read_dtmf"})
DTMF_MODES = ("reply", "buffer", "off")
AGENT_TRANSPORTS = ("aiohttp", "websockets")  # gateway.agent.client.TRANSPORTS
EVENT_LOOPS = ("auto", "asyncio", "uvloop")


@dataclass(frozen=True)
class ServerSettings:
    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = ""  # e.g. https://voice.example.com ; env GATEWAY_PUBLIC_URL
    max_message_bytes: int = 65536
    start_timeout_s: float = 5.0  # an upgrade's 'start' must come this soon (carriers send it at once)
    max_pending_streams: int = 32  # upgrades waiting for 'start' at once; the oldest is evicted beyond (admission)
    no_media_timeout_s: float = 15.0
    max_call_s: float = 3600.0
    max_concurrent_calls: int = 100
    call_token_ttl_s: float = 300.0
    drain_budget_s: float = 60.0
    # Re-attach (gateway.reattach): after a stream's 'stop', keep its agent session this long for a new stream of
    # the same call (a REST redirect to new <Connect><Stream>). 0: off (a stop ends the agent session at once).
    reattach_window_s: float = 0.0
    # Event loop of `serve` (docs/architecture/decisions/0002-uvloop.md): auto = uvloop when it is installed, else
    # asyncio's own.
    loop: str = "auto"  # auto | asyncio | uvloop
    # Inbound audio rate limit per call (gateway.ratelimit, docs/security.md): caller audio beyond this multiple of
    # real time is dropped before it reaches the agent, which bills per audio second; inbound_burst_s of audio may
    # arrive at once on top (late frames a carrier delivers in a bunch after network jitter).
    inbound_rate_limit: float = 1.2
    inbound_burst_s: float = 1.0
    # A connection must finish each request head (request line + headers) this many seconds after it opened or after
    # its previous response; else it is closed (slowloris, docs/security.md). Keep-alive connections left idle are
    # closed as soon, like uvicorn's keep-alive timeout. Upgraded WebSockets and streamed responses are unaffected.
    header_timeout_s: float = 10.0


@dataclass(frozen=True)
class TwilioSettings:
    """Twilio's REST API (gateway.control.twilio): used when TWILIO_ACCOUNT_SID and TWILIO_AUTH_TOKEN are set.

    ``dial_allow`` is the allow-list of ``POST /calls`` destinations. It lives here, not in a table of its own,
    because outbound calls are placed only through Twilio's REST API. Patterns are ``fnmatch``-style, as a profile's
    ``transfer_allow``: ``"+1555*"``, ``"sip:*@pbx.example.com"``, ``"client:*"`` (each starts with ``+``, ``sip:``,
    ``sips:`` or ``client:``; SIP URIs are compared lower-cased). Empty (the default): any E.164 number and nothing
    else (no ``sip:``, no ``client:``). With a list, only what it matches: numbers need a ``+`` pattern. Any E.164
    number includes premium-rate and international ones, billed to your Twilio account: operators should restrict
    numbers to their countries, e.g. ``["+1*"]`` or ``["+44*", "+353*"]`` (docs/security.md).
    """

    api_base_url: str = "https://api.twilio.com"  # env TWILIO_API_BASE_URL overrides (tests: a local fake)
    request_timeout_s: float = 10.0
    # With server.public_url set: ask Twilio for call and stream status callbacks (POST /twilio/status).
    status_callbacks: bool = True
    dial_allow: tuple[str, ...] = ()  # POST /calls destinations (fnmatch); empty: E.164 numbers only


@dataclass(frozen=True)
class AgentSettings:
    url: str = ""  # empty: cloud default (by region) when a key is set, else the embedded local agent
    region: str = "auto"  # auto | us | eu
    connect_timeout_s: float = 5.0
    connect_attempts: int = 3
    ready_timeout_s: float = 10.0
    end_timeout_s: float = 2.0
    # How long a send to the agent may wait for its socket to drain before the socket counts as dead (aborted, the
    # session resumed on a new one; gateway.agent.client). Only a send behind a backed-up socket waits at all: a link
    # that cannot take the call's own audio (~11-64 KB/s) for 5 s is blackholed or its agent stopped reading. It is
    # also how long the call's clock can be held up by such a send, and a dead socket must still be resumable after it.
    send_timeout_s: float = 5.0
    # WebSocket client of the agent socket (gateway.agent.client): aiohttp (cheaper per message,
    # docs/architecture/decisions/0001-aiohttp-agent-transport.md) | websockets (the reference implementation).
    transport: str = "aiohttp"


@dataclass(frozen=True)
class AudioSettings:
    agent_format: str = "pcm24k"  # pcm24k (transcode) | pcmu | pcma (G.711 passthrough)
    inbound_resample_quality: str = "FIR"
    outbound_resample_quality: str = "FIR"
    playout_lead_ms: int = 200
    mark_interval_ms: int = 1000
    frames_per_message: int = 1
    preready_buffer_ms: int = 5000
    outbound_buffer_s: float = 120.0


@dataclass(frozen=True)
class HttpTool:
    url: str
    description: str = ""
    parameters: Mapping[str, Any] = field(default_factory=dict)
    timeout_s: float = 10.0
    execution_mode: str = "interactive"


@dataclass(frozen=True)
class Profile(ConversationProfile):  # + agent_id, session input fields, idle, hold, voicemail
    system_prompt: str = "You are a friendly phone assistant. Keep answers short."
    greeting: str = ""
    voice: str = "alba"
    tools: tuple[str, ...] = ("end_call",)
    end_call_timeout_s: float = 15.0
    # Call control (issue #8, docs/how-to/call-control.md):
    hangup_via_rest: bool = False  # end_call also completes the call over REST (TwiML that continues after <Connect>)
    transfer_allow: tuple[str, ...] = ()  # transfer_call destinations allowed (fnmatch: "+1555*", "sip:*@pbx.example")
    dtmf_mode: str = "off"  # caller keypresses to the agent: reply (reply.create) | buffer (read_dtmf) | off
    dtmf_interdigit_ms: int = 1000  # "reply": digits gathered until this long without another
    record: bool = False  # two-channel recording (gateway.records; docs/how-to/call-records.md)
    record_announcement: str = ""  # a .wav played before the greeting when recording (relative to config dir)
    webhook_url: str = ""  # post-call webhook of this profile's calls (overrides webhooks.url)


@dataclass(frozen=True)
class LocalAgentConfig:
    """The ``[local_agent]`` table; mapped onto :class:`gateway.local_agent.settings.LocalAgentSettings`."""

    intents: str = "local_agent/intents.toml"  # relative to the config directory
    resume_window_s: float = 30.0
    backchannel_max_ms: int = 1000
    min_silence_ms: int = 600
    threads: int = 4  # the process-wide pool for blocking model calls
    # intra-op threads of Whisper and Piper each (measured: docs/architecture/local-agent.md#concurrency)
    model_cpu_threads: int = 2
    llm_base_url: str = ""  # optional OpenAI-compatible endpoint; empty = deterministic intent engine
    llm_model: str = ""
    llm_api_key_env: str = "LOCAL_AGENT_LLM_API_KEY"
    data_dir: str = ""  # stored agents, session records, recordings; "" = $XDG_DATA_HOME/voice-gateway/local-agent
    keep_sessions: int = 200  # ended sessions kept with their recordings


@dataclass(frozen=True)
class SoftphoneSettings:
    """The browser softphone at /softphone (issue #4). Its dial endpoint mints call tokens, so anyone who can reach
    it can open agent sessions on your key. "auto" serves it only in development: the embedded local agent and no
    public URL (server.public_url / GATEWAY_PUBLIC_URL). "on" serves it always; with a public URL every softphone
    route then asks for the operator key GATEWAY_API_KEY (HTTP Basic password, or Bearer), and "on" with a public
    URL but no GATEWAY_API_KEY is refused at start-up (gateway.softphone.access)."""

    enabled: str = "auto"  # auto | on | off


class CarrierSettings(collections.abc.Mapping[str, CarrierDoor]):
    """The ``[carriers]`` table: one ``[carriers.NAME]`` table per carrier of the registry, each an instance of the
    settings class that carrier's module declares (``enabled``, docs/security.md "Carrier doors", plus its audio keys;
    docs/reference/configuration.md#carriers). ``settings.carriers["plivo"]`` or ``settings.carriers.plivo``; a carrier
    not given gets its defaults. Secrets are not here: they come from the environment (:class:`Secrets`)."""

    def __init__(self, **tables: CarrierDoor) -> None:
        unknown = sorted(set(tables) - {spec.name for spec in registry.CARRIERS})
        if unknown:
            raise TypeError(f"unknown carrier {unknown[0]!r}")
        self._tables: dict[str, CarrierDoor] = {}
        for spec in registry.CARRIERS:
            table = tables.get(spec.name) or spec.options()
            if not isinstance(table, spec.options):
                raise TypeError(f"carriers.{spec.name}: expected {spec.options.__name__}, got {table!r}")
            self._tables[spec.name] = table

    def __getitem__(self, name: str) -> CarrierDoor:
        return self._tables[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)

    def __getattr__(self, name: str) -> CarrierDoor:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._tables[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def __config_build__(cls, table: Any, key: str) -> CarrierSettings:
        return _carrier_settings(table, key)

    def __repr__(self) -> str:
        return f"CarrierSettings({', '.join(f'{k}={v!r}' for k, v in self._tables.items())})"


@dataclass(frozen=True)
class Secrets:
    """Everything secret, from the environment only. Never logged."""

    assemblyai_api_key: str = ""
    token_secret: bytes = b""
    token_secret_generated: bool = False
    local_agent_api_key: str = ""
    twilio_account_sid: str = ""  # with TWILIO_AUTH_TOKEN: the REST client (call control, outbound calls)
    gateway_api_key: str = ""  # bearer key of POST /calls (outbound calls); empty: the endpoint is off
    webhook_secret: str = ""  # GATEWAY_WEBHOOK_SECRET: signs the post-call webhooks (gateway.records.signing)
    #: Every carrier's secrets by environment variable (the names its description lists;
    #: docs/reference/environment.md#carriers). Empty: that carrier's webhook is not checked, and its doors open in
    #: development only.
    carrier_secrets: Mapping[str, str] = field(default_factory=dict)

    @property
    def twilio_auth_token(self) -> str:
        """Twilio's auth token: its doors' signatures, and with the Account SID its REST API."""
        return self.carrier_secrets.get("TWILIO_AUTH_TOKEN", "")

    def __repr__(self) -> str:  # keep secrets out of tracebacks and debug logs
        return "Secrets(<redacted>)"


@dataclass(frozen=True)
class Settings:
    server: ServerSettings = field(default_factory=ServerSettings)
    agent: AgentSettings = field(default_factory=AgentSettings)
    audio: AudioSettings = field(default_factory=AudioSettings)
    local_agent: LocalAgentConfig = field(default_factory=LocalAgentConfig)
    profiles: Mapping[str, Profile] = field(default_factory=lambda: {"default": Profile()})
    numbers: Mapping[str, str] = field(default_factory=dict)  # called number (E.164) -> profile name
    tools: Mapping[str, HttpTool] = field(default_factory=dict)
    carriers: CarrierSettings = field(default_factory=CarrierSettings)
    softphone: SoftphoneSettings = field(default_factory=SoftphoneSettings)
    state: StateSettings = field(default_factory=StateSettings)  # [state]: replicas (gateway.state)
    twilio: TwilioSettings = field(default_factory=TwilioSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    webhooks: WebhookSettings = field(default_factory=WebhookSettings)
    secrets: Secrets = field(default_factory=Secrets, repr=False)
    config_dir: Path = REPO_CONFIG_DIR
    log_format: str = "json"

    # ---- derived views -----------------------------------------------------------------------------------------
    @property
    def use_local_agent(self) -> bool:
        """No key and no URL configured: calls go to the embedded local agent (issue #3)."""
        return not self.agent.url and not self.secrets.assemblyai_api_key

    def agent_url(self) -> str:
        if self.agent.url:
            return self.agent.url
        return {"eu": EU_AGENT_URL, "us": US_AGENT_URL}.get(self.agent.region, DEFAULT_AGENT_URL)

    def profile_for(self, called_number: str) -> tuple[str, Profile]:
        name = self.numbers.get(called_number, "default")
        return name, self.profiles[name]

    @property
    def twilio_rest_configured(self) -> bool:
        """Call control over REST (hang-up, transfer, outbound calls) needs the Account SID and the Auth Token."""
        return bool(self.secrets.twilio_account_sid and self.secrets.twilio_auth_token)

    def carrier_door(self, name: str) -> Door[Any]:
        """Carrier ``name``'s table and secrets, as its pure functions take them (:mod:`gateway.carriers.spec`)."""
        return registry.carrier(name).door(self.carriers[name], self.secrets.carrier_secrets)

    def carrier_authenticated(self, name: str) -> bool:
        """Whether ``name``'s webhook and stream are checked against a secret (or, for Exotel, an allow-list of
        source networks) — i.e. whether a stranger is kept out of its doors."""
        return registry.carrier(name).authenticated(self.carrier_door(name))

    def open_doors(self) -> dict[str, bool]:
        """The carriers whose routes exist, each with whether it is authenticated (docs/security.md): see
        :class:`CarrierDoor` for the rule. A carrier not in the result answers 404."""
        doors: dict[str, bool] = {}
        for spec in registry.CARRIERS:
            enabled = self.carriers[spec.name].enabled
            authenticated = self.carrier_authenticated(spec.name)
            if enabled is True or (enabled == "auto" and (authenticated or not self.server.public_url)):
                doors[spec.name] = authenticated
        return doors

    def local_agent_intents_path(self) -> Path:
        p = Path(self.local_agent.intents)
        return p if p.is_absolute() else self.config_dir / p


# ---- loading -----------------------------------------------------------------------------------------------------
def _carrier_settings(table: Any, key: str) -> CarrierSettings:
    """``[carriers]``: each carrier's ``[carriers.NAME]`` table built as its settings class; the flat keys of older
    configs (a carrier's ``legacy_keys``) moved into their carrier's table, with a deprecation warning."""
    if not isinstance(table, dict):
        raise ConfigError(f"{key}: expected a table, got {table!r}")
    legacy = {flat: (spec.name, new) for spec in registry.CARRIERS for flat, new in spec.legacy_keys.items()}
    tables: dict[str, dict[str, Any]] = {}
    for name, value in table.items():
        if name in legacy:
            continue
        if name not in {spec.name for spec in registry.CARRIERS}:
            known = ", ".join(spec.name for spec in registry.CARRIERS)
            raise ConfigError(f"{key}.{name}: unknown key (known: one table per carrier: {known})")
        if not isinstance(value, dict):
            raise ConfigError(f"{key}.{name}: expected a table, got {value!r}")
        tables[name] = dict(value)
    for flat, value in table.items():
        if flat not in legacy:
            continue
        name, new = legacy[flat]
        if new in tables.setdefault(name, {}):
            raise ConfigError(f"{key}.{flat}: also set as {key}.{name}.{new}; keep only the latter")
        tables[name][new] = value
        warnings.warn(
            f"{key}.{flat} is deprecated: write it as `{new} = ...` in [{key}.{name}] (the flat key will be removed)",
            FutureWarning,
            stacklevel=2,
        )
    return CarrierSettings(
        **{
            spec.name: build(spec.options, tables.get(spec.name, {}), f"{key}.{spec.name}")
            for spec in registry.CARRIERS
        }
    )


def _check(s: Settings) -> None:
    def need(cond: bool, key: str, msg: str) -> None:
        if not cond:
            raise ConfigError(f"{key}: {msg}")

    need(0 < s.server.port < 65536, "server.port", "must be 1..65535")
    if s.server.public_url:
        u = urlsplit(s.server.public_url)
        need(u.scheme in ("https", "http") and bool(u.netloc), "server.public_url", "must be an http(s) URL")
        need(u.query == "" and u.fragment == "", "server.public_url", "must not carry a query or fragment")
    need(1024 <= s.server.max_message_bytes <= 4 * 1024 * 1024, "server.max_message_bytes", "must be 1024..4194304")
    for key in "start_timeout_s no_media_timeout_s max_call_s call_token_ttl_s drain_budget_s header_timeout_s".split():
        need(getattr(s.server, key) > 0, f"server.{key}", "must be positive")
    need(s.server.max_concurrent_calls > 0, "server.max_concurrent_calls", "must be positive")
    need(s.server.max_pending_streams > 0, "server.max_pending_streams", "must be positive")
    need(
        s.server.inbound_rate_limit >= 1.0,
        "server.inbound_rate_limit",
        "must be at least 1.0 (a multiple of real time: below it a caller at real time loses audio)",
    )
    need(s.server.inbound_burst_s > 0, "server.inbound_burst_s", "must be positive (seconds of audio)")
    need(s.agent.region in ("auto", "us", "eu"), "agent.region", "must be auto, us or eu")
    if s.agent.url:
        need(urlsplit(s.agent.url).scheme in ("ws", "wss"), "agent.url", "must be a ws:// or wss:// URL")
    need(s.agent.connect_attempts >= 1, "agent.connect_attempts", "must be at least 1")
    need(
        0 < s.agent.send_timeout_s <= 20,
        "agent.send_timeout_s",
        "must be more than 0 and at most 20 (seconds a send may wait for a backed-up agent socket before it counts as "
        "dead; the session must still be resumable after that, inside the agent's 30 s resume window)",
    )
    need(s.agent.transport in AGENT_TRANSPORTS, "agent.transport", f"must be one of {', '.join(AGENT_TRANSPORTS)}")
    need(s.server.loop in EVENT_LOOPS, "server.loop", f"must be one of {', '.join(EVENT_LOOPS)}")
    need(s.audio.agent_format in AGENT_FORMATS, "audio.agent_format", f"must be one of {', '.join(AGENT_FORMATS)}")
    for key in ("inbound_resample_quality", "outbound_resample_quality"):
        need(
            getattr(s.audio, key) in RESAMPLE_QUALITIES,
            f"audio.{key}",
            f"must be one of {', '.join(RESAMPLE_QUALITIES)} (soxr qualities, or FIR: block-free, 2 ms)",
        )
    need(
        s.audio.outbound_resample_quality != "QQ",
        "audio.outbound_resample_quality",
        "QQ does not anti-alias 24 kHz -> 8 kHz; use FIR (2 ms delay), LQ or better",
    )
    need(20 <= s.audio.playout_lead_ms <= 10000, "audio.playout_lead_ms", "must be 20..10000")
    need(20 <= s.audio.mark_interval_ms <= 60000, "audio.mark_interval_ms", "must be 20..60000")
    need(1 <= s.audio.frames_per_message <= 50, "audio.frames_per_message", "must be 1..50")
    need(s.audio.preready_buffer_ms >= 0, "audio.preready_buffer_ms", "must be >= 0")
    need("default" in s.profiles, "profiles.default", "a default profile is required")
    for name, p in s.profiles.items():
        for i, t in enumerate(p.tools):
            need(
                t in BUILTIN_TOOLS or t in s.tools,
                f"profiles.{name}.tools[{i}]",
                f"unknown tool {t!r} (built in: {', '.join(sorted(BUILTIN_TOOLS))}; or define [tools.{t}])",
            )
    for number, prof in s.numbers.items():
        need(prof in s.profiles, f"numbers.{number}", f"names unknown profile {prof!r}")
    for name, tool in s.tools.items():
        need(urlsplit(tool.url).scheme in ("http", "https"), f"tools.{name}.url", "must be an http(s) URL")
        need(tool.execution_mode in ("interactive", "hold"), f"tools.{name}.execution_mode", "interactive or hold")
        need(name not in BUILTIN_TOOLS, f"tools.{name}", "collides with a built-in tool")
    need(s.softphone.enabled in ("auto", "on", "off"), "softphone.enabled", "must be auto, on or off")
    need(
        not (s.softphone.enabled == "on" and s.server.public_url and not s.secrets.gateway_api_key),
        "softphone.enabled",
        '"on" with a public URL needs GATEWAY_API_KEY (the softphone\'s password); '
        'without it anyone who finds the page can open agent sessions. Set the key, or use "auto"/"off"',
    )
    need(
        0 <= s.server.reattach_window_s <= 25,
        "server.reattach_window_s",
        "must be 0..25 (inside the agent's 30 s resume window)",
    )
    need(
        urlsplit(s.twilio.api_base_url).scheme in ("http", "https") and bool(urlsplit(s.twilio.api_base_url).netloc),
        "twilio.api_base_url",
        "must be an http(s) URL",
    )
    need(s.twilio.request_timeout_s > 0, "twilio.request_timeout_s", "must be positive")
    for i, pat in enumerate(s.twilio.dial_allow):
        # A pattern of another shape ("*", "1555*", "SIP:…") would match everything or nothing: say so at start-up.
        need(
            pat.startswith(("+", "sip:", "sips:", "client:")) and pat not in ("+", "sip:", "sips:", "client:"),
            f"twilio.dial_allow[{i}]",
            "patterns start with + (numbers), sip: / sips: or client:",
        )
        need(
            not any(ch.isspace() for ch in pat),
            f"twilio.dial_allow[{i}]",
            "no whitespace: destinations never contain any once normalized",
        )
    for name, p in s.profiles.items():
        need(p.dtmf_mode in DTMF_MODES, f"profiles.{name}.dtmf_mode", f"must be one of {', '.join(DTMF_MODES)}")
        need(50 <= p.dtmf_interdigit_ms <= 10000, f"profiles.{name}.dtmf_interdigit_ms", "must be 50..10000")
        need(
            "read_dtmf" not in p.tools or p.dtmf_mode == "buffer",
            f"profiles.{name}.tools",
            'read_dtmf needs dtmf_mode = "buffer"',
        )
        need(
            "transfer_call" not in p.tools or bool(p.transfer_allow),
            f"profiles.{name}.transfer_allow",
            "transfer_call is listed but no destination is allowed",
        )
        for i, pat in enumerate(p.transfer_allow):
            need(
                pat.startswith(("+", "sip:", "sips:")) and len(pat) > 1,
                f"profiles.{name}.transfer_allow[{i}]",
                "patterns start with + (numbers) or sip: / sips:",
            )
    for spec in registry.CARRIERS:
        door = s.carrier_door(spec.name)
        for key, message in spec.check(door):
            need(False, key, message)
        enabled, credential = door.options.enabled, spec.what_authenticates()
        need(enabled in (True, False, "auto"), f"carriers.{spec.name}.enabled", 'must be true, false or "auto"')
        need(
            not (enabled is True and s.server.public_url and not spec.authenticated(door)),
            f"carriers.{spec.name}.enabled",
            f"true without {credential} is for local development only: with a public URL anyone could open "
            f"agent sessions through it; set {credential} or carriers.{spec.name}.enabled = false",
        )
    need(s.log_format in ("json", "console"), "LOG_FORMAT", "must be json or console")
    check_records(s)
    check_profiles(s.profiles, s.config_dir)


def load_settings(path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Read the TOML file (default: $GATEWAY_CONFIG, else the repo's config/gateway.toml if present, else built-in
    defaults), apply environment overrides and secrets, validate, and return the settings."""
    env = os.environ if env is None else env
    if path is None and env.get("GATEWAY_CONFIG"):
        path = env["GATEWAY_CONFIG"]
        if not Path(path).exists():
            raise ConfigError(f"GATEWAY_CONFIG: {path} does not exist")
    if path is None:
        # The committed defaults when running from a checkout; built-in defaults otherwise (same values).
        path = REPO_CONFIG_DIR / "gateway.toml"
        if not Path(path).exists():
            path = None
    table: dict[str, Any] = {}
    config_dir = REPO_CONFIG_DIR
    if path is not None:
        p = Path(path)
        try:
            table = tomllib.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{p}: config file does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{p}: not valid TOML: {exc}") from None
        config_dir = p.resolve().parent
    for forbidden in ("secrets", "config_dir", "log_format"):
        if forbidden in table:
            raise ConfigError(f"{forbidden}: cannot be set in the config file (secrets come from the environment)")
    if "profiles" in table and isinstance(table["profiles"], dict):
        table["profiles"].setdefault("default", {})  # the built-in default profile stays unless overridden
        defaults = table["profiles"].get("default", {})
        # Every profile inherits unset keys from the default profile.
        if isinstance(defaults, dict):
            table["profiles"] = {
                k: ({**defaults, **v} if isinstance(v, dict) else v) for k, v in table["profiles"].items()
            }
    settings: Settings = build(Settings, table, "")
    server = settings.server
    if env.get("GATEWAY_PUBLIC_URL"):
        server = dataclasses.replace(server, public_url=env["GATEWAY_PUBLIC_URL"].rstrip("/"))
    twilio = settings.twilio
    if env.get("TWILIO_API_BASE_URL"):
        twilio = dataclasses.replace(twilio, api_base_url=env["TWILIO_API_BASE_URL"].rstrip("/"))
    agent = settings.agent
    if env.get("AGENT_URL"):
        agent = dataclasses.replace(agent, url=env["AGENT_URL"])
    raw_secret = env.get("GATEWAY_TOKEN_SECRET", "")
    sec = Secrets(
        assemblyai_api_key=env.get("ASSEMBLYAI_API_KEY", ""),
        token_secret=raw_secret.encode() if raw_secret else secrets.token_bytes(32),
        token_secret_generated=not raw_secret,
        local_agent_api_key=env.get("LOCAL_AGENT_API_KEY", ""),
        twilio_account_sid=env.get("TWILIO_ACCOUNT_SID", ""),
        gateway_api_key=env.get("GATEWAY_API_KEY", ""),
        webhook_secret=env.get("GATEWAY_WEBHOOK_SECRET", ""),
        carrier_secrets={name: env.get(name, "") for spec in registry.CARRIERS for name in spec.secret_envs},
    )
    settings = dataclasses.replace(
        settings,
        server=server,
        agent=agent,
        twilio=twilio,
        state=state_settings(settings.state, env),
        secrets=sec,
        config_dir=config_dir,
        log_format=env.get("LOG_FORMAT", "json").lower(),
    )
    _check(settings)
    return settings

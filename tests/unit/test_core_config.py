"""Typed, validated settings (gateway/config.py): committed TOML defaults, secrets and overrides from the
environment, and start-up errors that name the bad key."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from gateway import config as config_module
from gateway.config import (
    DEFAULT_AGENT_URL,
    EU_AGENT_URL,
    REPO_CONFIG_DIR,
    Profile,
    Settings,
    load_settings,
)
from gateway.errors import ConfigError

ENV = {"GATEWAY_TOKEN_SECRET": "test-secret"}


def write(tmp_path: Path, toml: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(toml, encoding="utf-8")
    return path


@pytest.fixture
def no_repo_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the repo config directory at an empty one, so "no file" means no file even if config/gateway.toml
    is committed."""
    empty = tmp_path / "empty-config"
    empty.mkdir()
    monkeypatch.setattr(config_module, "REPO_CONFIG_DIR", empty)
    return empty


# ---- defaults ----------------------------------------------------------------------------------------------------
def test_defaults_without_a_file(no_repo_config: Path) -> None:
    s = load_settings(None, env={})
    assert s.server == Settings().server
    assert s.agent == Settings().agent
    assert s.audio == Settings().audio
    assert s.local_agent == Settings().local_agent
    assert dict(s.profiles) == {"default": Profile()}
    assert dict(s.numbers) == {} and dict(s.tools) == {}
    assert s.log_format == "json"
    assert (s.server.port, s.server.public_url) == (8080, "")
    assert (s.audio.agent_format, s.audio.inbound_resample_quality, s.audio.outbound_resample_quality) == (
        "pcm24k",
        "FIR",
        "FIR",
    )


def test_the_block_free_fir_resampler_is_accepted_both_ways(tmp_path: Path) -> None:
    toml = '[audio]\ninbound_resample_quality = "FIR"\noutbound_resample_quality = "FIR"\n'
    s = load_settings(write(tmp_path, toml), env=ENV)
    assert (s.audio.inbound_resample_quality, s.audio.outbound_resample_quality) == ("FIR", "FIR")


def test_an_empty_file_gives_the_defaults_and_its_directory(tmp_path: Path) -> None:
    path = write(tmp_path, "")
    s = load_settings(path, env={})
    assert (s.server, s.agent, s.audio) == (Settings().server, Settings().agent, Settings().audio)
    assert s.config_dir == tmp_path.resolve()
    assert s.local_agent_intents_path() == tmp_path.resolve() / "local_agent" / "intents.toml"


def test_without_a_token_secret_one_is_generated_per_process(no_repo_config: Path) -> None:
    a, b = load_settings(None, env={}), load_settings(None, env={})
    assert a.secrets.token_secret_generated and len(a.secrets.token_secret) == 32
    assert a.secrets.token_secret != b.secrets.token_secret


def test_gateway_config_env_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 9000\n", "elsewhere.toml")
    assert load_settings(None, env={"GATEWAY_CONFIG": str(path)}).server.port == 9000


def test_gateway_config_env_naming_a_missing_file_is_an_error(no_repo_config: Path, tmp_path: Path) -> None:
    # Bug: load_settings() falls back to built-in defaults when $GATEWAY_CONFIG names a file that does not exist,
    # so a typo in a deployment silently runs with defaults instead of failing start-up.
    with pytest.raises(ConfigError):
        load_settings(None, env={"GATEWAY_CONFIG": str(tmp_path / "typo.toml")})


# ---- environment ---------------------------------------------------------------------------------------------------
def test_environment_overrides_and_secrets(tmp_path: Path) -> None:
    path = write(
        tmp_path, '[server]\npublic_url = "https://file.example.com"\n[agent]\nurl = "wss://file.example/ws"\n'
    )
    s = load_settings(
        path,
        env={
            "GATEWAY_PUBLIC_URL": "https://voice.example.com/",
            "AGENT_URL": "ws://127.0.0.1:9999/v1/ws",
            "ASSEMBLYAI_API_KEY": "aai-key",
            "TWILIO_AUTH_TOKEN": "twilio-token",
            "GATEWAY_TOKEN_SECRET": "s3cret",
            "LOCAL_AGENT_API_KEY": "local-key",
            "LOG_FORMAT": "CONSOLE",
        },
    )
    assert s.server.public_url == "https://voice.example.com"  # trailing slash dropped
    assert s.agent.url == "ws://127.0.0.1:9999/v1/ws"
    assert s.agent_url() == "ws://127.0.0.1:9999/v1/ws"
    assert s.secrets.assemblyai_api_key == "aai-key"
    assert s.secrets.twilio_auth_token == "twilio-token"
    assert s.secrets.token_secret == b"s3cret" and not s.secrets.token_secret_generated
    assert s.secrets.local_agent_api_key == "local-key"
    assert s.log_format == "console"


def test_empty_environment_values_do_not_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\npublic_url = "https://file.example.com"\n')
    s = load_settings(path, env={"GATEWAY_PUBLIC_URL": "", "AGENT_URL": ""})
    assert s.server.public_url == "https://file.example.com"
    assert s.agent.url == ""


@pytest.mark.parametrize(
    ("toml", "env", "local"),
    [
        ("", {}, True),
        ("", {"ASSEMBLYAI_API_KEY": "k"}, False),
        ("", {"AGENT_URL": "ws://127.0.0.1:1/v1/ws"}, False),
        ('[agent]\nurl = "wss://agents.example/v1/ws"\n', {}, False),
        ("", {"ASSEMBLYAI_API_KEY": "k", "AGENT_URL": "ws://127.0.0.1:1/v1/ws"}, False),
    ],
    ids=["neither", "key_only", "env_url_only", "file_url_only", "both"],
)
def test_local_agent_is_used_only_with_neither_key_nor_url(
    tmp_path: Path, toml: str, env: dict[str, str], local: bool
) -> None:
    assert load_settings(write(tmp_path, toml), env=env).use_local_agent is local


@pytest.mark.parametrize(
    ("region", "url"),
    [("auto", DEFAULT_AGENT_URL), ("eu", EU_AGENT_URL), ("us", "wss://agents.us.assemblyai.com/v1/ws")],
)
def test_region_picks_the_agent_url(tmp_path: Path, region: str, url: str) -> None:
    s = load_settings(write(tmp_path, f'[agent]\nregion = "{region}"\n'), env={"ASSEMBLYAI_API_KEY": "k"})
    assert s.agent_url() == url


def test_eu_region_url_is_the_eu_endpoint() -> None:
    assert EU_AGENT_URL == "wss://agents.eu.assemblyai.com/v1/ws"
    assert DEFAULT_AGENT_URL == "wss://agents.assemblyai.com/v1/ws"


def test_explicit_agent_url_wins_over_region(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, '[agent]\nregion = "eu"\nurl = "wss://x.example/ws"\n'), env={})
    assert s.agent_url() == "wss://x.example/ws"


# ---- profiles ----------------------------------------------------------------------------------------------------
PROFILES = """
[profiles.default]
system_prompt = "Default prompt."
voice = "jane"
keyterms = ["Acme"]
tools = ["end_call", "lookup"]

[profiles.sales]
greeting = "Sales, hello!"

[profiles.support]
voice = "paul"
tools = []

[tools.lookup]
url = "https://tools.example.com/lookup"
description = "Look an order up."
parameters = { type = "object", properties = { order_id = { type = "string" } } }

[numbers]
"+18005551212" = "sales"
"+18005550000" = "support"
"""


def test_profiles_inherit_unset_keys_from_default(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, PROFILES), env={})
    sales, support = s.profiles["sales"], s.profiles["support"]
    assert sales == Profile(
        system_prompt="Default prompt.",
        greeting="Sales, hello!",
        voice="jane",
        tools=("end_call", "lookup"),
        keyterms=("Acme",),
    )
    assert support.voice == "paul" and support.tools == () and support.system_prompt == "Default prompt."
    assert s.profiles["default"].greeting == ""


@pytest.mark.parametrize(
    ("number", "name"),
    [("+18005551212", "sales"), ("+18005550000", "support"), ("+19999999999", "default"), ("", "default")],
)
def test_called_number_picks_its_profile(tmp_path: Path, number: str, name: str) -> None:
    s = load_settings(write(tmp_path, PROFILES), env={})
    got_name, profile = s.profile_for(number)
    assert got_name == name and profile is s.profiles[name]


def test_http_tools_are_typed(tmp_path: Path) -> None:
    tool = load_settings(write(tmp_path, PROFILES), env={}).tools["lookup"]
    assert tool.url == "https://tools.example.com/lookup"
    assert tool.parameters == {"type": "object", "properties": {"order_id": {"type": "string"}}}
    assert (tool.timeout_s, tool.execution_mode) == (10.0, "interactive")


def test_integers_are_accepted_where_numbers_are_expected(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, "[server]\nstart_timeout_s = 3\n"), env={})
    assert s.server.start_timeout_s == 3.0 and isinstance(s.server.start_timeout_s, float)


# ---- every invalid case names its key ------------------------------------------------------------------------------
INVALID: list[tuple[str, str, dict[str, str], str]] = [
    # name, TOML, env, the dotted key the message must start with
    ("unknown_top_level_key", "colour = 1\n", {}, "colour"),
    ("unknown_section_key", "[server]\nprot = 1\n", {}, "server.prot"),
    ("unknown_profile_key", '[profiles.default]\nvoices = "x"\n', {}, "profiles.default.voices"),
    ("port_wrong_type", '[server]\nport = "8080"\n', {}, "server.port"),
    ("port_float", "[server]\nport = 8080.0\n", {}, "server.port"),
    ("port_bool", "[server]\nport = true\n", {}, "server.port"),
    ("port_zero", "[server]\nport = 0\n", {}, "server.port"),
    ("port_too_big", "[server]\nport = 65536\n", {}, "server.port"),
    ("timeout_string", '[server]\nstart_timeout_s = "10"\n', {}, "server.start_timeout_s"),
    ("timeout_zero", "[server]\nno_media_timeout_s = 0\n", {}, "server.no_media_timeout_s"),
    ("max_message_tiny", "[server]\nmax_message_bytes = 10\n", {}, "server.max_message_bytes"),
    ("public_url_not_http", '[server]\npublic_url = "wss://voice.example.com"\n', {}, "server.public_url"),
    ("public_url_with_query", '[server]\npublic_url = "https://v.example.com/?a=1"\n', {}, "server.public_url"),
    ("public_url_env_bad", "", {"GATEWAY_PUBLIC_URL": "voice.example.com"}, "server.public_url"),
    ("section_not_table", "server = 5\n", {}, "server"),
    ("region_unknown", '[agent]\nregion = "asia"\n', {}, "agent.region"),
    ("agent_url_not_ws", '[agent]\nurl = "https://agents.example/ws"\n', {}, "agent.url"),
    ("agent_url_env_not_ws", "", {"AGENT_URL": "http://127.0.0.1:1/ws"}, "agent.url"),
    ("connect_attempts_zero", "[agent]\nconnect_attempts = 0\n", {}, "agent.connect_attempts"),
    ("send_timeout_zero", "[agent]\nsend_timeout_s = 0\n", {}, "agent.send_timeout_s"),
    ("send_timeout_past_resume", "[agent]\nsend_timeout_s = 25\n", {}, "agent.send_timeout_s"),
    ("agent_transport_unknown", '[agent]\ntransport = "httpx"\n', {}, "agent.transport"),
    ("event_loop_unknown", '[server]\nloop = "trio"\n', {}, "server.loop"),
    ("agent_format_unknown", '[audio]\nagent_format = "pcm16k"\n', {}, "audio.agent_format"),
    ("inbound_quality_bad", '[audio]\ninbound_resample_quality = "best"\n', {}, "audio.inbound_resample_quality"),
    ("outbound_quality_bad", '[audio]\noutbound_resample_quality = "hq"\n', {}, "audio.outbound_resample_quality"),
    ("outbound_quality_qq", '[audio]\noutbound_resample_quality = "QQ"\n', {}, "audio.outbound_resample_quality"),
    (
        "outbound_quality_fir_lower",
        '[audio]\noutbound_resample_quality = "fir"\n',
        {},
        "audio.outbound_resample_quality",
    ),
    ("playout_lead_tiny", "[audio]\nplayout_lead_ms = 5\n", {}, "audio.playout_lead_ms"),
    ("frames_per_message_zero", "[audio]\nframes_per_message = 0\n", {}, "audio.frames_per_message"),
    ("keyterms_not_list", '[profiles.default]\nkeyterms = "Acme"\n', {}, "profiles.default.keyterms"),
    ("keyterm_not_string", "[profiles.default]\nkeyterms = [1]\n", {}, "profiles.default.keyterms[0]"),
    (
        "unknown_tool_in_profile",
        '[profiles.default]\ntools = ["end_call", "teleport"]\n',
        {},
        "profiles.default.tools[1]",
    ),
    (
        "unknown_tool_in_inheriting_profile",
        '[profiles.default]\n[profiles.sales]\ntools = ["end_call", "teleport"]\n',
        {},
        "profiles.sales.tools[1]",
    ),
    (
        "unknown_tool_inherited_from_default",
        '[profiles.default]\ntools = ["teleport"]\n[profiles.sales]\n',
        {},
        "profiles.default.tools[0]",
    ),
    ("profile_not_table", "[profiles]\nsales = 5\n", {}, "profiles.sales"),
    ("number_to_unknown_profile", '[numbers]\n"+18005551212" = "sales"\n', {}, "numbers.+18005551212"),
    ("tool_without_url", '[tools.lookup]\ndescription = "x"\n', {}, "tools.lookup"),
    ("tool_url_not_http", '[tools.lookup]\nurl = "ftp://x.example/"\n', {}, "tools.lookup.url"),
    (
        "tool_mode_bad",
        '[tools.lookup]\nurl = "https://x.example/"\nexecution_mode = "async"\n',
        {},
        "tools.lookup.execution_mode",
    ),
    ("tool_shadows_builtin", '[tools.end_call]\nurl = "https://x.example/"\n', {}, "tools.end_call"),
    ("secrets_in_file", '[secrets]\nassemblyai_api_key = "leaked"\n', {}, "secrets"),
    ("log_format_in_file", 'log_format = "console"\n', {}, "log_format"),
    ("config_dir_in_file", 'config_dir = "/etc"\n', {}, "config_dir"),
    ("log_format_env_bad", "", {"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
]


@pytest.mark.parametrize(("toml", "env", "key"), [i[1:] for i in INVALID], ids=[i[0] for i in INVALID])
def test_invalid_settings_raise_config_error_naming_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], key: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, toml), env=env)
    message = str(info.value)
    assert message.startswith(key + ":") or message.startswith(key + " "), message


def test_secret_values_in_the_file_are_not_echoed_in_the_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, '[secrets]\nassemblyai_api_key = "leaked-key"\n'), env={})
    assert "leaked-key" not in str(info.value)


def test_bad_toml_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(info.value).startswith(str(path))
    assert "TOML" in str(info.value)


def test_missing_file_is_a_config_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(path, env={})
    assert str(path) in str(info.value)


# ---- secrets stay secret -------------------------------------------------------------------------------------------
def test_secrets_repr_hides_values(tmp_path: Path) -> None:
    env = {
        "ASSEMBLYAI_API_KEY": "aai-secret-key",
        "TWILIO_AUTH_TOKEN": "twilio-secret-token",
        "GATEWAY_TOKEN_SECRET": "token-secret",
        "LOCAL_AGENT_API_KEY": "local-secret-key",
    }
    s = load_settings(write(tmp_path, ""), env=env)
    for text in (repr(s.secrets), str(s.secrets), repr(s), str(s)):
        for value in env.values():
            assert value not in text
    assert repr(s.secrets) == "Secrets(<redacted>)"


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = load_settings(write(tmp_path, ""), env=ENV)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.server.port = 1  # type: ignore[misc]


# ---- the committed configuration -----------------------------------------------------------------------------------
def test_committed_configuration_validates() -> None:
    committed = REPO_CONFIG_DIR / "gateway.toml"
    # With no committed file this loads the built-in defaults, which must validate too.
    s = load_settings(committed if committed.exists() else None, env=ENV)
    assert s.config_dir == REPO_CONFIG_DIR.resolve()
    assert "default" in s.profiles
    for name in s.numbers.values():
        assert name in s.profiles
    assert s.local_agent_intents_path().exists()


def test_a_file_without_a_default_profile_keeps_the_built_in_default(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text('[profiles.sales]\ngreeting = "hi"\n')
    s = load_settings(cfg, env={})
    assert s.profiles["sales"].greeting == "hi"
    assert s.profiles["default"].voice == Profile().voice
    assert s.profiles["sales"].voice == Profile().voice

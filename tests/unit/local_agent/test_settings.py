"""Local-agent settings (gateway/local_agent/settings.py): built from the gateway's config, completed with the
environment's secrets in one place at start-up, secrets kept out of ``repr``, errors in the project's tree."""

from __future__ import annotations

import pytest

from gateway.config import LocalAgentConfig, Settings
from gateway.errors import ConfigError
from gateway.local_agent.settings import LlmSettings, LocalAgentSettings, settings_from_app, settings_from_env


def with_llm(**llm: object) -> LocalAgentSettings:
    return LocalAgentSettings(llm=LlmSettings("http://127.0.0.1:8000/v1", "m", **llm))  # type: ignore[arg-type]


def test_the_llm_key_is_read_from_the_variable_the_settings_name() -> None:
    s = settings_from_env(with_llm(api_key_env="MY_LLM_KEY"), {"MY_LLM_KEY": " sk-1 ", "OTHER": "x"})
    assert s.llm is not None and s.llm.api_key == "sk-1"


@pytest.mark.parametrize(
    "llm,env",
    [
        ({"api_key_env": None}, {"LOCAL_AGENT_LLM_API_KEY": "sk-1"}),  # no variable named: no key
        ({"api_key_env": "MY_LLM_KEY"}, {}),  # the variable is unset
        ({"api_key_env": "MY_LLM_KEY"}, {"MY_LLM_KEY": "  "}),  # or blank
    ],
    ids=["no-variable", "unset", "blank"],
)
def test_no_llm_key_means_none(llm: dict[str, object], env: dict[str, str]) -> None:
    s = settings_from_env(with_llm(**llm), env)
    assert s.llm is not None and s.llm.api_key is None


def test_a_key_already_in_the_settings_wins_over_the_environment() -> None:
    s = settings_from_env(with_llm(api_key_env="MY_LLM_KEY", api_key="given"), {"MY_LLM_KEY": "env"})
    assert s.llm is not None and s.llm.api_key == "given"


def test_the_api_key_comes_from_the_environment_only_when_the_base_sets_none() -> None:
    assert settings_from_env(LocalAgentSettings(), {"LOCAL_AGENT_API_KEY": "k"}).api_key == "k"
    assert settings_from_env(LocalAgentSettings(api_key="flag"), {"LOCAL_AGENT_API_KEY": "k"}).api_key == "flag"
    assert settings_from_env(LocalAgentSettings(), {}).api_key is None


def test_secrets_stay_out_of_repr() -> None:
    s = LocalAgentSettings(
        api_key="agent-key-123",
        token_secret=b"token-secret-0123456789",
        llm=LlmSettings("http://127.0.0.1:8000/v1", "m", api_key="llm-key-456"),
    )
    text = repr(s)
    assert "agent-key-123" not in text and "token-secret" not in text and "llm-key-456" not in text
    assert "http://127.0.0.1:8000/v1" in text  # the rest is still there to read


def test_settings_from_the_gateway_config_carry_its_local_agent_table_and_no_secret() -> None:
    app = Settings(
        local_agent=LocalAgentConfig(min_silence_ms=700, llm_base_url="http://127.0.0.1:8000/v1", llm_model="m")
    )
    s = settings_from_app(app, "k")
    assert s.api_key == "k" and s.min_silence_ms == 700 and s.intents_path == app.local_agent_intents_path()
    assert s.llm is not None and s.llm.api_key_env == "LOCAL_AGENT_LLM_API_KEY" and s.llm.api_key is None


def test_a_bad_local_agent_setting_is_a_config_error_naming_the_key() -> None:
    app = Settings(local_agent=LocalAgentConfig(min_silence_ms=50))
    with pytest.raises(ConfigError, match=r"^local_agent\.min_silence_ms must be within"):
        settings_from_app(app, "k")
    app = Settings(local_agent=LocalAgentConfig(intents="nowhere/intents.toml"))
    with pytest.raises(ConfigError, match=r"^local_agent\.intents: .* does not exist"):
        settings_from_app(app, "k")

"""The settings of the "open doors" hardening (docs/security.md): ``[twilio] dial_allow`` (what ``POST /calls`` may
dial) and ``[server] header_timeout_s`` (how long a connection may take to send its request head). Defaults, the
committed file, and start-up errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import REPO_CONFIG_DIR, ServerSettings, TwilioSettings, load_settings
from gateway.errors import ConfigError

ENV = {"GATEWAY_TOKEN_SECRET": "test-secret"}


def load(tmp_path: Path, toml: str):
    cfg = tmp_path / "gateway.toml"
    cfg.write_text(toml, encoding="utf-8")
    return load_settings(cfg, env=ENV)


def test_defaults_dial_only_numbers_and_give_heads_ten_seconds() -> None:
    assert TwilioSettings().dial_allow == ()
    assert ServerSettings().header_timeout_s == 10.0


def test_the_committed_file_states_the_defaults() -> None:
    s = load_settings(REPO_CONFIG_DIR / "gateway.toml", env=ENV)
    assert s.twilio.dial_allow == TwilioSettings().dial_allow
    assert s.server.header_timeout_s == ServerSettings().header_timeout_s
    text = (REPO_CONFIG_DIR / "gateway.toml").read_text(encoding="utf-8")
    assert "\ndial_allow = []" in text and "\nheader_timeout_s = 10.0" in text  # documented, not only defaulted


def test_dial_allow_patterns_are_loaded_in_order(tmp_path: Path) -> None:
    s = load(
        tmp_path, '[twilio]\ndial_allow = ["+1555*", "sip:*@pbx.example.com", "sips:*@pbx.example.com", "client:*"]\n'
    )
    assert s.twilio.dial_allow == ("+1555*", "sip:*@pbx.example.com", "sips:*@pbx.example.com", "client:*")


@pytest.mark.parametrize(
    "toml,key,why",
    [
        ('[twilio]\ndial_allow = ["*"]\n', "twilio.dial_allow[0]", "patterns start with"),  # anything: say it
        ('[twilio]\ndial_allow = ["+1*", "1555*"]\n', "twilio.dial_allow[1]", "patterns start with"),  # never matches
        ('[twilio]\ndial_allow = ["+"]\n', "twilio.dial_allow[0]", "patterns start with"),
        ('[twilio]\ndial_allow = ["tel:+1555*"]\n', "twilio.dial_allow[0]", "patterns start with"),
        ('[twilio]\ndial_allow = ["SIP:*@pbx.example.com"]\n', "twilio.dial_allow[0]", "patterns start with"),
        ('[twilio]\ndial_allow = ["+1555 *"]\n', "twilio.dial_allow[0]", "whitespace"),  # never in a destination
        ('[twilio]\ndial_allow = "+1555*"\n', "twilio.dial_allow", "expected a list"),
        ("[server]\nheader_timeout_s = 0\n", "server.header_timeout_s", "must be positive"),
        ("[server]\nheader_timeout_s = -1.5\n", "server.header_timeout_s", "must be positive"),
        ('[server]\nheader_timeout_s = "10"\n', "server.header_timeout_s", "expected a number"),
    ],
)
def test_bad_values_stop_start_up_naming_the_key(tmp_path: Path, toml: str, key: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, toml)
    assert str(err.value).startswith(key + ":") and why in str(err.value), err.value


def test_a_fractional_header_timeout_is_accepted(tmp_path: Path) -> None:
    assert load(tmp_path, "[server]\nheader_timeout_s = 0.5\n").server.header_timeout_s == 0.5

"""The [state] settings (gateway/state/settings.py): environment overrides, validation naming the key, and the
address a replica advertises to the others."""

from __future__ import annotations

import hashlib

import pytest

from gateway.cluster.node import advertised_address
from gateway.config import load_settings
from gateway.errors import ConfigError
from gateway.state.settings import StateSettings, state_settings


def test_in_process_by_default_and_redis_from_the_environment():
    assert not load_settings(None, env={}).state.shared
    s = load_settings(None, env={"REDIS_URL": "redis://redis:6379/0", "GATEWAY_INTERNAL_URL": "http://10.0.0.5:8081/"})
    assert s.state.shared and s.state.redis_url == "redis://redis:6379/0"
    assert s.state.internal_url == "http://10.0.0.5:8081"


@pytest.mark.parametrize(
    ("table", "key"),
    [
        ({"redis_url": "http://redis:6379"}, "state.redis_url"),
        ({"op_timeout_s": 0}, "state.op_timeout_s"),
        ({"op_timeout_s": 30}, "state.op_timeout_s"),
        ({"on_unavailable": "panic"}, "state.on_unavailable"),
        ({"call_ttl_s": 0.5}, "state.call_ttl_s"),
        ({"internal_port": 70000}, "state.internal_port"),
        ({"internal_url": "ftp://x"}, "state.internal_url"),
        ({"internal_url": "http://x:1/path"}, "state.internal_url"),
        ({"forward_window_s": 0}, "state.forward_window_s"),
        ({"forward_timeout_s": 0}, "state.forward_timeout_s"),
        ({"key_prefix": ""}, "state.key_prefix"),
        ({"max_cluster_calls": -1}, "state.max_cluster_calls"),
        ({"reservation_ttl_s": 0}, "state.reservation_ttl_s"),
    ],
)
def test_invalid_values_name_their_key(table, key):
    with pytest.raises(ConfigError, match=f"^{key}:"):
        state_settings(StateSettings(**table), {})


def test_an_unknown_key_in_the_file_is_refused(tmp_path):
    cfg = tmp_path / "g.toml"
    cfg.write_text("[state]\nredis = 'redis://x'\n")
    with pytest.raises(ConfigError, match="state.redis: unknown key"):
        load_settings(cfg, env={})


@pytest.mark.parametrize(
    ("internal_url", "host", "expected"),
    [
        ("http://gw-1.internal:9000", "0.0.0.0", "http://gw-1.internal:9000"),
        ("10.0.3.7", "0.0.0.0", "http://10.0.3.7:8081"),  # a bare host (Kubernetes: status.podIP)
        ("", "127.0.0.1", "http://127.0.0.1:8081"),
    ],
)
def test_the_advertised_internal_address(internal_url, host, expected):
    s = StateSettings(internal_url=internal_url, internal_host=host)
    assert advertised_address(s, 8081) == expected


def test_serve_refuses_workers_with_a_shared_store(monkeypatch, capsys):
    from gateway import cli

    monkeypatch.setattr(cli, "configure_logging", lambda *a, **k: None)  # keep the test session's logging as it is
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1/0")
    monkeypatch.setenv("GATEWAY_TOKEN_SECRET", "x")
    assert cli.main(["serve", "--workers", "2", "--port", "1"]) == 2
    assert "state.redis_url" in capsys.readouterr().err


def test_the_store_keeps_a_digest_of_a_used_token_never_the_token():
    from gateway.cluster.node import token_key

    assert token_key("abc") == hashlib.sha256(b"abc").hexdigest() and "abc" not in token_key("abc")

"""The local agent's errors sit in the project's one error tree (gateway/errors.py): the client's mistakes are
RemoteProtocolErrors, bad settings and intents files ConfigErrors, a connection's end a CallEnded. Checked where
they are raised, not only by class."""

from __future__ import annotations

import dataclasses

import pytest

from gateway.errors import CallEnded, ConfigError, GatewayError, RemoteProtocolError
from gateway.local_agent import protocol as proto
from gateway.local_agent.brain import IntentsError, parse_intents
from gateway.local_agent.endings import ConnectionDone, EndReason
from gateway.local_agent.settings import LocalAgentSettings, SettingsError


@pytest.mark.parametrize(
    "error,base",
    [
        (proto.ProtocolError, RemoteProtocolError),
        (proto.TokenRequestInvalid, RemoteProtocolError),
        (SettingsError, ConfigError),
        (IntentsError, ConfigError),
        (ConnectionDone, CallEnded),
    ],
)
def test_each_local_agent_error_has_its_place_in_the_tree(error: type[Exception], base: type[Exception]) -> None:
    assert issubclass(error, base) and issubclass(error, GatewayError)


def test_a_client_mistake_is_the_peer_breaking_the_protocol() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        proto.parse_client_event("{not json")
    assert isinstance(info.value, proto.ProtocolError) and info.value.code == "invalid_format"
    with pytest.raises(RemoteProtocolError):
        proto.validate_token_request(None, {})


def test_bad_settings_and_intents_are_config_errors_that_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^threads must be within"):
        dataclasses.replace(LocalAgentSettings(), threads=0).validate()
    with pytest.raises(ConfigError, match=r"^intent must be a non-empty array"):
        parse_intents({"fallback_reply": "Sorry?"})
    # Still ValueErrors, as before they joined the tree.
    assert issubclass(SettingsError, ValueError) and issubclass(IntentsError, ValueError)


def test_a_connection_end_carries_its_reason() -> None:
    done = ConnectionDone(EndReason.IDLE)
    assert done.reason is EndReason.IDLE and str(done) == "idle"

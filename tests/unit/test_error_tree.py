"""One error tree (gateway/errors.py): every exception class the gateway package defines derives from GatewayError,
so a caller can tell the gateway's own errors from anything else, and our misuse (LocalProtocolError) from a peer's
(RemoteProtocolError)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import gateway
from gateway.carriers.twilio import TwilioDialect
from gateway.errors import GatewayError, LocalProtocolError, RemoteProtocolError


def _exception_classes() -> list[type[BaseException]]:
    found: dict[str, type[BaseException]] = {}
    for info in pkgutil.walk_packages(gateway.__path__, "gateway."):
        if info.name.startswith(("gateway.local_agent.speech", "gateway.__main__")):
            continue  # the offline model wrappers (optional extra) and the entry point
        module = importlib.import_module(info.name)
        for name, obj in vars(module).items():
            if inspect.isclass(obj) and issubclass(obj, BaseException) and obj.__module__ == info.name:
                found[f"{info.name}.{name}"] = obj
    return list(found.values())


def test_every_exception_the_gateway_defines_is_in_the_tree():
    classes = _exception_classes()
    assert len(classes) > 15  # the walk itself works
    outside = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, GatewayError))
    assert outside == []


def test_our_misuse_and_a_peers_fault_are_told_apart():
    assert not issubclass(LocalProtocolError, RemoteProtocolError)
    with pytest.raises(LocalProtocolError):
        TwilioDialect().build_media(b"\xff" * 160)  # no 'start' yet: no streamSid to send on

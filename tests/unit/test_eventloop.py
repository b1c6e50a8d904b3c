"""gateway.eventloop: which loop ``serve`` runs on (``[server] loop``, ``--loop``)."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from gateway import eventloop
from gateway.errors import ConfigError


async def _loop_module() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_runs_the_standard_loop() -> None:
    assert eventloop.resolve_loop("asyncio") == "asyncio"
    assert eventloop.run(_loop_module(), "asyncio").startswith("asyncio")


def test_auto_and_uvloop_run_uvloop_when_it_is_installed() -> None:
    # uvloop is a main dependency on Linux (pyproject.toml), so the test set-up always has it: no skip.
    assert importlib.util.find_spec("uvloop") is not None
    assert eventloop.resolve_loop("auto") == "uvloop"
    assert eventloop.run(_loop_module(), "auto").startswith("uvloop")
    assert eventloop.run(_loop_module(), "uvloop").startswith("uvloop")


def test_without_uvloop_auto_falls_back_and_uvloop_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvloop" else real(name, *a))
    assert eventloop.resolve_loop("auto") == "asyncio"
    with pytest.raises(ConfigError) as info:
        eventloop.resolve_loop("uvloop")
    assert str(info.value).startswith("server.loop:")

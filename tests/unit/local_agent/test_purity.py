"""Pure stays pure: the local agent's rule modules import no asyncio, no sockets, no HTTP, no clock and no
environment (STYLE: "Pure cores, thin shell"), checked on their source and on what importing them loads."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import gateway.local_agent

PACKAGE = Path(gateway.local_agent.__file__).parent
PURE = [
    "brain.py",
    "codec.py",
    "conversation.py",
    "endings.py",
    "handshake.py",
    "llm_stream.py",
    "synth_cache.py",
    "tool_calls.py",
    "turn_merge.py",
    "turns.py",
    "instructions.py",
    *(f"protocol/{p.name}" for p in sorted((PACKAGE / "protocol").glob("*.py"))),
    "store/agents.py",
    "store/artifacts.py",
    "store/recording.py",
    "store/timeline.py",
    *(f"arguments/{p.name}" for p in sorted((PACKAGE / "arguments").glob("*.py"))),
]
#: What a pure module must not import: the event loop, sockets and HTTP, the clock, the environment, threads.
IMPURE = {"aiohttp", "asyncio", "concurrent", "os", "socket", "threading", "time", "websockets"}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_nothing_impure(module: str) -> None:
    assert imported(PACKAGE / module) & IMPURE == set()


def test_settings_read_the_environment_only_in_settings_from_env() -> None:
    tree = ast.parse((PACKAGE / "settings.py").read_text())
    readers = {
        fn.name
        for fn in ast.walk(tree)
        if isinstance(fn, ast.FunctionDef)
        for node in ast.walk(fn)
        if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
    }
    assert readers == {"settings_from_env"}


def test_importing_the_pure_modules_loads_no_event_loop_or_http() -> None:
    modules = ", ".join("gateway.local_agent." + m.removesuffix(".py").replace("/", ".") for m in PURE)
    code = f"import sys, {modules}\nprint(sorted({{'aiohttp', 'asyncio', 'socket'}} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"

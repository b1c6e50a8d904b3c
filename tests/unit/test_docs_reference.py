"""The reference pages of the documentation site list what the code defines, so they cannot drift silently.

- docs/reference/configuration.md: every key of the settings dataclasses (gateway/config.py), with its type and
  built-in default, and no key the code does not have;
- docs/reference/environment.md: every environment variable the gateway reads;
- docs/reference/cli.md: every option of ``python -m gateway serve | local-agent | call``;
- docs/reference/metrics.md: every metric family the gateway registers, and nothing else.

The log reference (docs/reference/logs.md) is checked by tests/unit/test_log_schema.py. ``mkdocs build --strict``
(scripts/test) checks the links between pages."""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from gateway.carriers import registry
from gateway.config import Settings

ROOT = Path(__file__).resolve().parents[2]
REFERENCE = ROOT / "docs" / "reference"

#: A table row of a reference page: the first cell is one backticked name.
_ROW = re.compile(r"^\| `([^`]+)` \|(.*)$", re.MULTILINE)


def _rows(page: str) -> dict[str, list[str]]:
    """First-cell name → the row's other cells, for every row whose first cell is a single backticked name."""
    rows: dict[str, list[str]] = {}
    for name, rest in _ROW.findall((REFERENCE / page).read_text(encoding="utf-8")):
        assert name not in rows, f"{page}: {name} has two rows"
        rows[name] = [cell.strip() for cell in rest.rstrip(" |").split(" | ")]
    return rows


# ---- configuration -------------------------------------------------------------------------------------------------
#: Settings fields that are not keys of the TOML file (the loader refuses them there).
_NOT_KEYS = {"secrets", "config_dir", "log_format"}
#: Tables keyed by a name the operator chooses: the page writes that part as NAME (NUMBER for [numbers]).
_NAMED = {"profiles": "NAME", "tools": "NAME", "numbers": "NUMBER"}


def _type_name(tp: Any) -> str:
    """The type as the page writes it."""
    if tp is str:
        return "string"
    if tp is int:
        return "integer"
    if tp is float:
        return "number"
    if tp is bool:
        return "boolean"
    origin = typing.get_origin(tp)
    if origin is tuple and typing.get_args(tp)[0] is str:
        return "list of strings"
    if origin in (Mapping, dict) or tp is dict:
        return "table"
    if set(typing.get_args(tp)) == {bool, str}:
        return 'boolean or `"auto"`'
    args = typing.get_args(tp)
    if len(args) == 2 and type(None) in args:  # X | None: unset unless given
        return _type_name(next(a for a in args if a is not type(None)))
    raise AssertionError(f"no documented spelling for the config type {tp!r}: extend _type_name")


def _default(f: dataclasses.Field[Any]) -> str:
    """The built-in default as the page writes it: a TOML value in backticks, or ``required``."""
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (int, float)):
        text = repr(value)
    elif isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, tuple):
        text = json.dumps(list(value))
    elif isinstance(value, Mapping):
        assert not value, f"{f.name}: a non-empty table default needs a spelling here"
        text = "{}"
    else:
        raise TypeError(f"{f.name}: no documented spelling for the default {value!r}")
    return f"`{text}`"


def expected_config_rows() -> dict[str, tuple[str, str]]:
    """Every documented key → (type, default), walked from the settings dataclasses."""
    hints = typing.get_type_hints(Settings)
    rows: dict[str, tuple[str, str]] = {}
    for table in dataclasses.fields(Settings):
        if table.name in _NOT_KEYS:
            continue
        tp = hints[table.name]
        if table.name in _NAMED:
            value_type = typing.get_args(tp)[1]
            prefix = f"{table.name}.{_NAMED[table.name]}"
            if not dataclasses.is_dataclass(value_type):  # [numbers]: NUMBER = "profile"
                rows[prefix] = (_type_name(value_type), "–")
                continue
            cls = value_type
        elif table.name == "carriers":  # [carriers.NAME]: each carrier's module declares its table
            for spec in registry.CARRIERS:
                spec_hints = typing.get_type_hints(spec.options)
                for f in dataclasses.fields(spec.options):
                    rows[f"carriers.{spec.name}.{f.name}"] = (_type_name(spec_hints[f.name]), _default(f))
            continue
        else:
            prefix, cls = table.name, tp
        _walk(cls, prefix, rows)
    return rows


def _walk(cls: Any, prefix: str, rows: dict[str, tuple[str, str]]) -> None:
    """A settings dataclass's keys; a nested dataclass (``[profiles.NAME.idle]``) is a table of its own keys."""
    cls_hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        ftype = cls_hints[f.name]
        if dataclasses.is_dataclass(ftype):
            _walk(ftype, f"{prefix}.{f.name}", rows)
        else:
            rows[f"{prefix}.{f.name}"] = (_type_name(ftype), _default(f))


def test_the_configuration_reference_lists_every_key_with_its_type_and_default():
    documented = _rows("configuration.md")
    expected = expected_config_rows()
    assert len(expected) > 60  # the walk itself works
    missing = sorted(set(expected) - set(documented))
    assert not missing, f"docs/reference/configuration.md lacks rows for {missing}"
    stale = sorted(set(documented) - set(expected))
    assert not stale, f"docs/reference/configuration.md documents keys the code does not have: {stale}"
    for key, (type_name, default) in expected.items():
        cells = documented[key]
        assert len(cells) == 3, f"{key}: expected | key | type | default | meaning |, got {cells}"
        assert cells[0] == type_name, f"{key}: the page says type {cells[0]!r}, the code {type_name!r}"
        assert cells[1] == default, f"{key}: the page says default {cells[1]!r}, the code {default!r}"


def test_the_committed_config_file_uses_only_documented_keys():
    """config/gateway.toml is loaded by the real loader elsewhere; here: every key it sets has a row (with the
    operator-chosen part of profiles, tools and numbers written as on the page)."""
    import tomllib

    table = tomllib.loads((ROOT / "config" / "gateway.toml").read_text(encoding="utf-8"))
    documented = set(_rows("configuration.md"))
    for section, values in table.items():
        for key, value in values.items():
            if section in _NAMED:
                names = value if isinstance(value, dict) else {key: value}
                label = f"{section}.{_NAMED[section]}"
                keys = [label] if not isinstance(value, dict) else [f"{label}.{k}" for k in names]
            elif section == "carriers" and isinstance(value, dict):
                keys = [f"carriers.{key}.{k}" for k in value]
            else:
                keys = [f"{section}.{key}"]
            for k in keys:
                assert k in documented, f"config/gateway.toml sets {k}, which the reference does not document"


# ---- environment ---------------------------------------------------------------------------------------------------
_ENV_READ = re.compile(r"""\b(?:env|environ)(?:\.get|\.setdefault)?[\[(]\s*["']([A-Z][A-Z0-9_]+)["']""")


def environment_variables_read() -> set[str]:
    """Every variable name the gateway package reads literally, and the simulator's per-carrier signing secrets."""
    names: set[str] = set()
    for path in (ROOT / "gateway").rglob("*.py"):
        names |= set(_ENV_READ.findall(path.read_text(encoding="utf-8")))
    from gateway.simulator.cli import SECRET_ENV

    names |= set(SECRET_ENV.values())
    return names


def test_the_environment_reference_lists_every_variable_the_gateway_reads():
    read = environment_variables_read()
    assert {"GATEWAY_PUBLIC_URL", "TWILIO_AUTH_TOKEN", "OPENBLAS_NUM_THREADS"} <= read  # the scan itself works
    documented = set(_rows("environment.md"))
    missing = sorted(read - documented)
    assert not missing, f"docs/reference/environment.md does not document {missing}"


# ---- command line --------------------------------------------------------------------------------------------------
def _subcommands() -> dict[str, argparse.ArgumentParser]:
    from gateway.cli import _parser

    parser = _parser()
    # argparse has no public API to list a parser's options or subcommands
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))  # noqa: SLF001
    return dict(action.choices)


@pytest.mark.parametrize("command", ["serve", "local-agent", "call"])
def test_the_cli_reference_lists_every_option(command):
    page = (REFERENCE / "cli.md").read_text(encoding="utf-8")
    heading = f"## `python -m gateway {command}`"
    assert heading in page, f"docs/reference/cli.md has no section {heading!r}"
    section = page.split(heading, 1)[1].split("\n## ", 1)[0]
    options = _subcommands()[command]._actions  # noqa: SLF001 - argparse, as above
    long_options = [s for a in options for s in a.option_strings if s.startswith("--") and s != "--help"]
    assert long_options, command
    documented = {m.split()[0] for m in re.findall(r"^\| `(--[^`]+)`", section, re.MULTILINE)}
    missing = sorted(set(long_options) - documented)
    assert not missing, f"python -m gateway {command}: options {missing} are not in docs/reference/cli.md"
    stale = sorted(documented - set(long_options))
    assert not stale, f"python -m gateway {command}: docs/reference/cli.md lists options that do not exist: {stale}"


# ---- metrics -------------------------------------------------------------------------------------------------------
def registered_metrics() -> set[str]:
    """The gateway's own metric families, as a scrape names them (counters with ``_total``)."""
    from gateway.metrics import GatewayMetrics

    metrics = GatewayMetrics(
        active_calls=lambda: 0, accepting=lambda: True, max_concurrent_calls=1, process_metrics=False
    )
    return {family.name + ("_total" if family.type == "counter" else "") for family in metrics.registry.collect()}


def test_the_metrics_reference_lists_every_metric_and_nothing_else():
    registered = registered_metrics()
    assert "voice_gateway_active_calls" in registered and "voice_gateway_calls_total" in registered
    documented = {name for name in _rows("metrics.md") if name.startswith("voice_gateway_")}
    assert registered - documented == set(), f"not in docs/reference/metrics.md: {sorted(registered - documented)}"
    assert documented - registered == set(), f"documented but not registered: {sorted(documented - registered)}"


# ---- README --------------------------------------------------------------------------------------------------------
def test_the_readme_stays_short_and_its_links_resolve():
    """The README is the front door (what it is, two commands, links into the docs); the rest lives in docs/ and
    CHANGELOG.md. mkdocs does not build it, so its relative links are checked here."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150, "README.md is meant to stay under 150 lines: move detail into docs/"
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    local = [link for link in links if "://" not in link]
    assert len(local) > 10  # the scan itself works
    missing = [link for link in local if not (ROOT / link).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"

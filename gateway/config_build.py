"""How a TOML table becomes a typed settings dataclass: each value converted to its field's annotated type, unknown
keys refused, and every error a :class:`~gateway.errors.ConfigError` that names the key
(``audio.playout_lead_ms: expected an integer, got 'x'``). Pure; :mod:`gateway.config` declares the settings.

A type with a ``__config_build__(table, key)`` classmethod builds itself (the carriers' tables do).
"""

from __future__ import annotations

import collections.abc
import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError

__all__ = ["build", "convert"]


def convert(value: Any, tp: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        for member in members[:-1]:  # the first member type that takes the value; the last one's error if none
            try:
                return convert(value, member, key)
            except ConfigError:
                continue
        return convert(value, members[-1], key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        inner = typing.get_args(tp)[0]
        return tuple(convert(v, inner, f"{key}[{i}]") for i, v in enumerate(value))
    if origin in (Mapping, dict, collections.abc.Mapping) or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a table, got {value!r}")
        args = typing.get_args(tp)
        vt = args[1] if len(args) == 2 else Any
        return {str(k): convert(v, vt, f"{key}.{k}") for k, v in value.items()}
    hook = getattr(tp, "__config_build__", None)
    if hook is not None:  # a type that builds itself from its table (gateway.config.CarrierSettings)
        return hook(value, key)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key)
    raise ConfigError(f"{key}: unsupported type {tp!r}")  # pragma: no cover - our bug


def build(cls: Any, table: Any, prefix: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix}: expected a table, got {table!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(fields))
    if unknown:
        raise ConfigError(f"{prefix + '.' if prefix else ''}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    kwargs = {}
    for name, value in table.items():
        kwargs[name] = convert(value, hints[name], f"{prefix + '.' if prefix else ''}{name}")
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required field (e.g. tools.X.url) is missing
        raise ConfigError(f"{prefix}: {exc}") from None

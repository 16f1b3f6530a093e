"""Loading config files and applying overrides, failing loudly on unknown fields."""

from __future__ import annotations

import ast
import importlib.util
import os
from collections.abc import Iterable, Mapping
from typing import Any

import ml_collections

from bert_jax.errors import ConfigError


def load_config(
    path: str | os.PathLike, overrides: Mapping[str, Any] | Iterable[str] | None = None
) -> ml_collections.ConfigDict:
    """Runs `get_config()` from a config file and applies overrides.

    `overrides` is a mapping of dotted field names to values, or strings
    `"model.hidden_size=256"` as on the command line. The returned config is
    locked: setting a field that does not exist raises.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist; pass a file such as configs/bert_tiny.py")
    spec = importlib.util.spec_from_file_location(f"bert_jax_config_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path!r} defines no get_config()")
    config = module.get_config()
    config.lock()
    apply_overrides(config, overrides or {})
    return config


def _parse_value(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def valid_fields(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Every dotted leaf field name of a config, for error messages."""
    names = []
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, ml_collections.ConfigDict):
            names.extend(valid_fields(value, name + "."))
        else:
            names.append(name)
    return sorted(names)


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any] | Iterable[str]
) -> ml_collections.ConfigDict:
    """Sets dotted fields in place; an unknown field raises with the valid ones."""
    if not isinstance(overrides, Mapping):
        pairs = {}
        for item in overrides:
            if "=" not in item:
                raise ConfigError(f"override {item!r} is not of the form field=value")
            key, value = item.split("=", 1)
            pairs[key.removeprefix("config.")] = _parse_value(value)
        overrides = pairs
    for key, value in overrides.items():
        *parents, leaf = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, ml_collections.ConfigDict) else None
        if not isinstance(node, ml_collections.ConfigDict) or leaf not in node:
            raise ConfigError(f"unknown config field {key!r}; valid fields are: " + ", ".join(valid_fields(config)))
        current = node[leaf]
        if isinstance(current, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            with node.unlocked():
                node[leaf] = value
        except TypeError as e:
            raise ConfigError(f"config field {key!r}: {e}") from e
    return config

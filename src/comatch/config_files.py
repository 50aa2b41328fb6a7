"""The configuration's files: bundled YAML presets, ``--config`` files and ``key=value`` overrides,
as raw mappings (:mod:`comatch.config` validates them into the typed configuration).

Imports neither torch nor the methods, so that the command line can read a setting that must be
known before torch loads (``run.numerics``).
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from comatch.errors import UserError


def preset_names() -> list[str]:
    """Names of the bundled presets."""
    folder = resources.files("comatch") / "presets"
    names = [p.name.removesuffix(".yaml") for p in folder.iterdir() if p.name.endswith(".yaml")]
    # the default first, then by name with numbers in numeric order (cifar10-40 before cifar10-250)
    return sorted(names, key=lambda n: (n != "digits", [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", n)]))


def load_preset(name: str) -> dict[str, Any]:
    """The raw mapping of a bundled preset. Raises UserError for an unknown name."""
    path = resources.files("comatch") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(preset_names())} (see `comatch presets`)")
    return yaml.safe_load(path.read_text()) or {}


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in a YAML config file. Raises UserError if missing or malformed."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as err:
        raise UserError(f"cannot read config file {path}: {err.strerror}; check the path") from err
    except UnicodeDecodeError:
        raise UserError(f"config file {path} is not a text (YAML) file; give a YAML file of config fields") from None
    except yaml.YAMLError as err:
        raise UserError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from err
    if not isinstance(data, dict):
        raise UserError(f"config file {path} must hold a mapping of config fields")
    return data


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one ``dotted.key=value`` override in place; the value is parsed as YAML."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"cannot read override {assignment!r}; write it as key=value, e.g. optim.lr=0.01")
    try:
        value = yaml.safe_load(text) if text else None
    except yaml.YAMLError:
        value = text
    node = raw
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise UserError(f"unknown config key {key!r}: {part!r} is not a section")
        node = child
    node[leaf] = value


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged

"""Suites: declarative grids of configurations in registry/suites/<name>.toml (or any path).

    description = "..."
    seeds = 3                    # seeds per configuration
    [base]                       # flat config keys shared by every configuration
    dataset = "ring8"
    [grid]                       # cartesian product over these keys
    loss = ["minimax", "hinge"]
    [[settings]]                 # optional list of hyperparameter settings, crossed with the grid
    lr_g = 1e-4
    lr_d = 1e-4

Every configuration is resolved (and so validated) when the suite is read, before any training:
a malformed suite fails with the file, the key and what was expected.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench import cards
from lossbench.config import RunConfig, resolve
from lossbench.errors import ConfigError
from lossbench.registry import unknown_name_message

TOP_KEYS = ("description", "seeds", "base", "grid", "settings")


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    seeds: int
    configs: tuple[RunConfig, ...]


def load(name_or_path: str) -> Suite:
    path = cards.suite_path(name_or_path)
    raw = cards.read_toml(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: {unknown_name_message('top-level key', key, list(TOP_KEYS))}")
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ConfigError(f"{path}: 'seeds' must be an integer >= 1, got {seeds!r}")
    base = _table(raw, "base", path)
    grid = _table(raw, "grid", path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} must be a non-empty list, got {values!r}")
    settings = raw.get("settings", [{}])
    if not isinstance(settings, list) or not all(isinstance(s, dict) for s in settings):
        raise ConfigError(f"{path}: 'settings' must be an array of tables ([[settings]])")

    configs: list[RunConfig] = []
    for combo in itertools.product(*grid.values()):
        for i, setting in enumerate(settings):
            values = base | dict(zip(grid, combo)) | setting
            where = f"{path} ({', '.join(f'{k}={v}' for k, v in zip(grid, combo))}; settings[{i}])"
            try:
                cfg = resolve((where, values))
            except ConfigError as exc:
                msg = str(exc)
                raise ConfigError(msg if msg.startswith(str(path)) else f"{where}: {msg}") from None
            if cfg not in configs:
                configs.append(cfg)
    return Suite(path.stem, path, str(raw.get("description", "")), seeds, tuple(configs))


def _table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a table ([{key}])")
    return value

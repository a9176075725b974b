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
    [by-dataset.cifar10]         # optional: keys set for one data set's configurations (over base,
    epochs = 100                 #   grid and settings; e.g. a paper's per-data-set budget)
    reseeds = 50                 # optional: second stage, the best setting per (loss, data set) re-run
    best_by = "fid"              #   with this many seeds; best by this final metric (default fid)
    [search]                     # optional: random search, `draws` settings crossed with the grid
    draws = 100
    seed = 0
    [search.keys]                # per key a distribution: log-uniform, uniform, int-range, choice
    lr_d = {log-uniform = [1e-5, 1e-2]}
    [search.by-loss.wgan]        # keys drawn only for one loss's configurations
    weight_clip = {log-uniform = [1e-3, 1.0]}
    # or, instead of seed, keys and by-loss: replay = "compare_gan" (that program's own draws)

The [search] table, its distributions, its determinism and the second stage are described in
lossbench/exec/search.py. Every configuration is resolved (and so validated) when the suite is read,
before any training: a malformed suite fails with the file, the key and what was expected. Its size
is counted from its tables before any configuration is built and refused past the caps of
lossbench.caps: seeds and reseeds (MAX_SEEDS), draws, configurations (grid points x settings x draws)
and runs (configurations x seeds). A plugin loss
the suite names is loaded only when the command line allows it (lossbench.plugins).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lossbench import caps, cards
from lossbench.config import DataConfig, LossConfig, RunConfig, resolve
from lossbench.errors import ConfigError
from lossbench.exec.search import Search, check_best_by
from lossbench.exec.search import parse as parse_search
from lossbench.options import MAX_SEEDS
from lossbench.plugins import Plugins, is_plugin
from lossbench.registry import unknown_name_message

TOP_KEYS = ("description", "seeds", "base", "grid", "settings", "by-dataset", "search", "reseeds", "best_by")


@dataclass(frozen=True)
class Suite:
    name: str
    path: Path
    description: str
    seeds: int
    configs: tuple[RunConfig, ...]
    reseeds: int = 0  # seeds of the second stage (0: the suite has none)
    best_by: str = "fid"  # the final metric that picks the second stage's setting
    search: Search | None = None


def load(name_or_path: str, plugins: Plugins = Plugins()) -> Suite:
    """The suite, every configuration resolved; `plugins`: the plugin losses the command line allows."""
    path = cards.suite_path(name_or_path)
    raw = cards.read_toml(path)
    for key in raw:
        if key not in TOP_KEYS:
            raise ConfigError(f"{path}: {unknown_name_message('top-level key', key, list(TOP_KEYS))}")
    seeds = raw.get("seeds", 1)
    if isinstance(seeds, bool) or not isinstance(seeds, int) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"{path}: 'seeds' must be an integer in 1..{MAX_SEEDS}, got {seeds!r}")
    base = _table(raw, "base", path)
    grid = _table(raw, "grid", path)
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise ConfigError(f"{path}: grid.{key} must be a non-empty list, got {values!r}")
    settings = raw.get("settings", [{}])
    if not isinstance(settings, list) or not all(isinstance(s, dict) for s in settings):
        raise ConfigError(f"{path}: 'settings' must be an array of tables ([[settings]])")
    reseeds = raw.get("reseeds", 0)
    if isinstance(reseeds, bool) or not isinstance(reseeds, int) or not 0 <= reseeds <= MAX_SEEDS:
        raise ConfigError(f"{path}: 'reseeds' must be an integer in 1..{MAX_SEEDS} (or left out), got {reseeds!r}")
    by_dataset = _table(raw, "by-dataset", path)
    for name, table in by_dataset.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: 'by-dataset.{name}' must be a table ([by-dataset.{name}])")
    fixed = set(grid) | {k for s in settings for k in s} | {k for t in by_dataset.values() for k in t}
    _admit_searched_plugins(raw.get("search"), plugins, path)
    search = parse_search(raw["search"], str(path), fixed) if "search" in raw else None
    _check_size(math.prod(map(len, grid.values())), len(settings), search.draws if search else 0, seeds, path)
    if search:
        suite_losses = {(base | dict(zip(grid, combo)) | s).get("loss", LossConfig.loss)
                        for combo in itertools.product(*grid.values()) for s in settings}  # fmt: skip
        for loss, _ in search.by_loss:
            if loss not in suite_losses:
                raise ConfigError(f"{path}: [search.by-loss.{loss}]: no configuration of this suite has loss "
                                  f"'{loss}' (its losses: {', '.join(sorted(map(str, suite_losses)))})")  # fmt: skip

    configs: dict[RunConfig, None] = {}  # ordered, and a set: thousands of drawn configurations
    for combo in itertools.product(*grid.values()):
        for i, setting in enumerate(settings):
            point = base | dict(zip(grid, combo)) | setting
            point |= by_dataset.get(point.get("dataset", DataConfig.dataset), {})
            loss = point.get("loss", LossConfig.loss)
            try:
                draws = search.settings(loss if isinstance(loss, str) else None) if search else [{}]
            except ConfigError as exc:  # a replay that drew nothing for this loss
                raise ConfigError(f"{path}: search.replay: {exc}") from None
            for j, draw in enumerate(draws):
                values = point | draw
                where = (f"{path} ({', '.join(f'{k}={v}' for k, v in zip(grid, combo))}; settings[{i}]"
                         + (f"; draw {j}: {', '.join(f'{k}={v!r}' for k, v in draw.items())})" if search else ")"))
                try:
                    cfg = resolve((where, values), plugins=plugins)
                except ConfigError as exc:
                    msg = str(exc)
                    raise ConfigError(msg if msg.startswith(str(path)) else f"{where}: {msg}") from None
                configs.setdefault(cfg)
    if not configs:
        raise ConfigError(f"{path}: its grid and settings multiply to zero configurations")
    datasets = {c.data.dataset for c in configs}
    if stray := sorted(set(by_dataset) - datasets):
        raise ConfigError(f"{path}: [by-dataset.{stray[0]}]: no configuration of this suite uses data set "
                          f"'{stray[0]}' (its data sets: {', '.join(sorted(datasets))})")  # fmt: skip
    if "best_by" in raw and not reseeds:
        raise ConfigError(f"{path}: 'best_by' picks the setting the second stage re-runs; it needs 'reseeds'")
    best_by = check_best_by(raw.get("best_by", "fid"), tuple(configs), str(path)) if reseeds else "fid"
    return Suite(path.stem, path, str(raw.get("description", "")), seeds, tuple(configs), reseeds, best_by, search)


def _table(raw: dict[str, Any], key: str, path: Path) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{key}' must be a table ([{key}])")
    return value


def _check_size(grid_points: int, settings: int, draws: int, seeds: int, path: Path) -> None:
    """Refuse a suite past the caps (lossbench.caps) before any configuration is built:

    configurations = grid points x settings x max(draws, 1) <= MAX_CONFIGS
    runs           = configurations x seeds                 <= MAX_RUNS
    """
    if draws > caps.MAX_DRAWS:
        raise ConfigError(f"{path}: search.draws is {draws:,}; lossbench draws at most {caps.MAX_DRAWS:,}")
    configs = grid_points * settings * max(draws, 1)
    product = f"{grid_points:,} grid points x {settings:,} settings" + (f" x {draws:,} draws" if draws else "")
    if configs > caps.MAX_CONFIGS:
        raise ConfigError(f"{path}: {product} = {configs:,} configurations; lossbench reads at most "
                          f"{caps.MAX_CONFIGS:,} from one suite")  # fmt: skip
    if configs * seeds > caps.MAX_RUNS:
        raise ConfigError(f"{path}: {configs:,} configurations x {seeds} seeds = {configs * seeds:,} runs; "
                          f"lossbench runs at most {caps.MAX_RUNS:,} from one suite")  # fmt: skip


def _admit_searched_plugins(search: Any, plugins: Plugins, path: Path) -> None:
    """Refuse a plugin loss named under [search.by-loss] unless the command line allows it, before the
    search table is read (reading it looks each loss up)."""
    by_loss = search.get("by-loss") if isinstance(search, dict) else None
    for loss in by_loss if isinstance(by_loss, dict) else ():
        if is_plugin(loss):
            try:
                plugins.admit(loss, on_command_line=False)
            except ConfigError as exc:
                raise ConfigError(f"{path}: [search.by-loss]: {exc}") from None

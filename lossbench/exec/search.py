"""Random search in suites, and its second stage: re-run each (loss, data set)'s best setting.

A suite's `[search]` table draws hyperparameter settings; each draw is crossed with the grid (and
with `[[settings]]`, if any) and becomes a configuration of its own, resolved and validated when
the suite is read, with its own hash:

    reseeds = 50                      # top level: seeds of the second stage (sweep SUITE --stage seeds)
    best_by = "fid"                   # top level, optional (default fid): the final metric that picks the best
    [search]
    draws = 100                       # settings drawn, each crossed with the grid
    seed = 0                          # the draws are a function of this seed and the keys alone
    [search.keys]                     # one distribution per flat config key, an inline table of one entry
    lr_g = {log-uniform = [1e-5, 1e-2]}   # exp(U[log lo, log hi)), 0 < lo < hi
    beta1 = {uniform = [0.0, 1.0]}        # U[lo, hi), lo < hi
    n_critic = {int-range = [1, 5]}       # an integer in lo..hi, both included, lo <= hi
    optimizer = {choice = ["adam", "rmsprop"]}   # one of the values, equally likely
    lr = {log-uniform = [1e-5, 1e-2]}     # an alias sets several fields at once (lr: lr_g = lr_d)
    [search.by-loss.wgan]             # drawn only for the configurations of one loss
    weight_clip = {log-uniform = [1e-3, 1.0]}

Replay: `replay = "compare_gan"` in [search] (with `draws`, and no seed, keys or by-loss) takes
another program's own draws instead, in its order: draw k of a loss is that program's sample k
(lossbench/exec/compare_gan.py: Lucic et al.'s settings, the loss's default first).

Determinism: each key draws from its own stream, Python's `random.Random` seeded with the string
"<seed>:<key>" (whose `random()` sequence Python keeps stable across versions), never from global
state. So the same seed gives the same draws, another seed other draws; adding, removing or
reordering a key leaves the other keys' draws as they were; raising `draws` keeps the first ones.
Every grid point gets the same draws (the settings are paired across losses and data sets; a key
drawn for several losses under [search.by-loss] draws the same values for each). A key may not be
both searched and in [grid] or [[settings]], nor both in [search.keys] and [search.by-loss]; a key
in [base] is overridden.

Second stage (`choose`), for any suite with `reseeds` (a plain grid too): per (loss, data set), among
the suite's configurations (the first stage), the one whose finished seeds have the best median
final `best_by` metric (lower is better for FID; the direction comes from
lossbench.metrics.registry.higher_is_better). Only the first stage's seeds (0 .. seeds-1) are
scored, so running the second stage never changes which setting it picked. Ties go to the lowest
configuration hash, and are said; so are configurations with no finished run. The chosen
configuration then runs seeds 0 .. reseeds-1: the seeds it already finished in the first stage are
the same (configuration, seed) and are skipped, so they count among the reseeds.
"""

from __future__ import annotations

import math
import random
import statistics
from dataclasses import dataclass
from typing import Any

from lossbench.config import ALIASES, KEYS, RunConfig
from lossbench.errors import ConfigError
from lossbench.exec import compare_gan
from lossbench.gan import losses
from lossbench.metrics.registry import BEST_PREFIX, METRICS, higher_is_better, ranking_key
from lossbench.plugins import is_plugin
from lossbench.registry import unknown_name_message
from lossbench.tracking import Tracker

DISTRIBUTIONS = ("choice", "int-range", "log-uniform", "uniform")
SEARCH_KEYS = ("draws", "seed", "keys", "by-loss", "replay")
REPLAYS = {"compare_gan": compare_gan}  # replay = NAME: another program's own draws (lossbench.exec.compare_gan)


@dataclass(frozen=True)
class Distribution:
    key: str  # the flat config key it draws
    kind: str  # one of DISTRIBUTIONS
    args: tuple[Any, ...]  # (lo, hi), or the choices

    def value(self, u: float) -> Any:
        """The draw for u in [0, 1)."""
        if self.kind == "choice":
            return self.args[min(int(u * len(self.args)), len(self.args) - 1)]
        lo, hi = self.args
        if self.kind == "int-range":
            return min(lo + int(u * (hi - lo + 1)), hi)
        if self.kind == "uniform":
            return min(max(lo + u * (hi - lo), lo), hi)
        return min(max(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))), lo), hi)  # log-uniform


@dataclass(frozen=True)
class Search:
    draws: int
    seed: int
    keys: tuple[Distribution, ...]
    by_loss: tuple[tuple[str, tuple[Distribution, ...]], ...] = ()  # (loss, its own keys)
    replay: str = ""  # one of REPLAYS: its draws instead of keys and by-loss

    def settings(self, loss: str | None = None) -> list[dict[str, Any]]:
        """The draws, in order: one {key: value} per draw (with `loss`'s own keys, if it has any)."""
        if self.replay:
            return REPLAYS[self.replay].settings(loss or "", self.draws)
        columns = {}
        for d in (*self.keys, *dict(self.by_loss).get(loss or "", ())):
            rng = random.Random(f"{self.seed}:{d.key}")
            columns[d.key] = [d.value(rng.random()) for _ in range(self.draws)]
        return [{key: values[i] for key, values in columns.items()} for i in range(self.draws)]


def _number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _distribution(key: str, spec: Any, where: str) -> Distribution:
    if not isinstance(spec, dict) or len(spec) != 1:
        raise ConfigError(f"{where}: search.keys.{key} must be one distribution as an inline table, "
                          f"e.g. {key} = {{log-uniform = [1e-5, 1e-2]}}; got {spec!r}")  # fmt: skip
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        message = unknown_name_message("distribution", kind, list(DISTRIBUTIONS))
        raise ConfigError(f"{where}: search.keys.{key}: {message}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{where}: search.keys.{key}: choice needs a non-empty list of values, got {args!r}")
        return Distribution(key, kind, tuple(args))
    if not isinstance(args, list) or len(args) != 2 or not all(map(_number, args)):
        raise ConfigError(f"{where}: search.keys.{key}: {kind} needs [lo, hi], two finite numbers, got {args!r}")
    lo, hi = args
    if kind == "int-range":
        if not all(isinstance(a, int) for a in args):
            raise ConfigError(f"{where}: search.keys.{key}: int-range needs two integers [lo, hi], got {args!r}")
        if hi < lo:
            raise ConfigError(f"{where}: search.keys.{key}: int-range [{lo}, {hi}] is empty (lo > hi)")
    elif not lo < hi:
        what = "empty (lo = hi; a fixed value belongs in [base])" if lo == hi else "reversed (lo > hi)"
        raise ConfigError(f"{where}: search.keys.{key}: {kind} [{lo}, {hi}] is {what}")
    if kind == "log-uniform" and lo <= 0:
        raise ConfigError(f"{where}: search.keys.{key}: log-uniform needs 0 < lo, got [{lo}, {hi}]")
    return Distribution(key, kind, (lo, hi) if kind == "int-range" else (float(lo), float(hi)))


def logged_keys(metrics: tuple[str, ...]) -> list[str]:
    """The final values these metrics log that a setting may be ranked by (not the *_std ones)."""
    keys = [k for n in metrics for k in METRICS.get(n).keys if not k.endswith("_std")]
    ranked = ranking_key(keys)  # a run keeps its best evaluation by this key and logs best_<key>
    return sorted({*keys, *([BEST_PREFIX + ranked] if ranked else [])})


def check_best_by(metric: Any, configs: tuple[RunConfig, ...], where: str) -> str:
    """`best_by` must be a final value every configuration logs."""
    every = sorted({k for name in METRICS.names() for k in logged_keys((name,))})  # any metric set's keys
    if not isinstance(metric, str) or metric not in every:
        raise ConfigError(f"{where}: best_by: {unknown_name_message('metric', str(metric), every)}")
    for cfg in configs:
        if metric not in logged_keys(cfg.metrics.metrics):
            raise ConfigError(f"{where}: best_by = '{metric}', but {cfg.loss.loss} on {cfg.data.dataset} logs "
                              f"only {', '.join(logged_keys(cfg.metrics.metrics)) or 'no metric'}")  # fmt: skip
    return metric


def parse(raw: Any, where: str, fixed: set[str]) -> Search:
    """The [search] table of a suite; `fixed`: the keys its grid and settings set already."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: 'search' must be a table ([search])")
    for key in raw:
        if key not in SEARCH_KEYS:
            raise ConfigError(f"{where}: {unknown_name_message('key in [search]', key, list(SEARCH_KEYS))}")
    draws, seed = raw.get("draws"), raw.get("seed", 0)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ConfigError(f"{where}: search.draws must be an integer >= 1, got {draws!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"{where}: search.seed must be an integer >= 0, got {seed!r}")
    if "replay" in raw:
        return _replay(raw, draws, where, fixed)
    keys = raw.get("keys", {})
    if not isinstance(keys, dict) or not keys:
        raise ConfigError(f"{where}: [search.keys] must name at least one key and its distribution")
    _check_keys(keys, "search.keys", where, fixed)
    by_loss = raw.get("by-loss", {})
    if not isinstance(by_loss, dict):
        raise ConfigError(f"{where}: 'search.by-loss' must be a table of tables ([search.by-loss.LOSS])")
    per_loss = []
    for loss, table in by_loss.items():
        if not is_plugin(loss):  # a plugin is imported only when it trains (the command line admitted it)
            losses.check(loss)  # an unknown loss: one line with the closest name
        if not isinstance(table, dict) or not table:
            raise ConfigError(f"{where}: [search.by-loss.{loss}] must name at least one key and its distribution")
        _check_keys(table, f"search.by-loss.{loss}", where, fixed)
        if both := sorted(set(table) & set(keys)):
            raise ConfigError(f"{where}: '{both[0]}' is in both [search.keys] and [search.by-loss.{loss}]; keep one")
        per_loss.append((loss, tuple(_distribution(k, v, where) for k, v in table.items())))
    return Search(draws, seed, tuple(_distribution(k, v, where) for k, v in keys.items()), tuple(per_loss))


def _replay(raw: dict[str, Any], draws: int, where: str, fixed: set[str]) -> Search:
    """search.replay = NAME: that program's own draws, in its order; nothing else to draw."""
    name = raw["replay"]
    if name not in REPLAYS:
        raise ConfigError(f"{where}: search.replay: {unknown_name_message('replay', str(name), list(REPLAYS))}")
    if other := sorted(set(raw) & {"seed", "keys", "by-loss"}):
        raise ConfigError(f"{where}: search.replay = '{name}' draws its own settings (its seed, keys and order); "
                          f"drop search.{other[0]}")  # fmt: skip
    if both := sorted({f for k in REPLAYS[name].fields() for f in (k, *ALIASES.get(k, ()))} & fixed):
        raise ConfigError(f"{where}: '{both[0]}' is both replayed from {name} and set by [grid] or [[settings]]; "
                          "keep one")  # fmt: skip
    if draws > REPLAYS[name].SAMPLES:
        raise ConfigError(f"{where}: search.draws: {name} drew {REPLAYS[name].SAMPLES} settings per model; "
                          f"replay at most that many, not {draws}")  # fmt: skip
    return Search(draws, 0, (), (), name)


def _check_keys(table: dict[str, Any], name: str, where: str, fixed: set[str]) -> None:
    for key in table:
        if key not in KEYS and key not in ALIASES:
            raise ConfigError(f"{where}: [{name}]: {unknown_name_message('key', key, [*KEYS, *ALIASES])}")
        if {key, *ALIASES.get(key, ())} & fixed:
            raise ConfigError(f"{where}: '{key}' is both searched and set by [grid] or [[settings]]; keep one")


def drawn_fields(search: Search | None) -> list[str]:
    """The configuration fields the search draws (aliases as their fields), in the table's order."""
    if search is None:
        return []
    if search.replay:
        return list(dict.fromkeys(f for k in REPLAYS[search.replay].fields() for f in ALIASES.get(k, (k,))))
    keys = [d.key for d in search.keys] + [d.key for _, ds in search.by_loss for d in ds]
    return list(dict.fromkeys(f for k in keys for f in ALIASES.get(k, (k,))))


# --- second stage ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Choice:
    """The best first-stage setting of one (loss, data set), or why there is none."""

    loss: str
    dataset: str
    metric: str
    configs: int  # first-stage configurations of this (loss, data set)
    scored: int  # of them, those with a finished first-stage seed that logged the metric
    best: RunConfig | None  # None: no configuration scored
    score: float | None  # its median final metric over its finished first-stage seeds
    seeds: int  # those seeds
    tied: tuple[str, ...] = ()  # hashes at the same score, the best's included, when more than one
    shown: tuple[str, ...] = ()  # the keys that differ between the configurations (the searched ones)

    def lines(self) -> list[str]:
        """What was chosen, then one line per tie and per set of configurations left without a run."""
        head = f"{self.loss} on {self.dataset}"
        if self.best is None:
            return [f"{head}: none of its {self.configs} configurations has a finished first-stage run with "
                    f"'{self.metric}'; nothing to re-run"]  # fmt: skip
        flat = self.best.flat()
        setting = " ".join(f"{k}={_short(flat[k])}" for k in self.shown)
        out = [f"{head}: best {self.metric} {self.score:.4g} (median of {self.seeds} finished seed"
               f"{'s' * (self.seeds != 1)}), configuration {self.best.config_hash()}"
               + (f": {setting}" if setting else "")]  # fmt: skip
        if len(self.tied) > 1:
            out.append(f"{head}: {len(self.tied)} configurations tie at {self.metric} {self.score:.4g} "
                       f"({', '.join(self.tied)}); took the lowest hash, {self.tied[0]}")  # fmt: skip
        if self.scored < self.configs:
            out.append(f"{head}: {self.configs - self.scored} of {self.configs} configurations have no finished "
                       f"first-stage run with '{self.metric}' yet; chosen among the other {self.scored}")  # fmt: skip
        return out


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def choose(
    configs: tuple[RunConfig, ...], first_seeds: int, metric: str, tracker: Tracker,
    losses: tuple[str, ...] = (), datasets: tuple[str, ...] = (),
) -> list[Choice]:  # fmt: skip
    """Per (loss, data set) of `configs`, in their order, the configuration with the best median final
    `metric` over its finished seeds among 0 .. first_seeds-1 (one query of the store)."""
    groups: dict[tuple[str, str], list[RunConfig]] = {}
    for cfg in configs:
        if (losses and cfg.loss.loss not in losses) or (datasets and cfg.data.dataset not in datasets):
            continue
        groups.setdefault((cfg.loss.loss, cfg.data.dataset), []).append(cfg)
    hashes = {cfg.config_hash(): cfg for group in groups.values() for cfg in group}
    values: dict[str, list[float]] = {}
    for r in tracker.seed_results(set(hashes)):
        v = r.metrics.get(metric)
        if r.finished and 0 <= r.seed < first_seeds and v is not None and math.isfinite(v):
            values.setdefault(r.config_hash, []).append(v)
    sign = -1.0 if higher_is_better(metric) else 1.0
    out = []
    for (loss, dataset), group in groups.items():
        flats = [c.flat() for c in group]
        shown = tuple(k for k in flats[0] if len({repr(f[k]) for f in flats}) > 1)
        scores = {h: statistics.median(values[h]) for h in (c.config_hash() for c in group) if h in values}
        if not scores:
            out.append(Choice(loss, dataset, metric, len(group), 0, None, None, 0, shown=shown))
            continue
        best_score = min(sign * s for s in scores.values())
        tied = tuple(sorted(h for h, s in scores.items() if sign * s == best_score))
        best = hashes[tied[0]]
        out.append(Choice(loss, dataset, metric, len(group), len(scores), best, scores[tied[0]],
                          len(values[tied[0]]), tied, shown))  # fmt: skip
    return out

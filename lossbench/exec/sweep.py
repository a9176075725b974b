"""Run a suite: every (configuration, seed) through the same runner as `lossbench run`, skipping
what already finished in the store (same configuration hash and seed) and resuming what was
interrupted, so a re-run after a crash does only what is missing.

Two stages: `plan` plans the suite's configurations (its grid, settings and random-search draws)
over its `seeds`; `plan_reseeds` plans the second stage, each (loss, data set)'s best first-stage
setting (exec.search.choose) over the suite's `reseeds` seeds."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lossbench import tracking_models
from lossbench.config import ExecConfig, RunConfig, SpeedConfig
from lossbench.errors import ConfigError, DataError
from lossbench.exec import executors
from lossbench.exec.estimate import Estimate, estimate, evaluations_per_seed
from lossbench.exec.evaluation import needs_images, open_extractor, real_cached
from lossbench.exec.executors import ExecutorOptions
from lossbench.exec.generators import MODEL_LAST
from lossbench.exec.plan import plan as plan_seeds
from lossbench.exec.runs import RunSummary
from lossbench.exec.search import Choice, choose
from lossbench.exec.suites import Suite
from lossbench.gan import data
from lossbench.metrics.features import Extractor
from lossbench.metrics.registry import higher_is_better
from lossbench.tracking import Tracker
from lossbench.tracking_models import registered_name

ALIAS = "best"  # the registered version a suite's seeds stage found best

@dataclass(frozen=True)
class Planned:
    cfg: RunConfig
    seeds: tuple[int, ...]  # seeds still to run
    done: int  # seeds already finished in the store
    stage: str = "search"  # search: the suite's configurations; seeds: a best setting with the reseeds


def plan(
    suite: Suite, tracker: Tracker, losses: tuple[str, ...] = (), datasets: tuple[str, ...] = (), max_runs: int = 0
) -> list[Planned]:
    """The first stage: every configuration of the suite over its seeds."""
    cfgs = [c for c in suite.configs if (not losses or c.loss.loss in losses)
            and (not datasets or c.data.dataset in datasets)]  # fmt: skip
    return _plan(cfgs, suite.seeds, "search", tracker, max_runs)


def choices(
    suite: Suite, tracker: Tracker, losses: tuple[str, ...] = (), datasets: tuple[str, ...] = ()
) -> list[Choice]:
    """Per (loss, data set), the best first-stage setting so far (exec.search.choose)."""
    if not suite.reseeds:
        raise ConfigError(f"suite {suite.name} has no second stage: add 'reseeds = N' to {suite.path}")
    return choose(suite.configs, suite.seeds, suite.best_by, tracker, losses, datasets)


def plan_reseeds(suite: Suite, tracker: Tracker, chosen: list[Choice], max_runs: int = 0) -> list[Planned]:
    """The second stage: each chosen setting over seeds 0 .. reseeds-1 (the ones it finished in the first
    stage are skipped, and count). Before any finished first-stage run, one line."""
    best = [c.best for c in chosen if c.best is not None]
    if not best:
        raise ConfigError(f"suite {suite.name}: the seeds stage needs finished first-stage runs, and none of its "
                          f"{sum(c.configs for c in chosen)} configurations has one with '{suite.best_by}' in this "
                          f"experiment; run `lossbench sweep {suite.name}` first")  # fmt: skip
    return _plan(best, suite.reseeds, "seeds", tracker, max_runs)


def _plan(cfgs: list[RunConfig], seeds: int, stage: str, tracker: Tracker, max_runs: int) -> list[Planned]:
    out: list[Planned] = []
    budget = max_runs or None
    every_seed = ExecConfig(seed_list=tuple(range(seeds)), skip_finished=True)
    for cfg in cfgs:
        p = plan_seeds(tracker, cfg, every_seed)
        todo = tuple(m.seed for m in p.members)
        if budget is not None:
            todo = todo[:budget]
            budget -= len(todo)
        out.append(Planned(cfg, todo, len(p.skipped), stage))
    return out


def json_lines(planned: list[Planned]) -> list[str]:
    """One JSON object per planned (configuration, seed): stage, loss, dataset, every config key, its
    hash, the seed, and its evaluations per seed (the final one included: the schedule's cost)."""
    out = []
    for p in planned:
        flat = p.cfg.flat()
        head = {"stage": p.stage, "loss": flat.pop("loss"), "dataset": flat.pop("dataset")}
        tail = {"config_hash": p.cfg.config_hash(), "evaluations": evaluations_per_seed(p.cfg)}
        out += [json.dumps(head | flat | tail | {"seed": s}) for s in p.seeds]
    return out


def estimates(
    planned: list[Planned], device: torch.device, data_dir: str | None, cache_dir: Path | None = None,
    speed: SpeedConfig | None = None, advance: Callable[[int], None] | None = None,
) -> list[Estimate | None]:  # fmt: skip
    """Per planned configuration with seeds to run, its measured estimate (None: nothing to run).
    `advance(1)` follows each configuration (a progress bar's update)."""
    timer, out = _Timer(device, data_dir, cache_dir, speed), []
    for p in planned:
        out.append(timer.estimate(p))
        if advance is not None:
            advance(1)
    return out


class _Timer:
    """Times planned configurations, sharing what they share: each data set is loaded once, the
    Inception rate measured once, and configurations that differ only in values that do not change
    the cost of a step (the draws of a random search) are timed once."""

    def __init__(self, device: torch.device, data_dir: str | None, cache_dir: Path | None,
                 speed: SpeedConfig | None) -> None:  # fmt: skip
        self.device, self.data_dir, self.cache_dir, self.speed = device, data_dir, cache_dir, speed
        self.sets: dict[str, data.Dataset | None] = {}  # None: not on this machine (a plan never downloads)
        self.extractor: Extractor | None = None
        self.rate: float | None = None
        self.timed: dict[RunConfig, Estimate] = {}

    def estimate(self, p: Planned) -> Estimate | None:
        if not p.seeds:
            return None
        if (same := self.timed.get(_cost_key(p.cfg))) is not None:  # the same step, perhaps a different budget
            evaluations = evaluations_per_seed(p.cfg) if same.images_per_s else 0
            return dataclasses.replace(same, seeds=len(p.seeds), steps=p.cfg.train.steps, evaluations=evaluations)
        ds = self._data(p.cfg.data.dataset)
        if ds is None:
            return None
        ext = None
        if needs_images(p.cfg, ds):
            self.extractor = ext = self.extractor or open_extractor(p.cfg, self.device, ds)
        cached = real_cached(p.cfg, ext, self.cache_dir)
        e = estimate(p.cfg, ds, self.device, len(p.seeds), 1, ext, cached, self.speed, self.rate, self.cache_dir)
        self.rate = e.images_per_s or self.rate
        self.timed[_cost_key(p.cfg)] = e
        return e

    def _data(self, name: str) -> data.Dataset | None:
        if name not in self.sets:  # each data set loaded once
            try:
                self.sets[name] = data.load(name, self.data_dir, "train", download=False)
            except DataError as exc:
                print(f"estimate: {exc}; its configurations are not timed", file=sys.stderr, flush=True)
                self.sets[name] = None
        return self.sets[name]


def _cost_key(cfg: RunConfig) -> RunConfig:
    """cfg with learning rates, betas, weights and the budget made equal: they change results and the
    number of steps, not the cost of a step (only whether clipping or a penalty runs at all does)."""
    t, loss = cfg.train, cfg.loss
    return dataclasses.replace(
        cfg,
        train=dataclasses.replace(t, lr_g=1.0, lr_d=1.0, beta1=0.0, beta2=0.0, weight_clip=float(t.weight_clip > 0),
                                  steps=1, epochs=0),
        loss=dataclasses.replace(loss, penalty_weight=float(loss.penalty_weight > 0)),
        metrics=dataclasses.replace(cfg.metrics, eval_every=0),
    )  # fmt: skip


def run(
    planned: list[Planned], ex: ExecConfig, executor: str = "local", opts: ExecutorOptions | None = None,
    suite: Suite | None = None,
) -> list[RunSummary]:  # fmt: skip
    """Train the planned seeds; their runs carry the suite's name, description and each one's stage."""
    about = {"suite": suite.name, "suite_description": suite.description} if suite else {}
    jobs = [(p.cfg, dataclasses.replace(ex, seed_list=p.seeds, skip_finished=True, stage=p.stage, **about))
            for p in planned if p.seeds]  # fmt: skip
    return executors.execute(jobs, executor, opts)


def register_best(
    suite: Suite, tracker: Tracker, losses: tuple[str, ...] = (), datasets: tuple[str, ...] = ()
) -> list[str]:
    """Per (loss, data set), the best setting's (exec.search.choose) best finished seed run of the seeds
    stage, by the suite's metric, registered as `lossbench-<suite>-<loss>-<dataset>` with alias `best`
    (its logged `generator`); one line each. A seed already under the alias is left as it is."""
    lines = []
    sign = -1.0 if higher_is_better(suite.best_by) else 1.0
    for c in choices(suite, tracker, losses, datasets):
        if c.best is None:
            continue
        runs = [r for r in tracker.seed_results({c.best.config_hash()})
                if r.finished and 0 <= r.seed < suite.reseeds and suite.best_by in r.metrics]  # fmt: skip
        if not runs:
            continue
        best = min(runs, key=lambda r: (sign * r.metrics[suite.best_by], r.seed))
        name = registered_name(suite.name, c.loss, c.dataset)
        if tracking_models.alias_run(tracker.client, name, ALIAS) == best.run_id:
            continue
        note = f"{c.lines()[0]}; seed {best.seed}: {suite.best_by} {best.metrics[suite.best_by]:.4g}"
        version = tracking_models.register(tracker.client, name, best.run_id, MODEL_LAST, ALIAS, note)
        lines.append(f"registered {name} version {version} as @{ALIAS}: run {best.run_id} (seed {best.seed}), "
                     f"models:/{name}@{ALIAS}")  # fmt: skip
    return lines

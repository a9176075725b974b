"""Run a suite: every (configuration, seed) through the same runner as `lossbench run`, skipping
what already finished in the store (same configuration hash and seed) and resuming what was
interrupted, so a re-run after a crash does only what is missing.

Two stages: `plan` plans the suite's configurations (its grid, settings and random-search draws)
over its `seeds`; `plan_reseeds` plans the second stage, each (loss, data set)'s best first-stage
setting (exec.search.choose) over the suite's `reseeds` seeds. `stages`, `open_store` and
`plan_stage` are what `lossbench sweep` asks: which stages, which store, and each stage's plan."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lossbench import tracking_models
from lossbench.config import RunConfig
from lossbench.errors import ConfigError, DataError, TrackingError
from lossbench.exec import executors
from lossbench.exec.estimate import Estimate, estimate, evaluations_per_seed, steps_per_s
from lossbench.exec.evaluation import needs_images, open_extractor, real_cached
from lossbench.exec.executors import ExecutorOptions
from lossbench.exec.plan import groups
from lossbench.exec.plan import plan as plan_seeds
from lossbench.exec.runs import RunSummary
from lossbench.exec.search import Choice, choose
from lossbench.exec.suites import Suite
from lossbench.gan import data
from lossbench.metrics.features import Extractor
from lossbench.metrics.registry import higher_is_better
from lossbench.options import ExecConfig, SpeedConfig
from lossbench.tracking import Tracker
from lossbench.tracking_models import MODEL_LAST, registered_name

ALIAS = "best"  # the registered version a suite's seeds stage found best
STAGES = ("search", "seeds")  # a suite's first stage, and its second (`reseeds`)


@dataclass(frozen=True)
class Planned:
    cfg: RunConfig
    seeds: tuple[int, ...]  # seeds still to run
    done: int  # seeds already finished in the store
    stage: str = "search"  # search: the suite's configurations; seeds: a best setting with the reseeds


@dataclass(frozen=True)
class StagePlan:
    """One stage of a sweep as planned: what it says first (each chosen setting of the seeds stage, or
    why it is not planned yet), then, when planned, its one-line summary and its configurations."""

    stage: str
    planned: list[Planned] | None  # None: not planned (a dry run of both stages before any first-stage result)
    notes: tuple[str, ...] = ()
    head: str = ""

    def summary(self) -> str:
        planned = self.planned or []
        return f"{self.head}; {sum(p.done for p in planned)} finished, {sum(len(p.seeds) for p in planned)} to run"


def stages(suite: Suite, stage: str | None, dry_run: bool) -> list[str]:
    """The stages a sweep plans: the one asked for; else the first, and in a dry run the second too
    where the suite has one."""
    if stage == "seeds":
        _second_stage(suite)
    return [stage] if stage else list(STAGES) if dry_run and suite.reseeds else ["search"]


def open_store(suite: Suite, stage: str | None, tracking_uri: str | None, experiment: str, given: str) -> Tracker:
    """The store a sweep plans against: the seeds stage reads first-stage results, so it never creates
    one (`given`: the suite as the command line named it, for the command to run first)."""
    if stage != "seeds":
        return Tracker(tracking_uri, experiment)
    try:
        return Tracker(tracking_uri, experiment, create=False)
    except TrackingError as exc:
        raise ConfigError(f"suite {suite.name}: the seeds stage needs finished first-stage runs ({exc}); "
                          f"run `lossbench sweep {given}` first") from None  # fmt: skip


def plan_stage(
    suite: Suite, tracker: Tracker, stage: str, asked: bool, losses: tuple[str, ...] = (),
    datasets: tuple[str, ...] = (), max_runs: int = 0,
) -> StagePlan:  # fmt: skip
    """One stage's plan. The seeds stage, when not `asked` for by name (a dry run of both stages),
    before any first-stage result is a note, not an error."""
    if stage == "search":
        planned = plan(suite, tracker, losses, datasets, max_runs)
        drawn = f" ({suite.search.draws} random-search draws per grid point)" if suite.search else ""
        return StagePlan(stage, planned, head=f"suite {suite.name}: {len(planned)} configurations{drawn} x "
                                              f"{suite.seeds} seeds")  # fmt: skip
    chosen = choices(suite, tracker, losses, datasets)
    if not asked and not any(c.best for c in chosen):
        return StagePlan(stage, None, (f"suite {suite.name}, stage seeds: needs first-stage results (none of its "
                                       f"{sum(c.configs for c in chosen)} configurations has a finished run with "
                                       f"'{suite.best_by}' yet)",))  # fmt: skip
    planned = plan_reseeds(suite, tracker, chosen, max_runs)
    notes = tuple(line for c in chosen for line in c.lines())
    return StagePlan(stage, planned, notes, f"suite {suite.name}, stage seeds: {len(planned)} best settings x "
                                            f"{suite.reseeds} seeds")  # fmt: skip


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
    _second_stage(suite)
    return choose(suite.configs, suite.seeds, suite.best_by, tracker, losses, datasets)


def _second_stage(suite: Suite) -> None:
    if not suite.reseeds:
        raise ConfigError(f"suite {suite.name} has no second stage: add 'reseeds = N' to {suite.path}")


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
    every_seed = ExecConfig.counted(seeds, skip_finished=True)
    for cfg in cfgs:
        p = plan_seeds(tracker, cfg, every_seed)
        todo = tuple(m.seed for m in p.members)
        if budget is not None:
            todo = todo[:budget]
            budget -= len(todo)
        out.append(Planned(cfg, todo, len(p.skipped), stage))
    return out


def planned_groups(planned: list[Planned], speed: SpeedConfig) -> list[list[tuple[int, int]]]:
    """The groups the planned (configuration, seed) members will train in (exec.plan.groups), as
    (index in `planned`, seed) pairs; every member new, at step 0 (a resumed member joins those at its
    checkpoint's step, which a plan does not read)."""
    items = [(i, seed) for i, p in enumerate(planned) for seed in p.seeds]
    return groups(items, lambda item: (planned[item[0]].cfg, 0), speed)


def json_lines(planned: list[Planned], speed: SpeedConfig | None = None) -> list[str]:
    """One JSON object per planned (configuration, seed): stage, loss, dataset, every config key, its
    hash, the seed, its evaluations per seed (the final one included: the schedule's cost), and the
    group it trains in (`planned_groups`: members with one number train together)."""
    groups = planned_groups(planned, speed or SpeedConfig())
    group_of = {item: g for g, members in enumerate(groups) for item in members}
    out = []
    for i, p in enumerate(planned):
        flat = p.cfg.flat()
        head = {"stage": p.stage, "loss": flat.pop("loss"), "dataset": flat.pop("dataset")}
        tail = {"config_hash": p.cfg.config_hash(), "evaluations": evaluations_per_seed(p.cfg)}
        out += [json.dumps(head | flat | tail | {"seed": s, "group": group_of[(i, s)]}) for s in p.seeds]
    return out


def estimates(
    planned: list[Planned], device: torch.device, data_dir: str | None, cache_dir: Path | None = None,
    speed: SpeedConfig | None = None, advance: Callable[[int], None] | None = None, sets: TrainingSets | None = None,
) -> list[Estimate | None]:  # fmt: skip
    """Per planned configuration with seeds to run, its measured estimate (None: nothing to run).
    `advance(1)` follows each configuration (a progress bar's update); `sets`: training sets already
    loaded (shared with `grouped_estimate`), else loaded from `data_dir`."""
    timer, out = _Timer(device, sets or TrainingSets(data_dir), cache_dir, speed), []
    for p in planned:
        out.append(timer.estimate(p))
        if advance is not None:
            advance(1)
    return out


@dataclass(frozen=True)
class GroupedEstimate:
    """The training time of the planned groups, each timed as a group of its size (members of one
    shape and size share one probe; a probe trains copies of the group's first configuration, so it
    times torch's Adam where the group will run per-member Adam)."""

    sizes: list[int]  # members per group
    train_s: float
    timed: int  # groups with a measured rate (the others' data is not here)


def grouped_estimate(
    planned: list[Planned], speed: SpeedConfig, device: torch.device, data_dir: str | None,
    advance: Callable[[int], None] | None = None, sets: TrainingSets | None = None,
    timeable: Callable[[RunConfig], bool] = lambda cfg: True,
) -> GroupedEstimate:  # fmt: skip
    """The planned members' groups (`planned_groups`), each timed at its size: training time of the
    whole stage as it will run. `advance(1)` follows each group; `sets` as for `estimates`; a group
    whose configuration is not `timeable` (a plugin loss: timing would import it) is not timed."""
    sets = sets or TrainingSets(data_dir)
    rates: dict[tuple[RunConfig, int], float] = {}
    train_s, timed, sizes = 0.0, 0, []
    for members in planned_groups(planned, speed):
        cfg = planned[members[0][0]].cfg
        sizes.append(len(members))
        key = (_cost_key(cfg), len(members))
        ds = sets.get(cfg.data.dataset) if timeable(cfg) else None
        if ds is not None:
            if key not in rates:
                rates[key] = steps_per_s(cfg, ds, device, speed, cfg.train.steps * len(members), len(members))
            train_s += cfg.train.steps / rates[key]
            timed += 1
        if advance is not None:
            advance(1)
    return GroupedEstimate(sizes, train_s, timed)


class TrainingSets:
    """The training sets a plan times, by name, each loaded once from `data_dir`; None for one not on
    this machine (a plan never downloads: one line on stderr says so, once)."""

    def __init__(self, data_dir: str | None) -> None:
        self.data_dir = data_dir
        self.loaded: dict[str, data.Dataset | None] = {}

    def get(self, name: str) -> data.Dataset | None:
        if name not in self.loaded:
            try:
                self.loaded[name] = data.load(name, self.data_dir, "train", download=False)
            except DataError as exc:
                print(f"estimate: {exc}; its configurations are not timed", file=sys.stderr, flush=True)
                self.loaded[name] = None
        return self.loaded[name]


class _Timer:
    """Times planned configurations, sharing what they share: each data set is loaded once, the
    Inception rate measured once, and configurations that differ only in values that do not change
    the cost of a step (the draws of a random search) are timed once."""

    def __init__(self, device: torch.device, sets: TrainingSets, cache_dir: Path | None,
                 speed: SpeedConfig | None) -> None:  # fmt: skip
        self.device, self.cache_dir, self.speed = device, cache_dir, speed
        self.sets = sets
        self.extractor: Extractor | None = None
        self.rate: float | None = None
        self.timed: dict[RunConfig, Estimate] = {}

    def estimate(self, p: Planned) -> Estimate | None:
        if not p.seeds:
            return None
        if (same := self.timed.get(_cost_key(p.cfg))) is not None:  # the same step, perhaps a different budget
            evaluations = evaluations_per_seed(p.cfg) if same.images_per_s else 0
            return dataclasses.replace(same, seeds=len(p.seeds), steps=p.cfg.train.steps, evaluations=evaluations)
        ds = self.sets.get(p.cfg.data.dataset)
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
    jobs = [(p.cfg, dataclasses.replace(ex, seeds=p.seeds, skip_finished=True, stage=p.stage, **about))
            for p in planned if p.seeds]  # fmt: skip
    return executors.execute(jobs, executor, opts)


def run_stage(
    suite: Suite, tracker: Tracker, stage: StagePlan, ex: ExecConfig, executor: str = "local",
    opts: ExecutorOptions | None = None, losses: tuple[str, ...] = (), datasets: tuple[str, ...] = (),
) -> tuple[dict[str, int], list[str]]:  # fmt: skip
    """Train a planned stage; after the seeds stage, register each (loss, data set)'s best run
    (register_best). Returns the seeds' outcomes counted over its configurations, and one line per
    registration."""
    summaries = run(stage.planned or [], ex, executor, opts, suite)
    registered = register_best(suite, tracker, losses, datasets) if stage.stage == "seeds" else []
    counts: dict[str, int] = {}
    for s in summaries:
        for k, n in s.counts().items():
            counts[k] = counts.get(k, 0) + n
    return counts, registered


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

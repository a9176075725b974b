"""A configuration's runs in the store, from the configuration's side: what every run of it carries
(tags, data inputs), its parent run (opened, or reopened by the plan; closed with the aggregates
across its seed runs, or KILLED), and what became of each seed (`SeedResult`, `RunSummary`). Each
seed's own run, from open to close, is exec.seed_run's. Shared by the local and the Ray executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import lossbench
from lossbench.config import RunConfig, to_json
from lossbench.exec.plan import Plan
from lossbench.gan import data
from lossbench.metrics.registry import METRICS, best_keys, evaluates
from lossbench.options import ExecConfig
from lossbench.report.stats import across_seeds
from lossbench.tracking import TAG_CONFIG_HASH, TAG_DATASET, TAG_LOSS, TAG_OUTCOME, TAG_ROLE, Tracker
from lossbench.tracking_conventions import (
    CONTEXT_EVALUATION,
    CONTEXT_TRAINING,
    TAG_GIT_COMMIT,
    TAG_NOTE,
    TAG_STAGE,
    TAG_SUITE,
    DataInput,
    description,
    git_commit,
    log_inputs,
)


@dataclass
class SeedResult:
    """What became of one seed in this process: its run (None where it touched none), the outcome
    (finished | diverged | interrupted | failed, as the run ended; skipped: finished already, or
    trained by another process), the step it reached and, finished, its final metrics."""

    seed: int
    run_id: str | None
    outcome: str  # finished | diverged | interrupted | failed | skipped
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunSummary:
    """What became of one configuration: its parent run and each seed's result, by seed."""

    config_hash: str
    parent_run_id: str | None
    seeds: list[SeedResult]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.seeds:
            out[s.outcome] = out.get(s.outcome, 0) + 1
        return out


def source_commit() -> str | None:
    """The commit lossbench runs from, read from its checkout's files (no git process); None outside one."""
    return git_commit(Path(lossbench.__file__).resolve().parent)


def run_tags(cfg: RunConfig, ex: ExecConfig | None = None) -> dict[str, str]:
    """A run's lossbench tags; with `ex`, MLflow's too: its suite and stage, the commit it ran from."""
    tags = {TAG_CONFIG_HASH: cfg.config_hash(), TAG_LOSS: cfg.loss.loss, TAG_DATASET: cfg.data.dataset}
    if ex is not None:
        tags |= {TAG_STAGE: ex.stage} | ({TAG_SUITE: ex.suite} if ex.suite else {})
        if commit := source_commit():
            tags[TAG_GIT_COMMIT] = commit
    return tags


def label(cfg: RunConfig) -> str:
    """A configuration in one line: its loss, penalty, data set and hash."""
    penalty = f" + {cfg.loss.penalty}" if cfg.loss.penalty != "none" else ""
    return f"{cfg.loss.loss}{penalty} on {cfg.data.dataset} (configuration {cfg.config_hash()})"


def data_inputs(cfg: RunConfig, train_size: int | None = None) -> list[DataInput]:
    """The training split, and the metrics' reference split where metrics compare against one (image
    data), as MLflow inputs."""
    source = data.DATASETS.get(cfg.data.dataset)
    name, rev = cfg.data.dataset, source.revision
    size = train_size if train_size is not None else source.sizes.get("train", 0)
    out = [DataInput(name, "train", size, rev, CONTEXT_TRAINING)]
    if evaluates(cfg.metrics.metrics) and len(source.sample_shape) > 1:
        split = cfg.metrics.reference_split
        out.append(DataInput(name, split, source.sizes.get(split, 0), rev, CONTEXT_EVALUATION))
    return out


def open_parent(tracker: Tracker, cfg: RunConfig, ex: ExecConfig, plan: Plan) -> str:
    """The configuration's parent run: the plan's, reopened, or a new one."""
    if plan.parent_id:
        tracker.reopen(plan.parent_id)
        return plan.parent_id
    params = cfg.flat() | {"seeds": len(ex.seeds), "lossbench_version": lossbench.__version__}
    tags = run_tags(cfg, ex) | {TAG_ROLE: "parent", TAG_OUTCOME: "running"}
    tags[TAG_NOTE] = description(ex.suite, ex.suite_description, label(cfg))
    parent_id = tracker.start_run(f"{cfg.loss.loss}/{cfg.data.dataset}", params, tags)
    tracker.log_text(parent_id, to_json(cfg), "config.json")
    log_inputs(tracker.client, parent_id, data_inputs(cfg))
    return parent_id


def kill_parents(tracker: Tracker, parent_ids: list[str]) -> None:
    """Training stopped by an exception or a signal: its parent runs end KILLED."""
    for parent_id in parent_ids:
        tracker.end_run(parent_id, "KILLED", {TAG_OUTCOME: "interrupted"})


def skipped(plan: Plan) -> list[SeedResult]:
    """The seeds the plan leaves alone: finished already, or in training by another process."""
    return [SeedResult(s, None, "skipped") for s in (*plan.skipped, *plan.busy)]


def summary(cfg: RunConfig, plan: Plan, parent_id: str | None, trained: list[SeedResult]) -> RunSummary:
    return RunSummary(cfg.config_hash(), parent_id, sorted(skipped(plan) + trained, key=lambda r: r.seed))


def close_parent(tracker: Tracker, cfg: RunConfig, plan: Plan, parent_id: str, trained: list[SeedResult]) -> RunSummary:
    """Across-seed aggregates on the parent run (the MLflow UI's compare view), then FINISHED. The
    aggregates are over every seed run under the parent as the store has it (one per seed), so a
    parent resumed after a kill between seeds counts the seeds finished before it too."""
    tracker.flush()
    runs = [r for r in tracker.seed_results({cfg.config_hash()}) if r.parent_id == parent_id]
    finished = [r for r in runs if r.finished]
    values: dict[str, float] = {
        "seeds_finished": float(len(finished)),
        "seeds_diverged": float(sum(r.outcome == "diverged" for r in runs)),
    }
    keys = {k for name in cfg.metrics.metrics for k in METRICS.get(name).keys}
    keys |= set(best_keys(k for r in finished for k in r.metrics))  # best_fid, best_modes: as the seeds logged them
    for key, d in across_seeds((r.metrics for r in finished), sorted(keys)).items():  # the report's statistics
        values[f"{key}_mean"], values[f"{key}_std"] = d.mean, d.std
    tracker.log_metrics(parent_id, cfg.train.steps, values)
    tracker.end_run(parent_id, "FINISHED", {TAG_OUTCOME: "finished"})
    return summary(cfg, plan, parent_id, trained)

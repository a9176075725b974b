"""The one planner: what to do for a configuration's seeds, from one query of the store.

For each seed of the execution config: skip it (it already finished and the caller skips finished
seeds), continue its run (resuming, and it was interrupted or left running by a process that died:
from its checkpoint when it has one, else from step 0 in the same run), or start a new run. The
plan also names the parent run to continue (the one its interrupted seeds belong to), if any.
`lossbench run`, the Ray executor (driver and tasks) and `lossbench sweep` all plan with it, and
group seeds with `groups`.
"""

from __future__ import annotations

from dataclasses import dataclass

from lossbench.config import ExecConfig, RunConfig
from lossbench.tracking import SeedRun, Tracker
from lossbench.train import checkpoint


@dataclass(frozen=True)
class Member:
    """One seed to train: a new run, or an existing run to continue (from its checkpoint if it has one)."""

    seed: int
    run_id: str | None = None
    step: int = 0
    has_checkpoint: bool = False


@dataclass(frozen=True)
class Plan:
    config_hash: str
    skipped: tuple[int, ...]  # seeds already finished in the store
    members: tuple[Member, ...]  # seeds to train, new or continued
    parent_id: str | None  # the parent run to continue; None: open a new one


def plan(tracker: Tracker, cfg: RunConfig, ex: ExecConfig, parent_id: str | None = None) -> Plan:
    """Plan ex's seeds of cfg; with parent_id, only runs under that parent count (a Ray task's retry).
    A corrupt checkpoint fails here, before any run is touched."""
    runs = tracker.seed_runs(cfg.config_hash())
    if parent_id is not None:
        runs = [r for r in runs if r.parent_id == parent_id]
    by_seed: dict[int, list[SeedRun]] = {}
    for r in runs:
        by_seed.setdefault(r.seed, []).append(r)
    skipped, members = [], []
    for seed in ex.seed_values():
        previous = by_seed.get(seed, [])
        if ex.skip_finished and any(r.status == "FINISHED" for r in previous):
            skipped.append(seed)
        else:
            members.append(_member(seed, [r for r in previous if r.resumable] if ex.resume else [], ex))
    if parent_id is None and ex.resume:
        parent_id = next((r.parent_id for r in runs if r.resumable and r.parent_id), None)
    return Plan(cfg.config_hash(), tuple(skipped), tuple(members), parent_id)


def _member(seed: int, resumable: list[SeedRun], ex: ExecConfig) -> Member:
    if not resumable:
        return Member(seed)
    run_id = resumable[0].run_id  # the newest
    path = checkpoint.path_for(ex.checkpoints, run_id)
    if path.is_file():
        return Member(seed, run_id, int(checkpoint.load(path)["step"]), True)
    return Member(seed, run_id)  # it died before its first checkpoint: step 0, in the same run


def groups(members: tuple[Member, ...] | list[Member], parallel: bool) -> list[list[Member]]:
    """Seeds trained together: one at a time, or with --parallel-seeds every seed starting at the same
    step (all new seeds form one group; resumed ones join those at their checkpoint's step)."""
    if not parallel:
        return [[m] for m in members]
    by_step: dict[int, list[Member]] = {}
    for m in members:
        by_step.setdefault(m.step, []).append(m)
    return [by_step[step] for step in sorted(by_step)]

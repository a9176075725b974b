"""The one planner: what to do for a configuration's seeds, from one query of the store.

For each seed of the execution config: skip it (it already finished and the caller skips finished
seeds or resumes), continue its run (resuming, and it was interrupted or left running by a process
that died: from its checkpoint when it has one, else from step 0 in the same run), skip it while a
live process holds its run's lease (exec.lease; one line says who), or start a new run. The plan
also names the parent run to continue (the one its interrupted seeds belong to, else, resuming, the
configuration's newest parent that has not finished), if any.

Resuming first repairs what a SIGKILL between a run's two closing writes left (tracking.end_stale):
a run left RUNNING with a final outcome tag ends with that outcome's status, unless a live process
holds its lease. Readers already count such a run as ended (outcomes.settle), so a seed whose
status write was lost is skipped as finished, never trained again; and a parent left RUNNING or
KILLED between seeds is reused, not duplicated, so its aggregates cover every seed.
`lossbench run`, the Ray executor (driver and tasks) and `lossbench sweep` all plan with it, and
group members with `groups`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import TypeVar

from lossbench.config import RunConfig
from lossbench.errors import CheckpointError
from lossbench.exec import lease
from lossbench.options import ExecConfig, SpeedConfig
from lossbench.tracking import Tracker
from lossbench.tracking_records import RunRecord
from lossbench.train import checkpoint, members, validate

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class Member:
    """One seed to train: a new run, or an existing run to continue (from its checkpoint if it has one)."""

    seed: int
    run_id: str | None = None
    step: int = 0
    has_checkpoint: bool = False
    known: frozenset[str] = frozenset()  # the seed's runs in the store when planned (any other is newer)


@dataclass(frozen=True)
class Plan:
    config_hash: str
    skipped: tuple[int, ...]  # seeds already finished in the store
    members: tuple[Member, ...]  # seeds to train, new or continued
    parent_id: str | None  # the parent run to continue; None: open a new one
    busy: tuple[int, ...] = ()  # seeds whose run another live process is training

    @property
    def idle(self) -> bool:
        """Nothing to do: no seed to train and no unfinished parent to close (a kill after its last
        seed's close left it RUNNING; seeds in training elsewhere leave it to their process)."""
        return not self.members and not (self.parent_id and not self.busy)


def plan(tracker: Tracker, cfg: RunConfig, ex: ExecConfig, parent_id: str | None = None) -> Plan:
    """Plan ex's seeds of cfg; with parent_id, only runs under that parent count (a Ray task's retry).
    A corrupt or unsafe checkpoint fails here, before any run is touched. Resuming skips finished seeds
    too: a resume continues the configuration, it never trains a finished seed again."""
    if ex.resume:  # the repair (never in a dry run's planning, which skips finished seeds without it)
        tracker.end_stale(cfg.config_hash(), lambda run_id: lease.holder(ex.checkpoints, run_id) is not None)
    every = tracker.seed_runs(cfg.config_hash())
    runs = every if parent_id is None else [r for r in every if r.parent_id == parent_id]
    known: dict[int, frozenset[str]] = {}
    for r in every:
        known[r.seed] = known.get(r.seed, frozenset()) | {r.run_id}
    by_seed: dict[int, list[RunRecord]] = {}
    for r in runs:
        by_seed.setdefault(r.seed, []).append(r)
    skipped, busy, members = [], [], []
    for seed in ex.seeds:
        previous = by_seed.get(seed, [])
        resumable = [r for r in previous if r.resumable] if ex.resume else []
        if (ex.skip_finished or ex.resume) and any(r.status == "FINISHED" for r in previous):
            skipped.append(seed)
        elif resumable and (owner := lease.holder(ex.checkpoints, resumable[0].run_id)):
            log.warning("seed %d: run %s is being trained by %s; skipped", seed, resumable[0].run_id, owner)
            busy.append(seed)
        else:
            members.append(_member(seed, resumable, cfg, ex, known.get(seed, frozenset())))
    if parent_id is None and ex.resume:
        continued = {m.run_id for m in members if m.run_id}
        parent_id = next((r.parent_id for r in runs if r.run_id in continued and r.parent_id), None)
        parent_id = parent_id or _unfinished_parent(tracker, cfg.config_hash())
    return Plan(cfg.config_hash(), tuple(skipped), tuple(members), parent_id, tuple(busy))


def _unfinished_parent(tracker: Tracker, config_hash: str) -> str | None:
    """The configuration's newest parent run that did not finish (left RUNNING by a kill, or KILLED
    between seeds): a resume goes on under it rather than opening a second one."""
    return next((r.run_id for r in tracker.seed_runs(config_hash, role="parent") if r.status != "FINISHED"), None)


def _member(seed: int, resumable: list[RunRecord], cfg: RunConfig, ex: ExecConfig, known: frozenset[str]) -> Member:
    if not resumable:
        return Member(seed, known=known)
    run_id = resumable[0].run_id  # the newest
    path = checkpoint.current(ex.checkpoints, run_id)  # a group's seeds always agree on its step
    if path is not None:
        expected = validate.expected(cfg, ex.device)  # the whole file checked before any run is touched
        try:
            step = checkpoint.load(path, expected)["step"]
        except CheckpointError:  # a staged file a resuming process renamed into place just now
            if (path := checkpoint.current(ex.checkpoints, run_id)) is None:
                raise
            step = checkpoint.load(path, expected)["step"]
        return Member(seed, run_id, step, True, known)
    return Member(seed, run_id, known=known)  # it died before its first checkpoint: step 0, in the same run


def groups(
    items: list[T] | tuple[T, ...], at: Callable[[T], tuple[RunConfig, int]], speed: SpeedConfig
) -> list[list[T]]:
    """The groups members train in, the one grouping of planning, training and the dry run: one at a
    time; with --parallel-seeds the members of one configuration that start at one step (all new ones
    form one group; resumed ones join those at their checkpoint's step); with --parallel-configs the
    members of one shape (lossbench.train.members.shape_key) that start at one step; at most
    --group-size to a group. `at(item)`: the member's configuration and the step it starts at. Members
    checkpointed together are always at one step (train.checkpoint), so they go on together."""
    if not speed.parallel_seeds:
        return [[item] for item in items]

    def key(item: T) -> Hashable:
        cfg, step = at(item)
        return (members.shape_key(cfg) if speed.parallel_configs else cfg.config_hash()), step

    return grouped(sorted(items, key=lambda item: at(item)[1]), key, speed.group_size)


def grouped(items: list[T], key: Callable[[T], Hashable], size: int | None = None) -> list[list[T]]:
    """items with equal keys together, in order of first appearance, in chunks of at most `size`
    (None: no bound)."""
    by_key: dict[Hashable, list[T]] = {}
    for item in items:
        by_key.setdefault(key(item), []).append(item)
    step = size or max(len(items), 1)
    return [same[i : i + step] for same in by_key.values() for i in range(0, len(same), step)]

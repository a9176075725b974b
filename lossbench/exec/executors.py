"""Executors: where the (configuration, seed) jobs of `lossbench run` and `lossbench sweep` train.

local  here, in this process: seeds one after another, or together with --parallel-seeds.
ray    on a Ray cluster (--ray-address auto|HOST:PORT; none starts a local one): each
       (configuration, seed), or each group of parallel seeds, is one Ray task asking for
       --task-cpus/--task-gpus, so Ray packs the tasks onto the cluster. Workers log straight to the
       tracking store (use a shared server: see the README), resolve their own data root and
       TORCH_HOME from their environment, and cache real statistics once per node. A task whose
       worker dies is retried by Ray and continues its seed's run from its checkpoint, so every run
       exists once. The driver creates and closes the parent runs, shows overall progress and ends
       with the count of finished / diverged / failed seeds.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lossbench import procs, progress
from lossbench.config import RunConfig
from lossbench.errors import ConfigError, LossbenchError
from lossbench.exec.group import Context, Slot, train_members, train_slots
from lossbench.exec.plan import Plan, groups, plan
from lossbench.exec.runs import RunSummary, SeedResult, close_parent, kill_parents, open_parent, skipped, summary
from lossbench.options import ExecConfig
from lossbench.registry import Registry
from lossbench.tracking import Tracker, first_line

log = logging.getLogger(__name__)

Job = tuple[RunConfig, ExecConfig]
_ADDRESS = re.compile(r"(ray://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):([1-9][0-9]{0,4})")  # HOST:PORT


@dataclass(frozen=True)
class ExecutorOptions:
    address: str | None = None  # ray: auto, HOST:PORT, or None for a local cluster
    task_cpus: float = 1.0
    task_gpus: float = 0.0
    max_retries: int = 3  # ray: re-runs of a task whose worker died

    def __post_init__(self) -> None:
        if self.task_cpus < 0 or self.task_gpus < 0:
            raise ConfigError("--task-cpus and --task-gpus must be >= 0")
        m = _ADDRESS.fullmatch(self.address or "")
        if self.address not in (None, "auto") and (m is None or int(m.group(3)) > 65535):
            raise ConfigError(f"--ray-address must be auto, HOST:PORT or ray://HOST:PORT, got {self.address!r}")


Executor = Callable[[list[Job], ExecutorOptions], list[RunSummary]]
EXECUTORS: Registry[Executor] = Registry("executor")


@EXECUTORS.register("local")
def run_local(jobs: list[Job], opts: ExecutorOptions) -> list[RunSummary]:
    """The jobs trained here, as LOCAL_TRAINING has it for the first job's --parallel-configs (none: nothing)."""
    return LOCAL_TRAINING[jobs[0][1].speed.parallel_configs](jobs) if jobs else []


def run_each(jobs: list[Job]) -> list[RunSummary]:
    """Each configuration in turn (`run_here`): its seeds one after another, or together with --parallel-seeds."""
    return [run_here(cfg, ex) for cfg, ex in jobs]


def run_grouped(jobs: list[Job]) -> list[RunSummary]:
    """--parallel-configs: plan every job, open the parents of those with seeds to train, then train
    all their members in groups of one shape (exec.plan.groups), each member in its own run
    under its own parent; close every parent with its own seeds' results. Configurations of one shape
    share one context (data, store, metric engine), opened once; `lossbench sweep --dry-run` shows the
    groups and their estimate."""
    import dataclasses as dc

    from lossbench.options import resolve_exec
    from lossbench.train.members import shape_key

    shared: dict[RunConfig, Context] = {}
    contexts = []
    for cfg, ex in jobs:
        key = shape_key(cfg)
        if key not in shared:  # one configuration (`lossbench run`): its preflight line, as without groups
            shared[key] = Context.open(cfg, ex, preflight=len(jobs) == 1)
        contexts.append(dc.replace(shared[key], cfg=cfg, ex=resolve_exec(ex)))
    plans = [plan(ctx.tracker, ctx.cfg, ctx.ex) for ctx in contexts]
    parents: dict[int, str] = {}
    slots: list[Slot] = []
    owner: dict[int, int] = {}  # id(slot) -> its job
    trained: dict[int, list[SeedResult]] = {i: [] for i in range(len(jobs))}
    closed: dict[int, RunSummary] = {}

    def close_finished(ended: list[tuple[Slot, SeedResult]]) -> None:
        """After each group: close the parents whose every member has ended (an interruption later
        leaves them closed, with their aggregates)."""
        for slot, result in ended:
            trained[owner[id(slot)]].append(result)
        for i in {owner[id(slot)] for slot, _ in ended}:
            if len(trained[i]) == len(plans[i].members):
                closed[i] = close_parent(contexts[i].tracker, contexts[i].cfg, plans[i], parents[i], trained[i])

    try:
        for i, (ctx, p) in enumerate(zip(contexts, plans)):
            if p.idle:
                continue
            parents[i] = open_parent(ctx.tracker, ctx.cfg, ctx.ex, p)
            params = ctx.params()
            for m in p.members:
                slot = Slot(ctx, parents[i], params, m)
                owner[id(slot)] = i
                slots.append(slot)
        train_slots(slots, close_finished)
    except BaseException:
        for i in parents.keys() - closed.keys():
            kill_parents(contexts[i].tracker, [parents[i]])
        raise
    return [
        closed.get(i) or (close_parent(ctx.tracker, ctx.cfg, p, parents[i], trained[i]) if i in parents
                          else summary(ctx.cfg, p, None, []))
        for i, (ctx, p) in enumerate(zip(contexts, plans))
    ]  # fmt: skip


LocalTraining = Callable[[list[Job]], list[RunSummary]]
# how the local executor trains its jobs, by their --parallel-configs (SpeedConfig.parallel_configs; the jobs
# of one command share it): each configuration on its own, or every job's members in groups of one shape
LOCAL_TRAINING: dict[bool, LocalTraining] = {False: run_each, True: run_grouped}


def run_here(cfg: RunConfig, ex: ExecConfig) -> RunSummary:
    """Plan, then train every planned seed of `cfg` here under its parent run."""
    ctx = Context.open(cfg, ex, preflight=True)
    p = plan(ctx.tracker, cfg, ctx.ex)
    if p.idle:
        log.info("configuration %s: every seed finished or in training elsewhere; nothing to do", cfg.config_hash())
        return summary(cfg, p, None, [])
    parent_id = open_parent(ctx.tracker, cfg, ctx.ex, p)
    try:
        trained = train_members(ctx, parent_id, p.members)
    except BaseException:
        kill_parents(ctx.tracker, [parent_id])
        raise
    return close_parent(ctx.tracker, cfg, p, parent_id, trained)


def train_task(cfg: RunConfig, ex: ExecConfig, parent_id: str, seeds: list[int]) -> list[SeedResult]:
    """One Ray task: train `seeds` of `cfg` under `parent_id`. A retry (its worker died) plans again
    under the same parent and continues each seed's run from its checkpoint (or from step 0 in the
    same run when it died before the first one)."""
    ctx = Context.open(cfg, dataclasses.replace(ex, seeds=tuple(seeds), resume=True))
    p = plan(ctx.tracker, cfg, ctx.ex, parent_id=parent_id)
    try:
        return skipped(p) + train_members(ctx, parent_id, p.members)
    finally:
        ctx.tracker.flush(raise_errors=False)


@EXECUTORS.register("ray")
def run_ray(jobs: list[Job], opts: ExecutorOptions) -> list[RunSummary]:
    """The driver: plans every job, opens the parent runs, submits one task per group of seeds,
    collects the results and closes the parents, through the same functions as the local executor."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--executor ray needs Ray: pip install 'lossbench[ray]'") from None

    if not jobs:
        return []
    first = jobs[0][1]
    if first.speed.parallel_configs:
        raise ConfigError("--parallel-configs trains its groups on the local executor; with --executor ray, use "
                          "--parallel-seeds")  # fmt: skip
    tracker = Tracker(first.tracking_uri, first.experiment)  # the store answers before the cluster starts
    try:
        _connect(ray, opts.address)
        # SIGTERM and SIGHUP unwind like Ctrl-C (replacing the handler ray.init installs), so the parents
        # end KILLED and ray.shutdown() below takes a local cluster down: SIGHUP alone left two of its
        # agents running
        with procs.interrupt_on():
            return _drive(ray, tracker, jobs, opts)
    finally:
        ray.shutdown()


def _drive(ray: Any, tracker: Tracker, jobs: list[Job], opts: ExecutorOptions) -> list[RunSummary]:
    first = jobs[0][1]
    remote = ray.remote(train_task).options(
        num_cpus=opts.task_cpus, num_gpus=opts.task_gpus, max_retries=opts.max_retries, retry_exceptions=False
    )
    plans: list[Plan] = [plan(tracker, cfg, ex) for cfg, ex in jobs]
    parents: dict[int, str] = {}
    trained: dict[int, list[SeedResult]] = {i: [] for i in range(len(jobs))}
    pending: dict[Any, tuple[int, list[int]]] = {}  # task ref -> (job index, its seeds)
    try:
        for i, ((cfg, ex), p) in enumerate(zip(jobs, plans)):
            if not p.idle:
                parents[i] = open_parent(tracker, cfg, ex, p)
            uncapped = dataclasses.replace(ex.speed, group_size=None)  # a task bounds its groups by --group-size
            for group in groups(p.members, lambda m, cfg=cfg: (cfg, m.step), uncapped):
                seeds = [m.seed for m in group]
                pending[remote.remote(cfg, ex, parents[i], seeds)] = (i, seeds)
        total = sum(len(s) for _, s in pending.values())
        with progress.phase(f"seeds on the cluster: {total:,}", total, unit="seed", bar=first.progress) as advance:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                i, seeds = pending.pop(done[0])
                trained[i] += _task_results(ray, done[0], seeds, jobs[i][0])
                advance(len(seeds))
    except BaseException:
        kill_parents(tracker, list(parents.values()))
        raise
    return [
        close_parent(tracker, cfg, p, parents[i], trained[i]) if i in parents else summary(cfg, p, None, [])
        for i, ((cfg, _), p) in enumerate(zip(jobs, plans))
    ]


def _task_results(ray: Any, ref: Any, seeds: list[int], cfg: RunConfig) -> list[SeedResult]:
    try:
        return ray.get(ref)
    except Exception as exc:  # noqa: BLE001 - the task failed after its retries: a result, not a crash
        reason = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else type(exc).__name__
        log.warning("seeds %s of %s failed: %s", seeds, cfg.loss.loss, reason)
        return [SeedResult(s, None, "failed") for s in seeds]


def _connect(ray: Any, address: str | None) -> None:
    _check_reachable(address)
    try:
        ray.init(address=address, logging_level=logging.ERROR, log_to_driver=False, include_dashboard=False,
                 configure_logging=False)  # fmt: skip
    except Exception as exc:  # noqa: BLE001 - Ray's own connection errors, in one line
        raise LossbenchError(f"cannot reach the Ray cluster at {address or 'a new local one'}: "
                             f"{first_line(exc)}") from None  # fmt: skip


def _check_reachable(address: str | None, timeout: float = 5.0) -> None:
    """A HOST:PORT cluster answers a TCP connection at once, or one line says so (Ray itself would
    keep retrying for minutes)."""
    import socket

    if not address or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout).close()
    except (OSError, ValueError) as exc:
        raise LossbenchError(f"cannot reach the Ray cluster at {address} ({exc})") from None


def execute(jobs: list[Job], executor: str = "local", opts: ExecutorOptions | None = None) -> list[RunSummary]:
    return EXECUTORS.get(executor)(jobs, opts or ExecutorOptions())

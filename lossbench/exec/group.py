"""Train a configuration's planned seeds on this machine, each in its own child run (exec.seed_run).

`Context.open` is the preflight, in this order, each failing in one line before any compute: device,
data, store, metric engine (real statistics cached). `train_members` trains the members one after
another, or in groups with --parallel-seeds; a diverged seed is a result (status FAILED, tag
lossbench.outcome=diverged) and its siblings go on. SIGINT/SIGTERM make the seeds in training save
a checkpoint and end KILLED. Each group's sample grids and weights are written to a temporary
folder that the group removes when it ends, however it ends. Each run is trained under its lease
(exec.lease), taken before the run is touched and given up when its group ends.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import lossbench
from lossbench import progress, rng
from lossbench.config import RunConfig
from lossbench.errors import CheckpointError, ConfigError, LossbenchError
from lossbench.exec import lease, sample_figures
from lossbench.exec.estimate import estimate
from lossbench.exec.evaluation import Evaluator, make_evaluator, open_extractor, real_cached, reference_set
from lossbench.exec.plan import Member, groups
from lossbench.exec.runs import SeedResult, run_tags, source_commit
from lossbench.exec.seed_run import SeedRun
from lossbench.exec.signals import stop_on_signals
from lossbench.gan import data, models
from lossbench.metrics.registry import EMA_PREFIX
from lossbench.options import ExecConfig, SpeedConfig, resolve_exec
from lossbench.tracking import Tracker
from lossbench.train import checkpoint, members, validate
from lossbench.train.loop import Hooks, Outcome, train
from lossbench.train.state import TrainState, setup, training_data

log = logging.getLogger(__name__)

TAG_GROUP = "lossbench.group"  # the first member's run id: every member of one trained group has it
TAG_GROUP_SIZE = "lossbench.group_size"  # members trained together (1: alone)


class Interrupted(LossbenchError):
    """A signal stopped the run; the current seeds were checkpointed and marked KILLED."""


@dataclass
class Context:
    """What training one configuration needs on the machine that trains it: the resolved execution
    config, its device, the data set on it, the tracking store and the metric engine."""

    cfg: RunConfig
    ex: ExecConfig
    device: torch.device
    train_set: data.Dataset
    x: torch.Tensor
    tracker: Tracker
    evaluate: Evaluator

    @classmethod
    def open(cls, cfg: RunConfig, ex: ExecConfig, preflight: bool = False) -> Context:
        """With `preflight`, one line before any long compute: the plan and its expected wall time."""
        ex = resolve_exec(ex)
        device = torch.device(ex.device)
        ex.speed.check_device(device)
        if ex.speed.parallel_configs or (ex.speed.parallel_seeds and len(ex.seeds) > 1) or ex.speed.whole_step:
            members.check_stackable(cfg)  # --whole-step: a seed alone is a group of one
        if ex.speed.whole_step:
            members.check_whole_step(cfg)
        train_set = data.load(cfg.data.dataset, ex.data_dir, "train")
        per_step = cfg.train.batch_size * cfg.train.pack  # samples one D step reads
        if per_step > len(train_set.x):  # the size is known once the data is (validate cannot load it)
            packed = f" x 'pack' ({cfg.train.batch_size} x {cfg.train.pack})" if cfg.train.pack > 1 else ""
            what = "'batch_size'" + packed
            raise ConfigError(f"{what} {per_step} is larger than the {cfg.data.dataset} training set "
                              f"({len(train_set.x)} samples)")  # fmt: skip
        tracker = Tracker(ex.tracking_uri, ex.experiment)
        cache_dir = Path(ex.cache_dir) if ex.cache_dir else None
        extractor = open_extractor(cfg, device, train_set)
        if preflight:
            if extractor:  # a reference split missing on disk fails before the probe
                reference_set(cfg, ex.data_dir, train_set)
            cached = real_cached(cfg, extractor, cache_dir)
            plan = estimate(cfg, train_set, device, len(ex.seeds), 1, extractor, cached, ex.speed, cache_dir=cache_dir)
            print(plan.line(), file=sys.stderr, flush=True)
        evaluate = make_evaluator(cfg, device, ex.data_dir, train_set, cache_dir, extractor, show=ex.progress)
        return cls(cfg, ex, device, train_set, training_data(cfg, train_set.x, device), tracker, evaluate)

    def params(self) -> dict[str, Any]:
        """What every seed run logs as parameters, besides its seed."""
        return {
            **self.cfg.flat(),
            "device": str(self.device),
            "torch_version": torch.__version__,
            "lossbench_version": lossbench.__version__,
            "git_commit": source_commit() or "unknown",
            "feature_extractor": "inception-v3-compat" if self.train_set.modes is None else "none",
            **asdict(self.ex.speed),  # the fast paths used: parallel_seeds, precision, compile, ...
        }


@dataclass(frozen=True, eq=False)  # members are told apart by identity
class Slot:
    """One member of a group: its configuration's context, the parent run it belongs to, the parameters
    its run logs, and its seed as planned."""

    ctx: Context
    parent_id: str
    params: dict[str, Any]
    member: Member


def train_members(ctx: Context, parent_id: str, members: list[Member] | tuple[Member, ...]) -> list[SeedResult]:
    """Train one configuration's members one after another, or in groups with --parallel-seeds; a
    signal checkpoints the seeds in training, ends them KILLED and raises Interrupted."""
    params = ctx.params()
    return [result for _, result in train_slots([Slot(ctx, parent_id, params, m) for m in members])]


def train_slots(
    slots: list[Slot], done: Callable[[list[tuple[Slot, SeedResult]]], None] | None = None
) -> list[tuple[Slot, SeedResult]]:
    """Train the members in their groups (exec.plan.groups), each in its own run under its own parent;
    `done` receives each group's results as it ends. A signal checkpoints the members in training,
    ends them KILLED and raises Interrupted."""
    results: list[tuple[Slot, SeedResult]] = []
    with stop_on_signals() as stop:
        speed = slots[0].ctx.ex.speed if slots else SpeedConfig()  # one command's members: one speed
        for group in groups(slots, lambda s: (s.ctx.cfg, s.member.step), speed):
            if stop[0]:  # the signal came as the previous group closed (its final evaluation): start no more
                raise Interrupted(f"interrupted before seed {group[0].member.seed} started; continue with --resume")
            leases: list[lease.Lease] = []  # held until the group ends, however it ends
            try:
                with tempfile.TemporaryDirectory(prefix="lossbench-") as workdir:
                    with contextlib.ExitStack() as claims:  # held until the group's runs exist and are leased
                        first: dict[str, int] = {}  # configurations in their order of appearance, seeds in order
                        ordered = sorted(group, key=lambda s: (first.setdefault(s.ctx.cfg.config_hash(), len(first)),
                                                               s.member.seed))  # fmt: skip
                        claimed = [s for s in ordered if _claim(s.ctx, s.member, claims, leases)]
                        ended = [(s, SeedResult(s.member.seed, s.member.run_id, "skipped"))
                                 for s in group if s not in claimed]  # fmt: skip
                        trainer = _Group(claimed, Path(workdir), leases) if claimed else None
                    if trainer is not None:
                        ended += list(zip(claimed, trainer.run(stop)))
                    results += ended
            finally:
                for held in leases:
                    held.release()
            interrupted = [r for _, r in results if r.outcome == "interrupted"]
            if interrupted:  # the group's members are checkpointed and KILLED; the caller ends their parents
                raise Interrupted(f"interrupted at step {interrupted[0].step}; continue with --resume")
            if done is not None:
                done(ended)
    return results


def _claim(ctx: Context, m: Member, claims: contextlib.ExitStack, leases: list[lease.Lease]) -> bool:
    """Whether this process trains member m: under the (configuration, seed) claim, take the lease of
    the run it continues, or make sure no other process started the seed since it was planned."""
    root, config_hash = ctx.ex.checkpoints, ctx.cfg.config_hash()
    claims.enter_context(lease.claim(root, config_hash, m.seed))
    now = {r.run_id: r for r in ctx.tracker.seed_runs(config_hash) if r.seed == m.seed} if ctx.ex.resume else {}
    if m.run_id:
        held = lease.Lease.take(root, m.run_id)
        if held is None:
            owner = lease.holder(root, m.run_id) or "another process"
            log.warning("seed %d: run %s is being trained by %s; skipped", m.seed, m.run_id, owner)
            return False
        if m.run_id in now and not now[m.run_id].resumable:
            held.release()
            log.warning("seed %d: run %s ended %s since it was planned; skipped", m.seed, m.run_id,
                        now[m.run_id].status)  # fmt: skip
            return False
        leases.append(held)
        return True
    fresh = [r for r in now.values() if r.run_id not in m.known]
    if fresh:
        owner = lease.holder(root, fresh[0].run_id)
        what = f"is being trained by {owner}" if owner else f"was started after this one planned ({fresh[0].status})"
        log.warning("seed %d: run %s %s; skipped", m.seed, fresh[0].run_id, what)
        return False
    return True


class _Group:
    """A group of members trained together, each in its own child run (exec.seed_run): the seeds of one
    configuration, or with --parallel-configs of several configurations of one shape (what they share,
    device, data, store, metric engine, comes from the first member's context). The loop's hooks, and
    the group's checkpoints staged member by member and committed as one."""

    def __init__(self, slots: list[Slot], workdir: Path, leases: list[lease.Lease]):
        self.ctx, self.slots, self.workdir, self.leases = slots[0].ctx, slots, workdir, leases
        self.cfgs = [s.ctx.cfg for s in slots]
        self.seeds = [s.member.seed for s in slots]
        ctx = self.ctx
        self.state = setup(ctx.cfg, self.seeds, ctx.train_set.sample_shape, ctx.device, ctx.ex.speed, configs=self.cfgs)
        self.runs = [self._open_run(k, s) for k, s in enumerate(slots)]
        together = {TAG_GROUP: self.runs[0].run_id, TAG_GROUP_SIZE: str(len(self.runs))}
        for run in self.runs:  # which runs trained together (the latest group, for a resumed member)
            self.ctx.tracker.set_tags(run.run_id, together)
        self._commit: checkpoint.GroupCommit | None = None  # the checkpoint being staged, member by member
        self._started = 0.0  # when that checkpoint began
        self.readout_keys = list(models.readouts(self.state.G, self.state.D))

    def _open_run(self, k: int, slot: Slot) -> SeedRun:
        """Member k's run: continued from its checkpoint, or new and leased to this process as it is made."""
        m, ctx = slot.member, slot.ctx
        tracker, folder = ctx.tracker, self.workdir / f"{k}-{m.seed}"
        if m.run_id:
            # read now, under its lease: the latest, whatever the planner saw (a group checkpoint
            # that a killed process made but did not finish renaming into place is finished first)
            path = checkpoint.recover(ctx.ex.checkpoints, m.run_id)
            if path is not None:
                self.state.load_state_dict(checkpoint.load(path, validate.expected(ctx.cfg, ctx.device)), k)
            return SeedRun.resume(tracker, m.seed, m.run_id, self.state.step, folder)
        tags = run_tags(ctx.cfg, ctx.ex)
        run = SeedRun.start(tracker, ctx.cfg, tags, slot.parent_id, slot.params, m.seed, len(ctx.train_set.x), folder)
        held = lease.Lease.take(ctx.ex.checkpoints, run.run_id)
        if held is None:  # cannot happen while this process holds the seed's claim
            raise CheckpointError(f"run {run.run_id} was leased by another process as it was created")
        self.leases.append(held)
        return run

    def _label(self) -> str:
        """What the progress bar calls the group."""
        cfg = self.ctx.cfg
        configs = len({c.config_hash() for c in self.cfgs})
        if configs > 1:
            return f"{cfg.loss.loss} {configs} configurations, {len(self.seeds)} members"
        label = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"seeds {','.join(map(str, self.seeds))}"
        return f"{cfg.loss.loss} {label}"

    def run(self, stop: list[bool]) -> list[SeedResult]:
        cfg, tracker = self.ctx.cfg, self.ctx.tracker
        bar = progress.Steps(self._label(), cfg.train.steps, self.state.step, self.state.window,
                             bar=self.ctx.ex.progress)  # fmt: skip
        hooks = Hooks(
            log=lambda k, step, values: self.runs[k].log(step, values | self._readouts(k)),
            samples=self._log_samples,
            evaluate_group=self._log_evaluations,
            checkpoint=lambda k, step, st: self._stage_checkpoint(st, k),
            checkpoint_commit=self._commit_checkpoint,
            progress=bar.update,
            should_stop=lambda: stop[0],
        )  # fmt: skip
        monitors = [run.monitor() for run in self.runs if self.ctx.ex.system_metrics]
        if self.state.step == 0:  # where the architecture's readouts start, before the first step
            for k, run in enumerate(self.runs):
                if start := self._readouts(k):
                    run.log(0, start)
        try:
            outcomes = train(cfg, self.state, self.ctx.x, hooks)
            tracker.flush()
            stopped = [k for k, o in enumerate(outcomes) if o.status == "interrupted"]
            for k in stopped:  # all at one step (where the loop stopped), committed as one before any run ends
                self._stage_checkpoint(self.state, k)
            self._commit_checkpoint(self.state.step)
        except BaseException as exc:  # a second Ctrl-C stops now: each seed continues from its last checkpoint
            self._abort_checkpoint()
            for run in self.runs:
                run.fail(exc)
            raise
        finally:
            bar.close()
            for monitor in monitors:
                if monitor is not None:
                    monitor.finish()
        finished = [k for k, o in enumerate(outcomes) if o.status == "finished"]
        finals = {k: v | a for k, (_, v, a) in zip(finished, self._evaluations(finished, self.state.step))}
        return [self._close(k, o, finals.get(k, {})) for k, o in enumerate(outcomes)]

    def _close(self, k: int, outcome: Outcome, final: dict[str, float]) -> SeedResult:
        """End member k's run by its outcome; a finished member with its final evaluation (`run` makes
        the finished members' together)."""
        if outcome.status != "finished":  # diverged, or interrupted (checkpointed by `run`, with its siblings)
            return self.runs[k].end(outcome)
        G = self.state.players.generator(k)
        return self.runs[k].finish(outcome.step, final, G, self.state.players.discriminator(k),
                                   self.cfgs[k].model.z_dim, self.readout_keys, self._average(k))  # fmt: skip

    def _log_evaluations(self, step: int, ks: list[int]) -> None:
        """An evaluation during training of the live members (`_evaluations`), logged: each one's G's
        metrics (its weights kept when they are the run's best), then its averaged G's."""
        for k, (G, values, averaged) in zip(ks, self._evaluations(ks, step)):
            self.runs[k].log_evaluation(step, values, G)
            if averaged:
                self.runs[k].log(step, averaged)

    def _evaluations(
        self, ks: list[int], step: int
    ) -> list[tuple[torch.nn.Module, dict[str, float], dict[str, float]]]:
        """Members ks evaluated together, during training or at the end: per member its G, G's metrics
        and (with --ema) its averaged G's under ema_ names ({} without)."""
        Gs = [self._own(self.state.players.generator(k)) for k in ks]
        values = self.ctx.evaluate.members(Gs, [self.seeds[k] for k in ks], step)
        return list(zip(Gs, values, self._averaged(ks, step)))

    def _own(self, G: torch.nn.Module) -> torch.nn.Module:
        """A module of member k's own: a group's players and averages load each member into one shared
        view, so members evaluated together each get a copy (one member uses the view itself)."""
        return copy.deepcopy(G) if len(self.runs) > 1 else G

    def _average(self, k: int) -> torch.nn.Module | None:
        """Member k's averaged G (--ema), or None."""
        average = self.state.average
        return None if average is None else average.generator(self.state.players, k)

    def _averaged(self, ks: list[int], step: int) -> list[dict[str, float]]:
        """The averaged Gs' evaluations, their metrics named ema_<metric>; {} each without --ema."""
        if self.state.average is None:
            return [{} for _ in ks]
        Gs = [self._own(self._average(k)) for k in ks]  # type: ignore[arg-type]
        values = self.ctx.evaluate.members(Gs, [self.seeds[k] for k in ks], step)
        return [{f"{EMA_PREFIX}{key}": v for key, v in one.items()} for one in values]

    def _abort_checkpoint(self) -> None:
        """Drop a checkpoint staged but not committed (the previous commit stays each seed's)."""
        commit, self._commit = self._commit, None
        if commit is not None:
            commit.abort()

    def _readouts(self, k: int) -> dict[str, float]:
        """Scalars the architecture exposes (the Dirac-GAN's theta and psi), after the step."""
        if not self.readout_keys:
            return {}
        return models.readouts(self.state.players.generator(k), self.state.players.discriminator(k))

    def _log_samples(self, k: int, step: int, G: torch.nn.Module) -> None:
        train_set, z_dim = self.ctx.train_set, self.ctx.cfg.model.z_dim
        grid_rng = rng.generator(self.seeds[k], "grid", self.ctx.device)
        path = sample_figures.save_samples(G, z_dim, grid_rng, train_set.modes, self.runs[k].folder, step)
        self.runs[k].log_samples(path, step)

    def _stage_checkpoint(self, state: TrainState, k: int) -> None:
        """Write seed k's checkpoint beside its run's latest one; `_commit_checkpoint` puts the group's
        seeds in place together (train.checkpoint: all at one step or none)."""
        if self._commit is None:
            self._started = time.perf_counter()
            self.ctx.tracker.flush()  # what the checkpoint claims as done is in the store first: a crash loses neither
            self._commit = checkpoint.GroupCommit(self.ctx.ex.checkpoints)
        try:
            self._commit.stage(state.state_dict(k), self.runs[k].run_id)
        except BaseException:
            self._abort_checkpoint()
            raise

    def _commit_checkpoint(self, step: int) -> None:
        commit, self._commit = self._commit, None
        if commit is None:
            return
        seed_of = {run.run_id: run.seed for run in self.runs}
        staged = [seed_of[run_id] for run_id, _ in commit.staged]
        commit.commit(step)
        if (took := time.perf_counter() - self._started) > 1.0:  # a slow disk or store shows itself
            which = f"seed {staged[0]}" if len(staged) == 1 else f"seeds {','.join(map(str, staged))}"
            print(f"checkpoint: {which} at step {step} written in {took:.1f} s", file=sys.stderr)

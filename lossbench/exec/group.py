"""Train a configuration's planned seeds on this machine, each in its own child run.

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
import json
import logging
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

import lossbench
from lossbench import progress, rng
from lossbench import tracking_conventions as conventions
from lossbench.config import RunConfig
from lossbench.errors import CheckpointError, ConfigError, LossbenchError, TrackingError
from lossbench.exec import generators, lease, sample_figures
from lossbench.exec.estimate import estimate
from lossbench.exec.evaluation import Evaluate, make_evaluator, open_extractor, real_cached, reference_set
from lossbench.exec.plan import Member
from lossbench.exec.runs import SeedResult, data_inputs, run_tags
from lossbench.exec.signals import stop_on_signals
from lossbench.gan import data, models
from lossbench.options import ExecConfig, resolve_exec
from lossbench.tracking import TAG_ERROR, TAG_OUTCOME, TAG_ROLE, TAG_SEED, Tracker
from lossbench.train import checkpoint, validate
from lossbench.train.loop import Hooks, Outcome, train
from lossbench.train.state import TrainState, setup, training_data

log = logging.getLogger(__name__)


class Interrupted(LossbenchError):
    """A signal stopped the run; the current seeds were checkpointed and marked KILLED."""


def _git_commit() -> str:
    """The commit lossbench runs from, read from its checkout's files (no git process); unknown outside one."""
    return conventions.git_commit(Path(lossbench.__file__).resolve().parent) or "unknown"


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
    evaluate: Evaluate

    @classmethod
    def open(cls, cfg: RunConfig, ex: ExecConfig, preflight: bool = False) -> Context:
        """With `preflight`, one line before any long compute: the plan and its expected wall time."""
        ex = resolve_exec(ex)
        device = torch.device(ex.device)
        ex.speed.check_device(device)
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
            if extractor:  # a sample count larger than the reference set fails before the probe
                reference_set(cfg, ex.data_dir, train_set)
            cached = real_cached(cfg, extractor, cache_dir)
            plan = estimate(cfg, train_set, device, len(ex.seeds), 1, extractor, cached, ex.speed,
                            cache_dir=cache_dir)
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
            "git_commit": _git_commit(),
            "feature_extractor": "inception-v3-compat" if self.train_set.modes is None else "none",
            **asdict(self.ex.speed),  # the fast paths used: parallel_seeds, precision, compile, ...
        }


def train_members(ctx: Context, parent_id: str, members: list[Member] | tuple[Member, ...]) -> list[SeedResult]:
    """Train the members one after another, or in groups with --parallel-seeds; a signal checkpoints
    the seeds in training, ends them KILLED and raises Interrupted."""
    from lossbench.exec.plan import groups

    params = ctx.params()
    results: list[SeedResult] = []
    with stop_on_signals() as stop:
        for group in groups(members, ctx.ex.speed.parallel_seeds):
            if stop[0]:  # the signal came as the previous group closed (its final evaluation): start no more
                raise Interrupted(f"interrupted before seed {group[0].seed} started; continue with --resume")
            leases: list[lease.Lease] = []  # held until the group ends, however it ends
            try:
                with tempfile.TemporaryDirectory(prefix="lossbench-") as workdir:
                    with contextlib.ExitStack() as claims:  # held until the group's runs exist and are leased
                        claimed = [m for m in sorted(group, key=lambda m: m.seed) if _claim(ctx, m, claims, leases)]
                        results += [SeedResult(m.seed, m.run_id, "skipped") for m in group if m not in claimed]
                        trainer = _Group(ctx, parent_id, params, claimed, Path(workdir), leases) if claimed else None
                    if trainer is not None:
                        results.extend(trainer.run(stop))
            finally:
                for held in leases:
                    held.release()
            interrupted = [r for r in results if r.outcome == "interrupted"]
            if interrupted:
                raise Interrupted(f"interrupted at step {interrupted[0].step}; continue with --resume")
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
    """A group of seeds of one configuration trained together, each in its own child run."""

    def __init__(self, ctx: Context, parent_id: str, params: dict[str, Any], members: list[Member], workdir: Path,
                 leases: list[lease.Lease]):  # fmt: skip
        self.ctx, self.workdir, self.members, self.leases = ctx, workdir, members, leases
        self.seeds = [m.seed for m in members]
        self.state = setup(ctx.cfg, self.seeds, ctx.train_set.sample_shape, ctx.device, ctx.ex.speed)
        self.run_ids = [self._open_run(k, m, parent_id, params) for k, m in enumerate(members)]
        self._commit: checkpoint.GroupCommit | None = None  # the checkpoint being staged, seed by seed
        self._started = 0.0  # when that checkpoint began
        self.has_readouts = bool(models.readouts(self.state.G, self.state.D))

    def _open_run(self, k: int, m: Member, parent_id: str, params: dict[str, Any]) -> str:
        cfg, tracker = self.ctx.cfg, self.ctx.tracker
        if m.run_id:
            # read now, under its lease: the latest, whatever the planner saw (a group checkpoint
            # that a killed process made but did not finish renaming into place is finished first)
            path = checkpoint.recover(self.ctx.ex.checkpoints, m.run_id)
            if path is not None:
                self.state.load_state_dict(checkpoint.load(path, validate.expected(cfg, self.ctx.device)), k)
            tracker.reopen(m.run_id)
            log.info("seed %d: continuing run %s at step %d", m.seed, m.run_id, self.state.step)
            return m.run_id
        run_id = tracker.start_run(
            f"{cfg.loss.loss}/{cfg.data.dataset}/seed{m.seed}",
            params | {"seed": m.seed},
            run_tags(cfg, self.ctx.ex) | {TAG_ROLE: "seed", TAG_SEED: str(m.seed), TAG_OUTCOME: "running"},
            parent_id=parent_id,
        )
        conventions.log_inputs(tracker.client, run_id, data_inputs(cfg, len(self.ctx.train_set.x)))
        held = lease.Lease.take(self.ctx.ex.checkpoints, run_id)
        if held is None:  # cannot happen while this process holds the seed's claim
            raise CheckpointError(f"run {run_id} was leased by another process as it was created")
        self.leases.append(held)
        tracker.log_text(run_id, json.dumps(cfg.flat() | {"seed": m.seed}, indent=2, sort_keys=True), "config.json")
        return run_id

    def run(self, stop: list[bool]) -> list[SeedResult]:
        cfg, tracker = self.ctx.cfg, self.ctx.tracker
        label = f"seed {self.seeds[0]}" if len(self.seeds) == 1 else f"seeds {','.join(map(str, self.seeds))}"
        bar = progress.Steps(f"{cfg.loss.loss} {label}", cfg.train.steps, self.state.step, self.state.window,
                             bar=self.ctx.ex.progress)  # fmt: skip
        hooks = Hooks(
            log=lambda k, step, values: tracker.log_metrics(self.run_ids[k], step, values | self._readouts(k)),
            samples=self._log_samples,
            evaluate=self._evaluate,
            checkpoint=lambda k, step, st: self._stage_checkpoint(st, k),
            checkpoint_commit=self._commit_checkpoint,
            progress=bar.update,
            should_stop=lambda: stop[0],
        )  # fmt: skip
        monitors = [conventions.system_metrics(tracker.uri, run_id) for run_id in self.run_ids
                    if self.ctx.ex.system_metrics]  # fmt: skip
        if self.state.step == 0:  # where the architecture's readouts start, before the first step
            for k, run_id in enumerate(self.run_ids):
                if start := self._readouts(k):
                    tracker.log_metrics(run_id, 0, start)
        try:
            outcomes = train(cfg, self.state, self.ctx.x, hooks)
            tracker.flush()
            stopped = [k for k, o in enumerate(outcomes) if o.status == "interrupted"]
            for k in stopped:  # all at one step (where the loop stopped), committed as one before any run ends
                self._stage_checkpoint(self.state, k)
            self._commit_checkpoint(self.state.step)
        except KeyboardInterrupt:  # a second Ctrl-C: stop now; each seed continues from its last checkpoint
            self._abort_checkpoint()
            for run_id in self.run_ids:
                tracker.end_run(run_id, "KILLED", {TAG_OUTCOME: "interrupted"})
            raise
        except BaseException as exc:
            self._abort_checkpoint()
            for run_id in self.run_ids:
                tracker.end_run(run_id, "FAILED", {TAG_OUTCOME: "failed", TAG_ERROR: str(exc)[:500]})
            raise
        finally:
            bar.close()
            for monitor in monitors:
                if monitor is not None:
                    monitor.finish()
        return [self._close(k, o) for k, o in enumerate(outcomes)]

    def _abort_checkpoint(self) -> None:
        """Drop a checkpoint staged but not committed (the previous commit stays each seed's)."""
        commit, self._commit = self._commit, None
        if commit is not None:
            commit.abort()

    def _readouts(self, k: int) -> dict[str, float]:
        """Scalars the architecture exposes (the Dirac-GAN's theta and psi), after the step."""
        if not self.has_readouts:
            return {}
        return models.readouts(self.state.players.generator(k), self.state.players.discriminator(k))

    def _log_path(self, k: int) -> None:
        """The run's own figure of its readouts' path over training (two scalars: a plane)."""
        keys = list(self._readouts(k))
        if len(keys) != 2:
            return
        xs, ys = ([m.value for m in sorted(self.ctx.tracker.metric_history(self.run_ids[k], key), key=lambda m: m.step)]
                  for key in keys)  # fmt: skip
        path = sample_figures.save_path(xs, ys, keys, self._folder(k) / "trajectory.png", f"seed {self.seeds[k]}")
        self.ctx.tracker.log_artifact(self.run_ids[k], path, "samples")

    def _evaluate(self, k: int, step: int, G: torch.nn.Module) -> None:
        """An evaluation during training, logged; G's weights kept as generator_best.pt when its FID is
        the run's best so far (strictly lower than every earlier one, as best_fid_step picks the first)."""
        tracker, run_id = self.ctx.tracker, self.run_ids[k]
        values = self.ctx.evaluate(G, self.seeds[k], step)
        earlier = [m.value for m in tracker.metric_history(run_id, "fid")] if "fid" in values else []
        tracker.log_metrics(run_id, step, values)
        if "fid" in values and all(values["fid"] < v for v in earlier):
            self._keep_best(k, step, G)

    def _keep_best(self, k: int, step: int, G: torch.nn.Module) -> None:
        """G's weights at the run's best evaluation, in the store (weights/generator_best.pt), so a
        resumed run keeps them; one local file per step, as an upload reads it until flush()."""
        (folder := self._folder(k) / f"best-{step}").mkdir(exist_ok=True)
        path = folder / "generator_best.pt"
        torch.save(G.state_dict(), path)
        self.ctx.tracker.log_artifact(self.run_ids[k], path, "weights")

    def _folder(self, k: int) -> Path:
        folder = self.workdir / str(self.seeds[k])
        folder.mkdir(exist_ok=True)
        return folder

    def _log_samples(self, k: int, step: int, G: torch.nn.Module) -> None:
        train_set, z_dim = self.ctx.train_set, self.ctx.cfg.model.z_dim
        grid_rng = rng.generator(self.seeds[k], "grid", self.ctx.device)
        path = sample_figures.save_samples(G, z_dim, grid_rng, train_set.modes, self._folder(k), step)
        self.ctx.tracker.log_artifact(self.run_ids[k], path, "samples")
        self.ctx.tracker.in_background(conventions.log_image, self.ctx.tracker.client, self.run_ids[k], path, "samples",
                                       step)  # the UI's step slider  # fmt: skip

    def _stage_checkpoint(self, state: TrainState, k: int) -> None:
        """Write seed k's checkpoint beside its run's latest one; `_commit_checkpoint` puts the group's
        seeds in place together (train.checkpoint: all at one step or none)."""
        if self._commit is None:
            self._started = time.perf_counter()
            self.ctx.tracker.flush()  # what the checkpoint claims as done is in the store first: a crash loses neither
            self._commit = checkpoint.GroupCommit(self.ctx.ex.checkpoints)
        try:
            self._commit.stage(state.state_dict(k), self.run_ids[k])
        except BaseException:
            self._abort_checkpoint()
            raise

    def _commit_checkpoint(self, step: int) -> None:
        commit, self._commit = self._commit, None
        if commit is None:
            return
        staged = [self.seeds[self.run_ids.index(run_id)] for run_id, _ in commit.staged]
        commit.commit(step)
        if (took := time.perf_counter() - self._started) > 1.0:  # a slow disk or store shows itself
            which = f"seed {staged[0]}" if len(staged) == 1 else f"seeds {','.join(map(str, staged))}"
            print(f"checkpoint: {which} at step {step} written in {took:.1f} s", file=sys.stderr)

    def _close(self, k: int, outcome: Outcome) -> SeedResult:
        """End seed k's run by its outcome: FAILED (diverged), KILLED (interrupted, checkpointed first)
        or FINISHED (after the final evaluation, its best FID and its weights)."""
        tracker, seed, run_id = self.ctx.tracker, self.seeds[k], self.run_ids[k]
        if outcome.status == "diverged":
            log.warning("seed %d diverged at step %d (non-finite loss or weights)", seed, outcome.step)
            tracker.end_run(run_id, "FAILED", {TAG_OUTCOME: "diverged", "lossbench.diverged_step": str(outcome.step)})
            return SeedResult(seed, run_id, "diverged", outcome.step)
        if outcome.status == "interrupted":  # checkpointed by `run`, with the group's other stopped seeds
            tracker.end_run(run_id, "KILLED",
                            {TAG_OUTCOME: "interrupted", "lossbench.interrupted_step": str(outcome.step)})  # fmt: skip
            return SeedResult(seed, run_id, "interrupted", outcome.step)
        G = self.state.players.generator(k)
        final = self.ctx.evaluate(G, seed, outcome.step)
        final |= _best(tracker, run_id, final, outcome.step)
        if final.get("best_fid_step") == outcome.step and "fid" in final and final["best_fid"] == final["fid"]:
            self._keep_best(k, outcome.step, G)  # the last evaluation is the best: its weights are the best ones
        tracker.log_metrics(run_id, outcome.step, final)
        for name, module in (("generator.pt", G), ("discriminator.pt", self.state.players.discriminator(k))):
            torch.save(module.state_dict(), self._folder(k) / name)
            tracker.log_artifact(run_id, self._folder(k) / name, "weights")
        if self.has_readouts:  # the path of the architecture's scalars (the Dirac-GAN's theta, psi)
            self._log_path(k)
        tracker.flush()
        self._log_models(k, G, outcome.step)
        tracker.end_run(run_id, "FINISHED", {TAG_OUTCOME: "finished"})
        return SeedResult(seed, run_id, "finished", outcome.step, final)

    def _log_models(self, k: int, G: torch.nn.Module, step: int) -> None:
        """The last and best generators as MLflow models (exec.generators); a failure is a warning: the
        run's weights are stored already."""
        tracker, run_id = self.ctx.tracker, self.run_ids[k]
        best = None
        if "weights/generator_best.pt" in tracker.artifacts(run_id, "weights"):
            best = tracker.download(run_id, "weights/generator_best.pt", self._folder(k) / "best-model")
        try:
            took = generators.log_models(tracker, run_id, G, self.ctx.cfg.model.z_dim, step, best)
            log.info("seed %d: generator logged as an MLflow model in %.1f s", self.seeds[k], took)
        except TrackingError as exc:
            log.warning("seed %d: %s", self.seeds[k], exc)


def _best(tracker: Tracker, run_id: str, final: dict[str, float], step: int) -> dict[str, float]:
    """best_fid and its step over every evaluation of the run (read back, so resumed runs count too)."""
    if "fid" not in final:
        return {}
    history = [(m.value, m.step) for m in tracker.metric_history(run_id, "fid")] + [(final["fid"], step)]
    value, at = min(history)
    return {"best_fid": value, "best_fid_step": float(at)}

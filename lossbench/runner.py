"""Run one configuration over its seeds: preflight, one parent MLflow run, one child run per seed.

Preflight happens before anything is written to the store: data loaded, metric engine built (real
statistics cached), store opened. Then each seed is trained by the one trainer, its numbers go to
its child run, and the parent run gets the aggregates across seeds. A diverged seed is a result
(status FAILED, tag lossbench.outcome=diverged) and the other seeds go on. SIGINT/SIGTERM make the
current seed save a checkpoint and end KILLED.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import statistics
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

import lossbench
from lossbench import checkpoint, data, plots, rng, trainer
from lossbench.config import ExecConfig, RunConfig, to_json
from lossbench.errors import LossbenchError
from lossbench.evaluation import make_evaluator
from lossbench.metrics_registry import METRICS
from lossbench.tracking import (
    TAG_CONFIG_HASH,
    TAG_DATASET,
    TAG_LOSS,
    TAG_OUTCOME,
    TAG_ROLE,
    TAG_SEED,
    Tracker,
)

log = logging.getLogger(__name__)

GRID_SAMPLES = 64
SCATTER_SAMPLES = 2000


class Interrupted(LossbenchError):
    """A signal stopped the run; the current seed was checkpointed and marked KILLED."""


@dataclass
class SeedResult:
    seed: int
    run_id: str | None
    outcome: str  # finished | diverged | interrupted | skipped
    step: int = 0
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class RunSummary:
    config_hash: str
    parent_run_id: str | None
    seeds: list[SeedResult]

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for s in self.seeds:
            out[s.outcome] = out.get(s.outcome, 0) + 1
        return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise LossbenchError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LossbenchError("device 'cuda' asked for, but torch sees no CUDA device")
    return device


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(lossbench.__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """SIGINT/SIGTERM set a flag the loop reads between steps; a second SIGINT interrupts at once."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True
        log.warning("signal %d: saving a checkpoint and stopping after this step", signum)

    if threading.current_thread() is not threading.main_thread():  # e.g. some Ray workers: no handlers there
        yield flag
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


@dataclass(frozen=True)
class Member:
    """One seed to train: a new run, or an existing run to continue (from its checkpoint if it has one)."""

    seed: int
    run_id: str | None = None
    step: int = 0
    has_checkpoint: bool = False


@dataclass
class Context:
    """What training one configuration needs on the machine that trains it: its device, the data set
    on it, the tracking store and the metric engine (real statistics cached)."""

    cfg: RunConfig
    ex: ExecConfig
    device: torch.device
    train_set: data.Dataset
    x: torch.Tensor
    tracker: Tracker
    evaluate: Any

    @classmethod
    def open(cls, cfg: RunConfig, ex: ExecConfig) -> Context:
        """Preflight in this order, each failing in one line before any compute: data, store, metrics."""
        device = resolve_device(ex.device)
        ex.speed.check_device(device)
        train_set = data.load(cfg.data.dataset, ex.data_dir, "train")
        tracker = Tracker(ex.tracking_uri, ex.experiment)
        evaluate = make_evaluator(cfg, device, ex.data_dir, train_set)
        return cls(cfg, ex, device, train_set, train_set.x.to(device), tracker, evaluate)


def plan_seeds(
    tracker: Tracker, cfg: RunConfig, ex: ExecConfig, seeds: list[int], parent_id: str | None = None
) -> list[Member]:
    """Each seed: continue its interrupted run (or one left RUNNING by a process that died) when
    resuming, else a new run; with parent_id, only runs under that parent count. A corrupt
    checkpoint fails here, before any run is touched."""
    out = []
    by_seed = _runs_by_seed(tracker, cfg)
    for seed in seeds:
        previous = by_seed.get(seed, [])
        if parent_id is not None:
            previous = [r for r in previous if r.data.tags.get("mlflow.parentRunId") == parent_id]
        resumable = [r for r in previous if r.data.tags.get(TAG_OUTCOME) in ("interrupted", "running")]
        if not (ex.resume and resumable):
            out.append(Member(seed))
            continue
        run_ = max(resumable, key=lambda r: r.info.start_time)
        path = checkpoint.path_for(checkpoint.checkpoint_root(ex.checkpoint_dir), run_.info.run_id)
        if path.is_file():
            out.append(Member(seed, run_.info.run_id, int(checkpoint.load(path)["step"]), True))
        else:  # it died before its first checkpoint: start again from step 0, in the same run
            out.append(Member(seed, run_.info.run_id))
    return out


def _runs_by_seed(tracker: Tracker, cfg: RunConfig) -> dict[int, list[Any]]:
    """The configuration's seed runs in the store, by seed: one query, not one per seed."""
    out: dict[int, list[Any]] = {}
    for r in tracker.find_seed_runs(cfg.config_hash()):
        out.setdefault(int(r.data.tags[TAG_SEED]), []).append(r)
    return out


def seeds_to_run(tracker: Tracker, cfg: RunConfig, ex: ExecConfig) -> tuple[list[int], list[SeedResult]]:
    """The seeds of ex still to train, and those skipped because they already finished."""
    todo, skipped = [], []
    by_seed = _runs_by_seed(tracker, cfg)
    for seed in ex.seed_values():
        previous = by_seed.get(seed, [])
        if ex.skip_finished and any(r.info.status == "FINISHED" for r in previous):
            skipped.append(SeedResult(seed, None, "skipped"))
        else:
            todo.append(seed)
    return todo, skipped


def open_parent(tracker: Tracker, cfg: RunConfig, ex: ExecConfig) -> str:
    """The configuration's parent run: the one its interrupted seeds belong to, or a new one."""
    for r in tracker.find_seed_runs(cfg.config_hash()):
        parent = r.data.tags.get("mlflow.parentRunId")
        if ex.resume and r.data.tags.get(TAG_OUTCOME) in ("interrupted", "running") and parent:
            tracker.reopen(parent)
            return parent
    tags = {TAG_CONFIG_HASH: cfg.config_hash(), TAG_LOSS: cfg.loss.loss, TAG_DATASET: cfg.data.dataset}
    params = cfg.flat() | {"seeds": len(ex.seed_values()), "lossbench_version": lossbench.__version__}
    parent_id = tracker.start_run(f"{cfg.loss.loss}/{cfg.data.dataset}", params, tags | {TAG_ROLE: "parent"})
    tracker.log_text(parent_id, to_json(cfg), "config.json")
    return parent_id


def close_parent(tracker: Tracker, cfg: RunConfig, parent_id: str, results: list[SeedResult]) -> RunSummary:
    _log_aggregates(tracker, parent_id, cfg, results)
    tracker.end_run(parent_id, "FINISHED")
    return RunSummary(cfg.config_hash(), parent_id, sorted(results, key=lambda r: r.seed))


def run(cfg: RunConfig, ex: ExecConfig) -> RunSummary:
    """Train the seeds of `cfg` here, logging to the tracking store (the local executor)."""
    ctx = Context.open(cfg, ex)
    todo, results = seeds_to_run(ctx.tracker, cfg, ex)
    if not todo:
        log.info("every seed of configuration %s already finished; nothing to do", cfg.config_hash())
        return RunSummary(cfg.config_hash(), None, results)
    members = plan_seeds(ctx.tracker, cfg, ex, todo)
    parent_id = open_parent(ctx.tracker, cfg, ex)
    try:
        results += train_seeds(ctx, parent_id, members)
    except BaseException:
        ctx.tracker.end_run(parent_id, "KILLED")
        raise
    return close_parent(ctx.tracker, cfg, parent_id, results)


def train_seeds(ctx: Context, parent_id: str, members: list[Member]) -> list[SeedResult]:
    """Train the members one after another, or in groups with --parallel-seeds; a signal checkpoints
    the seeds in training, ends them KILLED and raises Interrupted."""
    cfg, ex = ctx.cfg, ctx.ex
    common = {
        **cfg.flat(),
        "device": str(ctx.device),
        "torch_version": torch.__version__,
        "lossbench_version": lossbench.__version__,
        "git_commit": _git_commit(),
        "feature_extractor": "inception-v3-compat" if ctx.train_set.modes is None else "none",
        **asdict(ex.speed),  # the fast paths used: parallel_seeds, precision, compile, ...
    }
    tags = {TAG_CONFIG_HASH: cfg.config_hash(), TAG_LOSS: cfg.loss.loss, TAG_DATASET: cfg.data.dataset}
    group = _Group(cfg, ex, ctx.tracker, parent_id, common, tags, ctx.x, ctx.train_set, ctx.evaluate)
    results: list[SeedResult] = []
    with stop_on_signals() as stop:
        for members_ in _groups(members, ex.speed.parallel_seeds):
            results.extend(group.run(members_, stop))
            interrupted = [r for r in results if r.outcome == "interrupted"]
            if interrupted:
                raise Interrupted(f"interrupted at step {interrupted[0].step}; continue with --resume")
    return results


def _groups(members: list[Member], parallel: bool) -> list[list[Member]]:
    """Seeds trained together: one at a time, or with --parallel-seeds every seed starting at the same
    step (all new seeds form one group; resumed ones join those at their checkpoint's step)."""
    if not parallel:
        return [[m] for m in members]
    by_step: dict[int, list[Member]] = {}
    for m in members:
        by_step.setdefault(m.step, []).append(m)
    return [by_step[step] for step in sorted(by_step)]


@dataclass
class _Group:
    """Trains a group of seeds of one configuration, each in its own child run."""

    cfg: RunConfig
    ex: ExecConfig
    tracker: Tracker
    parent_id: str
    common: dict[str, Any]
    tags: dict[str, str]
    x: torch.Tensor
    train_set: data.Dataset
    evaluate: Any

    def run(self, members: list[Member], stop: list[bool]) -> list[SeedResult]:
        cfg, ex, tracker = self.cfg, self.ex, self.tracker
        device = self.x.device
        seeds = [m.seed for m in members]
        state = trainer.setup(cfg, seeds, self.train_set.sample_shape, device, ex.speed)
        root = checkpoint.checkpoint_root(ex.checkpoint_dir)
        run_ids: list[str] = []
        for k, m in enumerate(members):
            seed = m.seed
            if m.run_id:
                if m.has_checkpoint:
                    state.load_state_dict(checkpoint.load(checkpoint.path_for(root, m.run_id)), k)
                tracker.reopen(m.run_id)
                log.info("seed %d: continuing run %s at step %d", seed, m.run_id, state.step)
                run_ids.append(m.run_id)
            else:
                run_id = tracker.start_run(
                    f"{cfg.loss.loss}/{cfg.data.dataset}/seed{seed}",
                    self.common | {"seed": seed},
                    self.tags | {TAG_ROLE: "seed", TAG_SEED: str(seed), TAG_OUTCOME: "running"},
                    parent_id=self.parent_id,
                )
                tracker.log_text(
                    run_id, json.dumps(cfg.flat() | {"seed": seed}, indent=2, sort_keys=True), "config.json"
                )
                run_ids.append(run_id)
        ckpt_paths = [checkpoint.path_for(root, run_id) for run_id in run_ids]

        from tqdm import tqdm

        label = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {','.join(map(str, seeds))}"
        bar = tqdm(total=cfg.train.steps, initial=state.step, desc=f"{cfg.loss.loss} {label}", unit="step",
                   disable=not ex.progress, leave=False, dynamic_ncols=True)  # fmt: skip
        workdir = Path(tempfile.mkdtemp(prefix="lossbench-"))

        def log_samples(k: int, step: int, G: torch.nn.Module) -> None:
            grid_rng = rng.generator(seeds[k], "grid", device)
            folder = workdir / str(seeds[k])
            folder.mkdir(exist_ok=True)
            if self.train_set.modes is not None:
                pts = trainer.generate(G, SCATTER_SAMPLES, cfg.model.z_dim, grid_rng)
                path = plots.save_scatter(pts, self.train_set.modes, folder / f"scatter_{step:07d}.png", f"step {step}")
            else:
                imgs = trainer.generate(G, GRID_SAMPLES, cfg.model.z_dim, grid_rng)
                path = plots.save_grid(imgs, folder / f"samples_{step:07d}.png")
            tracker.log_artifact(run_ids[k], path, "samples")

        def save_checkpoint(st: trainer.TrainState, k: int, path: Path) -> None:
            tracker.flush()  # what the checkpoint claims as done is in the store first: a crash loses neither
            checkpoint.save(st.state_dict(k), path)

        hooks = trainer.Hooks(
            log=lambda k, step, values: tracker.log_metrics(run_ids[k], step, values),
            samples=log_samples,
            evaluate=lambda k, step, G: tracker.log_metrics(run_ids[k], step, self.evaluate(G, seeds[k], step)),
            checkpoint=lambda k, step, st: save_checkpoint(st, k, ckpt_paths[k]),
            progress=bar.update,
            should_stop=lambda: stop[0],
        )
        try:
            outcomes = trainer.train(cfg, state, self.x, hooks)
            tracker.flush()
        except BaseException as exc:
            bar.close()
            for run_id in run_ids:
                tracker.end_run(run_id, "FAILED", {TAG_OUTCOME: "failed", "lossbench.error": str(exc)[:500]})
            raise
        bar.close()
        return [self._finish(state, k, seeds[k], run_ids[k], ckpt_paths[k], o, workdir) for k, o in enumerate(outcomes)]

    def _finish(
        self, state: trainer.TrainState, k: int, seed: int, run_id: str, ckpt_path: Path, outcome: trainer.Outcome,
        workdir: Path,
    ) -> SeedResult:  # fmt: skip
        tracker = self.tracker
        if outcome.status == "diverged":
            log.warning("seed %d diverged at step %d (non-finite loss or weights)", seed, outcome.step)
            tracker.end_run(run_id, "FAILED", {TAG_OUTCOME: "diverged", "lossbench.diverged_step": str(outcome.step)})
            return SeedResult(seed, run_id, "diverged", outcome.step)
        if outcome.status == "interrupted":
            checkpoint.save(state.state_dict(k), ckpt_path)
            tracker.end_run(run_id, "KILLED",
                            {TAG_OUTCOME: "interrupted", "lossbench.interrupted_step": str(outcome.step)})  # fmt: skip
            return SeedResult(seed, run_id, "interrupted", outcome.step)

        G = state.players.generator(k)
        final = self.evaluate(G, seed, outcome.step)
        final |= _best(tracker, run_id, final, outcome.step)
        tracker.log_metrics(run_id, outcome.step, final)
        folder = workdir / str(seed)
        folder.mkdir(exist_ok=True)
        for name, module in (("generator.pt", G), ("discriminator.pt", state.players.discriminator(k))):
            torch.save(module.state_dict(), folder / name)
            tracker.log_artifact(run_id, folder / name, "weights")
        tracker.flush()
        tracker.end_run(run_id, "FINISHED", {TAG_OUTCOME: "finished"})
        return SeedResult(seed, run_id, "finished", outcome.step, final)


def _best(tracker: Tracker, run_id: str, final: dict[str, float], step: int) -> dict[str, float]:
    """best_fid and its step over every evaluation of the run (read back, so resumed runs count too)."""
    if "fid" not in final:
        return {}
    history = [(m.value, m.step) for m in tracker.metric_history(run_id, "fid")] + [(final["fid"], step)]
    value, at = min(history)
    return {"best_fid": value, "best_fid_step": float(at)}


def _log_aggregates(tracker: Tracker, parent_id: str, cfg: RunConfig, results: list[SeedResult]) -> None:
    """Across-seed aggregates on the parent run, for the MLflow UI's compare view."""
    finished = [r for r in results if r.outcome == "finished"]
    values: dict[str, float] = {
        "seeds_finished": float(len(finished)),
        "seeds_diverged": float(sum(r.outcome == "diverged" for r in results)),
    }
    keys = {k for name in cfg.metrics.metrics for k in METRICS.get(name).keys} | {"best_fid"}
    for key in sorted(keys):
        vals = [r.metrics[key] for r in finished if key in r.metrics]
        if vals:
            values[f"{key}_mean"] = statistics.fmean(vals)
            values[f"{key}_std"] = statistics.stdev(vals) if len(vals) > 1 else 0.0
    tracker.log_metrics(parent_id, cfg.train.steps, values)

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
from collections.abc import Iterator
from dataclasses import dataclass, field
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

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def run(cfg: RunConfig, ex: ExecConfig) -> RunSummary:
    """Train seeds [seed_start, seed_start + seeds) of `cfg`, logging to the tracking store."""
    device = resolve_device(ex.device)
    train_set = data.load(cfg.data.dataset, ex.data_dir, "train")
    tracker = Tracker(ex.tracking_uri, ex.experiment)  # an unusable store fails before any compute
    evaluate = make_evaluator(cfg, device, ex.data_dir, train_set)
    config_hash = cfg.config_hash()
    seeds = ex.seed_values()
    x = train_set.x.to(device)

    plan: dict[int, str | None] = {}  # seed -> run id to resume, or None for a new run
    results: list[SeedResult] = []
    parent_id = None
    for seed in seeds:
        previous = tracker.find_seed_runs(config_hash, seed)
        if ex.skip_finished and any(r.info.status == "FINISHED" for r in previous):
            results.append(SeedResult(seed, None, "skipped"))
            continue
        resumable = [r for r in previous if r.data.tags.get(TAG_OUTCOME) in ("interrupted", "running")]
        if ex.resume and resumable:
            run_ = max(resumable, key=lambda r: r.info.start_time)
            path = checkpoint.path_for(checkpoint.checkpoint_root(ex.checkpoint_dir), run_.info.run_id)
            if path.is_file():
                checkpoint.load(path)  # a corrupt checkpoint fails here, before any run is touched
                plan[seed] = run_.info.run_id
                parent_id = parent_id or run_.data.tags.get("mlflow.parentRunId")
                continue
        plan[seed] = None
    if not plan:
        log.info("every seed of configuration %s already finished; nothing to do", config_hash)
        return RunSummary(config_hash, None, results)

    common = {
        **cfg.flat(),
        "device": str(device),
        "torch_version": torch.__version__,
        "lossbench_version": lossbench.__version__,
        "git_commit": _git_commit(),
        "feature_extractor": "inception-v3-compat" if train_set.modes is None else "none",
    }
    tags = {TAG_CONFIG_HASH: config_hash, TAG_LOSS: cfg.loss.loss, TAG_DATASET: cfg.data.dataset}
    if parent_id is None:
        parent_id = tracker.start_run(
            f"{cfg.loss.loss}/{cfg.data.dataset}", common | {"seeds": len(seeds)}, tags | {TAG_ROLE: "parent"}
        )
        tracker.log_text(parent_id, to_json(cfg), "config.json")
    else:
        tracker.reopen(parent_id)

    with stop_on_signals() as stop:
        try:
            for seed, resume_id in plan.items():
                results.append(
                    _run_seed(cfg, ex, tracker, parent_id, common, tags, seed, resume_id, x, train_set, evaluate, stop)
                )
                if results[-1].outcome == "interrupted":
                    raise Interrupted(f"interrupted at step {results[-1].step}; continue with --resume")
        except BaseException:
            tracker.end_run(parent_id, "KILLED")
            raise
    _log_aggregates(tracker, parent_id, cfg, results)
    tracker.end_run(parent_id, "FINISHED")
    return RunSummary(config_hash, parent_id, sorted(results, key=lambda r: r.seed))


def _run_seed(
    cfg: RunConfig,
    ex: ExecConfig,
    tracker: Tracker,
    parent_id: str,
    common: dict[str, Any],
    tags: dict[str, str],
    seed: int,
    resume_id: str | None,
    x: torch.Tensor,
    train_set: data.Dataset,
    evaluate: Any,
    stop: list[bool],
) -> SeedResult:
    device = x.device
    state = trainer.setup(cfg, seed, train_set.sample_shape, device)
    if resume_id:
        run_id = resume_id
        state.load_state_dict(
            checkpoint.load(checkpoint.path_for(checkpoint.checkpoint_root(ex.checkpoint_dir), run_id))
        )
        tracker.reopen(run_id)
        log.info("seed %d: resuming run %s at step %d", seed, run_id, state.step)
    else:
        run_id = tracker.start_run(
            f"{cfg.loss.loss}/{cfg.data.dataset}/seed{seed}",
            common | {"seed": seed},
            tags | {TAG_ROLE: "seed", TAG_SEED: str(seed), TAG_OUTCOME: "running"},
            parent_id=parent_id,
        )
        tracker.log_text(run_id, json.dumps(cfg.flat() | {"seed": seed}, indent=2, sort_keys=True), "config.json")
    ckpt_path = checkpoint.path_for(checkpoint.checkpoint_root(ex.checkpoint_dir), run_id)

    from tqdm import tqdm

    bar = tqdm(total=cfg.train.steps, initial=state.step, desc=f"{cfg.loss.loss} seed {seed}", unit="step",
               disable=not ex.progress, leave=False, dynamic_ncols=True)  # fmt: skip
    workdir = Path(tempfile.mkdtemp(prefix="lossbench-"))

    def log_samples(step: int, G: torch.nn.Module) -> None:
        if train_set.modes is not None:
            pts = trainer.generate(G, SCATTER_SAMPLES, cfg.model.z_dim, rng.generator(seed, "grid", device))
            path = plots.save_scatter(pts, train_set.modes, workdir / f"scatter_{step:07d}.png", f"step {step}")
        else:
            imgs = trainer.generate(G, GRID_SAMPLES, cfg.model.z_dim, rng.generator(seed, "grid", device))
            path = plots.save_grid(imgs, workdir / f"samples_{step:07d}.png")
        tracker.log_artifact(run_id, path, "samples")

    def log_eval(step: int, G: torch.nn.Module) -> None:
        tracker.log_metrics(run_id, step, evaluate(G, seed, step))

    hooks = trainer.Hooks(
        log=lambda step, values: tracker.log_metrics(run_id, step, values),
        samples=log_samples,
        evaluate=log_eval,
        checkpoint=lambda step, st: checkpoint.save(st.state_dict(), ckpt_path),
        progress=bar.update,
        should_stop=lambda: stop[0],
    )
    try:
        outcome = trainer.train(cfg, state, x, hooks)
    except BaseException as exc:
        bar.close()
        tracker.end_run(run_id, "FAILED", {TAG_OUTCOME: "failed", "lossbench.error": str(exc)[:500]})
        raise
    bar.close()

    if outcome.status == "diverged":
        log.warning("seed %d diverged at step %d (non-finite loss or weights)", seed, outcome.step)
        tracker.end_run(run_id, "FAILED", {TAG_OUTCOME: "diverged", "lossbench.diverged_step": str(outcome.step)})
        return SeedResult(seed, run_id, "diverged", outcome.step)
    if outcome.status == "interrupted":
        checkpoint.save(state.state_dict(), ckpt_path)
        tracker.end_run(run_id, "KILLED", {TAG_OUTCOME: "interrupted", "lossbench.interrupted_step": str(outcome.step)})
        return SeedResult(seed, run_id, "interrupted", outcome.step)

    final = evaluate(state.G, seed, outcome.step)
    final |= _best(tracker, run_id, final, outcome.step)
    tracker.log_metrics(run_id, outcome.step, final)
    for name, module in (("generator.pt", state.G), ("discriminator.pt", state.D)):
        torch.save(module.state_dict(), workdir / name)
        tracker.log_artifact(run_id, workdir / name, "weights")
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

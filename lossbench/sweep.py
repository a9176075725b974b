"""Run a suite: every (configuration, seed) through the same runner as `lossbench run`, skipping
what already finished in the store (same configuration hash and seed) and resuming what was
interrupted, so a re-run after a crash does only what is missing."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from lossbench import data, executors, runner, trainer
from lossbench.config import ExecConfig, RunConfig
from lossbench.executors import ExecutorOptions
from lossbench.suites import Suite
from lossbench.tracking import Tracker


@dataclass(frozen=True)
class Planned:
    cfg: RunConfig
    seeds: tuple[int, ...]  # seeds still to run
    done: int  # seeds already finished in the store


def plan(
    suite: Suite, tracker: Tracker, losses: tuple[str, ...] = (), datasets: tuple[str, ...] = (), max_runs: int = 0
) -> list[Planned]:
    out: list[Planned] = []
    budget = max_runs or None
    for cfg in suite.configs:
        if (losses and cfg.loss.loss not in losses) or (datasets and cfg.data.dataset not in datasets):
            continue
        finished = {
            int(r.data.tags["lossbench.seed"])
            for r in tracker.find_seed_runs(cfg.config_hash())
            if r.info.status == "FINISHED"
        }
        todo = tuple(s for s in range(suite.seeds) if s not in finished)
        if budget is not None:
            todo = todo[:budget]
            budget -= len(todo)
        out.append(Planned(cfg, todo, len(finished)))
    return out


def probe_steps_per_s(cfg: RunConfig, device: torch.device, data_dir: str | None, steps: int = 10) -> float:
    """Generator steps/s of this configuration, measured on a few real steps."""
    ds = data.load(cfg.data.dataset, data_dir, "train")
    probe = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps + 2, log_every=steps + 2))
    state = trainer.setup(probe, 0, ds.sample_shape, device)
    x = ds.x.to(device)
    trainer.train(dataclasses.replace(probe, train=dataclasses.replace(probe.train, steps=2)), state, x)  # warm-up
    start = time.perf_counter()
    trainer.train(probe, state, x)
    return steps / (time.perf_counter() - start)


def run(
    planned: list[Planned], ex: ExecConfig, executor: str = "local", opts: ExecutorOptions | None = None
) -> list[runner.RunSummary]:
    jobs = [(p.cfg, dataclasses.replace(ex, seed_list=p.seeds, skip_finished=True)) for p in planned if p.seeds]
    return executors.execute(jobs, executor, opts)

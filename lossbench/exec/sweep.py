"""Run a suite: every (configuration, seed) through the same runner as `lossbench run`, skipping
what already finished in the store (same configuration hash and seed) and resuming what was
interrupted, so a re-run after a crash does only what is missing."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

import torch

from lossbench.config import ExecConfig, RunConfig
from lossbench.exec import executors
from lossbench.exec.executors import ExecutorOptions
from lossbench.exec.plan import plan as plan_seeds
from lossbench.exec.runs import RunSummary
from lossbench.exec.suites import Suite
from lossbench.gan import data
from lossbench.tracking import Tracker
from lossbench.train.loop import train
from lossbench.train.state import setup


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
    every_seed = ExecConfig(seed_list=tuple(range(suite.seeds)), skip_finished=True)
    for cfg in suite.configs:
        if (losses and cfg.loss.loss not in losses) or (datasets and cfg.data.dataset not in datasets):
            continue
        p = plan_seeds(tracker, cfg, every_seed)
        todo = tuple(m.seed for m in p.members)
        if budget is not None:
            todo = todo[:budget]
            budget -= len(todo)
        out.append(Planned(cfg, todo, len(p.skipped)))
    return out


def probe_steps_per_s(cfg: RunConfig, device: torch.device, data_dir: str | None, steps: int = 10) -> float:
    """Generator steps/s of this configuration, measured on a few real steps."""
    ds = data.load(cfg.data.dataset, data_dir, "train")
    probe = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps + 2, log_every=steps + 2))
    state = setup(probe, 0, ds.sample_shape, device)
    x = ds.x.to(device)
    train(dataclasses.replace(probe, train=dataclasses.replace(probe.train, steps=2)), state, x)  # warm-up
    start = time.perf_counter()
    train(probe, state, x)
    return steps / (time.perf_counter() - start)


def run(
    planned: list[Planned], ex: ExecConfig, executor: str = "local", opts: ExecutorOptions | None = None
) -> list[RunSummary]:
    jobs = [(p.cfg, dataclasses.replace(ex, seed_list=p.seeds, skip_finished=True)) for p in planned if p.seeds]
    return executors.execute(jobs, executor, opts)

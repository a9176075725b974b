"""What the benchmarks share: the data on the device, a benchmark configuration, and timed training
(steps after a warm-up, timed by the estimate's clock, exec.estimate.timed: the device synchronised
around them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from lossbench import config
from lossbench import train as trainer
from lossbench.config import RunConfig
from lossbench.errors import DataError
from lossbench.exec.estimate import timed
from lossbench.gan import data
from lossbench.options import SpeedConfig


def dataset(name: str, device: torch.device, n: int | None = None) -> tuple[torch.Tensor, tuple[int, ...], str]:
    """The data set (its first n examples) on the device; uniform noise of the same shape when its
    files are not here (throughput and operator counts do not depend on pixel values), said in the
    third item, for the output."""
    try:
        ds = data.load(name, None, "train")
        return (ds.x if n is None else ds.x[:n]).to(device), ds.sample_shape, ""
    except DataError:
        shape = data.DATASETS.get(name).sample_shape
        return torch.rand(n or 10_000, *shape, device=device) * 2 - 1, shape, " (synthetic data: files not here)"


def configure(dataset_name: str, arch: str, steps: int, **extra: object) -> RunConfig:
    flags = {"dataset": dataset_name, "arch": arch, "loss": "non-saturating", "steps": steps, "log_every": 50}
    return config.resolve(("bench", flags | extra))


def time_training(
    cfg: RunConfig, x: torch.Tensor, shape: tuple[int, ...], device: torch.device, seeds: list[int],
    speed: SpeedConfig | None = None, hooks_for: Callable[[trainer.TrainState], trainer.Hooks] | None = None,
) -> float:  # fmt: skip
    """Seconds for cfg.train.steps generator steps after a 3-step warm-up (compilation included there)."""
    state = trainer.setup(cfg, seeds, shape, device, speed)
    train_more(cfg, state, x, 3)
    hooks = hooks_for(state) if hooks_for else None
    return timed(lambda: train_more(cfg, state, x, cfg.train.steps, hooks), device)


def train_more(cfg: RunConfig, state: trainer.TrainState, x: torch.Tensor, n: int,
               hooks: trainer.Hooks | None = None) -> None:  # fmt: skip
    """n generator steps more from where `state` is (the loop runs to its configuration's step count)."""
    trainer.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=state.step + n)), state, x, hooks)

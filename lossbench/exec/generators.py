"""A run's generator as a self-contained sampler, logged as an MLflow model at the end of a seed run
(lossbench.tracking_models): the last weights as `generator`, the best evaluation's as `generator_best`
(only where the best is not the last: the run's tag lossbench.best_model names the model that holds
it, and tracking_models.load_generator follows it), the average of its weights (--ema) as `generator_ema`."""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from lossbench.gan.models import STANDARD_RANGE, rescale
from lossbench.tracking import Tracker
from lossbench.tracking_models import MODEL_BEST, MODEL_EMA, MODEL_LAST, log_generator


class Sampler(nn.Module):
    """z (B, z_dim) -> samples in [-1, 1], as `gan.models.generate` computes them: G in eval mode
    (batch-norm running statistics), its output mapped from G's data range to [-1, 1]."""

    def __init__(self, G: nn.Module) -> None:
        super().__init__()
        self.G = copy.deepcopy(G).cpu().eval()
        self.src = tuple(getattr(G, "data_range", STANDARD_RANGE))

    def forward(self, z: Tensor) -> Tensor:
        return rescale(self.G(z), self.src, STANDARD_RANGE)


def log_models(tracker: Tracker, run_id: str, G: nn.Module, z_dim: int, step: int,
               best_weights: Path | None, averaged: nn.Module | None = None) -> float:  # fmt: skip
    """Log G (and G with `best_weights` loaded, when the run kept them, and the `averaged` G of --ema)
    as MLflow models of the run, in the tracker's experiment (the run's); returns the wall time it took
    in seconds."""
    started = time.perf_counter()
    dist = getattr(G, "z_dist", "normal")

    def log(module: nn.Module, name: str) -> None:
        log_generator(tracker.uri, tracker.client, tracker.experiment_id, run_id, module, z_dim, dist, name, step)

    log(Sampler(G), MODEL_LAST)
    if best_weights is not None:
        best = Sampler(G)
        best.G.load_state_dict(torch.load(best_weights, map_location="cpu", weights_only=True))
        log(best, MODEL_BEST)
    if averaged is not None:
        log(Sampler(averaged), MODEL_EMA)
    return time.perf_counter() - started

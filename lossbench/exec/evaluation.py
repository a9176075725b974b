"""Build, once per configuration, the function that scores a generator: image metrics against
cached real features, or mode metrics for 2-D mixtures. Building it is the preflight: missing
weights or a bad sample count fail here, before any training time is spent."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torch import nn

from lossbench import rng
from lossbench.config import RunConfig
from lossbench.gan import data
from lossbench.gan.models import generate
from lossbench.metrics import features as metrics
from lossbench.metrics import modes

log = logging.getLogger(__name__)

Evaluate = Callable[[nn.Module, int, int], dict[str, float]]  # (G, seed, step) -> metrics


def _batches(G: nn.Module, n: int, z_dim: int, generator: torch.Generator, size: int = 250) -> Iterator[torch.Tensor]:
    for i in range(0, n, size):
        yield generate(G, min(size, n - i), z_dim, generator, batch_size=size)


def make_evaluator(
    cfg: RunConfig, device: torch.device, data_dir: str | None, train_set: data.Dataset, cache_dir: Path | None = None
) -> Evaluate:
    m = cfg.metrics
    n, z_dim = m.fid_samples, cfg.model.z_dim

    def stream(seed: int, step: int) -> torch.Generator:
        # its own stream per evaluation, so evaluating never shifts the training streams
        return rng.generator(seed, f"eval/{step}", device)

    if train_set.modes is not None:
        modes_, std = train_set.modes, train_set.mode_std or 0.0

        def evaluate_points(G: nn.Module, seed: int, step: int) -> dict[str, float]:
            samples = generate(G, n, z_dim, stream(seed, step))
            return modes.mode_metrics(samples, modes_, std)

        return evaluate_points

    reference = (
        train_set if m.reference_split == train_set.split else data.load(cfg.data.dataset, data_dir, m.reference_split)
    )
    metrics.real_subset(reference.x, n)  # a sample count larger than the reference set fails now
    extractor = metrics.EXTRACTORS.get("inception-v3-compat")(device)
    real, cached = metrics.real_features(extractor, cfg.data.dataset, reference.split, reference.x, n, cache_dir)
    log.info("real features of %s/%s (%d): %s", cfg.data.dataset, reference.split, n, "cache" if cached else "computed")

    def evaluate_images(G: nn.Module, seed: int, step: int) -> dict[str, float]:
        fake = metrics.fake_features(extractor, _batches(G, n, z_dim, stream(seed, step)))
        return metrics.drop_missing(metrics.compare(m.metrics, real, fake))

    return evaluate_images

"""Build, once per configuration, the function that scores a generator: image metrics against
cached real features, or mode metrics for 2-D mixtures. Building it is the preflight: missing
weights fail here, before any training time is spent (a bad sample count failed in config.validate)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from lossbench import rng
from lossbench.config import RunConfig
from lossbench.gan import data
from lossbench.gan.models import generate
from lossbench.metrics import classified, modes
from lossbench.metrics import features as metrics
from lossbench.metrics import registry as metrics_registry
from lossbench.progress import phase

log = logging.getLogger(__name__)

Evaluate = Callable[[nn.Module, int, int], dict[str, float]]  # (G, seed, step) -> metrics
# (the members' Gs, their seeds, step) -> each member's metrics
EvaluateMany = Callable[[list[nn.Module], list[int], int], list[dict[str, float]]]
WIDEST_BATCH = 256  # images per extractor call when a group's members are extracted together


@dataclass(frozen=True)
class Evaluator:
    """Scores generators: one (G, seed, step) at a time (calling it), or a group's members together
    (`members`): with image metrics their samples go through the extractor as one stream of batches
    up to WIDEST_BATCH images wide, each member's drawn from its own stream exactly as alone, and
    their features split back per member; other metrics score the members one after another."""

    one: Evaluate
    many: EvaluateMany | None = None

    def __call__(self, G: nn.Module, seed: int, step: int) -> dict[str, float]:
        return self.one(G, seed, step)

    def members(self, Gs: list[nn.Module], seeds: list[int], step: int) -> list[dict[str, float]]:
        if self.many is not None and len(Gs) > 1:
            return self.many(Gs, seeds, step)
        return [self.one(G, seed, step) for G, seed in zip(Gs, seeds)]


def _counted(batches: Iterator[torch.Tensor], advance: Callable[[int], None]) -> Iterator[torch.Tensor]:
    for batch in batches:
        yield batch
        advance(len(batch))


def real_cached(cfg: RunConfig, extractor: metrics.Extractor | None, cache_dir: Path | None) -> bool:
    """Whether the real features this configuration compares against are in the cache (or not needed)."""
    m = cfg.metrics
    return extractor is None or metrics.real_cache_path(
        cfg.data.dataset, m.reference_split, m.fid_samples, extractor.name, cache_dir).is_file()  # fmt: skip


def _real_features(
    cfg: RunConfig, extractor: metrics.Extractor, reference: data.Dataset, cache_dir: Path | None, show: bool
) -> metrics.Features:
    n, name, split = cfg.metrics.fid_samples, cfg.data.dataset, reference.split
    if real_cached(cfg, extractor, cache_dir):
        real, _ = metrics.real_features(extractor, name, split, reference.x, n, cache_dir)
        log.info("real features of %s/%s (%d): from the cache", name, split, n)
        return real
    with phase(f"real features: {name} {split}, {n:,} images (cached for next time)", n, bar=show) as advance:
        shown = [0]

        def done(images: int) -> None:  # real_features reports the running total; the bar takes steps
            advance(images - shown[0])
            shown[0] = images

        real, _ = metrics.real_features(extractor, name, split, reference.x, n, cache_dir, progress=done)
    return real


def _batches(G: nn.Module, n: int, z_dim: int, generator: torch.Generator, size: int = 250) -> Iterator[torch.Tensor]:
    for i in range(0, n, size):
        yield generate(G, min(size, n - i), z_dim, generator, batch_size=size)


def needs_images(cfg: RunConfig, train_set: data.Dataset) -> bool:
    """Whether evaluating this configuration runs Inception (image metrics, not 'none' or 2-D modes)."""
    rest = tuple(n for n in cfg.metrics.metrics if n not in classified.owned(cfg.metrics.metrics, cfg.data.dataset))
    return train_set.modes is None and metrics_registry.evaluates(rest)


def open_extractor(cfg: RunConfig, device: torch.device, train_set: data.Dataset) -> metrics.Extractor | None:
    """The Inception network when the metrics need it (weights loaded, or one line if they cannot be)."""
    return metrics.EXTRACTORS.get("inception-v3-compat")(device) if needs_images(cfg, train_set) else None


def reference_set(cfg: RunConfig, data_dir: str | None, train_set: data.Dataset) -> data.Dataset:
    """The real images the metrics compare against (train or test split); config.validate has checked
    that it holds fid_samples."""
    split = cfg.metrics.reference_split
    return train_set if split == train_set.split else data.load(cfg.data.dataset, data_dir, split)


def make_evaluator(
    cfg: RunConfig, device: torch.device, data_dir: str | None, train_set: data.Dataset, cache_dir: Path | None = None,
    extractor: metrics.Extractor | None = None, show: bool = True,
) -> Evaluator:  # fmt: skip
    m = cfg.metrics
    n, z_dim = m.fid_samples, cfg.model.z_dim
    if not metrics_registry.evaluates(m.metrics):  # --metrics none: no engine, no real statistics
        return Evaluator(lambda G, seed, step: {})

    def stream(seed: int, step: int) -> torch.Generator:
        # its own stream per evaluation, so evaluating never shifts the training streams
        return rng.generator(seed, f"eval/{step}", device)

    if own := classified.owned(m.metrics, cfg.data.dataset):  # the MNIST classifier's: stacked modes, fcd
        n_fcd = m.fid_samples if "fcd" in own else 0
        score = classified.evaluator(own, metrics.real_subset(reference_set(cfg, data_dir, train_set).x, n_fcd)
                                     if n_fcd else train_set.x[:0], m.mode_samples, n_fcd)  # fmt: skip
        rest = tuple(n for n in m.metrics if n not in own) or ("none",)
        others = make_evaluator(dataclasses.replace(cfg, metrics=dataclasses.replace(m, metrics=rest)), device,
                                data_dir, train_set, cache_dir, extractor, show)  # fmt: skip

        def evaluate_classified(G: nn.Module, seed: int, step: int) -> dict[str, float]:
            g = stream(seed, step)
            return metrics.drop_missing(score(lambda n: generate(G, n, z_dim, g))) | others(G, seed, step)

        return Evaluator(evaluate_classified)

    if train_set.modes is not None:  # VEEGAN's and PacGAN's protocol: mode_samples points, not fid_samples
        modes_, std = train_set.modes, train_set.mode_std or 0.0
        n_points, threshold = m.mode_samples, m.mode_threshold

        def evaluate_points(G: nn.Module, seed: int, step: int) -> dict[str, float]:
            samples = generate(G, n_points, z_dim, stream(seed, step))
            # reverse_kl is NaN when no point is high quality: not logged (modes and high_quality are 0)
            return metrics.drop_missing(modes.mode_metrics(samples, modes_, std, threshold=threshold))

        return Evaluator(evaluate_points)

    reference = reference_set(cfg, data_dir, train_set)
    extractor = extractor or metrics.EXTRACTORS.get("inception-v3-compat")(device)
    real = _real_features(cfg, extractor, reference, cache_dir, show)

    def evaluate_images(G: nn.Module, seed: int, step: int) -> dict[str, float]:
        what = f"evaluation: seed {seed} at step {step}, {n:,} generated images"
        with phase(what, n, bar=show) as advance:
            fake = metrics.fake_features(extractor, _counted(_batches(G, n, z_dim, stream(seed, step)), advance))
            return metrics.drop_missing(metrics.compare(m.metrics, real, fake))

    def evaluate_members(Gs: list[nn.Module], seeds: list[int], step: int) -> list[dict[str, float]]:
        what = f"evaluation: {len(Gs)} members at step {step}, {n:,} generated images each"
        width = max(extractor.batch_size, min(WIDEST_BATCH, extractor.batch_size * len(Gs)))
        wide = dataclasses.replace(extractor, batch_size=width)
        with phase(what, n * len(Gs), bar=show) as advance:
            fakes = _member_features(wide, [_batches(G, n, z_dim, stream(seed, step)) for G, seed in zip(Gs, seeds)],
                                     advance)  # fmt: skip
            return [metrics.drop_missing(metrics.compare(m.metrics, real, fake)) for fake in fakes]

    return Evaluator(evaluate_images, evaluate_members)


def _member_features(
    extractor: metrics.Extractor, streams: list[Iterator[torch.Tensor]], advance: Callable[[int], None]
) -> list[metrics.Features]:
    """Each member's features, from its own stream of generated batches: the members' i-th batches
    are extracted as one (split to the extractor's batch size), in one `metrics.extract` over every
    such chunk, whose features stay on the extractor's device until its end (one copy to the host,
    not one per chunk); then split back per member (chunk i, member k: piece i * members + k)."""
    sizes: list[int] = []  # images per (chunk, member), in extraction order

    def chunks() -> Iterator[torch.Tensor]:
        for batches in zip(*streams):
            sizes.extend(len(b) for b in batches)
            yield metrics.to_uint8(torch.cat(batches))

    pool, logits = metrics.extract(extractor, _counted(chunks(), advance))
    pools, logit_pieces, n = pool.split(sizes), logits.split(sizes), len(streams)
    return [metrics.Features(torch.cat(pools[k::n]), torch.cat(logit_pieces[k::n])) for k in range(n)]

"""The preflight estimate: before any long compute, one line with the plan (configurations x seeds x
steps, evaluations x samples) and its expected wall time, from a short measurement on this device:
a few training steps after a warm-up, and a few Inception images."""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from lossbench import paths
from lossbench.config import RunConfig
from lossbench.files import write_atomically
from lossbench.gan import data
from lossbench.metrics import features as metrics
from lossbench.metrics import registry as metrics_registry
from lossbench.options import SpeedConfig
from lossbench.progress import duration
from lossbench.train import setup, train
from lossbench.train.state import training_data

WARMUP_STEPS = 5  # first steps pay for allocator growth and kernel selection
PROBE_SECONDS = 1.0  # time at least this long, and at least MIN_PROBE_STEPS steps
MIN_PROBE_STEPS = 5
PROBE_SHARE = 4  # the probe trains at most 1/PROBE_SHARE of the plan's steps (its warm-up included)
EVAL_WARNING_S = 600.0  # evaluation alone beyond this: the line names --fid-samples
RATE_TTL_S = 24 * 3600.0  # an Inception rate measured on this device and thread count is reused this long


def probe_cap(plan_steps: int) -> int:
    """The most steps the probe trains, its warm-up included: a quarter of the plan's generator steps
    (configurations x seeds x steps), and never fewer than a warm-up and MIN_PROBE_STEPS timed ones, so
    a short plan is not timed for longer than it trains."""
    return max(WARMUP_STEPS + MIN_PROBE_STEPS, plan_steps // PROBE_SHARE)


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a GPU runs kernels asynchronously; a CPU has none queued)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    """Wall seconds of fn() on `device`, synchronised before and after: the clock reads when the work
    is done, not when a GPU's kernels were queued, and counts none queued before fn."""
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def steps_per_s(
    cfg: RunConfig, train_set: data.Dataset, device: torch.device, speed: SpeedConfig | None = None,
    plan_steps: int | None = None, members: int = 1,
) -> float:  # fmt: skip
    """Generator steps/s of cfg on this device, one seed (or a group of `members` trained together,
    whose every step is a step of each): steps timed after a warm-up, on a throwaway state (no sample
    grids, checkpoints or evaluations in the measured steps), at least PROBE_SECONDS long unless that
    would pass `probe_cap(plan_steps)` steps."""
    quiet = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, log_every=10**9, sample_every=10**9,
                                                               checkpoint_every=10**9),
                                metrics=dataclasses.replace(cfg.metrics, eval_every=0))  # fmt: skip
    speed = dataclasses.replace(speed or SpeedConfig(), parallel_seeds=members > 1)
    state = setup(quiet, list(range(members)) if members > 1 else 0, train_set.sample_shape, device, speed)
    x = training_data(cfg, train_set.x, device)

    def run(steps: int) -> float:
        more = dataclasses.replace(quiet, train=dataclasses.replace(quiet.train, steps=state.step + steps))
        return timed(lambda: train(more, state, x), device)

    cap = probe_cap(plan_steps) - WARMUP_STEPS if plan_steps is not None else None
    run(WARMUP_STEPS)
    steps, elapsed = MIN_PROBE_STEPS, run(MIN_PROBE_STEPS)
    while elapsed < PROBE_SECONDS and (cap is None or steps < cap):  # grow the sample until long enough
        more = max(MIN_PROBE_STEPS, int(steps * (PROBE_SECONDS - elapsed) / max(elapsed, 1e-6)) + 1)
        more = more if cap is None else min(more, cap - steps)
        elapsed += run(more)
        steps += more
    return steps / elapsed


def images_per_s(extractor: metrics.Extractor, shape: tuple[int, ...]) -> float:
    """Inception feature extraction rate on this device: one warm-up batch of the extractor's own size
    (a smaller one leaves that size's first-call costs in the timed batch), then one timed batch."""
    images = metrics.to_uint8(torch.rand(extractor.batch_size, *shape) * 2 - 1)
    metrics.extract(extractor, iter([images]))
    start = time.perf_counter()
    metrics.extract(extractor, iter([images]))  # ends with the features' copy to the host: synchronised
    return len(images) / (time.perf_counter() - start)


def rate_path(extractor: metrics.Extractor, shape: tuple[int, ...], device: torch.device,
              cache_dir: Path | None = None) -> Path:  # fmt: skip
    """Where the Inception rate of this extractor, image shape, device and thread count is kept."""
    where = "x".join(map(str, shape))
    name = f"rate-{extractor.name}-{extractor.batch_size}-{where}-{device}-{torch.get_num_threads()}t.json"
    return paths.cache_root(cache_dir) / name


def cached_images_per_s(extractor: metrics.Extractor, shape: tuple[int, ...], device: torch.device,
                        cache_dir: Path | None = None, now: float | None = None) -> float:  # fmt: skip
    """`images_per_s`, measured once a day per (extractor, image shape, device, threads) and kept in the
    cache folder: timing Inception takes two batches (about 3.5 s on a 2-core CPU), longer than a
    short run's evaluation. An unreadable or stale record is measured again; one that cannot be
    written is not kept."""
    path, now = rate_path(extractor, shape, device, cache_dir), time.time() if now is None else now
    try:
        kept = json.loads(path.read_text())
        rate, when = float(kept["images_per_s"]), float(kept["measured"])
        if rate > 0 and 0 <= now - when < RATE_TTL_S:
            return rate
    except (OSError, ValueError, KeyError, TypeError):
        pass
    rate = images_per_s(extractor, shape)
    try:
        write_atomically(path, json.dumps({"images_per_s": rate, "measured": now}).encode())
    except OSError:
        pass
    return rate


@dataclass(frozen=True)
class Estimate:
    configs: int
    seeds: int
    steps: int  # per seed
    steps_per_s: float
    evaluations: int  # per seed, the final one included
    samples: int  # generated images per evaluation
    real_images: int  # real images still to extract (0 when cached)
    images_per_s: float | None  # None: nothing to extract
    device: str

    @property
    def train_s(self) -> float:
        return self.configs * self.seeds * self.steps / self.steps_per_s

    @property
    def eval_s(self) -> float:
        if not self.images_per_s:
            return 0.0
        return (self.configs * self.seeds * self.evaluations * self.samples + self.real_images) / self.images_per_s

    def line(self) -> str:
        s = "s" * (self.configs != 1)
        seeds = "s" * (self.seeds != 1)
        plan = f"plan: {self.configs} configuration{s} x {self.seeds} seed{seeds} x {self.steps:,} steps"
        if self.images_per_s:
            e = "s" * (self.evaluations != 1)
            plan += f", {self.evaluations} evaluation{e} per seed x {self.samples:,} generated images"
            plan += f" + {self.real_images:,} real images" if self.real_images else " (real features cached)"
        out = (f"{plan}; expected {duration(self.train_s + self.eval_s)} on {self.device} (training "
               f"{duration(self.train_s)} at {self.steps_per_s:.1f} steps/s")  # fmt: skip
        if self.images_per_s:
            out += f", Inception {duration(self.eval_s)} at {self.images_per_s:.1f} images/s"
        out += ")"
        if self.eval_s > EVAL_WARNING_S:
            out += (f"; the evaluation alone takes {duration(self.eval_s)}: --fid-samples trades accuracy for "
                    f"time (FID is biased upward at small counts; compare only equal counts)")  # fmt: skip
        return out


def evaluations_per_seed(cfg: RunConfig) -> int:
    """Evaluations in a run: every eval_every steps (not at the last step) and the final one."""
    every = cfg.metrics.eval_every
    return 1 + ((cfg.train.steps - 1) // every if every else 0)


def estimate(
    cfg: RunConfig, train_set: data.Dataset, device: torch.device, seeds: int, configs: int = 1,
    extractor: metrics.Extractor | None = None, real_cached: bool = True, speed: SpeedConfig | None = None,
    images_rate: float | None = None, cache_dir: Path | None = None,
) -> Estimate:  # fmt: skip
    """The plan's expected wall time on this device, measured now (seconds of probing); `images_rate`
    reuses an Inception rate measured before, else the cache folder's (`cached_images_per_s`)."""
    images = extractor is not None and metrics_registry.evaluates(cfg.metrics.metrics)
    return Estimate(
        configs=configs, seeds=seeds, steps=cfg.train.steps,
        steps_per_s=steps_per_s(cfg, train_set, device, speed, plan_steps=configs * seeds * cfg.train.steps),
        evaluations=evaluations_per_seed(cfg) if images else 0, samples=cfg.metrics.fid_samples if images else 0,
        real_images=0 if real_cached or not images else cfg.metrics.fid_samples,
        images_per_s=(images_rate or cached_images_per_s(extractor, train_set.sample_shape, device, cache_dir))
        if images else None,
        device=str(device),
    )  # fmt: skip

"""Print throughput figures with device and versions, for BENCHMARKS.md.

python -m benchmarks                 # every benchmark
python -m benchmarks features train  # some of them
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from lossbench import config, data, metrics, trainer
from lossbench.runner import resolve_device


def header(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return f"device {device} ({name}), {torch.get_num_threads()} threads, torch {torch.__version__}"


def bench_features(device: torch.device, n: int) -> None:
    """Inception feature extraction (FID/KID/IS), images/s, on 28x28 gray inputs resized to 299."""
    ext = metrics.EXTRACTORS.get("inception-v3-compat")(device)
    images = metrics.to_uint8(torch.rand(n, 1, 28, 28) * 2 - 1)
    metrics.extract(ext, iter([images[: ext.batch_size]]))  # warm-up
    start = time.perf_counter()
    metrics.extract(ext, iter([images]))
    elapsed = time.perf_counter() - start
    print(f"features  inception-v3-compat  batch {ext.batch_size}  {n} images  {n / elapsed:8.1f} images/s")


def bench_train(device: torch.device, steps: int) -> None:
    """Generator steps/s and real images/s of the lossbench trainer (plain path)."""
    for dataset, arch, loss in [("mnist", "mlp", "non-saturating"), ("mnist", "dcgan", "non-saturating"),
                                ("ring8", "mlp2d", "wgan-gp")]:  # fmt: skip
        cfg = config.resolve(("bench", {"dataset": dataset, "arch": arch, "loss": loss, "steps": steps}))
        ds = data.load(dataset, None, "train")
        x = ds.x.to(device)
        state = trainer.setup(cfg, 0, ds.sample_shape, device)
        start = time.perf_counter()
        trainer.train(cfg, state, x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        imgs = steps * cfg.train.batch_size * cfg.train.n_critic / elapsed
        print(f"train     {arch}/{dataset} {loss:15s} batch {cfg.train.batch_size}  {steps / elapsed:8.1f} steps/s"
              f"  {imgs:10.0f} real images/s")  # fmt: skip


BENCHES = {"features": lambda d, a: bench_features(d, a.feature_images), "train": lambda d, a: bench_train(d, a.steps)}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--feature-images", type=int, default=256)
    args = parser.parse_args()
    unknown = [n for n in args.names if n not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark {unknown[0]}; valid: {', '.join(BENCHES)}")
    device = resolve_device(args.device)
    print(header(device))
    for name in args.names or list(BENCHES):
        BENCHES[name](device, args)


if __name__ == "__main__":
    main()

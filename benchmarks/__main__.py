"""Throughput figures with device and versions, for BENCHMARKS.md.

python -m benchmarks                      # every benchmark
python -m benchmarks train seeds          # some of them
python -m benchmarks --device cuda --steps 500 seeds

  matmul    the machine's float32 matrix-product rate at the mlp's shape (64x784 @ 784x256)
Each figure is the best of --repeat timings (the median for logging), as timeit does.

  train     lossbench's trainer: generator steps/s, real images/s, achieved GFLOP/s (FLOPs counted by
            torch.utils.flop_counter on one real step), the default path (fused Adam) and the others
            (foreach Adam, bf16, compile);
            for mlp/mnist also the plain PyTorch reference loop (benchmarks/reference.py), side by side
  seeds     5 seeds one after another against the same 5 with --parallel-seeds
  ema       --ema's moving average of G's weights: ms per step with and without it (mlp, dcgan)
  logging   the training loop with its MLflow logging (async metrics into a real sqlite store) against
            none: the overhead in % of step time
  system    --system-metrics: steps/s without MLflow's system metrics monitor and with it (default and
            1 s interval), its thread's CPU (benchmarks/system_metrics.py; needs psutil)
  features  Inception feature extraction (FID/KID/IS), images/s, with the FLOP count used
  signals   the cost of the learning signal (g_signal, g_grad_norm, d_grad_norm) in % of step time
  counterfactual  the cost of the counterfactual signals (g_signal_minimax, _ns, _ls) in % of step
            time, one seed and --seeds stacked
  profile   torch.profiler over the seeds trained together: host and device time per step, kernels per
            step, the operators that take the most time (what bounds the step)
  ops       ATen operators dispatched per member-step and member-steps/s, groups of 1, 4, 16 (benchmarks/ops.py)
  explain   torch._dynamo.explain of one whole training step: graphs, breaks and why (benchmarks/ops.py)
  whole     --whole-step: graphs per step and member-steps/s, stacked eager against the whole step eager
            and compiled as one graph (benchmarks/whole.py)
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import lossbench
from benchmarks import ops, system_metrics, whole
from benchmarks.common import configure, dataset, time_training, train_more
from lossbench import paths
from lossbench import train as trainer
from lossbench.config import RunConfig
from lossbench.exec.estimate import sync
from lossbench.metrics import features as metrics
from lossbench.options import SpeedConfig, resolve_device

SETUPS = [("mnist", "mlp"), ("mnist", "dcgan"), ("cifar10", "dcgan")]


def cpu_name() -> str:
    """The CPU's model and its bf16 instructions (which decide whether --precision bf16 pays on a CPU)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "cpu"
    fields: dict[str, str] = {}  # the first CPU's fields
    for line in info.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    bf16 = sorted(set(fields.get("flags", "").split()) & {"avx512_bf16", "amx_bf16"})
    return f"{fields.get('model name', 'cpu')}, bf16 instructions: {', '.join(bf16) or 'none'}"


def header(device: torch.device) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    return (f"device {device} ({name}), {torch.get_num_threads()} threads, torch {torch.__version__}, "
            f"lossbench {lossbench.__version__}, Python {platform.python_version()}")  # fmt: skip


def flops_per_step(cfg: RunConfig, x: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> int:
    state = trainer.setup(cfg, 0, shape, device)
    one = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=1))
    with FlopCounterMode(display=False) as counter:
        trainer.train(one, state, x)
    return counter.get_total_flops()


def matmul_rate(device: torch.device) -> float:
    a, b = torch.randn(64, 784, device=device), torch.randn(784, 256, device=device)
    for _ in range(20):
        a @ b
    sync(device)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        a @ b
    sync(device)
    return 2 * 64 * 784 * 256 * n / (time.perf_counter() - start) / 1e9


def setups(args: argparse.Namespace) -> list[tuple[str, str]]:
    return [(name, arch) for name, arch in SETUPS if not args.setup or f"{arch}/{name}" in args.setup]


def bench_matmul(device: torch.device, args: argparse.Namespace) -> None:
    print(f"matmul    64x784 @ 784x256 float32: {matmul_rate(device):8.1f} GFLOP/s")


def bench_train(device: torch.device, args: argparse.Namespace) -> None:
    for name, arch in setups(args):
        x, shape, note = dataset(name, device)
        steps = args.steps if arch == "mlp" else max(args.steps // 10, 10)
        cfg = configure(name, arch, steps)
        flops = flops_per_step(cfg, x, shape, device)
        imgs = cfg.train.batch_size * cfg.train.n_critic * steps
        variants = {"default": SpeedConfig(), "foreach Adam": SpeedConfig(fused_optim=False)}
        if arch == "dcgan" or device.type == "cuda":
            variants["bf16 autocast"] = SpeedConfig(precision="bf16")
        if args.compile:
            variants["torch.compile"] = SpeedConfig(compile=True)
            if device.type == "cuda":
                variants["CUDA graphs"] = SpeedConfig(cuda_graphs=True)
        per_image = flops / cfg.train.batch_size / 1e6
        print(f"train     {arch}/{name}{note}, batch {cfg.train.batch_size}, {flops / 1e6:.1f} MFLOP per generator "
              f"step ({per_image:.2f} per real image)")  # fmt: skip
        with_reference = arch == "mlp" and name == "mnist"
        for label, speed in variants.items():
            # this machine's speed drifts, so the matrix product (and, for the default path, the reference
            # loop) is timed right after each training timing and compared with it
            timed_with = with_reference and label == "default"
            runs = []
            for _ in range(args.repeat):
                seconds = time_training(cfg, x, shape, device, [0], speed)
                ref = reference_rate(steps, cfg.train.batch_size, device) if timed_with else 0
                runs.append((seconds, matmul_rate(device), ref))
            seconds, rate, _ = min(runs)
            achieved = flops * steps / seconds / 1e9
            print(f"          lossbench {label:14s} {steps / seconds:8.1f} steps/s {imgs / seconds:10.0f} real "
                  f"images/s {achieved:7.1f} GFLOP/s = {100 * achieved / rate:.0f}% of the matrix product "
                  f"timed alongside ({rate:.1f})")  # fmt: skip
            if timed_with:
                ref = max(r[2] for r in runs)
                ratios = sorted(imgs / s / r for s, _, r in runs)
                low, mid, high = ratios[0], ratios[len(ratios) // 2], ratios[-1]
                print(f"          reference loop (DataLoader, BCELoss, .item())    {ref:10.0f} real images/s "
                      f"{flops / cfg.train.batch_size * ref / 1e9:7.1f} GFLOP/s; lossbench default / reference, "
                      f"timed back to back: median {mid:.2f}x [{low:.2f}-{high:.2f}]")  # fmt: skip


def reference_rate(steps: int, batch_size: int, device: torch.device) -> float:
    """Real images/s of the plain PyTorch loop a user would write (benchmarks/reference.py)."""
    from benchmarks import reference

    return reference.run(paths.data_root(None), steps, batch_size, str(device))


def bench_seeds(device: torch.device, args: argparse.Namespace) -> None:
    n = args.seeds
    for name, arch in setups(args):
        x, shape, note = dataset(name, device)
        steps = args.steps if arch == "mlp" else max(args.steps // 10, 10)
        cfg = configure(name, arch, steps)
        imgs = cfg.train.batch_size * cfg.train.n_critic * steps * n
        reps = args.repeat if arch == "mlp" else 1
        sequential = min(sum(time_training(cfg, x, shape, device, [s]) for s in range(n)) for _ in range(reps))
        together = min(time_training(cfg, x, shape, device, list(range(n)), SpeedConfig(parallel_seeds=True))
                       for _ in range(reps))  # fmt: skip
        print(f"seeds     {arch}/{name}{note}, {n} seeds x {steps} steps: one after another {imgs / sequential:10.0f} "
              f"real images/s, --parallel-seeds {imgs / together:10.0f} real images/s, "
              f"speed-up {sequential / together:.2f}x")  # fmt: skip
        if args.compile and device.type == "cuda":
            graphs = SpeedConfig(parallel_seeds=True, cuda_graphs=True)
            graphed = min(time_training(cfg, x, shape, device, list(range(n)), graphs) for _ in range(reps))
            print(f"          --parallel-seeds --cuda-graphs {imgs / graphed:10.0f} real images/s, "
                  f"speed-up {sequential / graphed:.2f}x over one after another")  # fmt: skip


def bench_logging(device: torch.device, args: argparse.Namespace) -> None:
    """The metric logging the runner installs, two ways: the time the training thread spends in the
    log hook and the final flush (direct, precise), and whole runs with and without it, alternating,
    as medians with their range (end to end, background thread included, but as noisy as the machine)."""
    import logging
    import statistics

    from lossbench.tracking import Tracker

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    x, shape, note = dataset("mnist", device)
    for log_every in (10, 50):
        cfg = configure("mnist", "mlp", args.steps, log_every=log_every, sample_every=10**9, checkpoint_every=10**9)
        bare, logged, in_hooks = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "bench")
            run_id = tracker.start_run("bench", {}, {})
            spent = [0.0]

            def log(k: int, step: int, values: dict, tracker: Tracker = tracker, run_id: str = run_id,
                    spent: list[float] = spent) -> None:  # fmt: skip
                start = time.perf_counter()
                tracker.log_metrics(run_id, step, values)
                spent[0] += time.perf_counter() - start

            for _ in range(args.repeat):
                bare.append(time_training(cfg, x, shape, device, [0]))
                spent[0] = 0.0
                start = time.perf_counter()
                time_training(cfg, x, shape, device, [0], hooks_for=lambda state: trainer.Hooks(log=log))
                flush_start = time.perf_counter()
                tracker.flush()
                end = time.perf_counter()
                logged.append(end - start)
                in_hooks.append(spent[0] + end - flush_start)
        b, lg = statistics.median(bare), statistics.median(logged)
        direct = 100 * statistics.median(h / (t - h) for h, t in zip(in_hooks, logged))
        print(f"logging   mlp/mnist, {args.steps} steps, metrics every {log_every} steps to sqlite: training thread "
              f"in log hooks + final flush {direct:.2f}% of step time; whole runs (median of {args.repeat}) "
              f"{b / args.steps * 1e3:.3f} ms/step bare [{min(bare) / args.steps * 1e3:.3f}-"
              f"{max(bare) / args.steps * 1e3:.3f}], {lg / args.steps * 1e3:.3f} ms/step logged "
              f"[{min(logged) / args.steps * 1e3:.3f}-{max(logged) / args.steps * 1e3:.3f}]")  # fmt: skip


def bench_features(device: torch.device, args: argparse.Namespace) -> None:
    """Images/s and achieved GFLOP/s, FLOPs counted on one image by FlopCounterMode (2 per multiply-add)."""
    ext = metrics.EXTRACTORS.get("inception-v3-compat")(device)
    n = args.feature_images
    images = metrics.to_uint8(torch.rand(n, 1, 28, 28) * 2 - 1)
    with FlopCounterMode(display=False) as counter:
        ext.fn(images[:1])
    per_image = counter.get_total_flops() / 1e9
    metrics.extract(ext, iter([images[: ext.batch_size]]))  # warm-up
    sync(device)
    start = time.perf_counter()
    metrics.extract(ext, iter([images]))
    sync(device)
    rate = n / (time.perf_counter() - start)
    print(f"features  inception-v3-compat, batch {ext.batch_size}, {n} images: {rate:8.1f} images/s, "
          f"{rate * per_image:8.1f} GFLOP/s at {per_image:.2f} GFLOP per image (counted)")  # fmt: skip
    if device.type == "cuda":  # the device's own limits, measured: Inception's convolutions run in TF32
        fp32, tf32 = peak_rate(device, tf32=False), peak_rate(device, tf32=True)
        achieved = rate * per_image
        print(f"          {100 * achieved / fp32:.0f}% of the float32 matrix-product rate ({fp32:.0f} GFLOP/s), "
              f"{100 * achieved / tf32:.0f}% of TF32's ({tf32:.0f} GFLOP/s; cuDNN's convolutions allow TF32: "
              f"{torch.backends.cudnn.allow_tf32})")  # fmt: skip


def peak_rate(device: torch.device, tf32: bool, n: int = 8192) -> float:
    """GFLOP/s of a large square matrix product, the device's practical FLOP limit for the precision."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    try:
        a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
        for _ in range(3):
            a @ b
        sync(device)
        start, reps = time.perf_counter(), 10
        for _ in range(reps):
            a @ b
        sync(device)
        return 2 * n**3 * reps / (time.perf_counter() - start) / 1e9
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def bench_profile(device: torch.device, args: argparse.Namespace) -> None:
    """Where the step time goes: torch.profiler over --steps generator steps of --seeds seeds trained
    together (dcgan/mnist, or the --setup given), after a warm-up. Prints the host time per step, the
    device's busy time per step (kernels), the number of kernel launches per step and the operators
    that take the most device (or, on a CPU, host) time. A step whose host time far exceeds its
    kernel time is bound by launches and Python, not by the device."""
    from torch.profiler import ProfilerActivity, profile

    name, arch = setups(args)[0] if args.setup else ("mnist", "dcgan")
    x, shape, note = dataset(name, device)
    steps = max(args.steps // 10, 10)
    cfg = configure(name, arch, steps)
    seeds = list(range(args.seeds))
    paths_ = {
        "--parallel-seeds": SpeedConfig(parallel_seeds=True),
        "--parallel-seeds --cuda-graphs": SpeedConfig(parallel_seeds=True, cuda_graphs=True),
    }
    for label, speed in paths_.items():
        if speed.cuda_graphs and device.type != "cuda":
            continue
        state = trainer.setup(cfg, seeds, shape, device, speed)
        train_more(cfg, state, x, 5)
        sync(device)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        start = time.perf_counter()
        with profile(activities=activities) as prof:
            train_more(cfg, state, x, steps)
            sync(device)
        wall = (time.perf_counter() - start) / steps
        events = prof.key_averages()
        kernels = [e for e in prof.events() if e.device_type.name == "CUDA"]  # memcpy/memset included
        busy = sum(e.device_time for e in kernels) / 1e6 / steps if kernels else 0.0
        on_device = (f", device busy {1e3 * busy:.2f} ms per step ({100 * busy / wall:.0f}%), "
                     f"{len(kernels) / steps:.0f} kernels per step") if kernels else ""  # fmt: skip
        print(
            f"profile   {arch}/{name}{note}, {len(seeds)} seeds, {label}, {steps} steps: "
            f"{1e3 * wall:.2f} ms per step (profiled){on_device}"
        )
        key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
        for line in events.table(sort_by=key, row_limit=12).splitlines():
            print(f"          {line}")


def bench_signals(device: torch.device, args: argparse.Namespace) -> None:
    """The cost of G's learning signal (g_signal, g_grad_norm, d_grad_norm) on every step: the real
    loop against the same loop with those computations replaced by zeros, alternating in one process,
    medians of --repeat runs (the dependency-free way to time an always-on part of the loop)."""
    import statistics
    from unittest import mock

    from lossbench.train import players, updates

    x, shape, _ = dataset("mnist", device)
    cfg = configure("mnist", "mlp", args.steps, sample_every=10**9, checkpoint_every=10**9)

    def zeros(self: object, params: list[torch.Tensor]) -> torch.Tensor:
        return torch.zeros(self.size, device=params[0].device)  # type: ignore[attr-defined]

    with_signal, without = [], []
    for _ in range(args.repeat):
        with_signal.append(time_training(cfg, x, shape, device, [0]))
        with (
            mock.patch.object(players.Single, "grad_norms", zeros),
            mock.patch.object(updates, "learning_signal", lambda grad: torch.zeros((), device=device)),
        ):
            without.append(time_training(cfg, x, shape, device, [0]))
    a, b = statistics.median(with_signal), statistics.median(without)
    # direct: the added operations alone, timed back to back with plain steps on the same state
    state = trainer.setup(cfg, 0, shape, device)
    trainer.train(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=5)), state, x)
    P = state.players
    d_fake = torch.randn(cfg.train.batch_size, device=device, requires_grad=True)
    d_fake.sum().backward()
    ratios = []
    for _ in range(args.repeat):
        step = time_training(dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=100)), x, shape,
                             device, [0]) / 100  # fmt: skip
        start = time.perf_counter()
        for _ in range(100):  # per step: D's norm (n_critic 1), G's norm, the signal, the accumulator rows
            dn, gn = P.grad_norms(P.d_parameters()), P.grad_norms(P.g_parameters())
            sig = players.learning_signal(d_fake.grad).reshape(1)
            torch.stack([dn, sig, gn], dim=1)
        sync(device)
        ratios.append((time.perf_counter() - start) / 100 / step)
    print(f"signals   mlp/mnist, {args.steps} steps, median of {args.repeat}: {b / args.steps * 1e3:.3f} ms/step "
          f"without the learning signal, {a / args.steps * 1e3:.3f} ms/step with it: "
          f"{100 * (a - b) / b:+.1f}% of step time end to end; the added operations alone, timed beside plain "
          f"steps: {100 * statistics.median(ratios):.1f}% of step time [{100 * min(ratios):.1f}-"
          f"{100 * max(ratios):.1f}]")  # fmt: skip


def bench_counterfactual(device: torch.device, args: argparse.Namespace) -> None:
    """The cost of the counterfactual signals (lossbench.train.counterfactual) on every G step: whole
    runs with and without them (replaced by zeros of the same shape), alternating in one process,
    medians of --repeat; and the added operations alone (the signals on a (S, B) d_f and the row's
    concatenation), timed back to back with plain steps on the same state."""
    import statistics
    from unittest import mock

    from lossbench.train import counterfactual, updates

    x, shape, _ = dataset("mnist", device)
    cfg = configure("mnist", "mlp", args.steps, sample_every=10**9, checkpoint_every=10**9)
    k = len(counterfactual.KEYS)
    off = mock.patch.object(updates, "counterfactual_signals", lambda d: torch.zeros(d.shape[0], k, device=d.device))
    for seeds, speed in (([0], None), (list(range(args.seeds)), SpeedConfig(parallel_seeds=True))):
        on_t, off_t, ratios = [], [], []
        for _ in range(args.repeat):
            on_t.append(time_training(cfg, x, shape, device, seeds, speed))
            with off:
                off_t.append(time_training(cfg, x, shape, device, seeds, speed))
            step = min(on_t[-1], off_t[-1]) / args.steps
            d_fake, row = torch.randn(len(seeds), cfg.train.batch_size, device=device), torch.zeros(len(seeds), 3)
            sync(device)
            start = time.perf_counter()
            for _ in range(100):
                torch.cat([row, counterfactual.counterfactual_signals(d_fake)], dim=1)
            sync(device)
            ratios.append((time.perf_counter() - start) / 100 / step)
        a, b = statistics.median(on_t), statistics.median(off_t)
        print(
            f"counterfactual mlp/mnist, {len(seeds)} seed(s){' stacked' if speed else ''}, {args.steps} steps, "
            f"median of {args.repeat}: {args.steps / b:.1f} steps/s without, {args.steps / a:.1f} with "
            f"({100 * (a - b) / b:+.1f}% of step time end to end); the added operations alone: "
            f"{100 * statistics.median(ratios):.2f}% of step time [{100 * min(ratios):.2f}-{100 * max(ratios):.2f}]"
        )


def bench_ema(device: torch.device, args: argparse.Namespace) -> None:
    """--ema's cost per training step: whole runs with and without the average (beta 0.999), alternating,
    medians with their range, on mlp/mnist and dcgan/mnist, one seed and (mlp) a stacked group."""
    import statistics

    x, shape, note = dataset("mnist", device)
    for arch, steps, seeds in (("mlp", args.steps, [0]), ("mlp", args.steps, list(range(args.seeds))),
                               ("dcgan", max(10, args.steps // 10), [0])):  # fmt: skip
        speed = SpeedConfig(parallel_seeds=len(seeds) > 1)
        times: dict[float, list[float]] = {0.0: [], 0.999: []}
        for _ in range(args.repeat):
            for beta in times:
                cfg = configure("mnist", arch, steps, ema=beta, sample_every=10**9, checkpoint_every=10**9)
                times[beta].append(time_training(cfg, x, shape, device, seeds, speed))
        off, on = (statistics.median(times[b]) for b in (0.0, 0.999))
        group = f"{len(seeds)} seeds stacked" if len(seeds) > 1 else "1 seed"
        print(f"ema       {arch}/mnist{note}, {group}, {steps} steps, median of {args.repeat}: "
              f"{off / steps * 1e3:.3f} ms/step without [{min(times[0.0]) / steps * 1e3:.3f}-"
              f"{max(times[0.0]) / steps * 1e3:.3f}], {on / steps * 1e3:.3f} with "
              f"[{min(times[0.999]) / steps * 1e3:.3f}-{max(times[0.999]) / steps * 1e3:.3f}] "
              f"({100 * (on - off) / off:+.1f}%)")  # fmt: skip


BENCHES = {"matmul": bench_matmul, "ema": bench_ema, "train": bench_train, "seeds": bench_seeds,
           "logging": bench_logging, "features": bench_features, "signals": bench_signals,
           "counterfactual": bench_counterfactual, "profile": bench_profile, "ops": ops.bench_ops,
           "explain": ops.bench_explain, "whole": whole.bench_whole,
           "system": system_metrics.bench_system}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("names", nargs="*", help=f"any of {', '.join(BENCHES)} (default: all)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--steps", type=int, default=300, help="generator steps for mlp (dcgan: a tenth)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=3, help="timings per figure: best (train, seeds) or median")
    parser.add_argument("--feature-images", type=int, default=256)
    parser.add_argument(
        "--setup",
        action="append",
        choices=[f"{a}/{n}" for n, a in SETUPS],
        help="train and seeds: only this model/data set (repeatable; default all)",
    )
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (and CUDA graphs on a GPU)")
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

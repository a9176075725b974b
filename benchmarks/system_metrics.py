"""`python -m benchmarks system`: what `--system-metrics` costs a training step.

The option starts MLflow's system metrics monitor on each seed run (lossbench.tracking_conventions.
system_metrics, as exec.seed_run does): a thread that samples CPU, memory, disk and network (and the
GPU where present) once per interval (MLflow's default: 10 s), asks the store whether the run is still
RUNNING, and hands the values to MLflow's batch logger. Whole mlp/mnist runs of about RUN_SECONDS
each, without the monitor, with it at the default interval, and at a 1 s interval (ten times the
samples: the cost where it would show), --repeat times, the order rotated each time; per setting the
median steps/s with its range, the median change against the run without it in the same repeat
(paired: a machine shared with other work drifts between repeats) with its range, the CPU the
monitor's own thread used per sample (psutil's per-thread
times, in 10 ms ticks: pooled over the runs, the most it can take from training), and the
once-per-run cost of starting and stopping it. Then the CPU of each part of one sample, timed in this
thread (time.thread_time, finer than the ticks): the readings, the run-status query through a fresh
MLflow client (as the monitor's loop makes it), and queueing the values. Needs psutil (the "system"
extra), as the option does; the monitor logs into a real sqlite store.
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.common import configure, dataset, time_training
from lossbench.config import RunConfig

RUN_SECONDS = 6.0  # each timed run: at MLflow's default interval (10 s) one sample, at its start
SETTINGS = (("off", None), ("default 10 s", ""), ("1 s", "1"))  # label, MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL
INTERVAL_VAR = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"


def _configure(steps: int) -> RunConfig:
    return configure("mnist", "mlp", steps, sample_every=10**9, checkpoint_every=10**9)


def _seconds(cfg: RunConfig, x: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> float:
    """Seconds for cfg.train.steps generator steps of a fresh state, after a 3-step warm-up."""
    return time_training(cfg, x, shape, device, [0])


def _thread_cpu(native_id: int) -> float:
    """CPU seconds (user + system) the thread `native_id` of this process has used."""
    import psutil

    return next((t.user_time + t.system_time for t in psutil.Process().threads() if t.id == native_id), 0.0)


def _monitored(cfg: RunConfig, x: torch.Tensor, shape: tuple[int, ...], device: torch.device, uri: str, run_id: str,
               interval: str | None) -> tuple[float, tuple[float, int], float]:  # fmt: skip
    """One run's seconds, the CPU seconds of the monitor's thread and its samples, and the seconds its
    start and stop took (zeros without a monitor, `interval` None; "" MLflow's default interval)."""
    from lossbench import tracking_conventions as conventions

    if interval is None:
        return _seconds(cfg, x, shape, device), (0.0, 0), 0.0
    if interval:
        os.environ[INTERVAL_VAR] = interval
    try:
        began = time.perf_counter()
        monitor = conventions.system_metrics(uri, run_id)
        started = time.perf_counter() - began
    finally:
        os.environ.pop(INTERVAL_VAR, None)
    seconds = _seconds(cfg, x, shape, device)
    samples = int(seconds // monitor.sampling_interval) + 1  # one at the start, then one per interval
    cpu = _thread_cpu(monitor._process.native_id)
    began = time.perf_counter()
    monitor.finish()
    return seconds, (cpu, samples), started + time.perf_counter() - began


def _parts(monitor: Any, uri: str, run_id: str, n: int = 30) -> dict[str, float]:
    """CPU ms of each part of one sample of the monitor's loop, the mean of `n`, in this thread."""
    from mlflow import MlflowClient

    def cpu(fn: Callable[[], Any], before: Callable[[], Any] = lambda: None) -> float:
        spent = 0.0
        for _ in range(n):
            before()
            began = time.thread_time()
            fn()
            spent += time.thread_time() - began
        return 1e3 * spent / n

    def publish() -> None:  # one sample's values to MLflow's batch logger (written at its flush)
        monitor.publish_metrics(monitor.aggregate_metrics())

    return {"readings": cpu(monitor.collect_metrics, before=publish),
            "run-status query": cpu(lambda: MlflowClient(uri).get_run(run_id)),
            "queueing": cpu(publish, before=monitor.collect_metrics)}  # fmt: skip


def bench_system(device: torch.device, args: argparse.Namespace) -> None:
    try:
        import psutil  # noqa: F401  the monitor needs it
    except ImportError:
        print("system    psutil is not installed (pip install '.[system]'): nothing to measure")
        return
    from lossbench import tracking_conventions as conventions
    from lossbench.tracking import Tracker

    x, shape, note = dataset("mnist", device)
    pace = _seconds(_configure(200), x, shape, device) / 200
    steps = max(100, round(RUN_SECONDS / pace))
    cfg = _configure(steps)
    rates: dict[str, list[float]] = {label: [] for label, _ in SETTINGS}
    cpu: dict[str, list[tuple[float, int]]] = {label: [] for label, _ in SETTINGS}
    once: dict[str, list[float]] = {label: [] for label, _ in SETTINGS}
    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{tmp}/mlflow.db", "bench")
        run_id = tracker.start_run("bench", {}, {})
        first = conventions.system_metrics(tracker.uri, run_id)  # imports and first use, untimed
        first.finish()
        parts = _parts(first, tracker.uri, run_id)
        for name in ("mlflow", "mlflow.system_metrics", "mlflow.system_metrics.system_metrics_monitor"):
            logging.getLogger(name).setLevel(logging.ERROR)
        for i in range(args.repeat):
            for label, interval in SETTINGS[i % 3 :] + SETTINGS[: i % 3]:
                seconds, used, overhead = _monitored(cfg, x, shape, device, tracker.uri, run_id, interval)
                rates[label].append(steps / seconds)
                cpu[label].append(used)
                once[label].append(overhead)
    print(f"system    mlp/mnist{note}, {steps} steps (~{RUN_SECONDS:.0f} s) per run, median of {args.repeat} "
          f"[range], order rotated, {torch.get_num_threads()} threads:")  # fmt: skip
    for label, _ in SETTINGS:
        r = statistics.median(rates[label])
        used, samples = (sum(c) for c in zip(*cpu[label]))
        stop = 1e3 * statistics.median(once[label])
        change = [100 * (a - b) / b for a, b in zip(rates[label], rates["off"])]
        extra = "" if label == "off" else (
            f"; paired change {statistics.median(change):+.1f}% [{min(change):+.1f} to {max(change):+.1f}]; "
            f"thread {1e3 * used:.0f} ms CPU over {samples} samples ({1e3 * used / samples:.1f} ms each); "
            f"start + stop {stop:.0f} ms")  # fmt: skip
        print(f"          {label:<13} {r:8.1f} steps/s [{min(rates[label]):.1f}-{max(rates[label]):.1f}]{extra}")
    print("          one sample's CPU in parts, ms: " + ", ".join(f"{k} {v:.2f}" for k, v in parts.items())
          + f"; {sum(parts.values()):.2f} in all")  # fmt: skip

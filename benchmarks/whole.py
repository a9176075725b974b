"""--whole-step (lossbench.train.whole_step): graphs per step and member-steps/s against the stacked path.

For each setup and group size: torch._dynamo.explain of the whole step (graphs, breaks), and the
member-steps/s of a group of configurations (per-member Adam, benchmarks.ops.drawn) on three paths:
the stacked eager step (what --parallel-configs runs), the whole step eager, and the whole step
compiled as one graph (torch.compile fullgraph; on a GPU with --cuda-graphs, i.e. reduce-overhead),
with the compile's wall time (first two steps) and the kernels inductor generated for the step (its
fused loops: triton kernels on a GPU, C++ on a CPU; matrix products call library kernels besides),
against the operators the stacked eager step dispatches (each a kernel launch on a GPU). Best of
--repeat timings after the warm-up.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch._inductor.metrics

from benchmarks.common import dataset
from benchmarks.ops import SETUPS, Group, build, configure, count_steps, split_views, time_steps
from lossbench.train.whole_step import RULES

WHOLE_SETUPS = ("mlp/mnist", "dcgan/mnist", "infogan/mnist", "wgan-gp mlp/mnist")
SIZES = {"mlp/mnist": (1, 4, 16), "dcgan/mnist": (4,), "infogan/mnist": (4,), "wgan-gp mlp/mnist": (4,)}
TIMED = {"mlp/mnist": 20, "dcgan/mnist": 3, "infogan/mnist": 3, "wgan-gp mlp/mnist": 5}  # steps per timing


def explain(group: Group) -> tuple[int, int]:
    """(graphs, breaks) of the group's whole step, traced by torch._dynamo.explain."""
    whole = group.state.whole
    inputs = whole.rule.draw(group.state.players, group.draws, group.cfg.train.n_critic)
    ex = torch._dynamo.explain(whole.rule.step)(group.state.players, whole.tensors(group.state), inputs)
    return ex.graph_count, ex.graph_break_count


def compiled(group: Group) -> tuple[float, int, int]:
    """Seconds of the first two steps (the compile, and a guard check on the second), the kernels
    inductor generated and the graphs dynamo compiled meanwhile (1: the second step reused the first's)."""
    from torch._dynamo.utils import counters

    torch._inductor.metrics.reset()
    counters.clear()
    start = time.perf_counter()
    group.step()
    group.step()
    took = time.perf_counter() - start
    return took, torch._inductor.metrics.generated_kernel_count, counters["stats"]["unique_graphs"]


def bench_whole(device: torch.device, args: argparse.Namespace) -> None:
    graphs = {"cuda_graphs": True} if device.type == "cuda" else {"compile": True}
    mode = "cuda graphs" if device.type == "cuda" else "inductor"
    print(f"whole     --whole-step: graphs per step (torch._dynamo.explain) and member-steps/s of a group of "
          f"configurations: stacked eager / whole eager / whole compiled ({mode}, fullgraph), best of {args.repeat}")
    print("| setup | group | graphs, breaks per step | stacked eager | whole eager | whole compiled | compile s | "
          "stacked eager: non-view ops per step | whole compiled: kernels generated (graphs compiled) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in WHOLE_SETUPS:
        assert name in SETUPS
        cfg = configure(name)
        x, shape, _ = dataset(cfg.data.dataset, device, 1024)
        for size in SIZES[name]:
            torch._dynamo.reset()
            eager = build(cfg, x, shape, device, size, stacked=True, configs=size > 1)
            whole = build(cfg, x, shape, device, size, stacked=True, configs=size > 1, whole_step=True)
            whole.step()
            n_graphs, breaks = explain(whole)
            fast = build(cfg, x, shape, device, size, stacked=True, configs=size > 1, whole_step=True, **graphs)
            took, kernels, compiles = compiled(fast)
            total, views = split_views(count_steps(eager, warmup=2, steps=1)[0])
            rates = [size / time_steps(g, TIMED[name], args.repeat) for g in (eager, whole, fast)]
            print(f"| {name} | {size} | {n_graphs}, {breaks} | {rates[0]:.1f} | {rates[1]:.1f} | {rates[2]:.1f} | "
                  f"{took:.0f} | {total - views} | {kernels} ({compiles}) |")  # fmt: skip
    print(f"          update rules with a whole step: {', '.join(RULES.names())}")

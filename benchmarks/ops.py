"""Operators dispatched per member-step, CPU throughput per member, and graph breaks of one whole
training step, for groups of members trained as one vmapped group.

A member is one (configuration, seed) of a group; today's groups are the seeds of one configuration
(`SpeedConfig(parallel_seeds=True)`, lossbench.train.players.Stacked). A group of S seeds has the
shape a group of S configurations will have (issue 27, item 1), so the figures hold for both.

A member-step is one generator step of the configured update rule (n_critic D steps, then the G
step): one call of the step function the loop calls (lossbench.train.updates.UPDATES), for every
member of the group at once. Operators are counted with a TorchDispatchMode, not torch.profiler:
the mode sees each ATen operator once, at the level where it reaches a kernel (after autograd,
after vmap's batching rules, after composite operators decompose; backward included), so a count is
exact and repeatable; the profiler records the nesting (aten::linear over aten::addmm, ...), which
would have to be untangled first. Views (`OpOverload.is_view`:
view, t, detach, ...) are counted apart: they launch nothing on a GPU.

    ops per step(S) = a + b * S,   ops per member-step = a / S + b

where b is what each member still dispatches on its own: its random draws from its own streams (a
member drawn in a group draws exactly what it draws alone). The figures fit a and b from S = 4 and
S = 16 and name the ops that scale with S. Group size 1 is shown twice: the plain path the
trainer runs for one seed, and a vmapped group of one (vmap's own cost, apart from the size).

`explain` runs torch._dynamo.explain over one whole step (the players' compiled parts off, as by
default) and reports its graphs, breaks and their reasons.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from benchmarks import common
from lossbench import train as trainer
from lossbench.config import RunConfig
from lossbench.exec.estimate import timed
from lossbench.options import SpeedConfig
from lossbench.train import state as state_module
from lossbench.train.draws import Draws
from lossbench.train.loop import step_function
from lossbench.train.players import COMPILED, Stacked
from lossbench.train.speed import MutationRecorder
from lossbench.train.state import TrainState, training_data

# name -> (data set, architecture, flags): the setups of issue 27's items 4 and 5
SETUPS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "mlp/mnist": ("mnist", "mlp", {}),
    "infogan/mnist": ("mnist", "infogan", {"z_dist": "uniform", "z_dim": 64, "d_batchnorm": True}),
    "wgan-gp mlp/mnist": ("mnist", "mlp", {"loss": "wgan-gp"}),  # n_critic 5, the penalty's double backward
    "dcgan/mnist": ("mnist", "dcgan", {}),
}
GROUPS = (1, 4, 16)
COUNT_SETUPS = ("mlp/mnist", "infogan/mnist", "wgan-gp mlp/mnist")
EXPLAIN_SETUPS = ("mlp/mnist", "dcgan/mnist", "infogan/mnist")
TIMED_STEPS = {"mlp/mnist": 20, "infogan/mnist": 3, "wgan-gp mlp/mnist": 5}  # per timing, about a second at S = 1


class OpCounter(TorchDispatchMode):
    """Counts every ATen operator dispatched while active, by overload."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[torch._ops.OpOverload] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        self.counts[func] += 1
        return func(*args, **(kwargs or {}))


def configure(name: str, **extra: Any) -> RunConfig:
    """The setup's configuration (the benchmarks' own, common.configure); its steps and logging never
    reached, since the step function is called directly."""
    dataset, arch, flags = SETUPS[name]
    return common.configure(dataset, arch, 10**6, **({"log_every": 10**6} | flags | extra))


@contextmanager
def stacked_singles() -> Iterator[None]:
    """While active, trainer.setup builds one member as a Stacked group of one (vmap over S = 1)
    instead of the plain Single modules: vmap's own cost, apart from the group's size."""

    def stacked_one(G: torch.nn.Module, D: torch.nn.Module, *optimizers: Any, **common: Any) -> Stacked:
        return Stacked([G], [D], *optimizers, **common)

    with mock.patch.object(state_module, "Single", stacked_one):
        yield


@dataclasses.dataclass
class Group:
    """One group's state and the step the loop would call, with its draws (as loop.train builds them)."""

    cfg: RunConfig
    state: TrainState
    draws: Draws
    step_fn: Callable[..., None]
    device: torch.device

    def step(self) -> None:
        self.step_fn(self.state.players, self.draws, self.state, self.cfg.train)


def drawn(cfg: RunConfig, size: int) -> list[RunConfig]:
    """`size` configurations of cfg's shape with their own learning rates and beta1 (a random
    search's draws: log-uniform lr in [1e-5, 1e-2], beta1 in [0, 0.9], from a fixed generator)."""
    gen = torch.Generator().manual_seed(0)
    lr = (10 ** (torch.rand(size, generator=gen, dtype=torch.float64) * 3 - 5)).tolist()
    beta1 = (torch.rand(size, generator=gen, dtype=torch.float64) * 0.9).tolist()
    return [dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_g=a, lr_d=a, beta1=b))
            for a, b in zip(lr, beta1)]  # fmt: skip


def build(cfg: RunConfig, x: torch.Tensor, shape: tuple[int, ...], device: torch.device, size: int,
          stacked: bool = False, configs: bool = False, **fast: Any) -> Group:  # fmt: skip
    """A group of `size` members (seeds 0..size-1); size 1 is the plain path unless `stacked`; with
    `configs`, each member its own configuration (`drawn`: per-member Adam, as --parallel-configs);
    `fast`: more SpeedConfig fields (whole_step, compile, cuda_graphs)."""
    speed = SpeedConfig(parallel_seeds=size > 1 or stacked, parallel_configs=configs, **fast)
    if stacked and size == 1:
        with stacked_singles():
            state = trainer.setup(cfg, [0], shape, device, speed)
    else:
        members = drawn(cfg, size) if configs else None
        state = trainer.setup(cfg, list(range(size)), shape, device, speed, configs=members)
    draws = Draws.training(cfg, state, training_data(cfg, x, device))  # as the loop draws
    return Group(cfg, state, draws, step_function(state, cfg.train), device)  # as loop.train picks


def count_steps(group: Group, warmup: int, steps: int) -> list[Counter]:
    """Per-step operator counts over `steps` steps after `warmup` uncounted ones (first steps
    allocate the optimisers' state)."""
    for _ in range(warmup):
        group.step()
    per_step = []
    for _ in range(steps):
        with OpCounter() as counter:
            group.step()
        per_step.append(counter.counts)
    return per_step


def split_views(counts: Counter) -> tuple[int, int]:
    """(all operators, of which views)."""
    return sum(counts.values()), sum(n for op, n in counts.items() if op.is_view)


def time_steps(group: Group, steps: int, repeat: int) -> float:
    """Best of `repeat` timings of `steps` steps after one warm-up step, seconds per step (no counter
    active), by the estimate's clock (exec.estimate.timed: the device synchronised around each)."""
    group.step()

    def run() -> None:
        for _ in range(steps):
            group.step()

    return min(timed(run, group.device) for _ in range(repeat)) / steps


def fit(total: dict[int, int], lo: int, hi: int) -> tuple[float, float]:
    """(a, b) of ops(S) = a + b * S through two group sizes."""
    b = (total[hi] - total[lo]) / (hi - lo)
    return total[lo] - b * lo, b


def bench_ops(device: torch.device, args: argparse.Namespace) -> None:
    """Operators per step and per member-step, member-steps/s, for groups of GROUPS members."""
    print("ops       ATen operators dispatched per generator step (TorchDispatchMode; after 2 warm-up steps, "
          "3 counted steps), CPU member-steps/s (best of --repeat)")  # fmt: skip
    print("| setup | group | path | ops per step | of which views | ops per member-step | non-view ops per "
          "member-step | member-steps/s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|")
    for name in COUNT_SETUPS:
        cfg = configure(name)
        x, shape, _ = common.dataset(cfg.data.dataset, device)
        totals: dict[int, int] = {}
        by_op: dict[int, Counter] = {}
        rows = [(1, False, False), (1, True, False), *((s, True, False) for s in GROUPS if s > 1),
                *((s, True, True) for s in GROUPS if s > 1)]  # fmt: skip
        for size, stacked, configs in rows:
            group = build(cfg, x, shape, device, size, stacked, configs)
            per_step = count_steps(group, warmup=2, steps=3)
            same = all(c == per_step[0] for c in per_step)
            total, views = split_views(per_step[0])
            rate = size / time_steps(group, TIMED_STEPS[name], args.repeat)
            path = "vmap, S configurations (per-member Adam)" if configs else "plain" if not stacked else "vmap"
            if stacked and not configs:
                totals[size], by_op[size] = total, per_step[0]
            print(f"| {name} | {size} | {path} | {total}{'' if same else ' (varies)'} | {views} | "
                  f"{total / size:.1f} | {(total - views) / size:.1f} | {rate:.1f} |")  # fmt: skip
        a, b = fit(totals, 4, 16)
        scaling = {str(op): (by_op[16][op] - by_op[4][op]) / 12 for op in by_op[16] | by_op[4]}
        scaling = {op: n for op, n in scaling.items() if n}
        print(f"|   fit | | vmap | {a:.0f} + {b:.2f} S (S = 1 predicted {a + b:.0f}, counted {totals[1]}) | | "
              f"{a:.0f}/S + {b:.2f} | | |")  # fmt: skip
        print(f"          {name}: per member: " + ", ".join(f"{op} {n:g}" for op, n in sorted(scaling.items())))


def explain_step(group: Group) -> tuple[Any, Counter]:
    """torch._dynamo.explain of one whole step of the group (its backend records graphs, compiles
    nothing), and every break Dynamo logged meanwhile, by (where, why): explain itself keeps only
    the breaks that ended a captured graph, one per code location."""
    records: list[str] = []
    torch._logging.set_logs(graph_breaks=True)
    log = logging.getLogger("torch._dynamo")  # where the artifact's records go: kept, not printed
    saved = log.handlers
    log.handlers = [_Collect(records)]
    try:
        ex = torch._dynamo.explain(group.step_fn)(group.state.players, group.draws, group.state, group.cfg.train)
    finally:
        log.handlers = saved
        torch._logging.set_logs()
    return ex, Counter(describe_break(m) for m in records)


class _Collect(logging.Handler):
    def __init__(self, into: list[str]) -> None:
        super().__init__()
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.endswith(".__graph_breaks"):
            self.into.append(record.getMessage())


GENERIC = ("Encountered graph break when attempting", "Failed to handle graph break gracefully")


def describe_break(message: str) -> str:
    """'file:line: reason' from one logged break: the reason's first specific line (Dynamo's first
    line is often the generic "Encountered graph break when attempting to trace ..."), and whether
    Dynamo then gave up on a whole frame ("frame skipped: fn", which runs that function eagerly)."""
    where = re.search(r"in user code at (\S+):(\d+)", message)
    lines = [line.strip() for line in message.split("Graph Break Reason:", 1)[-1].splitlines() if line.strip()]
    reason = next((line for line in lines if not line.startswith(GENERIC)), lines[0] if lines else "?")
    skipped = re.search(r"frame skipped: (\w+)", message)
    place = f"{where.group(1).rsplit('/', 1)[-1]}:{where.group(2)}" if where else "?"
    return f"{place}: {reason}" + (f" (then {skipped.group(1)}'s whole frame runs eagerly)" if skipped else "")


def first_line(text: str) -> str:
    return text.strip().splitlines()[0].strip()


def break_reasons(explanation: Any) -> list[str]:
    """First line of each break explain reports, with where in the code it broke."""
    out = []
    for br in explanation.break_reasons:
        frame = br.user_stack[-1] if br.user_stack else None
        where = f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} `{frame.line.strip()}`: " if frame else ""
        out.append(where + first_line(br.reason))
    return out


def bench_explain(device: torch.device, args: argparse.Namespace) -> None:
    """Graphs and graph breaks of one whole step, single and grouped (4 members)."""
    print("explain   torch._dynamo.explain of one whole step (updates.alternating), players' compiled parts off")
    for name in EXPLAIN_SETUPS:
        cfg = configure(name)
        x, shape, _ = common.dataset(cfg.data.dataset, device, n=1024)
        for size in (1, 4):
            group = build(cfg, x, shape, device, size)
            group.step()  # warm-up: optimiser state exists, as on every step but the first
            start = time.perf_counter()
            ex, every = explain_step(group)
            print(f"          {name}, group of {size}: {ex.graph_count} graphs, {ex.graph_break_count} breaks "
                  f"(graphs - 1), {ex.op_count} ops in graphs, {sum(every.values())} breaks logged "
                  f"({time.perf_counter() - start:.0f} s)")  # fmt: skip
            for reason in break_reasons(ex):
                print(f"            explain: {reason}")
            for reason, n in sorted(every.items()):
                print(f"            logged: {n} x {reason}")
        mutated = mutated_inputs(configure(name), x, shape, device)
        print(f"          {name}, group of 4, each compiled part: {len(mutated)} graphs, inputs mutated per graph "
              f"{[len(m) for m in mutated]}")  # fmt: skip


def mutated_inputs(cfg: RunConfig, x: torch.Tensor, shape: tuple[int, ...], device: torch.device) -> list[list[int]]:
    """The inputs each compiled part of a 4-member group mutates, over two steps (its Compiler's
    callables compiled with speed.MutationRecorder; CUDA graphs skip any graph that mutates one)."""
    group = build(cfg, x, shape, device, 4)
    recorder = MutationRecorder()
    torch._dynamo.reset()
    for part in COMPILED:
        setattr(group.state.players, part, torch.compile(getattr(group.state.players, part), backend=recorder.backend))
    group.step()
    group.step()
    return recorder.mutated

"""Batch norm's running statistics as explicit state in a vmapped group (issue 27, item 4).

A stacked group's compiled parts (G's fakes, D's objective, G's logits, the simultaneous joint
objective) take the modules' buffers as inputs and return the updated ones, so no compiled graph
mutates an input: CUDA graphs (torch.compile's "reduce-overhead") skip any graph that does, which is
what a GPU profile of the vmapped dcgan G showed. Checked here on the CPU with AOTAutograd's own
record of which inputs a graph mutates (the record torch's CUDA-graph check reads), and the
trained state checked equal to the eager group's.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossbench import config
from lossbench import train as trainer
from lossbench.gan import data
from lossbench.options import SpeedConfig
from lossbench.train.draws import Draws
from lossbench.train.players import COMPILED
from lossbench.train.speed import MutationRecorder
from lossbench.train.state import TrainState, training_data
from lossbench.train.updates import UPDATES


def group(
    arch: str, dataset: str, x: torch.Tensor, updates: str, speed: SpeedConfig | None = None, device: str = "cpu"
) -> tuple[Any, TrainState, Draws]:
    cfg = config.resolve(("bn", {"dataset": dataset, "arch": arch, "loss": "non-saturating", "updates": updates,
                                 "batch_size": 8, "steps": 10}))  # fmt: skip
    shape = tuple(x.shape[1:])
    speed = speed or SpeedConfig(parallel_seeds=True)
    state = trainer.setup(cfg, [0, 1], shape, torch.device(device), speed)
    return cfg, state, Draws.training(cfg, state, training_data(cfg, x, torch.device(device)))


def train(cfg: Any, state: TrainState, draws: Draws, steps: int) -> None:
    for _ in range(steps):
        UPDATES.get(cfg.train.updates)(state.players, draws, state, cfg.train)


@pytest.fixture(scope="module")
def mnist(mnist_dir: str) -> torch.Tensor:
    return data.load("mnist", mnist_dir, "train").x[:256]


@pytest.mark.parametrize(
    "arch, dataset, updates",
    [("dcgan", "mnist", "alternating"), ("dcgan", "mnist", "simultaneous"), ("pacgan-mlp", "ring8", "alternating")],
)
def test_compiled_group_parts_mutate_no_input_and_train_as_eager(
    arch: str, dataset: str, updates: str, mnist: torch.Tensor
) -> None:
    torch._dynamo.reset()
    x = mnist if dataset == "mnist" else data.load(dataset, None, "train").x[:256]
    cfg, eager, eager_draws = group(arch, dataset, x, updates)
    _, compiled, draws = group(arch, dataset, x, updates)
    P = compiled.players
    assert P.g_buffers and any("running_mean" in name for name in P.g_buffers)  # G has batch norm
    recorders = {name: MutationRecorder() for name in COMPILED}  # one per part: a part never traced is seen
    for name, recorder in recorders.items():
        setattr(P, name, torch.compile(getattr(P, name), backend=recorder.backend))
    before = {name: t.clone() for name, t in P.g_buffers.items()}
    train(cfg, compiled, draws, 2)
    train(cfg, eager, eager_draws, 2)
    alternating = ("batched_fake", "batched_d_objective", "batched_g_logits")
    called = alternating if updates == "alternating" else ("batched_joint",)
    assert all(recorders[name].mutated for name in called)  # every part the rule calls was compiled and traced
    for name in called:
        assert all(m == [] for m in recorders[name].mutated), name  # no graph mutates an input
    for name, t in P.g_buffers.items():  # the running statistics moved, and as in the eager group
        if name.endswith("num_batches_tracked"):
            assert t.tolist() == eager.players.g_buffers[name].tolist() != before[name].tolist()
        else:
            assert not torch.equal(t, before[name])
            torch.testing.assert_close(t, eager.players.g_buffers[name], rtol=1e-5, atol=1e-6)
    for name, t in P.g_params.items():
        torch.testing.assert_close(t, eager.players.g_params[name], rtol=1e-4, atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("arch", ["dcgan", "infogan"])
def test_cuda_graphs_capture_every_compiled_part_of_a_group_with_batch_norm(arch: str, mnist: torch.Tensor) -> None:
    """On a GPU: a group of dcgan or infogan members (batch norm in G) under --cuda-graphs skips no
    graph (torch counts each skip, e.g. for mutated inputs) and trains as the eager group."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    x = mnist.cuda()
    cfg, graphed, draws = group(arch, "mnist", x, "alternating", SpeedConfig(parallel_seeds=True, cuda_graphs=True),
                                "cuda")  # fmt: skip
    _, eager, eager_draws = group(arch, "mnist", x, "alternating", device="cuda")
    train(cfg, graphed, draws, 4)
    train(cfg, eager, eager_draws, 4)
    assert counters["inductor"]["cudagraph_skips"] == 0
    for name, t in graphed.players.g_params.items():
        torch.testing.assert_close(t, eager.players.g_params[name], rtol=1e-3, atol=1e-4)

"""--whole-step (issue 27, item 4): a generator step of a group as one traced function. Its members
equal their sequential twins in float64, its eager form equals the stacked group bit for bit, it
traces as one graph that mutates no input (what CUDA graphs need), a group resumed from its members'
checkpoints equals an uninterrupted one, and what it cannot train is refused in one line."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from test_parallel_configs import CASES, data_for, resolve, stats
from test_parallel_configs import train as train_alone

from lossbench import train as trainer
from lossbench.options import SpeedConfig
from lossbench.train.draws import Draws
from lossbench.train.loop import step_function
from lossbench.train.speed import MutationRecorder
from lossbench.train.state import TrainState, training_data
from lossbench.train.whole_step import WholeStep, draw_inputs

CPU = torch.device("cpu")
WHOLE = SpeedConfig(parallel_seeds=True, whole_step=True)
GROUPED = SpeedConfig(parallel_seeds=True)


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def trained(
    cfgs: list, seeds: list[int], x: torch.Tensor, shape: tuple, speed: SpeedConfig, steps: int | None = None,
    state: TrainState | None = None,
) -> tuple[TrainState, dict[int, list]]:  # fmt: skip
    """A group of cfgs (one per seed) trained to `steps` (cfg's by default), from `state` if given."""
    cfg = cfgs[0] if steps is None else resolve_steps(cfgs[0], steps)
    state = state or trainer.setup(cfg, seeds, shape, CPU, speed, configs=[resolve_steps(c, cfg.train.steps)
                                                                           for c in cfgs])  # fmt: skip
    logged: dict[int, list] = {k: [] for k in range(len(seeds))}
    trainer.train(cfg, state, x, trainer.Hooks(log=lambda k, step, v: logged[k].append((step, v))))
    return state, logged


def resolve_steps(cfg, steps: int):
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=steps))


def assert_same_member(mine: dict, theirs: dict, tol: float) -> None:
    """Two members' checkpoints: modules (parameters and buffers), Adam moments and step counts."""
    for part in ("G", "D"):
        for name in theirs[part]:
            torch.testing.assert_close(mine[part][name], theirs[part][name], rtol=tol, atol=tol)
    assert ("G_ema" in mine) == ("G_ema" in theirs)
    for name in theirs.get("G_ema", {}):  # --ema: the average of G's weights
        torch.testing.assert_close(mine["G_ema"][name], theirs["G_ema"][name], rtol=tol, atol=tol)
    for opt in ("opt_g", "opt_d"):
        assert mine[opt]["param_groups"] == theirs[opt]["param_groups"]
        for i, st in theirs[opt]["state"].items():
            assert float(mine[opt]["state"][i]["step"]) == float(st["step"])  # D's counts n_critic per G step
            for m in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(mine[opt]["state"][i][m], st[m], rtol=tol, atol=tol)


WHOLE_CASES = {name: CASES[name] for name in (
    "mlp/mnist, lr and beta1", "wgan-gp, lambda", "infogan/mnist, D batch norm, uniform z, lr and beta1",
    "pacgan-mlp pack 2, lr", "instance noise sigma")} | {
    "ragan (D on a real batch in G's step), instance noise, lr": ({"loss": "ragan", "instance_noise": 0.1, "steps": 6},
                                                                  [{"lr": 1e-3}, {"lr": 2e-4}]),
    "wgan with Adam, clip": ({"loss": "wgan", "optimizer": "adam", "steps": 6},
                             [{"weight_clip": 0.01}, {"weight_clip": 0.1}]),
    "simultaneous, pacgan-mlp pack 2 (PacGAN's rule), lr": (
        {"arch": "pacgan-mlp", "pack": 2, "z_dim": 2, "updates": "simultaneous", "steps": 6},
        [{"lr": 1e-3}, {"lr": 1e-4}]),
    "simultaneous, wgan-gp with Adam clip and instance noise, lambda": (
        {"loss": "wgan-gp", "n_critic": 1, "updates": "simultaneous", "weight_clip": 0.5, "instance_noise": 0.1,
         "steps": 6}, [{"penalty_weight": 1.0}, {"penalty_weight": 10.0}]),
    "simultaneous, ragan, lr": ({"loss": "ragan", "updates": "simultaneous", "steps": 6}, [{"lr": 1e-3}, {"lr": 2e-4}]),
    "G's z from the D step before it (compare_gan), n_critic 2, epoch batching, lr": (
        {"g_noise": "d-step", "n_critic": 2, "batching": "epoch", "steps": 6}, [{"lr": 1e-3}, {"lr": 2e-4}]),
    "r1 with --ema, lambda": ({"penalty": "r1", "ema": 0.9, "steps": 6}, [{"penalty_weight": 1.0},
                                                                           {"penalty_weight": 10.0}]),
    "hinge with dragan, simultaneous, lr": ({"loss": "hinge", "penalty": "dragan", "updates": "simultaneous",
                                             "steps": 6}, [{"lr": 1e-3}, {"lr": 2e-4}]),
}  # fmt: skip


@pytest.mark.parametrize("base, varied", WHOLE_CASES.values(), ids=WHOLE_CASES.keys())
def test_whole_step_members_equal_their_sequential_twins(base, varied, mnist_dir: str, float64: None) -> None:
    cfgs = [resolve(base | v) for v in varied]
    x, shape = data_for(cfgs[0], mnist_dir)
    seeds = list(range(len(cfgs)))[::-1]
    group, together = trained(cfgs, seeds, x, shape, WHOLE)
    assert isinstance(group.whole, WholeStep)
    for k, (cfg, seed) in enumerate(zip(cfgs, seeds)):
        _, alone, single = train_alone([cfg], [seed], x, shape)  # the plain path: torch's modules and Adam
        assert [s for s, _ in together[k]] == [s for s, _ in alone[0]]
        torch.testing.assert_close(stats(together[k]), stats(alone[0]), rtol=1e-9, atol=1e-9)
        assert_same_member(group.state_dict(k), single.state_dict(0), 1e-9)
    assert not torch.allclose(stats(together[0]), stats(together[1]))


def test_one_seed_is_a_group_of_one(float64: None) -> None:
    cfg = resolve({"loss": "wgan-gp", "steps": 4})
    x, shape = data_for(cfg, None)
    one, logged = trained([cfg], [3], x, shape, SpeedConfig(whole_step=True))
    _, alone, single = train_alone([cfg], [3], x, shape)
    assert one.players.size == 1 and isinstance(one.whole, WholeStep)
    torch.testing.assert_close(stats(logged[0]), stats(alone[0]), rtol=1e-9, atol=1e-9)
    assert_same_member(one.state_dict(0), single.state_dict(0), 1e-9)


def test_the_eager_whole_step_equals_the_stacked_group_bit_for_bit() -> None:
    """float32: the same operations in the same order as the stacked path with per-member Adam."""
    cfgs = [resolve({"arch": "pacgan-mlp", "pack": 2, "z_dim": 2, "steps": 5, "lr": lr}) for lr in (1e-3, 3e-4, 1e-4)]
    x, shape = data_for(cfgs[0], None)
    whole, a = trained(cfgs, [0, 1, 2], x, shape, WHOLE)
    grouped, b = trained(cfgs, [0, 1, 2], x, shape, GROUPED)
    for k in range(3):
        assert torch.equal(stats(a[k]), stats(b[k]))
        mine, theirs = whole.state_dict(k), grouped.state_dict(k)
        for part in ("G", "D", "opt_g", "opt_d"):
            torch.testing.assert_close(mine[part], theirs[part], rtol=0, atol=0)
    assert torch.equal(whole.acc_g, grouped.acc_g) and torch.equal(whole.acc_d, grouped.acc_d)


TRACED = {
    "dcgan/mnist (batch norm in G)": {"dataset": "mnist", "arch": "dcgan", "batch_size": 8},
}
TRACED_SLOW = {
    "wgan-gp mlp (n_critic 5, the penalty's input gradient)": {"loss": "wgan-gp"},
    "infogan/mnist (batch norm in G and D)": {"dataset": "mnist", "arch": "infogan", "d_batchnorm": True,
                                              "z_dim": 16, "z_dist": "uniform", "batch_size": 8},
    "ragan mlp, instance noise, clip": {"loss": "ragan", "instance_noise": 0.1, "weight_clip": 0.5},
    "simultaneous dcgan/mnist": {"dataset": "mnist", "arch": "dcgan", "batch_size": 8, "updates": "simultaneous"},
}  # fmt: skip


def traced(flags: dict, mnist_dir: str) -> None:
    """Compiled with fullgraph=True (a graph break is an error) through a backend that records each
    graph's mutated inputs, the step trains as the eager whole step, in one graph mutating nothing."""
    cfg = resolve({"steps": 2, **flags, "lr": 1e-3})
    cfgs = [cfg, resolve({"steps": 2, **flags, "lr": 2e-4})]
    x, shape = data_for(cfg, mnist_dir)
    state = trainer.setup(cfg, [0, 1], shape, CPU, WHOLE, configs=cfgs)
    recorder = MutationRecorder()
    whole = step_function(state, cfg.train)
    whole.fn = torch.compile(whole.rule.step, backend=recorder.backend, fullgraph=True)
    _, compiled = trained(cfgs, [0, 1], x, shape, WHOLE, state=state)
    _, eager = trained(cfgs, [0, 1], x, shape, WHOLE)
    assert recorder.mutated == [[]]  # one graph for every step, no input mutated: CUDA graphs capture it whole
    for k in (0, 1):
        torch.testing.assert_close(stats(compiled[k]), stats(eager[k]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("flags", TRACED.values(), ids=TRACED.keys())
def test_the_whole_step_is_one_graph_mutating_no_input(flags: dict, mnist_dir: str) -> None:
    traced(flags, mnist_dir)


@pytest.mark.slow
@pytest.mark.parametrize("flags", TRACED_SLOW.values(), ids=TRACED_SLOW.keys())
def test_the_whole_step_is_one_graph_mutating_no_input_slow(flags: dict, mnist_dir: str) -> None:
    traced(flags, mnist_dir)


def test_the_draws_are_those_of_the_eager_step() -> None:
    """Drawn ahead of the step, every stream gives what the eager step takes from it: after one step
    each way, every member's streams are in the same state."""
    cfg = resolve({"loss": "ragan", "penalty": "gp", "instance_noise": 0.1, "steps": 2})  # every stream drawn from
    x, shape = data_for(cfg, None)
    a, _ = trained([cfg, cfg], [0, 1], x, shape, WHOLE)
    b, _ = trained([cfg, cfg], [0, 1], x, shape, GROUPED)
    for mine, theirs in zip(a.streams, b.streams):
        for name in theirs:
            assert torch.equal(mine[name].get_state(), theirs[name].get_state()), name


def test_a_group_resumed_from_its_members_checkpoints_equals_an_uninterrupted_one() -> None:
    cfgs = [resolve({"loss": "wgan-gp", "steps": 6, "lr": lr, "penalty_weight": w})
            for lr, w in ((1e-3, 10.0), (1e-4, 1.0))]  # fmt: skip
    x, shape = data_for(cfgs[0], None)
    whole, logged = trained(cfgs, [0, 1], x, shape, WHOLE)
    first, _ = trained(cfgs, [0, 1], x, shape, WHOLE, steps=4)  # a log step: the checkpoint's window is empty
    saved = [first.state_dict(k) for k in (0, 1)]
    # loaded into a group that has stepped already (other seeds): nothing of its own state may remain
    resumed, _ = trained(cfgs, [5, 6], x, shape, WHOLE, steps=2)
    for k in (0, 1):
        resumed.load_state_dict(saved[k], k)
    _, rest = trained(cfgs, [0, 1], x, shape, WHOLE, state=resumed)
    for k in (0, 1):
        assert torch.equal(stats(rest[k]), stats([entry for entry in logged[k] if entry[0] > 4]))
        mine, theirs = resumed.state_dict(k), whole.state_dict(k)
        for part in ("G", "D", "opt_g", "opt_d", "acc_d", "acc_g"):
            torch.testing.assert_close(mine[part], theirs[part], rtol=0, atol=0)


@pytest.mark.parametrize("flags, error", [
    (["--updates", "simultaneous", "--consensus", "0.5"],
     "Error: --whole-step does not take consensus > 0 (its double backward through the gradients)"),
    (["--loss", "wgan"], "Error: --whole-step trains optimizer=adam, not rmsprop"),
])  # fmt: skip
def test_what_the_whole_step_cannot_train_is_refused_in_one_line(flags, error, store: str, caplog) -> None:
    from test_cli import lossbench_here, runs_by_role  # refused before any compute: in this process

    proc = lossbench_here("run", "--dataset", "ring8", "--steps", "2", "--whole-step", *flags, "--tracking-uri", store,
                          "--no-progress", caplog=caplog)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == error
    assert runs_by_role(store) == {"parent": [], "seed": []}


def test_each_group_compiles_into_its_own_cache(monkeypatch) -> None:
    """torch.compile keeps at most recompile_limit graphs per code object and fullgraph=True makes
    one more an error: groups of different losses compiled one after another in one process (a
    sweep) must not share one. With the limit at 1, two groups show it (compiled by dynamo alone,
    no inductor, to keep the test short)."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, fullgraph=False:
                        real_compile(fn, backend="eager", fullgraph=fullgraph))  # fmt: skip
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 1)
    torch._dynamo.reset()
    fast = dataclasses.replace(WHOLE, compile=True)
    for loss in ("non-saturating", "hinge"):
        cfg = resolve({"loss": loss, "steps": 2})
        x, shape = data_for(cfg, None)
        compiled, a = trained([cfg, cfg], [0, 1], x, shape, fast)
        _, b = trained([cfg, cfg], [0, 1], x, shape, WHOLE)
        assert torch.equal(stats(a[0]), stats(b[0]))


def test_draw_inputs_take_n_critic_d_steps_and_g_s_real_batch_only_when_its_loss_needs_one() -> None:
    cases = (({"loss": "wgan-gp"}, 5, False, False), ({"loss": "ragan"}, 1, True, False),
             ({"g_noise": "d-step", "n_critic": 2}, 2, False, True))
    for flags, n_critic, needs_real, reuse in cases:
        cfg = resolve({**flags, "steps": 1})
        x, shape = data_for(cfg, None)
        state = trainer.setup(cfg, [0, 1], shape, CPU, WHOLE)
        d, g = draw_inputs(state.players, Draws.training(cfg, state, training_data(cfg, x, CPU)), cfg.train.n_critic)
        assert len(d) == n_critic and (g.real is not None) == needs_real
        assert torch.equal(g.z, d[-1].z) == reuse  # d-step: G's step takes the last D step's z (compare_gan)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("flags", [{"arch": "dcgan"}, {"arch": "infogan", "d_batchnorm": True, "z_dist": "uniform"},
                                   {"arch": "mlp", "loss": "wgan-gp"}], ids=["dcgan", "infogan", "wgan-gp mlp"])
def test_cuda_graphs_replay_the_whole_step_as_one_graph(flags: dict, mnist_dir: str) -> None:
    """On a GPU: a group of 4 configurations under --whole-step --cuda-graphs skips no CUDA graph
    and trains as the eager whole step (tf32 and kernel choice aside)."""
    from torch._dynamo.utils import counters

    cuda = torch.device("cuda")
    cfgs = [resolve({"dataset": "mnist", "batch_size": 16, "steps": 6, **flags, "lr": lr})
            for lr in (1e-3, 5e-4, 2e-4, 1e-4)]  # fmt: skip
    x, shape = data_for(cfgs[0], mnist_dir)
    x = x.to(cuda)
    torch._dynamo.reset()
    counters.clear()
    states = {}
    for name, speed in (("graphed", dataclasses.replace(WHOLE, cuda_graphs=True)), ("eager", WHOLE)):
        states[name] = trainer.setup(cfgs[0], [0, 1, 2, 3], shape, cuda, speed, configs=cfgs)
        trainer.train(cfgs[0], states[name], x)
    assert counters["inductor"]["cudagraph_skips"] == 0
    graphed, eager = states["graphed"].players, states["eager"].players
    for mine, theirs in ((graphed.g_params, eager.g_params), (graphed.d_params, eager.d_params)):
        for name, t in mine.items():
            torch.testing.assert_close(t, theirs[name], rtol=1e-3, atol=1e-4)
    torch.testing.assert_close(states["graphed"].acc_g, states["eager"].acc_g, rtol=1e-3, atol=1e-4)

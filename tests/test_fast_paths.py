"""Every fast path against the plain one: seeds trained together (vmap over stacked models) equal
their sequential twins, checkpoints move between the two paths, one diverging seed leaves its
siblings untouched, and fused Adam, bf16 autocast and torch.compile keep the losses (double-backward
penalties included) within tolerance of the plain path. Correctness only: speed is in benchmarks/.

Tests marked `gpu` check the same on a CUDA device, CUDA graphs included (`pytest -m gpu` on a
machine with one; the default suite deselects them)."""

from __future__ import annotations

import copy

import pytest
import torch

from lossbench import config
from lossbench import train as trainer
from lossbench.errors import ConfigError
from lossbench.gan import data
from lossbench.options import SpeedConfig
from lossbench.train.loop import step_function

CPU = torch.device("cpu")
PARALLEL = SpeedConfig(parallel_seeds=True)


def train(
    flags: dict, seeds: list[int], speed: SpeedConfig | None = None, hooks: trainer.Hooks | None = None,
    device: torch.device = CPU,
):  # fmt: skip
    cfg = config.resolve(("flags", {"dataset": "ring8", "log_every": 5, **flags}))
    ds = data.load(cfg.data.dataset, None, "train")
    x = ds.x[:4096].to(device, torch.get_default_dtype())
    state = trainer.setup(cfg, seeds, ds.sample_shape, device, speed)
    logged: dict[int, list[tuple[int, dict]]] = {k: [] for k in range(len(seeds))}
    hooks = hooks or trainer.Hooks()
    hooks.log = lambda k, step, values: logged[k].append((step, values))
    outcomes = trainer.train(cfg, state, x, hooks)
    return outcomes, logged, state


def losses_of(logged: list[tuple[int, dict]]) -> torch.Tensor:
    return torch.tensor([[v[k] for k in ("d_loss", "d_real", "d_fake", "penalty", "g_loss")] for _, v in logged])


def diagnostics_of(logged: list[tuple[int, dict]]) -> torch.Tensor:
    """The learning-signal diagnostics: |dL_G / d D(G(z))| and both players' gradient norms."""
    return torch.tensor([[v[k] for k in ("g_signal", "d_grad_norm", "g_grad_norm")] for _, v in logged])


def seen_by_loss(logged: list[tuple[int, dict]]) -> torch.Tensor:
    """d_loss, d_real - d_fake, penalty, g_loss: the statistics that do not move with D's output bias."""
    v = losses_of(logged)
    return torch.stack([v[:, 0], v[:, 1] - v[:, 2], v[:, 3], v[:, 4]], 1)


@pytest.fixture
def float64():
    """In float64 the two paths' different kernel orders round at 1e-16, so even GAN dynamics, which
    amplify rounding, keep the seeds equal to 1e-9 over these runs."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


CASES = {
    "wgan-gp (per-sample penalty noise, n_critic 5)": {"loss": "wgan-gp", "steps": 10},
    "dragan (elementwise penalty noise)": {"loss": "dragan", "steps": 10},
    "ragan (real batch in G's step)": {"loss": "ragan", "steps": 10},
    "wgan (weight clipping, RMSprop)": {"loss": "wgan", "steps": 10},
    "non-saturating + r1": {"loss": "non-saturating", "penalty": "r1", "penalty_weight": 5.0, "steps": 10},
    "dcgan/mnist (batch norm in G)": {"dataset": "mnist", "arch": "dcgan", "steps": 4, "batch_size": 8, "log_every": 2},
    "infogan/mnist (batch norm in D, real and fake scored apart; uniform z)": {
        "dataset": "mnist", "arch": "infogan", "d_batchnorm": True, "z_dim": 64, "z_dist": "uniform",
        "loss": "minimax", "steps": 4, "batch_size": 8, "log_every": 2},
    "pacgan-mlp, pack 2 (maxout D on packed points)": {"arch": "pacgan-mlp", "pack": 2, "z_dim": 2, "steps": 10},
    "wgan-gp, pack 3 (penalty on packed inputs)": {"loss": "wgan-gp", "pack": 3, "steps": 10},
}  # fmt: skip


@pytest.mark.parametrize("flags", CASES.values(), ids=CASES.keys())
def test_parallel_seeds_equal_their_sequential_twins(flags: dict, mnist_dir: str, float64: None) -> None:
    seeds = [0, 1, 2]
    outcomes, together, stacked = train(flags, seeds, PARALLEL)
    assert [o.status for o in outcomes] == ["finished"] * 3
    for k, seed in enumerate(seeds):
        (alone_outcome,), alone, single = train(flags, [seed])
        assert [s for s, _ in together[k]] == [s for s, _ in alone[0]]
        torch.testing.assert_close(losses_of(together[k]), losses_of(alone[0]), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(diagnostics_of(together[k]), diagnostics_of(alone[0]), rtol=1e-9, atol=1e-9)
        mine, theirs = stacked.state_dict(k), single.state_dict(0)
        for part in ("G", "D"):
            assert mine[part].keys() == theirs[part].keys()
            for name in mine[part]:
                torch.testing.assert_close(mine[part][name], theirs[part][name], rtol=1e-9, atol=1e-9)
    # and the seeds did train differently from one another
    assert not torch.allclose(losses_of(together[0]), losses_of(together[1]))


def test_checkpoints_move_between_parallel_and_sequential(float64: None) -> None:
    flags = {"loss": "wgan-gp", "steps": 12, "checkpoint_every": 6}
    saved: dict[int, dict] = {}
    hooks = trainer.Hooks(
        checkpoint=lambda k, step, st: step == 6 and saved.setdefault(k, copy.deepcopy(st.state_dict(k)))
    )
    _, together, _ = train(flags, [0, 1], PARALLEL, hooks)

    # seed 1's checkpoint from the group continues alone, exactly as it went on in the group
    cfg = config.resolve(("flags", {"dataset": "ring8", "log_every": 5, **flags}))
    x = data.load("ring8").x[:4096].double()
    single = trainer.setup(cfg, 1, (2,), CPU)
    single.load_state_dict(copy.deepcopy(saved[1]))  # optimisers adopt loaded tensors in place
    logged: list = []
    trainer.train(cfg, single, x, trainer.Hooks(log=lambda k, s, v: logged.append((s, v))))
    torch.testing.assert_close(losses_of(logged), losses_of([e for e in together[1] if e[0] > 6]), rtol=1e-9, atol=1e-9)

    # and both single-seed checkpoints load back into a new group
    group = trainer.setup(cfg, [0, 1], (2,), CPU, PARALLEL)
    for k in (0, 1):
        group.load_state_dict(saved[k], k)
    assert group.step == 6
    again: dict[int, list] = {0: [], 1: []}
    trainer.train(cfg, group, x, trainer.Hooks(log=lambda k, s, v: again[k].append((s, v))))
    for k in (0, 1):
        assert torch.equal(losses_of(again[k]), losses_of([e for e in together[k] if e[0] > 6]))


def test_a_diverging_seed_leaves_its_group_untouched() -> None:
    flags = {"loss": "non-saturating", "steps": 20}
    _, clean, _ = train(flags, [0, 1, 2], PARALLEL)

    cfg = config.resolve(("flags", {"dataset": "ring8", "log_every": 5, **flags}))
    state = trainer.setup(cfg, [0, 1, 2], (2,), CPU, PARALLEL)
    logged: dict[int, list] = {0: [], 1: [], 2: []}

    def log(k: int, step: int, values: dict) -> None:
        logged[k].append((step, values))
        if k == 1 and step == 5:  # seed 1's generator turns NaN after its first log
            with torch.no_grad():
                next(iter(state.players.g_params.values()))[1].fill_(float("nan"))

    outcomes = trainer.train(cfg, state, data.load("ring8").x[:4096], trainer.Hooks(log=log))
    assert [o.status for o in outcomes] == ["finished", "diverged", "finished"]
    assert outcomes[1].step == 10 and [s for s, _ in logged[1]] == [5]
    for k in (0, 2):
        assert torch.equal(losses_of(logged[k]), losses_of(clean[k]))


def test_spectral_norm_is_refused_with_parallel_seeds() -> None:
    with pytest.raises(ConfigError, match="spectral"):
        train({"d_norm": "spectral", "steps": 1}, [0, 1], PARALLEL)


@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating"])
def test_fused_adam_matches_foreach_adam(loss: str) -> None:
    _, plain, plain_state = train({"loss": loss, "steps": 10}, [0], SpeedConfig(fused_optim=False))
    _, fused, fused_state = train({"loss": loss, "steps": 10}, [0], SpeedConfig(fused_optim=True))
    assert SpeedConfig().fused_optim  # the default, so every other test here runs fused Adam
    for opt in (fused_state.players.opt_g, fused_state.players.opt_d):  # the flag reached torch
        assert opt.defaults["fused"] is True
    for opt in (plain_state.players.opt_g, plain_state.players.opt_d):
        assert not opt.defaults["fused"]
    torch.testing.assert_close(losses_of(fused[0]), losses_of(plain[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating"])
def test_bf16_autocast_stays_close_to_fp32(loss: str) -> None:
    # bf16 keeps 8 bits of mantissa: the first steps agree to about 1e-2, and the penalty (double
    # backward through autocast) is computed and positive
    flags = {"loss": loss, "steps": 3, "log_every": 1}
    _, fp32, _ = train(flags, [0])
    _, bf16, _ = train(flags, [0], SpeedConfig(precision="bf16"))
    torch.testing.assert_close(losses_of(bf16[0]), losses_of(fp32[0]), rtol=5e-2, atol=5e-2)
    assert not torch.equal(losses_of(bf16[0]), losses_of(fp32[0]))  # bf16 did run: it rounds differently
    if loss == "wgan-gp":
        assert all(v["penalty"] > 0 for _, v in bf16[0])


def test_bf16_with_parallel_seeds_matches_bf16_alone() -> None:
    flags = {"loss": "wgan-gp", "steps": 3, "log_every": 1}
    _, together, _ = train(flags, [0, 1], SpeedConfig(parallel_seeds=True, precision="bf16"))
    _, alone, _ = train(flags, [1], SpeedConfig(precision="bf16"))
    torch.testing.assert_close(losses_of(together[1]), losses_of(alone[0]), rtol=2e-2, atol=2e-2)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating"])
def test_compiled_models_match_plain(loss: str) -> None:
    flags = {"loss": loss, "steps": 5, "log_every": 1}
    _, plain, _ = train(flags, [0])
    _, compiled, _ = train(flags, [0], SpeedConfig(compile=True))
    torch.testing.assert_close(losses_of(compiled[0]), losses_of(plain[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating"])
def test_cuda_graphs_plumbing_on_cpu_matches_plain(loss: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """--cuda-graphs end to end through setup and the loop (compile's reduce-overhead mode, a graph
    iteration marked at each D and G step), with the CPU guard lifted: on a CPU, compile runs the
    graphs without recording them, so this checks the plumbing; the recording is checked by
    test_fast_paths_on_cuda_match_plain on a GPU."""
    monkeypatch.setattr(SpeedConfig, "check_device", lambda self, device: None)
    flags = {"loss": loss, "steps": 5, "log_every": 1}
    _, plain, _ = train(flags, [0])
    marks = []
    real_mark = torch.compiler.cudagraph_mark_step_begin
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1) or real_mark())
    _, graphed, _ = train(flags, [0], SpeedConfig(cuda_graphs=True))
    n_critic = config.resolve(("flags", {"dataset": "ring8", **flags})).train.n_critic
    assert len(marks) == 5 * (n_critic + 1)  # one graph iteration per D step and per G step
    torch.testing.assert_close(losses_of(graphed[0]), losses_of(plain[0]), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating", "ragan"])
def test_compiled_parallel_seeds_match_eager_parallel_seeds(loss: str) -> None:
    """The vmapped objectives compiled whole (D's only without double backward; ragan feeds G's step
    a real batch) give the eager group's losses, seed by seed.

    Compared: both losses, the penalty and d_real - d_fake. For a relativistic loss D's output bias
    is invisible (it cancels in d_r - E[d_f]), so its gradient is rounding noise, which Adam's first
    steps (about lr * sign(g)) turn into ±lr moves that differ between kernels: d_real and d_fake
    then shift together by up to 6e-4 while everything the loss sees agrees to 3e-6."""
    flags = {"loss": loss, "steps": 5, "log_every": 1}
    _, eager, _ = train(flags, [0, 1, 2], PARALLEL)
    _, compiled, _ = train(flags, [0, 1, 2], SpeedConfig(parallel_seeds=True, compile=True))
    for k in range(3):
        torch.testing.assert_close(seen_by_loss(compiled[k]), seen_by_loss(eager[k]), rtol=1e-4, atol=1e-5)


CUDA = torch.device("cuda")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
CUDA_PATHS = {  # name: (speed, tolerance against the plain path on the same device)
    "foreach Adam": (SpeedConfig(fused_optim=False), 1e-4),
    "torch.compile": (SpeedConfig(compile=True), 1e-4),
    "CUDA graphs": (SpeedConfig(cuda_graphs=True), 1e-4),
    "bf16 autocast": (SpeedConfig(precision="bf16"), 5e-2),
}


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating"])
@pytest.mark.parametrize("path", CUDA_PATHS)
def test_fast_paths_on_cuda_match_plain(path: str, loss: str) -> None:
    speed, tol = CUDA_PATHS[path]
    flags = {"loss": loss, "steps": 5, "log_every": 1}
    _, plain, _ = train(flags, [0], device=CUDA)
    _, fast, _ = train(flags, [0], speed, device=CUDA)
    torch.testing.assert_close(seen_by_loss(fast[0]), seen_by_loss(plain[0]), rtol=tol, atol=tol)
    if loss == "wgan-gp":  # the double-backward penalty ran under the fast path
        assert all(v["penalty"] > 0 for _, v in fast[0])


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("path", ["torch.compile", "CUDA graphs", "bf16 autocast"])
@pytest.mark.parametrize("case", ["dcgan/mnist (batch norm in G)",
                                  "infogan/mnist (batch norm in D, real and fake scored apart; uniform z)"],
                         ids=["dcgan/mnist", "infogan/mnist"])  # fmt: skip
def test_fast_paths_on_cuda_match_plain_for_conv_nets(path: str, case: str, mnist_dir: str) -> None:
    """The papers' convolutional nets, one seed, on each compiled path: these are the nets the suites
    run. (On an H200 with torch 2.11.0+cu130, CUDA graphs of dcgan/mnist with one seed stopped at the
    first G backward with an inductor stride assertion in convolution_backward, while the same net
    with --parallel-seeds ran; this test is the check for it.)"""
    speed, tol = CUDA_PATHS[path]
    _, plain, _ = train(CASES[case], [0], device=CUDA)
    _, fast, _ = train(CASES[case], [0], speed, device=CUDA)
    torch.testing.assert_close(seen_by_loss(fast[0]), seen_by_loss(plain[0]), rtol=tol, atol=tol)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("loss", ["wgan-gp", "non-saturating", "ragan"])
def test_cuda_graphs_with_parallel_seeds_match_eager_parallel_seeds(loss: str) -> None:
    flags = {"loss": loss, "steps": 5, "log_every": 1}
    _, eager, _ = train(flags, [0, 1, 2], PARALLEL, device=CUDA)
    _, graphed, _ = train(flags, [0, 1, 2], SpeedConfig(parallel_seeds=True, cuda_graphs=True), device=CUDA)
    for k in range(3):
        torch.testing.assert_close(seen_by_loss(graphed[k]), seen_by_loss(eager[k]), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("flags", [CASES["wgan-gp (per-sample penalty noise, n_critic 5)"],
                                   CASES["dcgan/mnist (batch norm in G)"]], ids=["wgan-gp", "dcgan/mnist"])  # fmt: skip
def test_parallel_seeds_on_cuda_equal_their_sequential_twins(flags: dict, mnist_dir: str, float64: None) -> None:
    _, together, _ = train(flags, [0, 1, 2], PARALLEL, device=CUDA)
    for k in range(3):
        _, alone, _ = train(flags, [k], device=CUDA)
        torch.testing.assert_close(losses_of(together[k]), losses_of(alone[0]), rtol=1e-9, atol=1e-9)


def test_cuda_graphs_are_refused_off_cuda() -> None:
    with pytest.raises(ConfigError, match="--cuda-graphs needs a CUDA device; this run is on cpu"):
        train({"steps": 1}, [0], SpeedConfig(cuda_graphs=True))
    with pytest.raises(ConfigError, match="--cuda-graphs needs a CUDA device; this run is on cpu"):
        train({"steps": 1}, [0, 1], SpeedConfig(cuda_graphs=True, parallel_seeds=True))


@pytest.mark.parametrize(
    ("speed", "modes"),
    [(SpeedConfig(), []), (SpeedConfig(compile=True), ["default", "default"]),
     (SpeedConfig(cuda_graphs=True), ["reduce-overhead", "reduce-overhead"]),
     (SpeedConfig(whole_step=True), []), (SpeedConfig(compile=True, whole_step=True), ["default fullgraph"]),
     (SpeedConfig(cuda_graphs=True, whole_step=True), ["reduce-overhead fullgraph"])],
)  # fmt: skip
def test_speed_flags_reach_torch_compile_in_their_mode(speed: SpeedConfig, modes: list, monkeypatch) -> None:
    """What setup hands to torch.compile: nothing in eager mode; G and D (no penalty here) in the
    flag's mode; with --whole-step only the whole step, as one graph (fullgraph), when the loop takes
    its step. Compile itself is replaced by a recorder, so no graph is built."""
    seen: list = []
    monkeypatch.setattr(torch, "compile", lambda fn, mode=None, fullgraph=False:
                        seen.append(mode + " fullgraph" * fullgraph) or fn)  # fmt: skip
    monkeypatch.setattr(SpeedConfig, "check_device", lambda self, device: None)
    cfg = config.resolve(("flags", {"dataset": "ring8", "loss": "hinge"}))
    state = trainer.setup(cfg, 0, (2,), CPU, speed)
    step_function(state, cfg.train)  # the step the loop will call (the whole step is made here)
    assert seen == modes

"""Update rules (lossbench.train.updates): the simultaneous step is the hand-computed one (both
players' gradients at the same parameters, on the same fakes), it resumes bit-identically from a
checkpoint, seeds trained together under it equal their sequential twins, the new fields leave
earlier configuration hashes alone, and what a rule does not define is refused in one line."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lossbench import config, rng
from lossbench import train as trainer
from lossbench.gan import data, latent

CPU = torch.device("cpu")


@pytest.fixture
def float64():
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def test_simultaneous_step_equals_the_hand_computed_one(float64: None) -> None:
    """One step of plain gradient descent (h = 0.05) on ring8 with mlp2d, the non-saturating loss and
    R1 (gamma 2). By hand, from the seed's own streams: a real batch x, noise z, fakes f = G(z),

        L_D = E softplus(-D(x)) + E softplus(D(f)) + gamma * 1/2 E ||grad_x D(x)||^2
        L_G = E softplus(-D(f))
        psi' = psi - h grad_psi L_D(theta, psi),   theta' = theta - h grad_theta L_G(theta, psi)

    both gradients at the old (theta, psi) and on the same f. The alternating step (G's gradient
    at psi', on fresh fakes) must differ from it, or the comparison would prove nothing."""
    h, gamma, bs = 0.05, 2.0, 8  # step, R1 weight, batch
    flags = {"dataset": "ring8", "arch": "mlp2d", "z_dim": 2, "batch_size": bs, "loss": "non-saturating",
             "penalty": "r1", "penalty_weight": gamma, "optimizer": "sgd", "lr": h, "steps": 1, "log_every": 1}
    x_all = data.load("ring8").x[:4096].double()

    def one_step(updates: str) -> trainer.TrainState:
        cfg = config.resolve(("test", flags | {"updates": updates}))
        state = trainer.setup(cfg, 0, (2,), CPU)
        trainer.train(cfg, state, x_all)
        return state

    cfg = config.resolve(("test", flags))
    start = trainer.setup(cfg, 0, (2,), CPU)
    G, D = copy.deepcopy(start.G), copy.deepcopy(start.D)
    streams = {name: rng.generator(0, name) for name in ("data", "noise")}
    real = x_all[torch.randint(x_all.shape[0], (bs,), generator=streams["data"])].requires_grad_(True)
    z = latent.sample("normal", (bs, 2), streams["noise"], CPU)
    fake = G(z)
    d_real, d_fake = D(real), D(fake)
    (grad_x,) = torch.autograd.grad(d_real.sum(), real, create_graph=True)
    l_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean() + gamma * 0.5 * grad_x.pow(2).sum(1).mean()
    l_g = F.softplus(-d_fake).mean()
    g_d = torch.autograd.grad(l_d, list(D.parameters()), retain_graph=True)
    g_g = torch.autograd.grad(l_g, list(G.parameters()))
    want_g = [p - h * g for p, g in zip(G.parameters(), g_g)]
    want_d = [p - h * g for p, g in zip(D.parameters(), g_d)]

    sim = one_step("simultaneous")
    for got, want in zip([*sim.G.parameters(), *sim.D.parameters()], want_g + want_d):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    alt = one_step("alternating")
    assert max((p - q).abs().max().item() for p, q in zip(alt.G.parameters(), want_g)) > 1e-4


def test_simultaneous_dirac_step_is_the_closed_form() -> None:
    """Dirac-GAN, minimax: d_f = psi theta, so grad_psi L_D = sigma(psi theta) theta and
    grad_theta L_G = -sigma(psi theta) psi, both at the old point:
    theta' = theta + h sigma(psi theta) psi, psi' = psi - h sigma(psi theta) theta."""
    h, theta, psi = 0.3, 0.7, -1.2
    cfg = config.resolve(("test", {"dataset": "dirac", "loss": "minimax", "optimizer": "sgd", "lr": h, "steps": 1,
                                   "dirac_init": [theta, psi], "updates": "simultaneous", "log_every": 1}))  # fmt: skip
    state = trainer.setup(cfg, 0, (1,), CPU)
    trainer.train(cfg, state, data.load("dirac").x)
    s = 1 / (1 + math.exp(-psi * theta))
    assert state.G.theta.item() == pytest.approx(theta + h * s * psi, rel=1e-6)
    assert state.D.psi.item() == pytest.approx(psi - h * s * theta, rel=1e-6)


def run(flags: dict, hooks: trainer.Hooks | None = None, state: trainer.TrainState | None = None):
    cfg = config.resolve(("test", {"dataset": "ring8", "log_every": 4, "updates": "simultaneous", **flags}))
    state = state or trainer.setup(cfg, 0, (2,), CPU)
    logged: list = []
    hooks = hooks or trainer.Hooks()
    hooks.log = lambda k, step, values: logged.append((step, values))
    trainer.train(cfg, state, data.load("ring8").x, hooks)
    return [(s, v["d_loss"], v["g_loss"], v["g_signal"]) for s, v in logged], state, cfg


def test_resume_under_simultaneous_updates_is_bit_identical() -> None:
    """WGAN-GP (penalty noise), instance noise and Adam: every stream and optimiser state is in the
    checkpoint, so the run resumed at step 10 ends where the uninterrupted one ends, bit for bit."""
    flags = {"loss": "wgan-gp", "n_critic": 1, "instance_noise": 0.1, "steps": 23, "checkpoint_every": 10}
    full, full_state, cfg = run(flags)
    saved: dict = {}
    run(flags, trainer.Hooks(checkpoint=lambda k, step, st: saved.setdefault(step, copy.deepcopy(st.state_dict(k)))))
    resumed = trainer.setup(cfg, 0, (2,), CPU)
    torch.manual_seed(999)  # global RNG noise must not matter
    resumed.load_state_dict(saved[10])
    rest, resumed, _ = run(flags, state=resumed)
    assert rest == [c for c in full if c[0] > 10] and len(rest) == 4
    for p, q in zip([*full_state.G.parameters(), *full_state.D.parameters()],
                    [*resumed.G.parameters(), *resumed.D.parameters()]):  # fmt: skip
        assert torch.equal(p, q)


SIMULTANEOUS_CASES = {
    "wgan-gp (penalty noise)": {"loss": "wgan-gp", "n_critic": 1},
    "ragan (real batch in G's loss)": {"loss": "ragan"},
    "wgan (weight clipping, RMSprop)": {"loss": "wgan", "n_critic": 1},
    "pacgan-mlp, pack 2": {"arch": "pacgan-mlp", "pack": 2, "z_dim": 2},
    "non-saturating + instance noise": {"loss": "non-saturating", "instance_noise": 0.2},
    "minimax + consensus 0.5": {"loss": "minimax", "consensus": 0.5},
    "dcgan/mnist (batch norm in G)": {"dataset": "mnist", "arch": "dcgan", "steps": 4, "batch_size": 8, "log_every": 2},
    "infogan/mnist (batch norm in D: real and fake scored apart)": {
        "dataset": "mnist", "arch": "infogan", "d_batchnorm": True, "z_dim": 64, "z_dist": "uniform",
        "loss": "minimax", "steps": 4, "batch_size": 8, "log_every": 2},
}  # fmt: skip


@pytest.mark.parametrize("flags", SIMULTANEOUS_CASES.values(), ids=SIMULTANEOUS_CASES.keys())
def test_parallel_seeds_equal_their_sequential_twins_under_simultaneous_updates(
    flags: dict, mnist_dir: str, float64: None
) -> None:
    from test_fast_paths import PARALLEL, diagnostics_of, losses_of, train

    flags = {"updates": "simultaneous", "steps": 10, **flags}
    outcomes, together, stacked = train(flags, [0, 1], PARALLEL)
    assert [o.status for o in outcomes] == ["finished"] * 2
    for k in (0, 1):
        _, alone, single = train(flags, [k])
        torch.testing.assert_close(losses_of(together[k]), losses_of(alone[0]), rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(diagnostics_of(together[k]), diagnostics_of(alone[0]), rtol=1e-9, atol=1e-9)
        mine, theirs = stacked.state_dict(k), single.state_dict(0)
        for part in ("G", "D"):
            for name in mine[part]:
                torch.testing.assert_close(mine[part][name], theirs[part][name], rtol=1e-9, atol=1e-9)
    assert not torch.allclose(losses_of(together[0]), losses_of(together[1]))


def test_the_new_fields_are_hash_neutral_at_their_defaults() -> None:
    """The hash pinned is this configuration's before the fields existed (0.1's hash rule)."""
    base = config.resolve(("test", {"dataset": "ring8"}))
    assert base.config_hash() == "f727fd56638db973"
    same = config.resolve(("test", {"dataset": "ring8", "updates": "alternating", "consensus": 0.0}))
    sim = config.resolve(("test", {"dataset": "ring8", "updates": "simultaneous"}))
    con = config.resolve(("test", {"dataset": "ring8", "updates": "simultaneous", "consensus": 1.0}))
    assert base.config_hash() == same.config_hash()
    assert len({base.config_hash(), sim.config_hash(), con.config_hash()}) == 3


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--updates", "simultaneous", "--n-critic", "5"], "updates 'simultaneous' takes one step of each player"),
        (["--loss", "wgan", "--updates", "simultaneous"], "n_critic must be 1, got 5"),  # the card's n_critic
        (["--consensus", "0.5"], "consensus 0.5 needs updates 'simultaneous'"),
        (["--updates", "simultaneous", "--consensus", "-1"], "'consensus' must be >= 0"),
        (["--updates", "sideways"], "unknown update rule 'sideways'"),
    ],
)
def test_bad_update_input_is_one_line_and_writes_nothing(args: list[str], message: str, unmade_store: str,
                                                         caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = unmade_store
    from test_cli import lossbench_here  # refused before any compute: in this process

    proc = lossbench_here("run", "--dataset", "ring8", "--no-progress", "--steps", "2", "--tracking-uri", store, *args,
                          caplog=caplog)  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists()


@pytest.mark.parametrize("suite", ["pacgan2018", "pacgan2018-cpu"])
def test_pacgan_suites_train_with_simultaneous_updates(suite: str) -> None:
    """PacGAN trains with ALI's algorithm (both gradients at one point, on the same fakes)."""
    from lossbench.exec import suites

    assert {(c.train.updates, c.train.n_critic, c.train.consensus) for c in suites.load(suite).configs} == {
        ("simultaneous", 1, 0.0)}  # fmt: skip


def test_report_labels_name_the_update_rule_and_consensus() -> None:
    """Configurations that differ only in their update rule must not share a report row."""
    from lossbench.report.build import _label

    assert _label({"loss": "minimax"}) == _label({"loss": "minimax", "updates": "alternating"}) == "minimax"
    assert _label({"loss": "minimax", "updates": "simultaneous"}) == "minimax simultaneous"
    assert _label({"loss": "minimax", "updates": "simultaneous", "consensus": "1.0"}) == (
        "minimax simultaneous consensus 1")

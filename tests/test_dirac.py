"""The Dirac-GAN of Mescheder, Geiger & Nowozin, "Which Training Methods for GANs do actually
Converge?" (ICML 2018, §2-4): data a point mass at 0, G(z) = theta, D(x) = psi * x, trained by the
one trainer with plain gradient descent (--optimizer sgd), alternating updates unless a test says
simultaneous. Each claim of the paper for small step sizes, checked on the real loop in a few
seconds: the linearised rates of simultaneous updates and of consensus optimisation exactly, and
what the non-saturating generator (NSGAN, among the authors' Dirac-GAN configurations) does."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import lossbench
from lossbench import config, train
from lossbench.gan import data, models

H = 0.1  # the step size of both players


def trajectory(flags: dict, steps: int = 2000) -> np.ndarray:
    """(theta, psi) after every generator step, read through the architecture's readouts."""
    flags = {"dataset": "dirac", "optimizer": "sgd", "lr_g": H, "lr_d": H, "steps": steps, "log_every": 1,
             "sample_every": 10**9, "checkpoint_every": 10**9, **flags}  # fmt: skip
    cfg = config.resolve(("test", flags))
    ds = data.load("dirac")
    state = train.setup(cfg, 0, ds.sample_shape, torch.device("cpu"))
    out: list[tuple[float, float]] = []
    hooks = train.Hooks(log=lambda k, step, v: out.append(tuple(models.readouts(state.G, state.D).values())))
    (outcome,) = train.train(cfg, state, ds.x, hooks)
    assert outcome.status == "finished"
    return np.array(out)


def norms(traj: np.ndarray) -> np.ndarray:
    return np.hypot(traj[:, 0], traj[:, 1])


def test_the_paper_objective_circles_at_constant_distance() -> None:
    """lossbench's minimax is the paper's f(t) = -log(1 + exp(-t)) for both players: alternating
    gradient descent keeps ||(theta, psi)|| (conserved by the continuous dynamics) and goes round."""
    traj = trajectory({"loss": "minimax"})
    n = norms(traj)
    assert n[-500:].min() > 0.95 * math.sqrt(2) and n.max() < 1.05 * math.sqrt(2)
    assert np.sum(np.diff(np.sign(traj[:, 0])) != 0) >= 20  # theta keeps changing sign: it circles


@pytest.mark.parametrize("loss", ["minimax", "non-saturating"])
@pytest.mark.parametrize("penalty", ["r1", "r2"])
def test_zero_centred_penalties_converge(loss: str, penalty: str) -> None:
    n = norms(trajectory({"loss": loss, "penalty": penalty, "penalty_weight": 1.0}, steps=800))
    assert n[-1] < 1e-6 * n[0]


def test_wgan_with_clipping_does_not_converge() -> None:
    """psi clipped to +-0.01: the iterates keep oscillating at a distance of the order of the clip."""
    traj = trajectory({"loss": "wgan"})
    n = norms(traj)
    assert n[-500:].min() > 1e-3
    assert np.sum(np.diff(np.sign(traj[-500:, 0])) != 0) >= 5


def test_wgan_gp_does_not_converge() -> None:
    """Measured: with lambda 10 the critic's optimum is psi = 1 - theta / (2 lambda) > 0, so G walks
    away from the equilibrium towards theta = 2 lambda instead of towards 0."""
    n = norms(trajectory({"loss": "wgan-gp"}))
    assert n[-1] > 5.0


def test_non_saturating_creeps_inwards_like_one_over_sqrt_t() -> None:
    """NSGAN (the authors' `NSGAN` vector field): its Jacobian at the equilibrium is the minimax
    one, so no linear rate; measured, the distance shrinks slowly, ||x_t|| sqrt(t) nearly constant
    between t = 500 and t = 2000 (a linear rate would shrink it by orders of magnitude)."""
    n = norms(trajectory({"loss": "non-saturating"}))
    ratio = (n[1999] * math.sqrt(2000)) / (n[499] * math.sqrt(500))
    assert n[1999] < 0.6 * n[499] and 0.8 < ratio < 1.25


def test_instance_noise_converges_to_a_neighbourhood() -> None:
    """Gaussian noise on D's inputs regularises it (the paper's §4.1): the iterates contract from 1.4
    to within a few hundredths of the equilibrium, where the noise keeps them moving."""
    n = norms(trajectory({"loss": "minimax", "instance_noise": 0.5}))
    assert n[-500:].mean() < 0.1 and n[0] > 1.3


def test_r1_contraction_equals_the_linearised_alternating_update() -> None:
    """Near (0, 0), with D(x) = psi x on data at 0 (d_r = 0, d_f = psi theta) and sigma(0) = 1/2:

    D step on L_D + gamma/2 psi^2 (R1 with weight gamma; minimax and non-saturating share L_D):
        dL_D/dpsi = sigma(psi theta) theta + gamma psi  ~  theta/2 + gamma psi
        psi' = (1 - h gamma) psi - (h/2) theta
    G step, alternating (it sees psi'): non-saturating L_G = softplus(-psi theta),
        dL_G/dtheta = -sigma(-psi' theta) psi'  ~  -psi'/2  (minimax: -sigma(psi' theta) psi', the same)
        theta' = theta + (h/2) psi' = (1 - h^2/4) theta + (h/2)(1 - h gamma) psi
    so (theta', psi') = A (theta, psi) with
        A = [[1 - h^2/4, (h/2)(1 - h gamma)],
             [-h/2,       1 - h gamma      ]],
    det A = 1 - h gamma and, for complex eigenvalues, spectral radius rho = sqrt(1 - h gamma). This is
    the paper's gradient vector field v(theta, psi) = (-f'(theta psi) psi, f'(theta psi) theta - gamma psi)
    with f'(0) = 1/2, taken in alternating steps. The measured per-step contraction of ||(theta, psi)||
    over the last half of the run (a least-squares slope of log ||x_t||, which averages out the
    rotation's ellipticity) must equal rho: |log rho_measured / log rho - 1| < 1%.
    """
    gamma, steps = 0.1, 3000
    A = np.array([[1 - H**2 / 4, H / 2 * (1 - H * gamma)], [-H / 2, 1 - H * gamma]])
    rho = max(abs(np.linalg.eigvals(A)))
    assert rho == pytest.approx(math.sqrt(1 - H * gamma), rel=1e-12)
    for loss in ("non-saturating", "minimax"):
        n = norms(trajectory({"loss": loss, "penalty": "r1", "penalty_weight": gamma}, steps=steps))
        t = np.arange(steps // 2, steps)
        measured = math.exp(np.polyfit(t, np.log(n[steps // 2 :]), 1)[0])
        assert abs(math.log(measured) / math.log(rho) - 1) < 0.01, (loss, measured, rho)


def per_step_rate(traj: np.ndarray, start: tuple[float, float]) -> float:
    """Geometric mean over all steps of ||x_{t+1}|| / ||x_t||, x_0 the starting point."""
    n = np.concatenate([[math.hypot(*start)], norms(traj)])
    return float(np.exp(np.mean(np.diff(np.log(n)))))


SMALL = (0.01, 0.01)  # near the equilibrium, where the linearisation holds (psi theta ~ 1e-4)


def test_simultaneous_updates_spiral_outwards_at_the_linearised_rate() -> None:
    """Minimax Dirac-GAN, simultaneous SGD with step h. lossbench's D(x) = psi x scores data at 0 as
    d_r = 0 and the fake theta as d_f = psi theta, so (the paper's f(t) = -log(1 + e^-t), f'(0) = 1/2;
    lossbench's psi is the paper's -psi, which changes no rate)

        L_D = softplus(-0) + softplus(psi theta),   dL_D/dpsi   =  sigma(psi theta) theta ~  theta / 2
        L_G = -softplus(psi theta),                 dL_G/dtheta = -sigma(psi theta) psi   ~ -psi / 2

    Both gradients at (theta, psi): theta' = theta + (h/2) psi, psi' = psi - (h/2) theta, i.e.
    x' = A x with A = [[1, h/2], [-h/2, 1]] = I + (h/2) J (J the quarter turn): a rotation scaled by
    |1 + i h/2| = sqrt(1 + h^2/4) > 1 for every h > 0, so ||x|| grows by that factor at every step
    (exactly so, not only on average: A is a scaled rotation). The trainer's measured per-step
    growth (geometric mean of ||x_{t+1}|| / ||x_t|| over 2000 steps from ||x_0|| = 0.014, where
    sigma(psi theta) = 1/2 to 1e-4) must match in log rate within 1%: |log r / log rho - 1| < 0.01."""
    rho = math.sqrt(1 + H**2 / 4)
    traj = trajectory({"loss": "minimax", "updates": "simultaneous", "dirac_init": list(SMALL)})
    measured = per_step_rate(traj, SMALL)
    assert abs(math.log(measured) / math.log(rho) - 1) < 0.01, (measured, rho)


@pytest.mark.parametrize("gamma", [0.5, 1.0])
def test_consensus_optimisation_contracts_at_the_linearised_rate(gamma: float) -> None:
    """Consensus optimisation (Mescheder, Nowozin & Geiger 2017) on the same Dirac-GAN: each player
    descends its own loss plus gamma L, L = 1/2 ||v||^2 with v = (dL_G/dtheta, dL_D/dpsi). Near the
    equilibrium v ~ (-psi/2, theta/2) (the derivation above), so

        L ~ 1/2 (psi^2/4 + theta^2/4) = (theta^2 + psi^2) / 8,   grad L ~ (theta/4, psi/4)

    (the terms of sigma(psi theta)' enter L at fourth order). One simultaneous step:
        theta' = theta - h(-psi/2 + gamma theta/4) = (1 - h gamma/4) theta + (h/2) psi
        psi'   = psi   - h( theta/2 + gamma psi/4) = (1 - h gamma/4) psi - (h/2) theta
    A = (1 - h gamma/4) I + (h/2) J, a scaled rotation with |lambda| = sqrt((1 - h gamma/4)^2 + h^2/4),
    below 1 for 0 < h < 8 gamma / (gamma^2 + 4) (h = 0.1 here). The measured per-step
    contraction over 400 steps must match it in log rate within 1%; without consensus (gamma 0)
    the same step spirals outwards (the test above)."""
    rho = math.sqrt((1 - H * gamma / 4) ** 2 + H**2 / 4)
    traj = trajectory({"loss": "minimax", "updates": "simultaneous", "consensus": gamma, "dirac_init": list(SMALL)},
                      steps=400)  # fmt: skip
    measured = per_step_rate(traj, SMALL)
    assert rho < 1 and abs(math.log(measured) / math.log(rho) - 1) < 0.01, (measured, rho)


def test_the_mescheder2018_suite_is_the_authors_notebook() -> None:
    """LMescheder/GAN_stability notebooks/DiracGAN.ipynb: h 0.2, 500 steps, (theta, psi) = (1, 1) in
    the paper's sign (lossbench's psi is the paper's -psi), WGAN clip 1, WGAN_GP(reg=0.7) = gp
    lambda 0.35, instance noise 0.7 over 1,000 draws, gradient penalties 0.3 and 1, consensus 1;
    every method under simultaneous and alternating updates (consensus: simultaneous only)."""
    from lossbench.exec import suites

    configs = suites.load("mescheder2018").configs
    for c in configs:
        t = c.train
        assert (t.optimizer, t.lr_g, t.lr_d, t.steps, c.model.dirac_theta, c.model.dirac_psi) == ("sgd", 0.2, 0.2,
                                                                                               500, 1.0, -1.0)
        assert c.data.dataset == "dirac" and t.batch_size == 1000
    methods = {(c.loss.loss, c.loss.penalty, c.loss.penalty_weight, c.loss.instance_noise, c.train.weight_clip,
                c.train.consensus, c.train.updates, c.train.n_critic) for c in configs}  # fmt: skip
    one = {("minimax", "none", 0.0, 0.0, 0.0, 0.0), ("non-saturating", "none", 0.0, 0.0, 0.0, 0.0),
           ("wgan", "none", 0.0, 0.0, 1.0, 0.0), ("wgan-gp", "gp", 0.35, 0.0, 0.0, 0.0),
           ("minimax", "none", 0.0, 0.7, 0.0, 0.0), ("minimax", "r1", 0.3, 0.0, 0.0, 0.0),
           ("minimax", "r1", 1.0, 0.0, 0.0, 0.0), ("minimax", "r2", 0.3, 0.0, 0.0, 0.0),
           ("non-saturating", "r1", 0.3, 0.0, 0.0, 0.0)}  # fmt: skip
    want = {m + (rule, 1) for m in one for rule in ("simultaneous", "alternating")}
    want |= {("minimax", "none", 0.0, 0.0, 0.0, 1.0, "simultaneous", 1)}
    want |= {("wgan", "none", 0.0, 0.0, 1.0, 0.0, "alternating", 5),
             ("wgan-gp", "gp", 0.35, 0.0, 0.0, 0.0, "alternating", 5)}
    assert methods == want and len(configs) == 21


def test_the_trainer_never_names_the_dirac_data_set() -> None:
    """Every loss and penalty applies unchanged: no code in train/ or exec/ mentions dirac."""
    root = Path(lossbench.__file__).parent
    found = []
    for path in [*root.glob("train/*.py"), *root.glob("exec/*.py")]:
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr)}  # fmt: skip
        for node in ast.walk(tree):
            text = node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else (
                node.value if isinstance(node, ast.Constant) and isinstance(node.value, str)
                and id(node) not in docstrings else "")  # fmt: skip
            if "dirac" in text.lower():
                found.append(f"{path.name}: {text}")
    assert found == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arch", "dirac"], "arch 'dirac' needs 1-D samples (--dataset dirac)"),
        (["--dataset", "dirac", "--arch", "mlp2d"], "data set 'dirac' takes arch dirac, not 'mlp2d'"),
        (["--dataset", "dirac", "--dirac-init", "1.0"], "'dirac_init' must be 2 finite numbers"),
        (["--dataset", "dirac", "--dirac-init", "a,b"], "'dirac_init' must be 2 finite numbers"),
        (["--dataset", "dirac", "--instance-noise", "-1"], "'instance_noise' must be >= 0"),
        (["--dataset", "dirac", "--metrics", "none,fid"], "metric 'none' (no evaluation) cannot be combined"),
    ],
)
def test_bad_dirac_input_is_one_line_and_writes_nothing(args: list[str], message: str, unmade_store: str,
                                                        caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = unmade_store
    from test_cli import lossbench_here  # refused before any compute: in this process

    proc = lossbench_here("run", "--no-progress", "--steps", "2", "--tracking-uri", store, *args, caplog=caplog)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert not Path(store.removeprefix("sqlite:///")).exists()


def test_a_dirac_run_carries_theta_psi_and_its_own_trajectory(store: str) -> None:
    """Through the CLI: theta and psi logged from step 0, and the run's own (theta, psi) figure."""
    from mlflow import MlflowClient
    from test_cli import lossbench, runs_by_role

    lossbench("run", "--dataset", "dirac", "--loss", "non-saturating", "--penalty", "r1", "--penalty-weight", "1",
              "--optimizer", "sgd", "--lr-g", "0.1", "--lr-d", "0.1", "--steps", "100", "--log-every", "10",
              "--dirac-init", "1.0,0.5", "--no-progress", "--tracking-uri", store)  # fmt: skip
    (run,) = runs_by_role(store)["seed"]
    client = MlflowClient(tracking_uri=store)
    theta = sorted(client.get_metric_history(run.info.run_id, "theta"), key=lambda m: m.step)
    psi = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "psi")}
    assert [m.step for m in theta][:2] == [0, 10] and psi[0] == 0.5 and theta[0].value == 1.0
    assert abs(theta[-1].value) < 0.1 * abs(theta[0].value)  # R1 converges
    assert "samples/trajectory.png" in [a.path for a in client.list_artifacts(run.info.run_id, "samples")]

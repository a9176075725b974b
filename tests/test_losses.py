"""Every registered loss against its closed form, written out independently with math on floats."""

from __future__ import annotations

import math

import pytest
import torch

from lossbench.gan import losses


def sig(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def bce_d(r: list[float], f: list[float]) -> float:
    return -mean([math.log(sig(x)) for x in r]) - mean([math.log(1 - sig(x)) for x in f])


# name -> (closed-form L_D(r, f), closed-form L_G(f, r)); the table every loss must be in.
CLOSED_FORMS = {
    "minimax": (bce_d, lambda f, r: mean([math.log(1 - sig(x)) for x in f])),
    "non-saturating": (bce_d, lambda f, r: -mean([math.log(sig(x)) for x in f])),
    "dragan": (bce_d, lambda f, r: -mean([math.log(sig(x)) for x in f])),
    "least-squares": (
        lambda r, f: 0.5 * mean([(x - 1) ** 2 for x in r]) + 0.5 * mean([x**2 for x in f]),
        lambda f, r: 0.5 * mean([(x - 1) ** 2 for x in f]),
    ),
    "wgan-gp": (lambda r, f: mean(f) - mean(r), lambda f, r: -mean(f)),
    "wgan": (lambda r, f: mean(f) - mean(r), lambda f, r: -mean(f)),
    "hinge": (
        lambda r, f: mean([max(0.0, 1 - x) for x in r]) + mean([max(0.0, 1 + x) for x in f]),
        lambda f, r: -mean(f),
    ),
    "rsgan": (
        lambda r, f: -mean([math.log(sig(a - b)) for a, b in zip(r, f)]),
        lambda f, r: -mean([math.log(sig(b - a)) for a, b in zip(r, f)]),
    ),
    "ragan": (
        lambda r, f: -mean([math.log(sig(x - mean(f))) for x in r]) - mean([math.log(1 - sig(x - mean(r))) for x in f]),
        lambda f, r: -mean([math.log(sig(x - mean(r))) for x in f]) - mean([math.log(1 - sig(x - mean(f))) for x in r]),
    ),
}

REAL = [2.0, -0.5, 0.3, 1.7]
FAKE = [-1.2, 0.8, -3.0, 0.1]


def test_every_registered_loss_has_a_closed_form() -> None:
    assert set(losses.names()) == set(CLOSED_FORMS)


@pytest.mark.parametrize("name", losses.names())
def test_values_match_closed_form(name: str) -> None:
    loss = losses.get(name)
    d_form, g_form = CLOSED_FORMS[name]
    r = torch.tensor(REAL, dtype=torch.float64)
    f = torch.tensor(FAKE, dtype=torch.float64)
    assert abs(loss.discriminator_loss(r, f).item() - d_form(REAL, FAKE)) < 1e-12
    assert abs(loss.generator_loss(f, r).item() - g_form(FAKE, REAL)) < 1e-12


@pytest.mark.parametrize("name", losses.names())
@pytest.mark.parametrize("logit", [-50.0, 50.0, -1e3, 1e3])
def test_extreme_logits_stay_finite(name: str, logit: float) -> None:
    loss = losses.get(name)
    r = torch.full((4,), logit, requires_grad=True)
    f = torch.full((4,), -logit, requires_grad=True)
    d = loss.discriminator_loss(r, f)
    g = loss.generator_loss(f, r)
    grads = torch.autograd.grad(d + g, (r, f))
    assert torch.isfinite(d) and torch.isfinite(g)
    assert all(torch.isfinite(x).all() for x in grads)


@pytest.mark.parametrize("name", losses.names())
def test_gradients_reach_each_player_input(name: str) -> None:
    loss = losses.get(name)
    r = torch.tensor(REAL, requires_grad=True)
    f = torch.tensor(FAKE, requires_grad=True)
    (gd_r, gd_f) = torch.autograd.grad(loss.discriminator_loss(r, f), (r, f))
    assert gd_r.abs().sum() > 0 and gd_f.abs().sum() > 0
    (gg_f,) = torch.autograd.grad(loss.generator_loss(f, r.detach()), (f,))
    assert gg_f.abs().sum() > 0


def _g_grad(name: str, d_fake: float) -> float:
    f = torch.tensor([d_fake], dtype=torch.float64, requires_grad=True)
    r = torch.tensor([3.0], dtype=torch.float64)
    (grad,) = torch.autograd.grad(losses.get(name).generator_loss(f, r), (f,))
    return grad.item()


def test_minimax_saturates_and_non_saturating_does_not() -> None:
    # dL_G/dd_f = -sigma(d_f) for minimax, sigma(d_f) - 1 for non-saturating
    for d_fake in (-5.0, -10.0, -20.0):
        assert abs(_g_grad("minimax", d_fake) - (-sig(d_fake))) < 1e-12
        assert abs(_g_grad("non-saturating", d_fake) - (sig(d_fake) - 1)) < 1e-12
    assert abs(_g_grad("minimax", -20.0)) < 1e-8
    assert abs(_g_grad("non-saturating", -20.0) + 1) < 1e-8


def test_relativistic_generator_loss_needs_d_real() -> None:
    with pytest.raises(ValueError, match="d_real"):
        losses.get("ragan").generator_loss(torch.zeros(3))


def test_gradient_penalty_is_public() -> None:
    w = torch.tensor([3.0, 4.0])
    critic = lambda x: x @ w  # noqa: E731
    pen = losses.gradient_penalty(critic, torch.randn(5, 2), torch.randn(5, 2))
    assert abs(pen.item() - (5.0 - 1.0) ** 2) < 1e-5


def test_loss_by_import_path() -> None:
    loss = losses.get("lossbench.losses:Hinge")
    assert abs(loss.discriminator_loss(torch.tensor([0.5]), torch.tensor([0.5])).item() - 2.0) < 1e-7


def test_unknown_loss_names_closest() -> None:
    from lossbench.errors import ConfigError

    with pytest.raises(ConfigError, match="did you mean 'minimax'"):
        losses.get("minmax")


# B |dL_G/d d_f,i| for every fake logit at -10 and every real logit at 0: the card's `g_signal`
G_SIGNAL_AT_MINUS_10 = {
    "minimax": sig(-10),  # saturated: D confidently rejects the fakes, G learns almost nothing
    "non-saturating": 1 - sig(-10),
    "dragan": 1 - sig(-10),
    "least-squares": 11.0,  # |d_f - 1|
    "wgan": 1.0,
    "wgan-gp": 1.0,
    "hinge": 1.0,
    "rsgan": sig(10),  # sigma(d_r - d_f)
    "ragan": 2 * sig(10),  # sigma(E d_r - d_f) + E sigma(d_r - E d_f)
}


@pytest.mark.parametrize("name", losses.names())
def test_g_signal_matches_the_card_closed_form(name: str) -> None:
    """What the trainer logs as g_signal, through the players' own g_objective, with D's logits fixed."""
    from lossbench.cards import loss_card
    from lossbench.train.players import g_objective, learning_signal

    assert loss_card(name)["g_signal"]  # every card states it
    critic = lambda x: x[:, 0]  # noqa: E731 - D's logit is the sample itself
    z = torch.full((4, 1), -10.0, dtype=torch.float64, requires_grad=True)  # G the identity: every logit -10
    real = torch.zeros(4, 1, dtype=torch.float64) if losses.needs_real(losses.get(name)) else None
    g_loss, d_fake = g_objective(critic, lambda v: v, losses.get(name), z, real, None)
    d_fake.retain_grad()
    g_loss.backward()
    signal = learning_signal(d_fake.grad)
    assert signal.item() == pytest.approx(G_SIGNAL_AT_MINUS_10[name], rel=1e-9, abs=1e-12)
    if name == "minimax":
        assert signal.item() == pytest.approx(4.5398e-5, rel=1e-4)


class Counted:
    """A plugin loss that counts its constructions (resolve checks it; only train.setup builds it)."""

    built = 0

    def __init__(self) -> None:
        Counted.built += 1

    def discriminator_loss(self, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
        return (d_fake - d_real).mean()

    def generator_loss(self, d_fake: torch.Tensor, d_real: torch.Tensor | None = None) -> torch.Tensor:
        return -d_fake.mean()


def test_the_loss_is_built_once_by_setup_not_by_resolve() -> None:
    from lossbench import config
    from lossbench.train import setup

    Counted.built = 0
    cfg = config.resolve((config.COMMAND_LINE, {"loss": "test_losses:Counted", "dataset": "ring8"}))
    assert Counted.built == 0  # resolve checked the name and both methods, and built nothing
    state = setup(cfg, 0, (2,), torch.device("cpu"))
    assert Counted.built == 1 and isinstance(state.players.loss, Counted)

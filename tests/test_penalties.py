"""Penalties against closed forms: on a linear critic D(x) = w.x + b, whose input gradient is w
everywhere, and on a quadratic one, whose gradient shows where each penalty takes it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lossbench.gan import losses, penalties

W = [0.6, -1.2, 2.0]
NORM = sum(v * v for v in W) ** 0.5


def linear_critic() -> nn.Module:
    lin = nn.Linear(3, 1).double()
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([W], dtype=torch.float64))
        lin.bias.fill_(0.3)
    return lin


# name -> closed form for the linear critic
EXPECTED = {"none": 0.0, "gp": (NORM - 1) ** 2, "dragan": (NORM - 1) ** 2, "r1": NORM**2 / 2, "r2": NORM**2 / 2}


def test_every_penalty_has_a_closed_form() -> None:
    assert set(penalties.names()) == set(EXPECTED)


@pytest.mark.parametrize("name", penalties.names())
def test_linear_critic_closed_form(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    value = penalties.get(name)(linear_critic(), real, fake, g)
    assert abs(value.item() - EXPECTED[name]) < 1e-10


@pytest.mark.parametrize("name", ["gp", "dragan"])
def test_penalty_gradient_in_weights_is_double_backward(name: str) -> None:
    # d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    critic = linear_critic()
    value = penalties.get(name)(critic, torch.randn(8, 3).double(), torch.randn(8, 3).double(), None)
    value.backward()
    expected = 2 * (NORM - 1) * torch.tensor([W], dtype=torch.float64) / NORM
    torch.testing.assert_close(critic.weight.grad, expected)


def test_r1_gradient_in_weights() -> None:
    # d/dw ||w||^2 / 2 = w
    critic = linear_critic()
    penalties.get("r1")(critic, torch.randn(8, 3).double(), torch.randn(8, 3).double(), None).backward()
    torch.testing.assert_close(critic.weight.grad, torch.tensor([W], dtype=torch.float64))


@pytest.mark.parametrize("name", ["r1", "r2"])
def test_r1_r2_with_weight_gamma_is_half_gamma_norm_squared(name: str) -> None:
    """The weight is Mescheder et al.'s gamma: the regulariser added to L_D is (gamma/2) ||w||^2 for a
    linear critic, whatever the loss."""
    from lossbench.train.players import d_objective

    gamma = 10.0
    real, fake = torch.randn(8, 3).double(), torch.randn(8, 3).double()
    critic = linear_critic()
    loss = losses.get("hinge")
    total, stats = d_objective(critic, loss, penalties.get(name), gamma, real, fake, None)
    d_loss = loss.discriminator_loss(critic(real), critic(fake))
    assert (total - d_loss).item() == pytest.approx(gamma / 2 * NORM**2, rel=1e-12)


def test_gp_on_images_is_per_sample() -> None:
    # a conv-shaped linear critic on 1x2x2 images: grad = w reshaped, norm ||w||
    w = torch.tensor([1.0, 2.0, 2.0, 0.0])
    critic = lambda x: x.flatten(1) @ w  # noqa: E731
    pen = penalties.get("gp")(
        critic, torch.randn(6, 1, 2, 2), torch.randn(6, 1, 2, 2), torch.Generator().manual_seed(1)
    )
    assert abs(pen.item() - (3.0 - 1.0) ** 2) < 1e-5


def quadratic_critic(x: torch.Tensor) -> torch.Tensor:
    """D(x) = ||x||^2 / 2 per sample: grad D(x) = x, so where a penalty takes the gradient shows."""
    return 0.5 * x.flatten(1).pow(2).sum(dim=1)


def test_penalties_take_the_gradient_where_their_papers_do() -> None:
    """With grad D(x) = x: gp at x_hat = u x + (1 - u) G(z) gives mean (||x_hat|| - 1)^2, r1 at the
    real samples 1/2 mean ||x||^2, r2 at the generated ones 1/2 mean ||G(z)||^2 (a linear critic,
    whose gradient is the same everywhere, cannot tell these points apart)."""
    real = torch.tensor([[3.0, 0.0, 0.0], [0.0, 1.0, 1.0]], dtype=torch.float64)
    fake = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, -1.0]], dtype=torch.float64)
    u = torch.tensor([[0.25], [0.5]], dtype=torch.float64)
    # x_hat = [0.75, 1.5, 0] and [0.5, 0.5, 0]: norms sqrt(2.8125) and sqrt(0.5)
    gp = ((2.8125**0.5 - 1) ** 2 + (0.5**0.5 - 1) ** 2) / 2
    assert penalties.get("gp")(quadratic_critic, real, fake, u=(u,)).item() == pytest.approx(gp, rel=1e-12)
    assert penalties.get("r1")(quadratic_critic, real, fake).item() == pytest.approx((9 + 2) / 4, rel=1e-12)
    assert penalties.get("r2")(quadratic_critic, real, fake).item() == pytest.approx((4 + 2) / 4, rel=1e-12)

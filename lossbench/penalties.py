"""Discriminator penalties: functions of (D, real, fake, generator) returning the term *without* its
weight. Any loss composes with any penalty; the trainer adds `weight * penalty` to L_D.

Each builds its inputs, takes grad_x D(x) with create_graph=True (so the penalty is differentiable
in D's parameters: double backward), and reduces over the batch.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from lossbench.registry import Registry

Penalty = Callable[[nn.Module, Tensor, Tensor, "torch.Generator | None"], Tensor]

PENALTIES: Registry[Penalty] = Registry("penalty")


def _per_sample_uniform(like: Tensor, generator: torch.Generator | None) -> Tensor:
    """U[0, 1] of shape (B, 1, ..., 1), broadcastable against `like`."""
    shape = (like.shape[0],) + (1,) * (like.dim() - 1)
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)


def _input_gradient(critic: nn.Module, x: Tensor) -> Tensor:
    """grad_x sum_i D(x_i): row i is grad D(x_i), since samples do not interact in D."""
    x = x.detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(critic(x).sum(), x, create_graph=True)
    return grad.flatten(1)


@PENALTIES.register("none")
def no_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """0."""
    return real.new_zeros(())


@PENALTIES.register("gp")
def gradient_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - 1)^2], x_hat = e x + (1 - e) G(z),
    e ~ U[0, 1] per sample. For a linear critic D(x) = w.x + b it is exactly (||w|| - 1)^2."""
    eps = _per_sample_uniform(real, generator)
    x_hat = eps * real.detach() + (1 - eps) * fake.detach()
    return (_input_gradient(critic, x_hat).norm(2, dim=1) - 1).pow(2).mean()


@PENALTIES.register("r1")
def r1_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """R1 (Mescheder et al. 2018): E[||grad D(x)||^2] on real data. The paper writes gamma/2 * R1:
    set the weight to gamma/2 to match it. Linear critic: ||w||^2."""
    return _input_gradient(critic, real).pow(2).sum(dim=1).mean()


@PENALTIES.register("r2")
def r2_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """R2 (Mescheder et al. 2018): E[||grad D(G(z))||^2] on generated data. Linear critic: ||w||^2."""
    return _input_gradient(critic, fake).pow(2).sum(dim=1).mean()


@PENALTIES.register("dragan")
def dragan_penalty(critic: nn.Module, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """DRAGAN (Kodali et al. 2017): E[(||grad D(x_p)||_2 - 1)^2] around perturbed real data,
    x_p = x + 0.5 * std(x) * u, u ~ U[0, 1] elementwise (the authors' code)."""
    noise = torch.rand(real.shape, generator=generator, device=real.device, dtype=real.dtype)
    x_p = real.detach() + 0.5 * real.detach().std() * noise
    return (_input_gradient(critic, x_p).norm(2, dim=1) - 1).pow(2).mean()


def get(name: str) -> Penalty:
    return PENALTIES.get(name)


def names() -> list[str]:
    return PENALTIES.names()

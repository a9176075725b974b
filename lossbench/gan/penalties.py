"""Discriminator penalties: the term *without* its weight. Any loss composes with any penalty; the
trainer adds `weight * penalty` to L_D.

A penalty is a pure function of (critic, real, fake, u), where `u` is the uniform noise it declares
(`noise`: none, per-sample or elementwise) drawn beforehand from the run's penalty stream. Keeping
the draw outside makes the function safe under torch.func.vmap, so several seeds can share one call
(--parallel-seeds) and still draw exactly the numbers they would draw alone.

Each builds its inputs, takes grad_x D(x) with torch.func.grad (differentiable in D's parameters by
the outer backward: double backward) and reduces over the batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from lossbench.registry import Registry

__all__ = ["PENALTIES", "Penalty", "Critic", "get", "names", "penalty", "gradient_penalty"]

Critic = Callable[[Tensor], Tensor]
PenaltyFn = Callable[[Critic, Tensor, Tensor, "Tensor | None"], Tensor]
Noise = Literal["none", "per-sample", "elementwise"]


@dataclass(frozen=True)
class Penalty:
    """A penalty function and the uniform noise it consumes."""

    fn: PenaltyFn
    noise: Noise = "none"
    input_gradient: bool = True  # takes grad_x D(x): needs double backward

    def noise_shape(self, sample_batch: tuple[int, ...]) -> tuple[int, ...] | None:
        """Shape of u for a batch of samples of shape (B, *sample), or None if none is needed."""
        if self.noise == "per-sample":
            return (sample_batch[0],) + (1,) * (len(sample_batch) - 1)
        if self.noise == "elementwise":
            return tuple(sample_batch)
        return None

    def draw(self, real: Tensor, generator: torch.Generator | None) -> Tensor | None:
        shape = self.noise_shape(tuple(real.shape))
        if shape is None:
            return None
        return torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)

    def __call__(
        self, critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None,
        u: Tensor | None = None,
    ) -> Tensor:  # fmt: skip
        """The penalty; draws u from `generator` unless it is given."""
        if u is None:
            u = self.draw(real, generator)
        return self.fn(critic, real, fake, u)


PENALTIES: Registry[Penalty] = Registry("penalty")


def penalty(noise: Noise = "none", input_gradient: bool = True) -> Callable[[PenaltyFn], Penalty]:
    return lambda fn: Penalty(fn, noise, input_gradient)


def _input_gradient(critic: Critic, x: Tensor) -> Tensor:
    """grad_x sum_i D(x_i): row i is grad D(x_i), since samples do not interact in D."""
    return torch.func.grad(lambda v: critic(v).sum())(x.detach()).flatten(1)


@PENALTIES.register("none")
@penalty(input_gradient=False)
def no_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Tensor | None) -> Tensor:
    """0."""
    return real.new_zeros(())


@PENALTIES.register("gp")
@penalty("per-sample")
def gradient_penalty_fn(critic: Critic, real: Tensor, fake: Tensor, u: Tensor | None) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - 1)^2], x_hat = u x + (1 - u) G(z),
    u ~ U[0, 1] per sample. For a linear critic D(x) = w.x + b it is exactly (||w|| - 1)^2."""
    x_hat = u * real.detach() + (1 - u) * fake.detach()
    return (_input_gradient(critic, x_hat).norm(2, dim=1) - 1).pow(2).mean()


@PENALTIES.register("r1")
@penalty()
def r1_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Tensor | None) -> Tensor:
    """R1 (Mescheder et al. 2018): 1/2 E[||grad D(x)||^2] on real data, so that the weight is the
    paper's gamma (its regulariser is gamma/2 * E||grad D||^2, as in StyleGAN). Linear critic: ||w||^2 / 2."""
    return 0.5 * _input_gradient(critic, real).pow(2).sum(dim=1).mean()


@PENALTIES.register("r2")
@penalty()
def r2_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Tensor | None) -> Tensor:
    """R2 (Mescheder et al. 2018): 1/2 E[||grad D(G(z))||^2] on generated data; the weight is gamma.
    Linear critic: ||w||^2 / 2."""
    return 0.5 * _input_gradient(critic, fake).pow(2).sum(dim=1).mean()


@PENALTIES.register("dragan")
@penalty("elementwise")
def dragan_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Tensor | None) -> Tensor:
    """DRAGAN (Kodali et al. 2017): E[(||grad D(x_p)||_2 - 1)^2] around perturbed real data,
    x_p = x + 0.5 * std(x) * u, u ~ U[0, 1] elementwise (the authors' code)."""
    x_p = real.detach() + 0.5 * real.detach().std() * u
    return (_input_gradient(critic, x_p).norm(2, dim=1) - 1).pow(2).mean()


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The WGAN-GP term without its weight, u drawn from `generator` (public API)."""
    return PENALTIES.get("gp")(critic, real, fake, generator)


def get(name: str) -> Penalty:
    return PENALTIES.get(name)


def names() -> list[str]:
    return PENALTIES.names()

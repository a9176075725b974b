"""Discriminator penalties: the term *without* its weight. Any loss composes with any penalty; the
trainer adds `weight * penalty` to L_D.

A penalty is a pure function of (critic, real, fake, u), where `u` is the tuple of uniform noise
tensors it declares (`noise`: each per-sample or elementwise; None when it declares none), drawn
beforehand from the run's penalty stream, in the declared order. Keeping
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
Noises = "tuple[Tensor, ...] | None"
PenaltyFn = Callable[[Critic, Tensor, Tensor, Noises], Tensor]
Noise = Literal["per-sample", "elementwise"]


@dataclass(frozen=True)
class Penalty:
    """A penalty function and the uniform noise tensors it consumes, in order."""

    fn: PenaltyFn
    noise: tuple[Noise, ...] = ()
    input_gradient: bool = True  # takes grad_x D(x): needs double backward

    def noise_shapes(self, sample_batch: tuple[int, ...]) -> list[tuple[int, ...]]:
        """Shapes of the u tensors for a batch of samples of shape (B, *sample)."""
        per_sample = (sample_batch[0],) + (1,) * (len(sample_batch) - 1)
        return [per_sample if kind == "per-sample" else tuple(sample_batch) for kind in self.noise]

    def draw(self, real: Tensor, generator: torch.Generator | None) -> tuple[Tensor, ...] | None:
        """U[0, 1) tensors of the declared shapes, drawn in order; None when the penalty takes none."""
        if not self.noise:
            return None
        return tuple(torch.rand(shape, generator=generator, device=real.device, dtype=real.dtype)
                     for shape in self.noise_shapes(tuple(real.shape)))  # fmt: skip

    def __call__(
        self, critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None,
        u: tuple[Tensor, ...] | None = None,
    ) -> Tensor:  # fmt: skip
        """The penalty; draws u from `generator` unless it is given."""
        if u is None:
            u = self.draw(real, generator)
        return self.fn(critic, real, fake, u)


PENALTIES: Registry[Penalty] = Registry("penalty", key="penalty")


def penalty(*noise: Noise, input_gradient: bool = True) -> Callable[[PenaltyFn], Penalty]:
    return lambda fn: Penalty(fn, noise, input_gradient)


def _input_gradient(critic: Critic, x: Tensor) -> Tensor:
    """grad_x sum_i D(x_i): row i is grad D(x_i), since samples do not interact in D."""
    return torch.func.grad(lambda v: critic(v).sum())(x.detach()).flatten(1)


@PENALTIES.register("none")
@penalty(input_gradient=False)
def no_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Noises) -> Tensor:
    """0."""
    return real.new_zeros(())


@PENALTIES.register("gp")
@penalty("per-sample")
def gradient_penalty_fn(critic: Critic, real: Tensor, fake: Tensor, u: Noises) -> Tensor:
    """WGAN-GP (Gulrajani et al. 2017): E[(||grad D(x_hat)||_2 - 1)^2], x_hat = u x + (1 - u) G(z),
    u ~ U[0, 1] per sample. For a linear critic D(x) = w.x + b it is exactly (||w|| - 1)^2."""
    (a,) = u  # type: ignore[misc]
    x_hat = a * real.detach() + (1 - a) * fake.detach()
    return (_input_gradient(critic, x_hat).norm(2, dim=1) - 1).pow(2).mean()


@PENALTIES.register("r1")
@penalty()
def r1_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Noises) -> Tensor:
    """R1 (Mescheder et al. 2018): 1/2 E[||grad D(x)||^2] on real data, so that the weight is the
    paper's gamma (its regulariser is gamma/2 * E||grad D||^2, as in StyleGAN). Linear critic: ||w||^2 / 2."""
    return 0.5 * _input_gradient(critic, real).pow(2).sum(dim=1).mean()


@PENALTIES.register("r2")
@penalty()
def r2_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Noises) -> Tensor:
    """R2 (Mescheder et al. 2018): 1/2 E[||grad D(G(z))||^2] on generated data; the weight is gamma.
    Linear critic: ||w||^2 / 2."""
    return 0.5 * _input_gradient(critic, fake).pow(2).sum(dim=1).mean()


@PENALTIES.register("dragan")
@penalty("elementwise", "per-sample")
def dragan_penalty(critic: Critic, real: Tensor, fake: Tensor, u: Noises) -> Tensor:
    """DRAGAN (Kodali et al. 2017), as the authors' code and StudioGAN's cal_dra_penalty compute it:

        E[(||grad D(x_hat)||_2 - 1)^2],  x_hat = x + alpha * (x_p - x),  x_p = x + 0.5 * std(x) * u,

    u ~ U[0, 1] elementwise, alpha ~ U[0, 1] per sample (so x_hat lies on the segment [x, x_p]);
    std(x) is the standard deviation over the whole real batch. Linear critic: (||w|| - 1)^2."""
    noise, alpha = u  # type: ignore[misc]
    x = real.detach()
    x_p = x + 0.5 * x.std() * noise
    x_hat = x + alpha * (x_p - x)
    return (_input_gradient(critic, x_hat).norm(2, dim=1) - 1).pow(2).mean()


def gradient_penalty(critic: Critic, real: Tensor, fake: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """The WGAN-GP term without its weight, u drawn from `generator` (public API)."""
    return PENALTIES.get("gp")(critic, real, fake, generator)


def get(name: str) -> Penalty:
    return PENALTIES.get(name)


def names() -> list[str]:
    return PENALTIES.names()

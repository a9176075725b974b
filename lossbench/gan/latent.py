"""Latent distributions: name -> a sampler of G's input noise z, each coordinate independent.

    normal   z ~ N(0, 1)      (DCGAN, most GAN papers)
    uniform  z ~ U(-1, 1)     (Lucic et al. 2018: z in R^64 ~ U(-1, 1), compare_gan)

A sampler draws from the generator it is given only, so each seed's noise stream stays its own.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lossbench.registry import Registry

Sampler = Callable[[tuple[int, ...], torch.Generator, torch.device], Tensor]

LATENTS: Registry[Sampler] = Registry("z-dist", key="z_dist")


@LATENTS.register("normal")
def normal(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """z ~ N(0, I)."""
    return torch.randn(shape, generator=generator, device=device)


@LATENTS.register("uniform")
def uniform(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    """z ~ U(-1, 1)^d: 2u - 1 with u ~ U[0, 1)."""
    return torch.rand(shape, generator=generator, device=device).mul_(2).sub_(1)


def sample(dist: str, shape: tuple[int, ...], generator: torch.Generator, device: torch.device | str) -> Tensor:
    return LATENTS.get(dist)(tuple(shape), generator, torch.device(device))

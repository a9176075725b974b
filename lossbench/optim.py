"""Optimisers by name: (parameters, lr, betas) -> torch optimiser."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from lossbench.registry import Registry

Factory = Callable[[Iterable[nn.Parameter], float, tuple[float, float]], torch.optim.Optimizer]

OPTIMIZERS: Registry[Factory] = Registry("optimizer")


@OPTIMIZERS.register("adam")
def adam(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    return torch.optim.Adam(params, lr=lr, betas=betas)


@OPTIMIZERS.register("rmsprop")
def rmsprop(params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float]) -> torch.optim.Optimizer:
    """RMSprop as in WGAN (Arjovsky et al. 2017); betas are unused."""
    return torch.optim.RMSprop(params, lr=lr)

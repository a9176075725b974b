"""Optimisers by name: (parameters, lr, betas) -> torch optimiser."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from lossbench.registry import Registry

Factory = Callable[[Iterable[nn.Parameter], float, tuple[float, float], bool], torch.optim.Optimizer]

OPTIMIZERS: Registry[Factory] = Registry("optimizer", key="optimizer")


@OPTIMIZERS.register("adam")
def adam(
    params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], fused: bool = False
) -> torch.optim.Optimizer:
    """Adam; `fused` runs the whole update in one kernel per device (torch's fused implementation)."""
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused or None)


@OPTIMIZERS.register("sgd")
def sgd(
    params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], fused: bool = False
) -> torch.optim.Optimizer:
    """Plain gradient descent, no momentum: the update theta <- theta - lr * grad that the convergence
    analyses assume (Mescheder et al. 2018); betas are unused."""
    return torch.optim.SGD(params, lr=lr, momentum=0.0)


@OPTIMIZERS.register("rmsprop")
def rmsprop(
    params: Iterable[nn.Parameter], lr: float, betas: tuple[float, float], fused: bool = False
) -> torch.optim.Optimizer:
    """RMSprop as in WGAN (Arjovsky et al. 2017); betas are unused; no fused form (foreach is used)."""
    return torch.optim.RMSprop(params, lr=lr)

"""Consensus optimisation (Mescheder, Nowozin & Geiger 2017, "The Numerics of GANs", §4).

With the joint gradient field of the two players' own losses,

    v = (dL_G/dtheta, dL_D/dpsi)        (L_D with its penalty term, as D descends it)

and L = 1/2 ||v||^2, each player descends its own loss plus gamma * L:

    theta <- theta - h (dL_G/dtheta + gamma dL/dtheta)
    psi   <- psi   - h (dL_D/dpsi   + gamma dL/dpsi)

dL/d(theta, psi) = J^T v (J the Jacobian of v) comes from a second backward pass through v, which
must therefore be built with create_graph=True. Defined for simultaneous updates only: v is taken at
one point (theta, psi).
"""

from __future__ import annotations

import torch
from torch import Tensor


def consensus_gradients(
    g_grads: list[Tensor], d_grads: list[Tensor], g_params: list[Tensor], d_params: list[Tensor], gamma: float
) -> tuple[list[Tensor], list[Tensor]]:
    """(dL_G/dtheta + gamma dL/dtheta, dL_D/dpsi + gamma dL/dpsi), L = 1/2 ||(g_grads, d_grads)||^2.

    g_grads and d_grads must be differentiable (create_graph=True). With several seeds stacked on
    dim 0, ||v||^2 summed over all seeds has, in seed k's parameters, seed k's own gradient."""
    half_sq = 0.5 * sum((g * g).sum() for g in (*g_grads, *d_grads))
    reg = torch.autograd.grad(half_sq, [*g_params, *d_params], materialize_grads=True)
    n = len(g_params)
    g_out = [g.detach() + gamma * r for g, r in zip(g_grads, reg[:n])]
    d_out = [d.detach() + gamma * r for d, r in zip(d_grads, reg[n:])]
    return g_out, d_out

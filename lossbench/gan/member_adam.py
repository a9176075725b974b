"""Adam for S members trained as one stacked group, each with its own learning rate and betas.

torch's optimisers take one lr and one (beta1, beta2) per parameter group; a group of configurations
that differ only in these (a random search's draws) holds every member's parameters stacked on a
leading dimension S, so one group would need S parameter groups of slices, which torch cannot form
from one stacked tensor. Here the hyperparameters are tensors of shape (S,) broadcast over each
stacked parameter, and the update is torch.optim.Adam's (single-tensor form, no weight decay,
no amsgrad), member by member:

    m_t = beta1 m_{t-1} + (1 - beta1) g_t                  (exp_avg.lerp_(g, 1 - beta1))
    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    theta_t = theta_{t-1} - lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps)

with t the step count shared by the group (members of a group step together). Its state per
parameter is torch's ("step", "exp_avg", "exp_avg_sq"), stacked, so one member's slice is a
torch.optim.Adam state for that member alone.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor


def _per_member(value: Tensor, like: Tensor) -> Tensor:
    """(S,) -> (S, 1, ..., 1), broadcasting over one member's slice of `like`."""
    return value.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, step: int, lr: Tensor,
                beta1: Tensor, beta2: Tensor, eps: float) -> None:  # fmt: skip
    """One Adam step in place for a stacked parameter (S, ...) with per-member lr, beta1, beta2 (S,);
    the formula is the module's, in torch.optim.Adam's order of operations (the scalars in float64,
    as torch computes them in Python floats, then cast to the parameter's dtype)."""
    lr, beta1, beta2 = (x.to(torch.float64) for x in (lr, beta1, beta2))
    step_size = lr / (1 - beta1**step)
    bias_correction2_sqrt = (1 - beta2**step).sqrt()
    exp_avg.lerp_(grad, _per_member(1 - beta1, param))
    exp_avg_sq.mul_(_per_member(beta2, param)).addcmul_(grad, grad * _per_member(1 - beta2, param))
    denom = (exp_avg_sq.sqrt() / _per_member(bias_correction2_sqrt, param)).add_(eps)
    param.sub_(_per_member(step_size, param) * exp_avg / denom)


class MemberAdam(torch.optim.Optimizer):
    """Adam over stacked parameters (leading dimension S = members) with per-member `lr`, `betas`
    (sequences or tensors of length S, held in float64: pass Python floats, as a float32 tensor keeps
    its rounding); see `adam_update`."""

    def __init__(self, params: Iterable[Tensor], lr: Tensor, betas: tuple[Tensor, Tensor], eps: float = 1e-8) -> None:
        lr, beta1, beta2 = (torch.as_tensor(x, dtype=torch.float64).reshape(-1) for x in (lr, *betas))
        if not len(lr) == len(beta1) == len(beta2):
            raise ValueError(f"lr and betas must name every member: {len(lr)}, {len(beta1)}, {len(beta2)}")
        if bool((lr <= 0).any()) or bool(((beta1 < 0) | (beta1 >= 1) | (beta2 < 0) | (beta2 >= 1)).any()):
            raise ValueError("lr must be > 0 and betas in [0, 1) for every member")
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps})
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != len(lr):
                    raise ValueError(f"a stacked parameter's first dimension must be the {len(lr)} members, "
                                     f"got shape {tuple(p.shape)}")  # fmt: skip

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
                adam_update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], int(state["step"].item()),
                            group["lr"], group["beta1"], group["beta2"], group["eps"])  # fmt: skip

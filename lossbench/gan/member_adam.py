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


def per_member(value: Tensor, like: Tensor) -> Tensor:
    """(S,) -> (S, 1, ..., 1) on `like`'s device and dtype, broadcasting over each member's slice of
    `like` (S, ...)."""
    return value.reshape(-1, *([1] * (like.dim() - 1))).to(like)


def coefficients(step: int, lr: Tensor, beta1: Tensor, beta2: Tensor) -> dict[str, Tensor]:
    """The step's per-member scalars (S,) in float64, as torch computes them in Python floats:
    1 - beta1, beta2, 1 - beta2, sqrt(1 - beta2^t) and lr / (1 - beta1^t)."""
    lr, beta1, beta2 = (x.to(torch.float64) for x in (lr, beta1, beta2))
    return {"one_minus_beta1": 1 - beta1, "beta2": beta2, "one_minus_beta2": 1 - beta2,
            "bias_correction2_sqrt": (1 - beta2**step).sqrt(), "step_size": lr / (1 - beta1**step)}  # fmt: skip


def adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, c: dict[str, Tensor],
                eps: float) -> None:  # fmt: skip
    """One Adam step in place for a stacked parameter (S, ...), with the per-member `coefficients` c
    (already shaped (S, 1, ...) and cast to the parameter's dtype); the formula is the module's, in
    torch.optim.Adam's order of operations."""
    exp_avg.lerp_(grad, c["one_minus_beta1"])
    exp_avg_sq.mul_(c["beta2"]).addcmul_(grad, grad * c["one_minus_beta2"])
    denom = (exp_avg_sq.sqrt() / c["bias_correction2_sqrt"]).add_(eps)
    param.sub_(c["step_size"] * exp_avg / denom)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch's Adam keeps its step count in (float32, float64 under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class MemberAdam(torch.optim.Optimizer):
    """Adam over stacked parameters (leading dimension S = members) with per-member `lr`, `betas`
    (sequences or tensors of length S, held in float64: pass Python floats, as a float32 tensor keeps
    its rounding); see `adam_update`. Member k's slice of its state, with `member_param_groups(k)`,
    is a torch.optim.Adam state dict for that member alone (checkpoints do not tell the two apart)."""

    per_member = True  # its param_groups hold every member's values: a member's slice is made, not copied

    def __init__(
        self, params: Iterable[Tensor], lr: Tensor, betas: tuple[Tensor, Tensor], eps: float = 1e-8, fused: bool = False
    ) -> None:  # fmt: skip
        lr, beta1, beta2 = (torch.as_tensor(x, dtype=torch.float64).reshape(-1).cpu() for x in (lr, *betas))
        if not len(lr) == len(beta1) == len(beta2):
            raise ValueError(f"lr and betas must name every member: {len(lr)}, {len(beta1)}, {len(beta2)}")
        if bool((lr <= 0).any()) or bool(((beta1 < 0) | (beta1 >= 1) | (beta2 < 0) | (beta2 >= 1)).any()):
            raise ValueError("lr must be > 0 and betas in [0, 1) for every member")
        super().__init__(params, {"lr": lr, "beta1": beta1, "beta2": beta2, "eps": eps})
        # the kernel a member's own torch Adam uses (--fused-optim), written into its checkpoint's groups, so a
        # member resumed alone steps as a run that never was in a group
        self.fused = fused
        for group in self.param_groups:
            for p in group["params"]:
                if p.dim() == 0 or p.shape[0] != len(lr):
                    raise ValueError(f"a stacked parameter's first dimension must be the {len(lr)} members, "
                                     f"got shape {tuple(p.shape)}")  # fmt: skip

    def member_param_groups(self, k: int) -> list[dict]:
        """Member k's param_groups in torch.optim.Adam's own state-dict format (made by torch's Adam,
        so its keys are whatever this torch writes), with this optimiser's parameter indices."""
        from lossbench.gan.optim import OPTIMIZERS

        own = self.state_dict()["param_groups"]
        out = []
        for group, mine in zip(self.param_groups, own):
            betas = (float(group["beta1"][k]), float(group["beta2"][k]))
            template = OPTIMIZERS.get("adam")([torch.zeros(1)], float(group["lr"][k]), betas, self.fused)
            out.append(template.state_dict()["param_groups"][0] | {"eps": group["eps"], "params": mine["params"]})
        return out

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for group in self.param_groups:
            with_grad = [p for p in group["params"] if p.grad is not None]
            if not with_grad:
                continue
            for p in with_grad:
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=_scalar_dtype())  # torch Adam's own
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["step"] += 1
            # the members step together: one step count, the coefficients computed once per group
            step = int(self.state[with_grad[0]]["step"].item())
            c = coefficients(step, group["lr"], group["beta1"], group["beta2"])
            cast: dict[tuple, dict[str, Tensor]] = {}
            for p in with_grad:
                key = (p.dtype, p.device, p.dim())
                if key not in cast:  # moved to the parameters' device once per step and shape rank
                    cast[key] = {name: per_member(v, p) for name, v in c.items()}
                state = self.state[p]
                adam_update(p, p.grad, state["exp_avg"], state["exp_avg_sq"], cast[key], group["eps"])

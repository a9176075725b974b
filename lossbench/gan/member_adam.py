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

One step is a fixed number of operators whatever the number of parameter tensors (a GPU is bound
by launches for such small nets): the moments of a parameter group live in two flat (S, N) buffers
(N the parameters' elements per member) of which each parameter's state tensors are views, the
gradients are gathered into one (S, N) tensor, the update is computed on the flat tensors, and the
parameters take it in one foreach subtraction; one step-count tensor serves every parameter.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

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


def adam_delta(grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, c: dict[str, Tensor], eps: float) -> Tensor:
    """One Adam step for stacked tensors (S, ...): the moments m, v updated in place, and the
    parameters' decrease lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps) returned;
    c: the per-member `coefficients`, already shaped (S, 1, ...) and cast to the tensors' dtype; the
    formula is the module's, in torch.optim.Adam's order of operations."""
    exp_avg.lerp_(grad, c["one_minus_beta1"])
    exp_avg_sq.mul_(c["beta2"]).addcmul_(grad, grad * c["one_minus_beta2"])
    return _decrease(exp_avg, exp_avg_sq, c, eps)


def adam_moved(
    grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, c: dict[str, Tensor], eps: float
) -> tuple[Tensor, Tensor, Tensor]:
    """`adam_delta` as a pure function, for a traced step that must not mutate its inputs: the new
    moments (m_t, v_t) and the parameters' decrease, the inputs left as they were. Same operations,
    same order, so the same numbers."""
    exp_avg = exp_avg.lerp(grad, c["one_minus_beta1"])
    exp_avg_sq = exp_avg_sq.mul(c["beta2"]).addcmul(grad, grad * c["one_minus_beta2"])
    return exp_avg, exp_avg_sq, _decrease(exp_avg, exp_avg_sq, c, eps)


def _decrease(exp_avg: Tensor, exp_avg_sq: Tensor, c: dict[str, Tensor], eps: float) -> Tensor:
    """lr / (1 - beta1^t) * m_t / (sqrt(v_t) / sqrt(1 - beta2^t) + eps), from the updated moments."""
    denom = (exp_avg_sq.sqrt() / c["bias_correction2_sqrt"]).add_(eps)
    return c["step_size"] * exp_avg / denom


def adam_update(param: Tensor, grad: Tensor, exp_avg: Tensor, exp_avg_sq: Tensor, c: dict[str, Tensor],
                eps: float) -> None:  # fmt: skip
    """One Adam step in place for a stacked parameter (S, ...): theta_t = theta_{t-1} - `adam_delta`."""
    param.sub_(adam_delta(grad, exp_avg, exp_avg_sq, c, eps))


@dataclass
class FlatState:
    """One parameter group's moments as two flat (S, N) buffers, each parameter's state a view of a
    column range, and the step count every parameter's state holds (one tensor)."""

    params: list[Tensor]
    exp_avg: Tensor
    exp_avg_sq: Tensor
    step: Tensor
    views: list[tuple[Tensor, Tensor]]  # (exp_avg, exp_avg_sq) of each parameter, as put in its state

    def current(self, params: list[Tensor], state: dict) -> bool:
        """Whether this is still the state: the same parameters and their state these views (a
        load_state_dict or a new parameter set replaces them)."""
        return len(params) == len(self.params) and all(
            p is q and state.get(p, {}).get("exp_avg") is m and state[p].get("exp_avg_sq") is v
            and state[p].get("step") is self.step
            for p, q, (m, v) in zip(params, self.params, self.views))  # fmt: skip


def flatten_state(params: list[Tensor], state: dict, step_dtype: torch.dtype) -> FlatState:
    """The moments of `params` (S, ...) gathered into flat (S, N) buffers (zeros where a parameter
    has no state yet), and each parameter's state made views of them with one shared step count."""
    S = params[0].shape[0]
    steps = {float(state[p]["step"]) for p in params if state.get(p)}
    if len(steps) > 1:  # torch keeps a count per parameter; a group's members and tensors step together
        raise ValueError(f"the stacked parameters' Adam states disagree on the step count: {sorted(steps)}")
    step = torch.tensor(steps.pop() if steps else 0.0, dtype=step_dtype)

    def flat(name: str) -> Tensor:
        parts = [state[p][name] if state.get(p) else torch.zeros_like(p) for p in params]
        return torch.cat([t.reshape(S, -1) for t in parts], dim=1)

    exp_avg, exp_avg_sq = flat("exp_avg"), flat("exp_avg_sq")
    views, start = [], 0
    for p in params:
        n = p[0].numel()
        pair = (exp_avg[:, start:start + n].view(p.shape), exp_avg_sq[:, start:start + n].view(p.shape))
        state[p] = {"step": step, "exp_avg": pair[0], "exp_avg_sq": pair[1]}
        views.append(pair)
        start += n
    return FlatState(list(params), exp_avg, exp_avg_sq, step, views)


def to_device(values: Tensor, like: Tensor) -> Tensor:
    """The step's per-member scalars (host, float64) onto `like`'s device and dtype in one copy; to
    a GPU from pinned memory without blocking (a pageable copy would wait for the device's queue to
    drain at every step; the caching host allocator keeps the pinned block until the copy is done)."""
    if like.device.type != "cuda":
        return values.to(like)
    return values.pin_memory().to(like.device, non_blocking=True).to(like.dtype)


def _scalar_dtype() -> torch.dtype:
    """The dtype torch's Adam keeps its step count in (float32, float64 under a float64 default)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class MemberAdam(torch.optim.Optimizer):
    """Adam over stacked parameters (leading dimension S = members) with per-member `lr`, `betas`
    (sequences or tensors of length S, held in float64: pass Python floats, as a float32 tensor keeps
    its rounding); see `adam_update`. Member k's slice of its state, with `member_param_groups(k)`,
    is a torch.optim.Adam state dict for that member alone (checkpoints do not tell the two apart)."""

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
            if len({(p.dtype, p.device) for p in group["params"]}) > 1:  # one flat buffer per group
                raise ValueError("a parameter group's stacked parameters must share one dtype and device")

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

    def flat(self, i: int, params: list[Tensor] | None = None) -> FlatState:
        """Parameter group i's state as flat buffers (of `params`, default every parameter of the
        group), gathered anew where a load or a new parameter set replaced it; zeros and step 0 for
        parameters without state yet, as torch starts them."""
        flats: dict[int, FlatState] = self.__dict__.setdefault("_flats", {})
        params = list(self.param_groups[i]["params"]) if params is None else params
        flat = flats.get(i)
        if flat is None or not flat.current(params, self.state):
            flat = flats[i] = flatten_state(params, self.state, _scalar_dtype())
        return flat

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        for i, group in enumerate(self.param_groups):
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            if any(p.grad is None and self.state.get(p) for p in group["params"]):  # its count would fall behind
                raise ValueError("a stacked parameter with Adam state has no gradient: every parameter of a group "
                                 "must step at every step")  # fmt: skip
            flat = self.flat(i, params)
            flat.step += 1  # the members step together: one step count, shared by every parameter's state
            c = coefficients(int(flat.step.item()), group["lr"], group["beta1"], group["beta2"])
            moved = to_device(torch.stack(list(c.values())), flat.exp_avg)
            cols = {name: moved[j][:, None] for j, name in enumerate(c)}
            S = flat.exp_avg.shape[0]
            grad = torch.cat([p.grad.reshape(S, -1) for p in params], dim=1)
            delta = adam_delta(grad, flat.exp_avg, flat.exp_avg_sq, cols, group["eps"])
            parts = delta.split([p[0].numel() for p in params], dim=1)
            torch._foreach_sub_(params, [d.view(p.shape) for d, p in zip(parts, params)])

"""Per-member Adam (lossbench/gan/member_adam.py): S members stacked on a leading dimension, each with
its own learning rate and betas, step for step equal to S separate torch.optim.Adam instances."""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lossbench.gan.member_adam import MemberAdam
from lossbench.train.players import _load_optimizer_slice, _slice_optimizer

LR, BETA1, BETA2 = [1e-3, 2e-4, 5e-2], [0.5, 0.9, 0.0], [0.999, 0.9, 0.99]


@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_each_member_steps_as_its_own_torch_adam(dtype: torch.dtype, tol: float) -> None:
    gen = torch.Generator().manual_seed(0)
    shapes = [(4, 3), (5,), (2, 2, 3)]
    stacked = [torch.randn(3, *s, generator=gen, dtype=dtype, requires_grad=True) for s in shapes]
    alone = [[p[k].detach().clone().requires_grad_(True) for p in stacked] for k in range(3)]
    group = MemberAdam(stacked, lr=LR, betas=(BETA1, BETA2))  # held in float64, as torch holds Python floats
    torch_adams = [torch.optim.Adam(alone[k], lr=LR[k], betas=(BETA1[k], BETA2[k]), foreach=False) for k in range(3)]
    for _ in range(6):
        grads = [torch.randn(3, *s, generator=gen, dtype=dtype) for s in shapes]
        for p, g in zip(stacked, grads):
            p.grad = g.clone()
        group.step()
        for k in range(3):
            for p, g in zip(alone[k], grads):
                p.grad = g[k].clone()
            torch_adams[k].step()
    for k in range(3):
        for p, q in zip(stacked, alone[k]):
            torch.testing.assert_close(p[k].detach(), q.detach(), rtol=tol, atol=tol)
        state = torch_adams[k].state[alone[k][0]]  # the stacked state sliced is that member's torch state
        mine = group.state[stacked[0]]
        assert float(mine["step"]) == float(state["step"]) == 6.0
        torch.testing.assert_close(mine["exp_avg_sq"][k], state["exp_avg_sq"], rtol=tol, atol=tol)
    moved = [(p[k].detach() - torch.randn(3, *s, generator=torch.Generator().manual_seed(0), dtype=dtype)[k]).abs()
             .max().item() for p, s in zip(stacked[:1], shapes[:1]) for k in range(3)]  # fmt: skip
    assert len(set(moved)) == 3  # the members' hyperparameters differ, and so do their paths


def test_bad_member_hyperparameters_are_refused() -> None:
    p = torch.zeros(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="name every member"):
        MemberAdam([p], lr=[1e-3, 1e-3], betas=([0.5], [0.9, 0.9]))
    with pytest.raises(ValueError, match="betas in \\[0, 1\\)"):
        MemberAdam([p], lr=[1e-3, 1e-3], betas=([0.5, 1.0], [0.9, 0.9]))
    with pytest.raises(ValueError, match="first dimension must be the 3 members"):
        MemberAdam([p], lr=[1e-3] * 3, betas=([0.5] * 3, [0.9] * 3))


class _Ops(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.n += 0 if func.is_view else 1
        return func(*args, **(kwargs or {}))


def _stepped_ops(n_tensors: int) -> int:
    """Non-view operators one MemberAdam step dispatches for n_tensors stacked parameters (S = 3)."""
    params = [torch.randn(3, 4, 2, requires_grad=True) for _ in range(n_tensors)]
    opt = MemberAdam(params, lr=LR, betas=(BETA1, BETA2))
    for p in params:
        p.grad = torch.randn_like(p)
    opt.step()  # the first step builds the flat state
    with _Ops() as ops:
        opt.step()
    return ops.n


def test_a_step_dispatches_the_same_operators_for_any_number_of_parameter_tensors() -> None:
    # the moments in flat (S, N) buffers, one gathered gradient, one foreach subtraction: launches
    # per step do not grow with the net's parameter tensors (a GPU running small nets is launch-bound)
    assert _stepped_ops(2) == _stepped_ops(12) <= 30


def test_state_reloaded_mid_run_steps_exactly_as_the_uninterrupted_run() -> None:
    gen = torch.Generator().manual_seed(1)
    shapes = [(4, 3), (5,), (2, 2, 3)]
    start = [torch.randn(3, *s, generator=gen, dtype=torch.float64) for s in shapes]
    grads = [[torch.randn(3, *s, generator=gen, dtype=torch.float64) for s in shapes] for _ in range(6)]

    def run(params: list[torch.Tensor], opt: MemberAdam, steps: range) -> None:
        for t in steps:
            for p, g in zip(params, grads[t]):
                p.grad = g.clone()
            opt.step()

    whole = [t.clone().requires_grad_(True) for t in start]
    opt = MemberAdam(whole, lr=LR, betas=(BETA1, BETA2))
    run(whole, opt, range(3))
    saved, at_3 = copy.deepcopy(opt.state_dict()), [p.detach().clone() for p in whole]
    assert [tuple(saved["state"][i]["exp_avg"].shape) for i in range(3)] == [(3, *s) for s in shapes]
    assert {float(saved["state"][i]["step"]) for i in range(3)} == {3.0}
    run(whole, opt, range(3, 6))
    # a fresh optimiser given step 3's state, and one that ran on to step 5 first, take it up again
    fresh = [t.clone().requires_grad_(True) for t in at_3]
    again = MemberAdam(fresh, lr=LR, betas=(BETA1, BETA2))
    again.load_state_dict(copy.deepcopy(saved))
    run(fresh, again, range(3, 6))

    def ahead_then_loaded(load: Callable[[MemberAdam], None]) -> list[torch.Tensor]:
        """An optimiser run on to step 5, its parameters set back to step 3's and `load`ed, then on to 6."""
        params = [t.clone().requires_grad_(True) for t in start]
        opt = MemberAdam(params, lr=LR, betas=(BETA1, BETA2))
        run(params, opt, range(5))
        with torch.no_grad():
            for p, q in zip(params, at_3):
                p.copy_(q)
        load(opt)
        run(params, opt, range(3, 6))
        assert float(opt.state[params[0]]["step"]) == 6.0
        return params

    ahead = ahead_then_loaded(lambda opt: opt.load_state_dict(copy.deepcopy(saved)))
    # as a group resumes: each member's slice written into a group that ran ahead (players' checkpoint code)
    donor = again_at_3(saved, at_3)
    sliced = ahead_then_loaded(lambda opt: [_load_optimizer_slice(opt, _slice_optimizer(donor, k), k, 3)
                                            for k in range(3)])  # fmt: skip
    for params in (fresh, ahead, sliced):
        for p, q in zip(params, whole):
            assert torch.equal(p, q)
    assert float(again.state[fresh[0]]["step"]) == 6.0


def again_at_3(saved: dict, at_3: list[torch.Tensor]) -> MemberAdam:
    opt = MemberAdam([t.clone().requires_grad_(True) for t in at_3], lr=LR, betas=(BETA1, BETA2))
    opt.load_state_dict(copy.deepcopy(saved))
    return opt


def test_a_group_whose_parameters_cannot_step_together_is_refused() -> None:
    with pytest.raises(ValueError, match="share one dtype and device"):
        MemberAdam([torch.zeros(3, 2), torch.zeros(3, 2, dtype=torch.float64)], lr=LR, betas=(BETA1, BETA2))
    params = [torch.zeros(3, 2, requires_grad=True), torch.zeros(3, 4, requires_grad=True)]
    opt = MemberAdam(params, lr=LR, betas=(BETA1, BETA2))
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    params[0].grad = None  # its step count would fall behind the others'
    with pytest.raises(ValueError, match="has no gradient"):
        opt.step()
    saved = opt.state_dict()
    saved["state"][1]["step"] = torch.tensor(7.0)
    params[0].grad = torch.ones_like(params[0])
    opt.load_state_dict(saved)
    with pytest.raises(ValueError, match="disagree on the step count: \\[1.0, 7.0\\]"):
        opt.step()

"""Per-member Adam (lossbench/gan/member_adam.py): S members stacked on a leading dimension, each with
its own learning rate and betas, step for step equal to S separate torch.optim.Adam instances."""

from __future__ import annotations

import pytest
import torch

from lossbench.gan.member_adam import MemberAdam

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

"""A test-only plugin loss (loaded as --loss divergent_loss:FirstSeedDiverges): the first instance
that trains under a run's lease returns NaN from its 20th generator step on, later instances train
normally (the preflight's timing probe, which holds no lease, is not the first). So in one
`lossbench run --seeds 2`, seed 0 diverges and seed 1 finishes, deterministically."""

from __future__ import annotations

import torch.nn.functional as F
from gated_loss import _holds_a_lease
from torch import Tensor


class FirstSeedDiverges:
    """Non-saturating, except that the first training instance turns NaN at its 20th G step."""

    owner: int | None = None

    def __init__(self) -> None:
        self.calls = 0

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        if FirstSeedDiverges.owner is None and _holds_a_lease():
            FirstSeedDiverges.owner = id(self)
        self.calls += 1
        loss = F.softplus(-d_fake).mean()
        return loss * float("nan") if id(self) == FirstSeedDiverges.owner and self.calls >= 20 else loss

"""A test-only plugin loss (loaded as --loss gated_loss:Gated): non-saturating, except that while the
file named by LOSSBENCH_TEST_GATE exists, every generator step waits for it to go. A test holds one
process still, mid-run and holding its lease, for as long as it needs."""

from __future__ import annotations

import os
import time
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor


class Gated:
    """Non-saturating; each generator step first waits while $LOSSBENCH_TEST_GATE exists."""

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        gate = os.environ.get("LOSSBENCH_TEST_GATE")
        while gate and Path(gate).exists():
            time.sleep(0.05)
        return F.softplus(-d_fake).mean()

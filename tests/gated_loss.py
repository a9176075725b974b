"""A test-only plugin loss (loaded as --loss gated_loss:Gated): non-saturating, except that while the
file named by $LOSSBENCH_TEST_GATE exists, every generator step of a process that holds a run's lease
(a lease.json naming its pid under $LOSSBENCH_CHECKPOINT_DIR) waits for the file to go. A test holds
one process still, mid-run and holding its lease, for as long as it needs; steps before the lease
(the preflight's timing probe) go through."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor


def _holds_a_lease() -> bool:
    root = Path(os.environ.get("LOSSBENCH_CHECKPOINT_DIR", "runs/checkpoints"))
    for owner in root.glob("*/lease.json"):
        try:
            if json.loads(owner.read_text())["pid"] == os.getpid():
                return True
        except (OSError, ValueError, KeyError):
            continue
    return False


class Gated:
    """Non-saturating; each generator step under a lease first waits while $LOSSBENCH_TEST_GATE exists."""

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        gate = os.environ.get("LOSSBENCH_TEST_GATE")
        while gate and Path(gate).exists() and _holds_a_lease():
            time.sleep(0.05)
        return F.softplus(-d_fake).mean()

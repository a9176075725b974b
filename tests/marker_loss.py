"""A test-only plugin loss (loaded as marker_loss:Marker, with tests/ on PYTHONPATH) that says when its
module was imported: importing it writes the file named by $LOSSBENCH_TEST_MARKER. Non-saturating."""

from __future__ import annotations

import os
from pathlib import Path

import torch.nn.functional as F
from torch import Tensor

if marker := os.environ.get("LOSSBENCH_TEST_MARKER"):
    Path(marker).write_text(f"imported by pid {os.getpid()}\n")


class Marker:
    """Non-saturating: L_D = E[softplus(-d_r)] + E[softplus(d_f)], L_G = E[softplus(-d_f)]."""

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return F.softplus(-d_fake).mean()

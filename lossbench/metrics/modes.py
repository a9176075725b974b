"""Mode metrics for 2-D mixtures (Metz et al. 2017; Srivastava et al. 2017; Lin et al. 2018).

Each sample is assigned to its nearest mode. A sample is high quality when it lies within 3 sigma
of that mode. A mode is captured when at least `min_fraction` of all samples are high-quality
samples of it (PacGAN's 20 of 2,500 = 0.8%). mode_kl is KL(p || uniform) of the histogram p of
nearest-mode assignments over all samples: 0 for perfectly balanced modes, log K for one mode.
"""

from __future__ import annotations

import torch
from torch import Tensor

MIN_FRACTION = 20 / 2500


def mode_metrics(samples: Tensor, modes: Tensor, std: float, min_fraction: float = MIN_FRACTION) -> dict[str, float]:
    samples, modes = samples.double().cpu(), modes.double().cpu()
    dist = torch.cdist(samples, modes)  # N x K
    nearest_dist, nearest = dist.min(dim=1)
    high_quality = nearest_dist <= 3 * std
    k = len(modes)
    hq_counts = torch.bincount(nearest[high_quality], minlength=k)
    captured = int((hq_counts >= max(1.0, min_fraction * len(samples))).sum())
    p = torch.bincount(nearest, minlength=k).double() / len(samples)
    nz = p > 0
    kl = float((p[nz] * (p[nz] * k).log()).sum())
    return {"modes": float(captured), "high_quality": float(high_quality.double().mean()), "mode_kl": kl}

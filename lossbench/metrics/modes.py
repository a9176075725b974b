"""Mode metrics for 2-D Gaussian mixtures, as VEEGAN (Srivastava et al. 2017, Table 1) defines them
and PacGAN (Lin et al. 2018, Table 1) computes them.

Given N generated points x_i, the K mixture means mu_k and the components' standard deviation sigma:

    d_i = min_k ||x_i - mu_k|| / sigma,   k_i = argmin_k ||x_i - mu_k||    (first mode on a tie)
    high-quality sample:  d_i < 3                                          (strictly less)
    c_k = #{i : x_i high quality and k_i = k}                              (the high-quality histogram)
    modes        = #{k : c_k >= threshold}                                 (threshold 1 in PacGAN's code)
    high_quality = sum_k c_k / N                                           (a fraction; the papers print %)
    reverse_kl   = KL(p || u) = sum_{k : p_k > 0} p_k log(K p_k) = log K - H(p),  p_k = c_k / sum_j c_j

so reverse_kl is 0 when the high-quality samples are spread evenly over all K modes and log K when
they all sit on one; a mode with c_k = 0 adds nothing (0 log 0 = 0; u_k = 1/K is never 0, so the value
is always finite). When no sample is high quality, p is undefined (0/0) and reverse_kl is NaN, as in
PacGAN's code; the evaluator does not log it (lossbench never logs a missing metric as a number).

Sources:
- fjxmlzn/PacGAN, synthetic_data_experiments/PacGAN/pacgan/extensions.py, class MetricLogger: each
  point goes to the mode of least standardized distance sqrt(sum_j (x_j - mu_j)^2 / var_j) (for the
  isotropic mixtures here, ||x - mu|| / sigma); it counts toward detail_of_coverage[mode] when that
  distance is < dis_thre = 3; "mode coverage" = the number of nonzero entries (so threshold 1), "good
  points percentage" = sum(detail_of_coverage) / N, and "entropy of coverage" = H(detail_of_coverage /
  sum), the entropy of the high-quality histogram, from which reverse_kl = log K - H. (The same logger
  logs a JSD of that histogram against uniform; PacGAN's Table 1 reports the reverse KL.)
- fjxmlzn/PacGAN, synthetic_data_experiments/2DRing_GAN&PacGAN/config.py and 2DGrid_GAN&PacGAN/config.py:
  num_log_figure_sample = 2500 generated points scored per evaluation (lossbench: metrics.mode_samples).
- akashgit/VEEGAN, index.md (the paper's experiment text): a sample is high quality within three
  standard deviations of the nearest mode; a mode is captured when its mean is nearest to at least one
  high-quality sample; 2,500 samples per trained model.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

HIGH_QUALITY_STD = 3.0  # a high-quality sample lies strictly within 3 sigma of its nearest mode
DEFAULT_THRESHOLD = 1  # high-quality samples a mode needs to count as captured (config: mode_threshold)
KEYS = ("modes", "high_quality", "reverse_kl")


def mode_metrics(samples: Tensor, modes: Tensor, std: float, threshold: int = DEFAULT_THRESHOLD) -> dict[str, float]:
    """{"modes", "high_quality", "reverse_kl"} of `samples` (N x 2) against mixture means `modes`
    (K x 2) with isotropic standard deviation `std`; see the module docstring for the formulas."""
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1 high-quality sample, got {threshold}")
    if std <= 0:
        raise ValueError(f"std must be > 0, got {std}")
    samples, modes = samples.detach().double().cpu(), modes.detach().double().cpu()
    if samples.dim() != 2 or modes.dim() != 2 or samples.shape[1] != modes.shape[1]:
        raise ValueError(f"samples ({tuple(samples.shape)}) and modes ({tuple(modes.shape)}) must be N x D and K x D")
    if len(samples) == 0 or len(modes) == 0:
        raise ValueError("mode metrics need at least one sample and one mode")
    # exact differences (no matrix-product shortcut), so a point just inside or outside 3 sigma stays there
    dist = torch.cdist(samples, modes, compute_mode="donot_use_mm_for_euclid_dist") / std  # N x K, in sigmas
    nearest_dist, nearest = dist.min(dim=1)  # first mode on a tie; a NaN point is never high quality
    high_quality = nearest_dist < HIGH_QUALITY_STD
    k = len(modes)
    counts = torch.bincount(nearest[high_quality], minlength=k).double()  # c_k
    captured = int((counts >= threshold).sum())
    total = float(counts.sum())
    if total > 0:
        p = counts[counts > 0] / total
        reverse_kl = max(0.0, float((p * (p * k).log()).sum()))  # rounding can leave -1e-17 for exact uniform
    else:
        reverse_kl = math.nan  # no high-quality sample: the histogram is 0/0
    return {"modes": float(captured), "high_quality": total / len(samples), "reverse_kl": reverse_kl}


# --- stacked MNIST: modes are digit triples ---------------------------------------------------
# fjxmlzn/PacGAN, stacked_MNIST_experiments/VEEGAN_experiment/model.py (DCGAN.log_metrics) and
# config.py: num_test_sample = 26,000 generated images per evaluation; each of the three channels
# is classified by the MNIST classifier (evaluate.py: the argmax of its softmax) and the triple of
# digits is the sample's mode; "mode coverage" is the number of distinct triples seen (so a mode is
# captured by one sample), and KL = JSD().KLD(p, q) = sum_{k: p_k > 0} p_k log(p_k / q_k) with p the
# histogram of triples over the 1,000 modes and q uniform (1/1,000): KL(p || u), natural log, as
# reverse_kl above. VEEGAN (Srivastava et al. 2017, Table 2) reports the same two numbers.

TRIPLES = 1000  # 10^3 digit triples
STACKED_SAMPLES = 26_000  # generated images PacGAN scores per evaluation


def triple_mode_metrics(digits: Tensor, threshold: int = DEFAULT_THRESHOLD) -> dict[str, float]:
    """{"modes", "reverse_kl"} of digit labels `digits` (N x 3, each in 0..9), one row per sample:

        t_i = 100 d_i0 + 10 d_i1 + d_i2,  c_t = #{i : t_i = t}    (t in 0..999)
        modes      = #{t : c_t >= threshold}                      (threshold 1 in PacGAN's code)
        reverse_kl = sum_{t : c_t > 0} p_t log(1000 p_t),  p_t = c_t / N   (= KL(p || uniform))
    """
    if threshold < 1:
        raise ValueError(f"threshold must be >= 1 sample, got {threshold}")
    d = torch.as_tensor(digits).detach().cpu().long()
    if d.dim() != 2 or d.shape[1] != 3 or len(d) == 0:
        raise ValueError(f"digits must be N x 3 with N >= 1, got shape {tuple(d.shape)}")
    if bool(((d < 0) | (d > 9)).any()):
        raise ValueError("digits must lie in 0..9")
    counts = torch.bincount(d[:, 0] * 100 + d[:, 1] * 10 + d[:, 2], minlength=TRIPLES).double()
    p = counts[counts > 0] / counts.sum()
    reverse_kl = max(0.0, float((p * (p * TRIPLES).log()).sum()))
    return {"modes": float(int((counts >= threshold).sum())), "reverse_kl": reverse_kl}

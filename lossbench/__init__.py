"""lossbench: a benchmark of GAN cost functions."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def mode_metrics(points: Any, dataset: str) -> dict[str, float]:
    """VEEGAN's and PacGAN's mode metrics of generated 2-D points against a registered mixture data
    set ("ring8" or "grid25"), with its means and standard deviation and the default threshold (a
    mode is captured by one high-quality sample): {"modes", "high_quality", "reverse_kl"}; the
    definitions are in lossbench.metrics.modes.

    `points`: an N x 2 torch tensor, NumPy array or nested sequence. A data set without modes is a
    DataError; points of another shape a ValueError.

    For "stacked-mnist", `points` are images N x 3 x 28 x 28 in [-1, 1] (the generators' range):
    {"modes" (digit triples captured, of 1,000), "reverse_kl" (KL of the triple histogram from
    uniform)}, each channel read by the project's MNIST classifier, as PacGAN's evaluation (26,000
    samples); see lossbench.metrics.classified and lossbench.metrics.modes.
    """
    import torch  # deferred, so that `import lossbench` stays cheap

    from lossbench.gan import data
    from lossbench.metrics import classified, modes

    if "modes" in classified.owned(("modes",), dataset):
        return classified.stacked_mode_metrics(points if isinstance(points, torch.Tensor) else torch.as_tensor(points))

    means, std = data.mixture(dataset)
    x = points.detach() if isinstance(points, torch.Tensor) else torch.as_tensor(points)
    if x.dim() != 2 or x.shape[1] != means.shape[1]:
        raise ValueError(f"points must be N x {means.shape[1]} for '{dataset}', got shape {tuple(x.shape)}")
    return modes.mode_metrics(x.to(torch.float64), means, std, threshold=modes.DEFAULT_THRESHOLD)

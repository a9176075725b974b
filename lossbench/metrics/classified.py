"""Metrics scored by the project's MNIST classifier (lossbench.metrics.classifier), never by Inception:

- `modes` on stacked MNIST: each channel of each image classified as a digit, the triple is the
  sample's mode; modes captured (of 1,000) and KL(p || uniform) (lossbench.metrics.modes,
  triple_mode_metrics, with PacGAN's definitions and sources).
- `fcd`, the classifier Frechet distance, on MNIST and stacked MNIST:

      fcd = ||mu_r - mu_g||^2 + Tr(S_r + S_g - 2 (S_r S_g)^(1/2))

  between Gaussians fitted to the classifier's penultimate features (64 per channel: 64-d for MNIST,
  192-d for stacked MNIST, channels concatenated) of real and generated images. It is the formula
  of FID on other features, computed by the same function the project's FID uses (torch-fidelity's
  fid_features_to_statistics and fid_statistics_to_metric); it is never called FID, since FID means
  Inception features, and its values are not comparable with FIDs. Extractor: "mnist-cnn".
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from lossbench.metrics import classifier, modes

EXTRACTOR = "mnist-cnn"  # the name reports give the fcd's features
STACKED = "stacked-mnist"
# metric -> the data sets it applies to (lossbench.metrics.registry holds the same, for validation)
METRIC_DATASETS: dict[str, tuple[str, ...]] = {"modes": (STACKED,), "fcd": ("mnist", STACKED)}


def owned(metrics: tuple[str, ...], dataset: str) -> tuple[str, ...]:
    """The metrics of `metrics` this module scores for `dataset` (the others go to their engines)."""
    return tuple(n for n in metrics if dataset in METRIC_DATASETS.get(n, ()))


def _check_images(images: Tensor, channels: int | None) -> Tensor:
    x = images.detach() if isinstance(images, Tensor) else torch.as_tensor(images)
    if x.dim() != 4 or tuple(x.shape[2:]) != (28, 28) or (channels and x.shape[1] != channels):
        want = f"N x {channels} x 28 x 28" if channels else "N x C x 28 x 28"
        raise ValueError(f"images must be {want} in [-1, 1], got shape {tuple(x.shape)}")
    return x.float().cpu()


def digits(images: Tensor) -> Tensor:
    """The classifier's digit (N x C) for each channel of images N x C x 28 x 28 in [-1, 1]."""
    x = _check_images(images, None)
    return torch.stack([classifier.predict(x[:, c : c + 1]) for c in range(x.shape[1])], dim=1)


def stacked_mode_metrics(images: Tensor, threshold: int = modes.DEFAULT_THRESHOLD) -> dict[str, float]:
    """{"modes", "reverse_kl"} of stacked-MNIST images N x 3 x 28 x 28 in [-1, 1] (PacGAN scores
    N = 26,000)."""
    return modes.triple_mode_metrics(digits(_check_images(images, 3)), threshold=threshold)


def feature_statistics(images: Tensor) -> dict:
    """Mean and covariance (float64) of the classifier's penultimate features of the images."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    return fid_features_to_statistics(classifier.features(_check_images(images, None)).double())


def fcd(real: dict, fake: dict) -> float:
    """The Frechet distance between two feature statistics (see the module docstring)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric

    return float(fid_statistics_to_metric(real, fake, verbose=False)["frechet_inception_distance"])


def evaluator(metrics: tuple[str, ...], reference: Tensor, mode_samples: int, fcd_samples: int
              ) -> Callable[[Callable[[int], Tensor]], dict[str, float]]:  # fmt: skip
    """A scorer of a sampler (n -> n generated images in [-1, 1]) for `metrics` (owned ones); the
    real features come from the first `fcd_samples` reference images, computed once here."""
    real = feature_statistics(reference[:fcd_samples]) if "fcd" in metrics else None

    def score(sample: Callable[[int], Tensor]) -> dict[str, float]:
        out: dict[str, float] = {}
        if "modes" in metrics:
            out |= stacked_mode_metrics(sample(mode_samples))
        if real is not None:
            out["fcd"] = fcd(real, feature_statistics(sample(fcd_samples)))
        return out

    return score

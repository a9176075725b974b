"""Fidelity and diversity from feature vectors: improved precision/recall and density/coverage.

Both pairs judge a fake set against a real set (any N x d features, e.g. Inception pool3, N x 2048)
through k-nearest-neighbour balls. NND_k(x) is the distance from x to its k-th nearest neighbour in
its own set, not counting x itself, and B(x, r) = {y : ||y - x|| < r} is the open ball.

- Precision and recall (Kynkäänniemi et al. 2019, "Improved Precision and Recall Metric for
  Assessing Generative Models", k = 3): the share of fake samples that fall in the union of the
  real balls, and the share of real samples that fall in the union of the fake balls.
- Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for Generative
  Models", k = 5): density counts how many real balls hold each fake sample (so one outlying real
  sample with a huge ball cannot buy much), coverage is the share of real balls holding at least
  one fake sample (balls around real samples only, so fake outliers cannot inflate it).

The formulas match clovaai/generative-evaluation-prdc (used by PyTorch-StudioGAN's compute_prdc):
the radius is the (k+1)-th smallest distance of a point to its own set, itself included at 0, and
membership is the strict `distance < radius`. (Kynkäänniemi et al.'s paper and code use `<=`; with
`<`, identical sets of distinct points give density exactly 1.) Duplicate points give radius 0
and hence empty balls, as in the reference.

Distances are Euclidean, computed in float64 with torch.cdist, a block of rows at a time, so no
more than about BLOCK_BYTES of distances exist at once whatever N is (10,000 x 10,000 included).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

BLOCK_BYTES = 64 * 2**20  # one block of float64 distances; kthvalue and cdist add temporaries of the same order


def _check_inputs(real: Tensor, fake: Tensor, k: int) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    for name, x in (("real", real), ("fake", fake)):
        if not isinstance(x, Tensor) or x.dim() != 2:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{name} must be a 2-D tensor (samples x features), got {shape}")
        if x.shape[0] <= k:
            raise ValueError(f"{name} needs more than k={k} rows for a k-th nearest neighbour, got {x.shape[0]}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real and fake feature sizes differ: {real.shape[1]} vs {fake.shape[1]}")
    for name, x in (("real", real), ("fake", fake)):
        if not bool(torch.isfinite(x).all()):
            raise ValueError(f"{name} holds NaN or infinite values")


def _float64(x: Tensor) -> Tensor:
    return x.detach().to(torch.float64)


def _row_blocks(n_rows: int, n_cols: int, chunk_rows: int | None) -> Iterator[slice]:
    """Slices covering range(n_rows); by default as many rows as fit BLOCK_BYTES of n_cols float64s."""
    step = chunk_rows if chunk_rows is not None else max(1, BLOCK_BYTES // (8 * n_cols))
    if step < 1:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def knn_radii(x: Tensor, k: int, chunk_rows: int | None = None) -> Tensor:
    """NND_k(x_i) = distance from x_i to its k-th nearest neighbour in x, x_i itself excluded.

    x_i's own distance 0 is the smallest in its row, so NND_k is the (k+1)-th smallest of the row.
    """
    x = _float64(x)
    blocks = _row_blocks(len(x), len(x), chunk_rows)
    return torch.cat([torch.kthvalue(torch.cdist(x[rows], x), k + 1, dim=1).values for rows in blocks])


def ball_hits(centres: Tensor, radii: Tensor, points: Tensor, chunk_rows: int | None = None) -> tuple[Tensor, Tensor]:
    """Membership of points in the open balls B(c_i, r_i).

    Returns (hits, occupied): hits_j = Σ_i 1[||p_j - c_i|| < r_i], the number of balls holding
    point j (length M, int64); occupied_i = ∃ j: ||p_j - c_i|| < r_i (length N, bool).
    """
    centres, radii, points = _float64(centres), _float64(radii), _float64(points)
    hits = torch.zeros(len(points), dtype=torch.int64, device=points.device)
    occupied = torch.zeros(len(centres), dtype=torch.bool, device=centres.device)
    for rows in _row_blocks(len(centres), len(points), chunk_rows):
        inside = torch.cdist(centres[rows], points) < radii[rows, None]  # block of centres x points
        hits += inside.sum(dim=0)
        occupied[rows] = inside.any(dim=1)
    return hits, occupied


def precision_recall(real: Tensor, fake: Tensor, k: int = 3, *, chunk_rows: int | None = None) -> dict[str, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019), with real x_i (N) and fake y_j (M):

        precision = (1/M) Σ_j 1[∃ i: ||y_j - x_i|| < NND_k(x_i)]
        recall    = (1/N) Σ_i 1[∃ j: ||x_i - y_j|| < NND_k(y_j)]

    Precision is fidelity (fakes land on the real manifold), recall is diversity (the fake manifold
    spans the real samples). chunk_rows caps the rows of each distance block (default: from BLOCK_BYTES).
    """
    _check_inputs(real, fake, k)
    real, fake = _float64(real), _float64(fake)
    fake_in_real_balls, _ = ball_hits(real, knn_radii(real, k, chunk_rows), fake, chunk_rows)
    real_in_fake_balls, _ = ball_hits(fake, knn_radii(fake, k, chunk_rows), real, chunk_rows)
    return {
        "precision": float((fake_in_real_balls > 0).double().mean()),
        "recall": float((real_in_fake_balls > 0).double().mean()),
    }


def density_coverage(real: Tensor, fake: Tensor, k: int = 5, *, chunk_rows: int | None = None) -> dict[str, float]:
    """Density and coverage (Naeem et al. 2020), with real x_i (N) and fake y_j (M):

        density  = (1/(kM)) Σ_j Σ_i 1[||y_j - x_i|| < NND_k(x_i)]
        coverage = (1/N) Σ_i 1[∃ j: ||y_j - x_i|| < NND_k(x_i)]

    Density is fidelity (1 on average when fake matches real; it may exceed 1), coverage is
    diversity. Only real balls are used. chunk_rows as for precision_recall.
    """
    _check_inputs(real, fake, k)
    real, fake = _float64(real), _float64(fake)
    hits, occupied = ball_hits(real, knn_radii(real, k, chunk_rows), fake, chunk_rows)
    return {
        "density": float(hits.sum()) / (k * len(fake)),
        "coverage": float(occupied.double().mean()),
    }

"""Improved precision/recall and density/coverage: limiting cases, a hand computation, a brute-force
reference in plain Python loops, input validation, and chunked == unchunked."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from lossbench.metrics import prdc


def randn(n: int, d: int, seed: int) -> Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def all_four(real: Tensor, fake: Tensor, k: int, chunk_rows: int | None = None) -> dict[str, float]:
    return {
        **prdc.precision_recall(real, fake, k, chunk_rows=chunk_rows),
        **prdc.density_coverage(real, fake, k, chunk_rows=chunk_rows),
    }


def brute_force(real: Tensor, fake: Tensor, k: int) -> dict[str, float]:
    """The definitions read literally, one pair of points at a time."""
    xs, ys = real.tolist(), fake.tolist()

    def radius(i: int, points: list[list[float]]) -> float:  # k-th nearest neighbour, the point itself left out
        return sorted(math.dist(points[i], q) for j, q in enumerate(points) if j != i)[k - 1]

    rx = [radius(i, xs) for i in range(len(xs))]
    ry = [radius(j, ys) for j in range(len(ys))]
    in_real_ball = [[math.dist(y, x) < rx[i] for i, x in enumerate(xs)] for y in ys]  # [fake j][real i]
    in_fake_ball = [[math.dist(x, y) < ry[j] for j, y in enumerate(ys)] for x in xs]  # [real i][fake j]
    return {
        "precision": sum(any(row) for row in in_real_ball) / len(ys),
        "recall": sum(any(row) for row in in_fake_ball) / len(xs),
        "density": sum(sum(row) for row in in_real_ball) / (k * len(ys)),
        "coverage": sum(any(in_real_ball[j][i] for j in range(len(ys))) for i in range(len(xs))) / len(xs),
    }


@pytest.mark.parametrize("k", [3, 5])
def test_identical_sets_score_one(k: int) -> None:
    real = randn(40, 8, seed=0)  # distinct points: each ball holds the point itself and k - 1 neighbours
    assert all_four(real, real.clone(), k) == {"precision": 1.0, "recall": 1.0, "density": 1.0, "coverage": 1.0}


def test_far_apart_sets_score_zero() -> None:
    real, fake = randn(30, 8, seed=1), randn(30, 8, seed=2) + 1000.0
    assert all_four(real, fake, k=3) == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_half_collapse_costs_diversity_not_fidelity() -> None:
    shift = torch.zeros(1, 4, dtype=torch.float64)
    shift[0, 0] = 100.0
    real = torch.cat([randn(30, 4, seed=3), randn(30, 4, seed=4) + shift])  # two clusters, far apart
    fake = real[:30].clone()  # the generator covers one cluster only
    pr, dc = prdc.precision_recall(real, fake), prdc.density_coverage(real, fake)
    assert pr["precision"] == 1.0
    assert pr["recall"] == 0.5
    assert dc["coverage"] == 0.5
    # Every fake is a real point of the covered cluster, whose balls hold k points each on average.
    assert dc["density"] == pytest.approx(1.0, abs=0.05)


def test_hand_computed_example() -> None:
    # Expected values computed by hand, 1-D, k = 2, balls open (distance < radius).
    # real  0, 1, 3, 6, 10, 100 -> 2nd-NN radii 3, 2, 3, 4, 7, 94
    #   balls (-3,3) (-1,3) (0,6) (2,10) (3,17) (6,194)
    # fake  -200, 0.5, 11, 25, 30 -> 2nd-NN radii 211, 24.5, 14, 14, 19
    #   balls (-411,11) (-24,25) (-3,25) (11,39) (11,49)
    # real balls holding each fake: -200: none; 0.5: first three; 11: (3,17) (6,194); 25, 30: (6,194)
    #   precision = 4/5, density = (0+3+2+1+1) / (2*5) = 7/10
    # real ball (2,10) around 6 holds no fake, the other five do: coverage = 5/6
    # real points inside a fake ball: 0..10 (in (-24,25)); 100 is in none: recall = 5/6
    real = torch.tensor([0.0, 1.0, 3.0, 6.0, 10.0, 100.0])[:, None]
    fake = torch.tensor([-200.0, 0.5, 11.0, 25.0, 30.0])[:, None]
    assert prdc.knn_radii(real, 2).tolist() == [3.0, 2.0, 3.0, 4.0, 7.0, 94.0]
    assert prdc.knn_radii(fake, 2).tolist() == [211.0, 24.5, 14.0, 14.0, 19.0]
    assert all_four(real, fake, k=2) == pytest.approx(
        {"precision": 0.8, "recall": 5 / 6, "density": 0.7, "coverage": 5 / 6}
    )


@pytest.mark.parametrize("k", [1, 3, 5])
def test_matches_brute_force(k: int) -> None:
    real, fake = randn(30, 5, seed=5), randn(25, 5, seed=6) * 0.6 + 1.0
    got, want = all_four(real, fake, k), brute_force(real, fake, k)
    assert got == pytest.approx(want, abs=1e-12)
    assert all(0.0 < v < 1.0 for v in want.values())  # a case where every number can be wrong both ways


def test_chunked_equals_unchunked() -> None:
    real, fake = randn(50, 6, seed=7), randn(40, 6, seed=8) + 0.3
    whole = all_four(real, fake, k=3)
    assert 0.0 < whole["coverage"] < 1.0
    for chunk_rows in (1, 7, 49, 1000):
        assert all_four(real, fake, k=3, chunk_rows=chunk_rows) == whole


def test_float32_input_is_computed_in_float64() -> None:
    real, fake = randn(30, 5, seed=9), randn(30, 5, seed=10)
    assert all_four(real.float(), fake.float(), k=3) == pytest.approx(brute_force(real.float(), fake.float(), k=3))


@pytest.mark.parametrize(
    ("real", "fake", "k", "message"),
    [
        (torch.zeros(10), torch.zeros(10, 2), 3, "real must be a 2-D tensor"),
        (torch.randn(10, 2), torch.randn(10, 3), 3, "feature sizes differ"),
        (torch.randn(10, 2), torch.randn(3, 2), 3, "fake needs more than k=3 rows"),
        (torch.randn(10, 2), torch.randn(10, 2), 0, "k must be a positive int"),
        (torch.full((10, 2), float("nan")), torch.randn(10, 2), 3, "real holds NaN"),
    ],
)
def test_invalid_inputs_raise(real: Tensor, fake: Tensor, k: int, message: str) -> None:
    for fn in (prdc.precision_recall, prdc.density_coverage):
        with pytest.raises(ValueError, match=message):
            fn(real, fake, k)

"""Stacked MNIST: each sample is three MNIST digits drawn independently and stacked as the R, G and B
channels (3 x 28 x 28 in [-1, 1]), so the data have 10^3 = 1,000 modes (digit triples).

The sets are fixed: the triples' indices are drawn once by torch's CPU generator from a fixed seed
and pinned by the sha256 of the index tensor, checked on every load (a torch whose generator draws
differently is one DataError line, never silently other data). Building a set from the MNIST files
takes a second, so nothing else is cached.

    train: 128,000 triples of MNIST train-split digits, seed 0      (PacGAN's num_training_sample)
    test:   26,000 triples of MNIST test-split digits, seed 1       (PacGAN's num_test_sample)

Source: fjxmlzn/PacGAN, stacked_MNIST_experiments/VEEGAN_experiment/model.py (DCGAN.load_mnist) and
config.py (num_training_sample 128000, num_test_sample 26000). There the 128,000 triples are drawn
with replacement (np.random.randint, a new seed each run) from the 70,000 digits of MNIST's train
and test files together, each channel independently, and scaled by 1/255 to [0, 1]. Differences here,
with reasons: (1) digits come from the train split only, so the test split stays unseen by the data
and scores the classifier and the real-sample checks; (2) one fixed draw for every run (seed 0), so
runs differ only by their own seed and a configuration hash names one data set; (3) the range is
[-1, 1], the range of G's tanh (PacGAN fed [0, 1] data to a D against tanh samples in [-1, 1]).
"""

from __future__ import annotations

import hashlib

import torch
from torch import Tensor

from lossbench.errors import DataError

NAME = "stacked-mnist"
SIZES = {"train": 128_000, "test": 26_000}
SEEDS = {"train": 0, "test": 1}
MNIST_SIZES = {"train": 60_000, "test": 10_000}
# sha256 of the int64 index tensor (N x 3, little-endian bytes) each split draws; pinned by tests
INDEX_SHA256 = {
    "train": "d3d847638cd5df1c16813b9f99bd6e4c9e361cf1cbc394a2ffb7d50db96deeaa",
    "test": "7378acde5b199f0c7a05518fc8228d7dcbf98fa1f72a1b60ddc79b7f2b1dbd55",
}


def indices(split: str) -> Tensor:
    """The (N, 3) MNIST indices of a split's triples: channel c of sample i is digit indices[i, c]."""
    g = torch.Generator().manual_seed(SEEDS[split])
    return torch.randint(MNIST_SIZES[split], (SIZES[split], 3), generator=g, dtype=torch.int64)


def digest(idx: Tensor) -> str:
    return hashlib.sha256(idx.contiguous().numpy().astype("<i8").tobytes()).hexdigest()


def checked_indices(split: str) -> Tensor:
    idx = indices(split)
    if (got := digest(idx)) != INDEX_SHA256[split]:
        raise DataError(f"{NAME} {split}: this torch draws other triples (index sha256 {got[:12]}..., pinned "
                        f"{INDEX_SHA256[split][:12]}...); runs here would not be on the registered data")  # fmt: skip
    return idx


def stack(digits: Tensor, idx: Tensor) -> Tensor:
    """Gray digits (M x 1 x 28 x 28) and indices (N x 3) -> N x 3 x 28 x 28, channel c = digits[idx[:, c]]."""
    return digits[:, 0].index_select(0, idx.reshape(-1)).view(len(idx), 3, *digits.shape[2:])

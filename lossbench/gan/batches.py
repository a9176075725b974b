"""How real batches are drawn from a training set of N examples: name -> a per-seed sampler of
batch indices (`batching` in the configuration).

A sampler returns, each call, the indices of `batch` inputs of D, each input `pack` examples
(PacGAN's packing, lossbench.train.players.pack): batch * pack indices, input-major, so that pack
groups consecutive indices into one input.

- iid: every index uniform on {0..N-1}, independently, with replacement, at every draw (the
  default, and lossbench's behaviour before the option existed).
- epoch: a fixed table of N inputs; each epoch a fresh permutation of them, read `batch` inputs at a
  time without replacement (drop-last: an epoch is floor(N / batch) batches, the N mod batch inputs
  left over sit out that epoch; the next one is a fresh permutation). Input j is example j in its
  first slot and example sigma_i(j) in slot i > 1, sigma_i a permutation drawn once per seed: every
  example is read exactly once per slot per epoch (once per epoch without packing, as image
  training usually does it).
- epoch-bootstrap: as epoch, but slot i of input j is example a_i(j), with every a_i(j) drawn
  uniformly with replacement, once per seed: the table is m independent bootstrap resamples of the
  training set, side by side. This is PacGAN's code (fjxmlzn/PacGAN, synthetic_data_experiments/
  PacGAN/pacgan/datasets.py, GaussianPackingMixture: `ids = randint(0, N, size=N)` per packing slot,
  hstacked into N fixed packed examples, pack 1 included; streams.py: fuel's ShuffledScheme over
  them, a fresh shuffle each epoch, batches without replacement).

Every draw comes from the seed's own streams: permutations from its "data" stream (the one iid
draws from), the table from its "tuples" stream, derived from the seed alone, so the table needs no
checkpoint and seeds never share a draw. A sampler's state (the epoch's permutation and the position
in it) is checkpointed with the seed (`state_dict`), so a run resumed mid-epoch reads exactly the
batches the uninterrupted run reads.
"""

from __future__ import annotations

from typing import Any, Protocol

import torch
from torch import Tensor

from lossbench import rng
from lossbench.errors import CheckpointError
from lossbench.registry import Registry


class Sampler(Protocol):
    def draw(self, n: int, g: torch.Generator) -> Tensor:
        """batch * pack indices into a training set of n examples, on g's device."""
        ...

    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


# name -> (seed, batch, pack, device) -> Sampler
BATCHINGS: Registry[Any] = Registry("batching", key="batching")


@BATCHINGS.register("iid")
class IID:
    """Uniform indices with replacement at every draw; nothing to checkpoint."""

    def __init__(self, seed: int, batch: int, pack: int, device: torch.device | str = "cpu") -> None:
        self.size = batch * pack

    def draw(self, n: int, g: torch.Generator) -> Tensor:
        return torch.randint(n, (self.size,), generator=g, device=g.device)

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


def identity_and_permutations(n: int, pack: int, g: torch.Generator) -> Tensor:
    """epoch's table (pack, n): row 0 is 0..n-1, rows 1.. are permutations of it."""
    shuffled = [torch.randperm(n, generator=g, device=g.device) for _ in range(pack - 1)]
    return torch.stack([torch.arange(n, device=g.device), *shuffled])


def bootstraps(n: int, pack: int, g: torch.Generator) -> Tensor:
    """epoch-bootstrap's table (pack, n): every entry uniform on {0..n-1}, with replacement."""
    return torch.randint(n, (pack, n), generator=g, device=g.device)


class Epochs:
    """A fixed table of n inputs (each `pack` example indices), shuffled afresh every epoch and
    read `batch` inputs at a time without replacement."""

    table_of = staticmethod(identity_and_permutations)

    def __init__(self, seed: int, batch: int, pack: int, device: torch.device | str = "cpu") -> None:
        self.seed, self.batch, self.pack, self.device = seed, batch, pack, torch.device(device)
        self.table: Tensor | None = None  # (pack, n), from the seed's "tuples" stream
        self.order: Tensor | None = None  # this epoch's permutation of the n inputs
        self.pos = 0  # inputs of `order` already read

    def draw(self, n: int, g: torch.Generator) -> Tensor:
        if n < self.batch:
            raise ValueError(f"a training set of {n} examples holds no batch of {self.batch}")
        if self.table is None or self.table.shape[1] != n:
            self.table = self.table_of(n, self.pack, rng.generator(self.seed, "tuples", g.device))
        if self.order is not None and self.order.shape[0] != n:
            raise CheckpointError(f"the checkpoint's epoch is a permutation of {self.order.shape[0]} examples; "
                                  f"this training set has {n}")  # fmt: skip
        if self.order is None or self.pos + self.batch > n:  # a new epoch: a fresh shuffle
            self.order, self.pos = torch.randperm(n, generator=g, device=g.device), 0
        rows = self.order[self.pos : self.pos + self.batch]
        self.pos += self.batch
        return self.table[:, rows].T.reshape(-1)  # input-major: the pack slots of an input are consecutive

    def state_dict(self) -> dict[str, Any]:
        return {} if self.order is None else {"order": self.order.cpu(), "pos": self.pos}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "order" in state:  # a checkpoint written before the first draw (or by iid) holds none
            self.order, self.pos = state["order"].to(self.device), int(state["pos"])
        else:
            self.order, self.pos = None, 0


@BATCHINGS.register("epoch")
class Epoch(Epochs):
    """epoch: slot 1 is the training set itself, slots 2.. fixed permutations of it."""


@BATCHINGS.register("epoch-bootstrap")
class EpochBootstrap(Epochs):
    """epoch-bootstrap: every slot a fixed bootstrap resample of the training set (PacGAN's code)."""

    table_of = staticmethod(bootstraps)


def sampler(name: str, seed: int, batch: int, pack: int, device: torch.device | str = "cpu") -> Sampler:
    return BATCHINGS.get(name)(seed, batch, pack, device)

"""Each seed's random inputs to a training step, drawn from its own streams (lossbench.rng): batch
indices, latent noise, instance noise, penalty noise. A seed trained in a group draws exactly what
it draws alone."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor

from lossbench.gan import latent
from lossbench.gan.batches import Sampler
from lossbench.gan.member_adam import per_member
from lossbench.gan.penalties import Noises
from lossbench.train.players import Players, pack

if TYPE_CHECKING:
    from lossbench.config import RunConfig
    from lossbench.train.state import TrainState


class DInputs(NamedTuple):
    """One D step's draws (S, ...): the real batch (instance-noised, packed), the fakes' z, their
    instance noise (or None) and the penalty's noise (or None). A simultaneous step draws the same."""

    real: Tensor
    z: Tensor
    e: Tensor | None
    u: Noises


class GInputs(NamedTuple):
    """G's step's draws: z, a real batch for relativistic losses (noised, packed; else None) and the
    fakes' instance noise (or None)."""

    z: Tensor
    real: Tensor | None
    e: Tensor | None


@dataclass
class Draws:
    """Each seed's random inputs, from its own streams: batch indices, latent noise, penalty noise.
    batch_size counts samples (with packing, D's batch times the pack)."""

    data: Tensor
    streams: list[dict[str, torch.Generator]]
    batch_size: int
    z_dim: int
    sigma: float | Tensor = 0.0  # instance noise on D's inputs, or per member (S,); 0.0 draws nothing
    z_dist: str = "normal"  # lossbench.gan.latent
    samplers: list[Sampler] = field(default_factory=list)  # per seed (lossbench.gan.batches)
    reuse_d_noise: bool = False  # G's step takes the z of the D step before it (g_noise "d-step")
    last: Tensor | None = None  # the latest z drawn

    @classmethod
    def training(cls, cfg: RunConfig, state: TrainState, data: Tensor) -> Draws:
        """The draws the training loop takes for `state` from `data` (on the training device): D's
        batch times the pack, the latent, the players' instance-noise sigma (per member in a group
        of configurations), the seeds' samplers and cfg's G-noise rule."""
        t = cfg.train
        return cls(data, state.streams, t.batch_size * t.pack, cfg.model.z_dim, state.players.instance_noise,
                   cfg.model.z_dist, state.samplers, reuse_d_noise=t.g_noise == "d-step")  # fmt: skip

    def real(self) -> Tensor:  # (S, B, ...): index_select is one contiguous gather, 3x faster than data[idx] on CPU
        n, bs = self.data.shape[0], self.batch_size
        idx = torch.cat([b.draw(n, s["data"]) for b, s in zip(self.samplers, self.streams)])
        return self.data.index_select(0, idx).view(len(self.streams), bs, *self.data.shape[1:])

    def noise(self) -> Tensor:  # (S, B, z_dim)
        self.last = torch.stack([latent.sample(self.z_dist, (self.batch_size, self.z_dim), s["noise"], self.data.device)
                                 for s in self.streams])  # fmt: skip
        return self.last

    def g_noise(self) -> Tensor:
        """G's z: a fresh draw, or with reuse_d_noise the z of the D step just before (compare_gan's
        run_single_train_step feeds G the batch_z of that D step), drawing nothing."""
        return self.last if self.reuse_d_noise and self.last is not None else self.noise()

    def instance_noise(self, like: Tensor) -> Tensor | None:
        """sigma * N(0, 1) noise shaped like a batch of samples (S, B, *sample), or None when off."""
        if not torch.is_tensor(self.sigma) and self.sigma == 0:
            return None
        shape = (self.batch_size, *self.data.shape[1:])
        e = torch.stack([torch.randn(shape, generator=s["instance"], device=self.data.device) for s in self.streams])
        return (per_member(self.sigma, e) if torch.is_tensor(self.sigma) else self.sigma) * e

    def with_instance_noise(self, x: Tensor) -> Tensor:
        e = self.instance_noise(x)
        return x if e is None else x + e

    def penalty_noise(self, P: Players, real: Tensor) -> Noises:
        """Each seed's penalty noise for its (packed) real batch, stacked over seeds per tensor."""
        u = [P.penalty.draw(real[k], s["penalty"]) for k, s in enumerate(self.streams)]
        return None if u[0] is None else tuple(torch.stack(parts) for parts in zip(*u))

    def for_d_step(self, P: Players) -> DInputs:
        """A D step's draws, each stream in this order (the order fixes the numbers: a member draws
        what it draws alone): the real batch and its instance noise, z, the fakes' instance noise,
        the penalty's noise."""
        real = pack(self.with_instance_noise(self.real()), P.pack, batch_dim=1)
        z = self.noise()
        e = self.instance_noise(z)
        return DInputs(real, z, e, self.penalty_noise(P, real))

    def for_g_step(self, P: Players) -> GInputs:
        """G's step's draws, in this order: z (`g_noise`), a real batch and its instance noise when
        the loss needs one, the fakes' instance noise."""
        z = self.g_noise()
        real = pack(self.with_instance_noise(self.real()), P.pack, batch_dim=1) if P.needs_real else None
        return GInputs(z, real, self.instance_noise(z))

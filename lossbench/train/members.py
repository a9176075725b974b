"""Members of one trained group: which configurations may train together, and the values in which
they may differ.

A group trains S members (configuration, seed) as one set of stacked, vmapped players
(lossbench.train.players.Stacked). Members may differ in their seed and in the scalar
hyperparameters that enter the step as numbers, never as shapes or code paths:

    lr_g, lr_d, beta1, beta2      per-member optimiser values (Adam: lossbench.gan.member_adam)
    penalty_weight                lambda in L_D + lambda * penalty
    weight_clip                   c in clamp(psi, -c, c), when clipping is on (c > 0) for every member
    instance_noise                sigma of the noise on D's inputs, when it is on (sigma > 0) for every member

Everything else fixes the computation (architecture, data set, loss, penalty, n_critic, batch size,
pack, update rule, latent, budget, schedules): `shape_key` is the configuration with the values
above blanked, and members group only when their keys are equal. Whether clipping or instance noise
runs at all stays in the key (c = 0 and sigma = 0 mean "off": nothing is clamped or drawn), and so
does the learning rate of an optimiser other than Adam (torch's SGD and RMSprop take one per group).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from lossbench.config import RunConfig
from lossbench.errors import ConfigError
from lossbench.train.players import UNSTACKABLE

VARYING = ("lr_g", "lr_d", "beta1", "beta2", "penalty_weight", "weight_clip", "instance_noise")
MEMBER_OPTIMIZERS = ("adam",)  # optimisers that take a learning rate and betas per member


def check_stackable(cfg: RunConfig) -> None:
    """Refuse, before anything is written, a configuration that cannot train in a group: spectral
    norm's power iteration updates D's buffers in place, which vmap cannot batch."""
    if cfg.model.d_norm == "spectral":
        raise ConfigError(UNSTACKABLE)


def check_whole_step(cfg: RunConfig) -> None:
    """Refuse, before anything is written, what --whole-step (lossbench.train.whole_step) cannot
    train: another optimiser than Adam (its flat per-member state is MemberAdam's), consensus (a
    double backward through the gradients). Every update rule has a whole step."""
    t = cfg.train
    if t.optimizer not in MEMBER_OPTIMIZERS:
        raise ConfigError(f"--whole-step trains optimizer={'|'.join(MEMBER_OPTIMIZERS)}, not {t.optimizer}")
    if t.consensus > 0:
        raise ConfigError("--whole-step does not take consensus > 0 (its double backward through the gradients)")


def shape_key(cfg: RunConfig) -> RunConfig:
    """cfg with the values members of a group may differ in made equal (see the module's docstring):
    two configurations train in one group exactly when their keys are equal."""
    t, loss = cfg.train, cfg.loss
    per_member = t.optimizer in MEMBER_OPTIMIZERS
    train = dataclasses.replace(
        t, weight_clip=float(t.weight_clip > 0), beta1=0.0, beta2=0.0,
        lr_g=0.0 if per_member else t.lr_g, lr_d=0.0 if per_member else t.lr_d,
    )  # fmt: skip
    return dataclasses.replace(
        cfg, train=train,
        loss=dataclasses.replace(loss, penalty_weight=0.0, instance_noise=float(loss.instance_noise > 0)),
    )  # fmt: skip


@dataclass(frozen=True)
class Hyper:
    """The per-member values of a group, each of shape (S,), on the training device: lr and betas in
    float64 (torch's optimisers compute with them as Python floats), the others in the
    parameters' dtype (as a Python float multiplies a tensor of that dtype)."""

    lr_g: Tensor
    lr_d: Tensor
    beta1: Tensor
    beta2: Tensor
    penalty_weight: Tensor
    weight_clip: Tensor
    instance_noise: Tensor

    @classmethod
    def of(cls, cfgs: Sequence[RunConfig], device: torch.device, dtype: torch.dtype | None = None) -> Hyper:
        """The members' values; their configurations must share one `shape_key`."""
        keys = {shape_key(c) for c in cfgs}
        if len(keys) > 1:
            raise ValueError("members of one group must share every value but " + ", ".join(VARYING))
        dtype = dtype or torch.get_default_dtype()
        values = {name: [_value(c, name) for c in cfgs] for name in VARYING}
        wide = ("lr_g", "lr_d", "beta1", "beta2")
        return cls(**{name: torch.tensor(v, dtype=torch.float64 if name in wide else dtype, device=device)
                      for name, v in values.items()})  # fmt: skip

    def uniform(self, name: str) -> bool:
        """Whether every member has the same value of `name`."""
        v = getattr(self, name)
        return bool((v == v[0]).all())


def _value(cfg: RunConfig, name: str) -> float:
    return float(getattr(cfg.train if hasattr(cfg.train, name) else cfg.loss, name))

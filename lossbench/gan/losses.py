"""Adversarial losses: pure functions of the discriminator's raw outputs (logits / critic values).

Notation: d_r = D(x) on a real batch, d_f = D(G(z)) on a fake batch, sigma the logistic sigmoid,
E the batch mean. Every loss returns the scalar each player *minimises*. Log-probabilities are taken
in their stable forms, log sigma(l) = -softplus(-l) and log(1 - sigma(l)) = -softplus(l), so logits
of +-1e3 give finite values and gradients.

Public API (plugins and tests rely on it):
    get(name)                  -> a loss with .discriminator_loss(d_real, d_fake)
                                  and .generator_loss(d_fake, d_real=None)
    names()                    -> registered names
    gradient_penalty(D, x, y)  -> the WGAN-GP term, without its weight
A plugin loss registers with `@LOSSES.register("name")`, through the entry-point group
`lossbench.losses`, or is named directly as `package.module:ClassName`.
Its default hyperparameters live in its card, registry/losses/<name>.toml.
"""

from __future__ import annotations

import importlib
from typing import Protocol

import torch.nn.functional as F
from torch import Tensor

from lossbench.errors import ConfigError
from lossbench.gan.penalties import gradient_penalty
from lossbench.registry import Registry

__all__ = [
    "LOSSES", "Loss", "check", "get", "names", "describe", "needs_real", "gradient_penalty",
    "Minimax", "NonSaturating", "LeastSquares", "Wasserstein", "Hinge", "Relativistic", "RelativisticAverage",
]  # fmt: skip


class Loss(Protocol):
    """What the trainer needs of a loss. `needs_real_in_generator` is optional (default False)."""

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor: ...

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor: ...


LOSSES: Registry[type] = Registry("loss", entry_point_group="lossbench.losses", key="loss")


def _bce_discriminator(d_real: Tensor, d_fake: Tensor) -> Tensor:
    """L_D = -E[log sigma(d_r)] - E[log(1 - sigma(d_f))] = E[softplus(-d_r)] + E[softplus(d_f)]."""
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


@LOSSES.register("minimax")
class Minimax:
    """Original minimax game (Goodfellow et al. 2014, eq. 1).

    L_D = -E[log sigma(d_r)] - E[log(1 - sigma(d_f))]
    L_G =  E[log(1 - sigma(d_f))] = -E[softplus(d_f)]
    Saturates: dL_G/dd_f = -sigma(d_f) -> 0 as d_f -> -inf, i.e. when D confidently rejects fakes
    early in training, G gets no gradient.
    """

    needs_real_in_generator = False

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return _bce_discriminator(d_real, d_fake)

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return -F.softplus(d_fake).mean()  # log(1 - sigma(d_f))


@LOSSES.register("non-saturating")
class NonSaturating:
    """Non-saturating game (Goodfellow et al. 2014, section 3).

    L_D = -E[log sigma(d_r)] - E[log(1 - sigma(d_f))]
    L_G = -E[log sigma(d_f)] = E[softplus(-d_f)]
    Does not saturate: dL_G/dd_f = sigma(d_f) - 1 -> -1 as d_f -> -inf.
    """

    needs_real_in_generator = False

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return _bce_discriminator(d_real, d_fake)

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return F.softplus(-d_fake).mean()  # -log sigma(d_f)


# DRAGAN (Kodali et al. 2017) is the non-saturating game with its own penalty; its card says so.
LOSSES.add("dragan", NonSaturating)


@LOSSES.register("least-squares")
class LeastSquares:
    """Least-squares GAN (Mao et al. 2017), a=0, b=1, c=1, on the linear output of D.

    L_D = 1/2 E[(d_r - 1)^2] + 1/2 E[d_f^2]
    L_G = 1/2 E[(d_f - 1)^2]
    (compare_gan applies this to sigmoid outputs instead; we follow the paper's linear output.)
    """

    needs_real_in_generator = False

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return 0.5 * (d_real - 1).pow(2).mean() + 0.5 * d_fake.pow(2).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return 0.5 * (d_fake - 1).pow(2).mean()


@LOSSES.register("wgan-gp")
class Wasserstein:
    """Wasserstein critic loss (Arjovsky et al. 2017; with penalty, Gulrajani et al. 2017).

    L_D = E[d_f] - E[d_r]      (the Lipschitz constraint is separate: a penalty or weight clipping)
    L_G = -E[d_f]
    `wgan-gp` pairs it with the `gp` penalty (lambda = 10), `wgan` with weight clipping at 0.01.
    """

    needs_real_in_generator = False

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return d_fake.mean() - d_real.mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return -d_fake.mean()


LOSSES.add("wgan", Wasserstein)


@LOSSES.register("hinge")
class Hinge:
    """Hinge loss (Lim & Ye 2017; Miyato et al. 2018).

    L_D = E[max(0, 1 - d_r)] + E[max(0, 1 + d_f)]
    L_G = -E[d_f]
    """

    needs_real_in_generator = False

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return -d_fake.mean()


@LOSSES.register("rsgan")
class Relativistic:
    """Relativistic standard GAN (Jolicoeur-Martineau 2018), real and fake paired within the batch.

    L_D = -E[log sigma(d_r - d_f)] = E[softplus(d_f - d_r)]
    L_G = -E[log sigma(d_f - d_r)] = E[softplus(d_r - d_f)]
    """

    needs_real_in_generator = True

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.softplus(d_fake - d_real).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        return F.softplus(_required(d_real) - d_fake).mean()


@LOSSES.register("ragan")
class RelativisticAverage:
    """Relativistic average standard GAN (Jolicoeur-Martineau 2018).

    L_D = -E[log sigma(d_r - E[d_f])] - E[log(1 - sigma(d_f - E[d_r]))]
        =  E[softplus(E[d_f] - d_r)]  + E[softplus(d_f - E[d_r])]
    L_G =  E[softplus(E[d_r] - d_f)]  + E[softplus(d_r - E[d_f])]
    """

    needs_real_in_generator = True

    def discriminator_loss(self, d_real: Tensor, d_fake: Tensor) -> Tensor:
        return F.softplus(d_fake.mean() - d_real).mean() + F.softplus(d_fake - d_real.mean()).mean()

    def generator_loss(self, d_fake: Tensor, d_real: Tensor | None = None) -> Tensor:
        d_real = _required(d_real)
        return F.softplus(d_real.mean() - d_fake).mean() + F.softplus(d_real - d_fake.mean()).mean()


def _required(d_real: Tensor | None) -> Tensor:
    if d_real is None:
        raise ValueError("this relativistic loss needs d_real in generator_loss")
    return d_real


def _import_object(spec: str) -> object:
    """`package.module:Name` -> the object, with a one-line error when it is not there."""
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"cannot load loss '{spec}': {exc}") from None


def _entry(name: str) -> object:
    return _import_object(name) if ":" in name else LOSSES.get(name)


def check(name: str) -> object:
    """The entry (a class or an object) registered as `name`, or importable as `package.module:Name`,
    once it has both methods; an unknown name or a missing method is one line. Nothing is constructed."""
    entry = _entry(name)
    for method in ("discriminator_loss", "generator_loss"):
        if not callable(getattr(entry, method, None)):
            raise ConfigError(f"loss '{name}' has no {method}(...) method")
    return entry


def get(name: str) -> Loss:
    """The loss registered as `name` (or importable as `package.module:Name`), ready to call."""
    entry = check(name)
    return entry() if isinstance(entry, type) else entry  # type: ignore[return-value]


def needs_real(loss: Loss) -> bool:
    """Whether G's objective also takes D(x) on a real batch (relativistic losses)."""
    return bool(getattr(loss, "needs_real_in_generator", False))


def names() -> list[str]:
    return LOSSES.names()


def describe(name: str) -> str:
    """The loss's docstring, which holds its formula and paper."""
    entry = _entry(name)
    return (getattr(entry, "__doc__", None) or "").strip()

"""Counterfactual learning signals: on the fake logits d_f of every generator step, what each standard
generator loss *would* pass back to G, whichever loss is trained.

For a generator loss that is a batch mean, L_G = E_i l(d_f,i), the learning signal is

    B * mean_i |dL_G / d d_f,i| = mean_i |l'(d_f,i)|

which the trainer reads as `g_signal` off the trained loss's own backward pass
(lossbench.train.players.learning_signal). Here the same quantity in closed form for the losses not
trained, evaluated on the same d_f, so one run shows on its own trajectory what minimax and
non-saturating (and least squares) would give G: comparing two runs instead mixes the loss with the
trajectory it produced. Logged as `g_signal_<name>`; on a run of that loss it equals `g_signal`.

The Wasserstein and hinge generators (L_G = -E d_f) pass 1 at every logit: a constant, not logged.
Each is O(B) elementwise work on the already computed logits, summed into the G step's accumulator
on the device (no host synchronisation).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from lossbench.registry import Registry


@dataclass(frozen=True)
class Signal:
    fn: Callable[[Tensor], Tensor]  # |l'(d_f)| elementwise
    losses: tuple[str, ...]  # the registered losses whose g_signal this is (tests check it is)


SIGNALS: Registry[Signal] = Registry("counterfactual signal")


def minimax(d_fake: Tensor) -> Tensor:
    """Minimax (Goodfellow et al. 2014, eq. 1): l(d) = log(1 - sigma(d)) = -softplus(d),
    |l'(d)| = sigma(d) -> 0 as d -> -inf (saturates when D rejects the fakes)."""
    return torch.sigmoid(d_fake)


def non_saturating(d_fake: Tensor) -> Tensor:
    """Non-saturating (Goodfellow et al. 2014, section 3): l(d) = -log sigma(d) = softplus(-d),
    |l'(d)| = 1 - sigma(d) = sigma(-d) -> 1 as d -> -inf."""
    return torch.sigmoid(-d_fake)


def least_squares(d_fake: Tensor) -> Tensor:
    """Least squares (Mao et al. 2017, b = c = 1, on D's linear output): l(d) = 1/2 (d - 1)^2,
    |l'(d)| = |d - 1|."""
    return (d_fake - 1).abs()


SIGNALS.add("minimax", Signal(minimax, ("minimax",)))
SIGNALS.add("ns", Signal(non_saturating, ("non-saturating", "dragan")))
SIGNALS.add("ls", Signal(least_squares, ("least-squares",)))

KEYS = tuple(f"g_signal_{name}" for name in SIGNALS.names())  # the accumulator's columns, in this order


def counterfactual_signals(d_fake: Tensor) -> Tensor:
    """Every registered signal, mean_i |l'(d_f,i)| over the batch: (..., B) -> (..., len(KEYS)), in
    float32 whatever precision D ran in. No gradient: d_f is read, not differentiated."""
    d = d_fake.detach().float()
    return torch.stack([SIGNALS.get(name).fn(d).mean(-1) for name in SIGNALS.names()], dim=-1)

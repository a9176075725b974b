"""An exponential moving average of the generator's weights (`--ema beta`), per seed.

After every generator step, for each of G's parameters theta:

    a <- beta * a + (1 - beta) * theta

with `a` starting at G's initial weights (no bias correction, no start delay). Batch-norm running
statistics are not averaged: the averaged generator takes G's current buffers, as StudioGAN's `Ema`
copies them from the generator at each update (Kang et al. 2023, PyTorch-StudioGAN src/utils/ema.py).
It changes nothing in training: it is a second generator, evaluated beside G under `ema_`-prefixed
metric names, checkpointed as "G_ema" and resumed exactly. For several seeds trained together the
average holds the players' stacked parameters (a leading seed dimension) and updates all in one call.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from lossbench.train.players import Players


def update(average: list[Tensor], current: list[Tensor], beta: float) -> None:
    """a <- beta * a + (1 - beta) * theta, in place, for each pair (torch._foreach_lerp_: a + w (theta - a)
    with w = 1 - beta)."""
    torch._foreach_lerp_(average, current, 1.0 - beta)


class GeneratorAverage:
    """The average of `players`' generator weights; `generator(k)` is seed k's averaged G as a module."""

    def __init__(self, players: Players, beta: float) -> None:
        self.beta, self.stacked = beta, getattr(players, "stacked", False)
        G = players.generator(0)
        self.names = [name for name, _ in G.named_parameters()]
        with torch.no_grad():
            self.average = [p.detach().clone() for p in players.g_parameters()]
        self.current = players.g_parameters()  # G's own tensors: the players update them in place
        self._view = copy.deepcopy(G)  # a module of its own: G's stays as the hooks see it

    def update(self, players: Players) -> None:
        with torch.no_grad():
            update(self.average, self.current, self.beta)

    def state_dict(self, k: int = 0) -> dict[str, Tensor]:
        """Seed k's averaged parameters by name, the same whether it trained alone or in a group."""
        return {name: (a[k] if self.stacked else a).detach().clone() for name, a in zip(self.names, self.average)}

    def load_state_dict(self, state: dict[str, Tensor], k: int = 0) -> None:
        with torch.no_grad():
            for name, a in zip(self.names, self.average):
                (a[k] if self.stacked else a).copy_(state[name])

    def generator(self, players: Players, k: int = 0) -> nn.Module:
        """Seed k's averaged G: the average's parameters with G's current buffers (batch-norm statistics)."""
        G = players.generator(k)
        state = G.state_dict() | self.state_dict(k)
        self._view.load_state_dict(state)
        self._view.train(G.training)
        return self._view

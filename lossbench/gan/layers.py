"""Small modules the architectures share (lossbench.gan.models and the nets in files of their own)."""

from __future__ import annotations

from torch import Tensor, nn


class Reshape(nn.Module):
    def __init__(self, *shape: int) -> None:
        super().__init__()
        self.shape = shape

    def forward(self, x: Tensor) -> Tensor:
        return x.view(x.shape[0], *self.shape)


class Critic(nn.Module):
    """Wraps a body ending in one unit, returning shape (B,)."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x).view(-1)

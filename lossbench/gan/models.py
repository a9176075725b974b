"""Architectures: name -> builder of (G, D) for a sample shape. D returns one raw value per sample
(a logit or critic value, shape (B,)); losses apply any squashing themselves.

D never uses batch norm or any other statistic across the batch: per-sample gradient penalties
stay valid, and the trainer may score real and fake samples in one call (lossbench.players). An
architecture registered here must keep D that way.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from lossbench.errors import ConfigError
from lossbench.registry import Registry

Builder = Callable[..., tuple[nn.Module, nn.Module]]  # (shape, z_dim, **options) -> (G, D)

ARCHS: Registry[Builder] = Registry("arch")
D_NORMS: Registry[Callable[[nn.Module], nn.Module]] = Registry("d-norm")


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


@ARCHS.register("mlp")
def mlp(shape: tuple[int, ...], z_dim: int, **_: float) -> tuple[nn.Module, nn.Module]:
    """G: z -> 256 -> LeakyReLU(0.2) -> prod(shape) -> tanh; D: prod(shape) -> 256 -> LeakyReLU(0.2) -> 1."""
    if len(shape) != 3:
        raise ConfigError(f"arch 'mlp' is for images; this data set has samples of shape {shape} (use mlp2d)")
    n = math.prod(shape)
    g = nn.Sequential(nn.Linear(z_dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, n), nn.Tanh(), Reshape(*shape))
    d = Critic(nn.Sequential(nn.Flatten(), nn.Linear(n, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1)))
    return g, d


@ARCHS.register("mlp2d")
def mlp2d(shape: tuple[int, ...], z_dim: int, **_: float) -> tuple[nn.Module, nn.Module]:
    """2-D mixtures (Metz et al. 2017 style): 3 hidden layers of 128 with ReLU each side, linear output."""
    if shape != (2,):
        raise ConfigError(f"arch 'mlp2d' is for 2-D points; this data set has samples of shape {shape}")

    def body(n_in: int, n_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
            nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, n_out),
        )  # fmt: skip

    return body(z_dim, 2), Critic(body(2, 1))


@ARCHS.register("dcgan")
def dcgan(shape: tuple[int, ...], z_dim: int, **_: float) -> tuple[nn.Module, nn.Module]:
    """DCGAN (Radford et al. 2016) for 28x28 (start 7x7, 2 upsamplings) or 32x32 (start 4x4, 3).

    G: z -> linear -> C x s x s -> [ConvT 4/2/1, BN, ReLU] ... -> ConvT -> tanh.
    D: [Conv 4/2/1, LeakyReLU(0.2)] ... -> linear -> 1; no batch norm in D.
    """
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in (28, 32):
        raise ConfigError(f"arch 'dcgan' needs 28x28 or 32x32 images; this data set has shape {shape}")
    channels, size = shape[0], shape[1]
    start = 7 if size == 28 else 4
    n_up = int(math.log2(size // start))
    widths = [64 * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. [128, 64] or [256, 128, 64]

    g_layers: list[nn.Module] = [
        nn.Linear(z_dim, widths[0] * start * start),
        Reshape(widths[0], start, start),
        nn.BatchNorm2d(widths[0]),
        nn.ReLU(),
    ]
    for w_in, w_out in zip(widths, widths[1:]):
        g_layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1), nn.BatchNorm2d(w_out), nn.ReLU()]
    g_layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1), nn.Tanh()]

    d_widths = widths[::-1]  # e.g. [64, 128]
    d_layers: list[nn.Module] = []
    for w_in, w_out in zip([channels] + d_widths[:-1], d_widths):
        d_layers += [nn.Conv2d(w_in, w_out, 4, 2, 1), nn.LeakyReLU(0.2)]
    d_layers += [nn.Flatten(), nn.Linear(d_widths[-1] * start * start, 1)]
    return nn.Sequential(*g_layers), Critic(nn.Sequential(*d_layers))


class DiracGenerator(nn.Module):
    """G(z) = theta for every z: one parameter (Mescheder et al. 2018, §2)."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([float(theta)]))

    def forward(self, z: Tensor) -> Tensor:
        return self.theta.expand(z.shape[0], 1)

    def readout(self) -> dict[str, float]:
        return {"theta": float(self.theta.detach()[0])}


class DiracDiscriminator(nn.Module):
    """D(x) = psi * x: one parameter, no bias (Mescheder et al. 2018, §2)."""

    def __init__(self, psi: float) -> None:
        super().__init__()
        self.psi = nn.Parameter(torch.tensor([float(psi)]))

    def forward(self, x: Tensor) -> Tensor:
        return x[:, 0] * self.psi

    def readout(self) -> dict[str, float]:
        return {"psi": float(self.psi.detach()[0])}


@ARCHS.register("dirac")
def dirac(shape: tuple[int, ...], z_dim: int, dirac_theta: float = 1.0, dirac_psi: float = 1.0,
          **_: float) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """The Dirac-GAN: data a point mass at 0 on the line, G a point theta, D linear in x."""
    if tuple(shape) != (1,):
        raise ConfigError(f"arch 'dirac' needs 1-D samples (--dataset dirac), not samples of shape {tuple(shape)}")
    return DiracGenerator(dirac_theta), DiracDiscriminator(dirac_psi)


def readouts(*modules: nn.Module) -> dict[str, float]:
    """Named scalars an architecture exposes for logging (e.g. the Dirac-GAN's theta and psi):
    any module of G or D with a `readout()` method contributes; others nothing."""
    out: dict[str, float] = {}
    for module in modules:
        for m in module.modules():
            if callable(getattr(m, "readout", None)):
                out |= m.readout()
    return out


@D_NORMS.register("none")
def no_norm(d: nn.Module) -> nn.Module:
    return d


@D_NORMS.register("spectral")
def spectral(d: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every linear and convolution weight of D."""
    for module in list(d.modules()):
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            spectral_norm(module)
    return d


def build(
    arch: str, shape: tuple[int, ...], z_dim: int, d_norm: str = "none", **options: float
) -> tuple[nn.Module, nn.Module]:
    """(G, D) for samples of `shape`, initialised from the global RNG: fork it around this call.
    `options` are architecture settings (dirac_theta, dirac_psi); an architecture ignores the others."""
    g, d = ARCHS.get(arch)(shape, z_dim, **options)
    return g, D_NORMS.get(d_norm)(d)


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, generator: torch.Generator, batch_size: int = 500) -> Tensor:
    """n samples from G in eval mode (batch-norm running statistics), without touching its state."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = [
        G(torch.randn(min(batch_size, n - i), z_dim, generator=generator, device=device))
        for i in range(0, n, batch_size)
    ]
    G.train(was_training)
    return torch.cat(out)

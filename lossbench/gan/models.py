"""Architectures: name -> builder of (G, D) for a sample shape. D returns one raw value per sample
(a logit or critic value, shape (B,)); losses apply any squashing themselves.

A builder takes (shape, z_dim, pack=1, d_batchnorm=False, **options):
- `pack`: PacGAN's packing (Lin et al. 2018): D scores `pack` samples at once, concatenated along
  the first sample axis (channels of an image, coordinates of a point), so its input has
  pack * shape[0] channels. An architecture that cannot pack refuses pack > 1.
- `d_batchnorm`: batch norm in D where the architecture has it (infogan, as compare_gan). By
  default D uses no statistic across the batch, so per-sample gradient penalties stay valid and the
  trainer may score real and fake samples in one call (lossbench.train.players); a D with batch
  statistics is scored on real and fake batches separately, and takes no input-gradient penalty
  (the configuration refuses that pairing) unless d_batchnorm_penalty, compare_gan's protocol: the
  penalty's points are then one more batch, and grad_x runs through its statistics. Its batch norm
  always uses the batch's statistics (D is never run in eval mode), so it keeps no running averages.

Each G carries two plain attributes set by `build`: `z_dist` (its latent distribution,
lossbench.gan.latent) and `data_range` (the range of its output: (-1, 1) for tanh outputs, (0, 1)
for infogan's sigmoid). The trainer shows D real data in that range; `generate` always returns
samples in [-1, 1], the range every metric and sample grid reads.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from lossbench.errors import ConfigError
from lossbench.gan import latent, pacgan_dcgan
from lossbench.gan.layers import Critic, Reshape
from lossbench.registry import Registry

Builder = Callable[..., tuple[nn.Module, nn.Module]]  # (shape, z_dim, pack, d_batchnorm, **options) -> (G, D)
STANDARD_RANGE = (-1.0, 1.0)  # the data sets' range, and G's unless its builder says otherwise

ARCHS: Registry[Builder] = Registry("arch", key="arch")
D_NORMS: Registry[Callable[[nn.Module], nn.Module]] = Registry("d-norm", key="d_norm")
G_BN_STATS: Registry[Callable[[nn.Module, int], nn.Module]] = Registry("g-bn-stats", key="g_bn_stats")
ARCHS.add("pacgan-dcgan", pacgan_dcgan.pacgan_dcgan)  # a net of its own file


@ARCHS.register("mlp")
def mlp(shape: tuple[int, ...], z_dim: int, pack: int = 1, **_: object) -> tuple[nn.Module, nn.Module]:
    """G: z -> 256 -> LeakyReLU(0.2) -> prod(shape) -> tanh; D: pack * prod(shape) -> 256 -> LeakyReLU(0.2) -> 1."""
    if len(shape) != 3:
        raise ConfigError(f"arch 'mlp' is for images; this data set has samples of shape {shape} (use mlp2d)",
                          key="arch")  # fmt: skip
    n = math.prod(shape)
    g = nn.Sequential(nn.Linear(z_dim, 256), nn.LeakyReLU(0.2), nn.Linear(256, n), nn.Tanh(), Reshape(*shape))
    d = Critic(nn.Sequential(nn.Flatten(), nn.Linear(pack * n, 256), nn.LeakyReLU(0.2), nn.Linear(256, 1)))
    return g, d


@ARCHS.register("mlp2d")
def mlp2d(shape: tuple[int, ...], z_dim: int, pack: int = 1, **_: object) -> tuple[nn.Module, nn.Module]:
    """2-D mixtures (Metz et al. 2017 style): 3 hidden layers of 128 with ReLU each side, linear output."""
    if shape != (2,):
        raise ConfigError(f"arch 'mlp2d' is for 2-D points; this data set has samples of shape {shape}", key="arch")

    def body(n_in: int, n_out: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Linear(n_in, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
            nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, n_out),
        )  # fmt: skip

    return body(z_dim, 2), Critic(body(2 * pack, 1))


@ARCHS.register("dcgan")
def dcgan(shape: tuple[int, ...], z_dim: int, pack: int = 1, **_: object) -> tuple[nn.Module, nn.Module]:
    """DCGAN (Radford et al. 2016) for 28x28 (start 7x7, 2 upsamplings) or 32x32 (start 4x4, 3).

    G: z -> linear -> C x s x s -> [ConvT 4/2/1, BN, ReLU] ... -> ConvT -> tanh.
    D: [Conv 4/2/1, LeakyReLU(0.2)] ... -> linear -> 1; no batch norm in D.
    """
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in (28, 32):
        raise ConfigError(f"arch 'dcgan' needs 28x28 or 32x32 images; this data set has shape {shape}", key="arch")
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
    for w_in, w_out in zip([pack * channels] + d_widths[:-1], d_widths):
        d_layers += [nn.Conv2d(w_in, w_out, 4, 2, 1), nn.LeakyReLU(0.2)]
    d_layers += [nn.Flatten(), nn.Linear(d_widths[-1] * start * start, 1)]
    return nn.Sequential(*g_layers), Critic(nn.Sequential(*d_layers))


@ARCHS.register("infogan")
def infogan(shape: tuple[int, ...], z_dim: int, pack: int = 1, d_batchnorm: bool = False,
            **_: object) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """The InfoGAN-style nets Lucic et al. 2018 use for every model (compare_gan's infogan), for
    28x28 gray or 32x32 colour images (s = size / 4):

    G: z -> FC 1024, BN, LReLU(0.2) -> FC 128*s*s, BN, LReLU -> deconv 64 4x4/2, BN, LReLU
         -> deconv C 4x4/2 -> sigmoid: output in [0, 1], as the paper's (data_range (0, 1)).
    D: conv 64 4x4/2, LReLU -> conv 128 4x4/2, [BN], LReLU -> FC 1024, [BN], LReLU -> FC 1;
       [BN] only with d_batchnorm (a searched setting in the paper).

    The [0, 1] output meets the rest of lossbench in two places: during training D sees real images
    rescaled to [0, 1] too (as in the paper, whose data are in [0, 1]); `generate` maps samples back
    to [-1, 1] for the metrics and grids (FID's Inception input is the same uint8 image either way).
    The losses see only D's raw outputs, so the output range never enters them.
    """
    if len(shape) != 3 or shape[1] != shape[2] or shape[1] not in (28, 32):
        raise ConfigError(f"arch 'infogan' needs 28x28 or 32x32 images; this data set has shape {shape}", key="arch")
    channels, size = shape[0], shape[1]
    s = size // 4
    g = nn.Sequential(
        nn.Linear(z_dim, 1024), nn.BatchNorm1d(1024), nn.LeakyReLU(0.2),
        nn.Linear(1024, 128 * s * s), nn.BatchNorm1d(128 * s * s), nn.LeakyReLU(0.2), Reshape(128, s, s),
        nn.ConvTranspose2d(128, 64, 4, 2, 1), nn.BatchNorm2d(64), nn.LeakyReLU(0.2),
        nn.ConvTranspose2d(64, channels, 4, 2, 1), nn.Sigmoid(),
    )  # fmt: skip

    def bn(kind: type[nn.Module], n: int) -> list[nn.Module]:
        return [kind(n, track_running_stats=False)] if d_batchnorm else []

    d = Critic(nn.Sequential(
        nn.Conv2d(pack * channels, 64, 4, 2, 1), nn.LeakyReLU(0.2),
        nn.Conv2d(64, 128, 4, 2, 1), *bn(nn.BatchNorm2d, 128), nn.LeakyReLU(0.2),
        nn.Flatten(), nn.Linear(128 * s * s, 1024), *bn(nn.BatchNorm1d, 1024), nn.LeakyReLU(0.2),
        nn.Linear(1024, 1),
    ))  # fmt: skip
    return g, d


infogan.data_range = (0.0, 1.0)  # type: ignore[attr-defined]
infogan.d_batchnorm = True  # type: ignore[attr-defined]  # honours d_batchnorm


class Maxout(nn.Module):
    """A linear maxout layer (Goodfellow et al. 2013): `units` outputs, each the max of `pieces`
    affine functions of the input."""

    def __init__(self, n_in: int, units: int, pieces: int) -> None:
        super().__init__()
        self.units, self.pieces = units, pieces
        self.linear = nn.Linear(n_in, units * pieces)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x).view(x.shape[0], self.units, self.pieces).amax(dim=-1)


@ARCHS.register("pacgan-mlp")
def pacgan_mlp(shape: tuple[int, ...], z_dim: int, pack: int = 1, **_: object) -> tuple[nn.Module, nn.Module]:
    """PacGAN's 2-D nets (Lin et al. 2018, synthetic experiments):

    G: z -> 4 x [FC 400 (no bias), BN, ReLU] -> FC 2 (linear output).
    D: pack * 2 -> 3 x maxout(200 units, 5 pieces) -> FC 1.
    Every weight ~ N(0, 0.02^2), every bias 0, as PacGAN's code initialises them
    (fjxmlzn/PacGAN, synthetic_data_experiments/2DGrid_GAN&PacGAN: config.py, pacgan_task.py).
    """
    if tuple(shape) != (2,):
        raise ConfigError(f"arch 'pacgan-mlp' is for 2-D points; this data set has samples of shape {tuple(shape)}",
                          key="arch")  # fmt: skip
    g_layers: list[nn.Module] = []
    for n_in in (z_dim, 400, 400, 400):
        g_layers += [nn.Linear(n_in, 400, bias=False), nn.BatchNorm1d(400), nn.ReLU()]
    g = nn.Sequential(*g_layers, nn.Linear(400, 2))
    d = Critic(nn.Sequential(Maxout(2 * pack, 200, 5), Maxout(200, 200, 5), Maxout(200, 200, 5), nn.Linear(200, 1)))
    for module in (*g.modules(), *d.modules()):
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, 0.0, 0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return g, d


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
def dirac(shape: tuple[int, ...], z_dim: int, pack: int = 1, dirac_theta: float = 1.0, dirac_psi: float = 1.0,
          **_: object) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """The Dirac-GAN: data a point mass at 0 on the line, G a point theta, D linear in x."""
    if pack != 1:
        raise ConfigError("arch 'dirac' takes no packing (pack = 1): its D is the one-parameter psi * x", key="pack")
    if tuple(shape) != (1,):
        raise ConfigError(f"arch 'dirac' needs 1-D samples (--dataset dirac), not samples of shape {tuple(shape)}",
                          key="arch")  # fmt: skip
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
    arch: str, shape: tuple[int, ...], z_dim: int, d_norm: str = "none", z_dist: str = "normal", pack: int = 1,
    d_batchnorm: bool = False, g_bn_stats: str = "batch", **options: float,
) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """(G, D) for samples of `shape`, initialised from the global RNG: fork it around this call.
    `options` are architecture settings (dirac_theta, dirac_psi); an architecture ignores the others.
    `g_bn_stats` names how G's batch norm takes its statistics with packing (G_BN_STATS)."""
    builder = ARCHS.get(arch)
    latent.LATENTS.get(z_dist)
    g_bn = G_BN_STATS.get(g_bn_stats)
    if d_batchnorm and not getattr(builder, "d_batchnorm", False):
        raise ConfigError(f"arch '{arch}' has no batch norm in D to switch on (d_batchnorm); infogan has",
                          key="d_batchnorm")  # fmt: skip
    g, d = builder(shape, z_dim, pack=pack, d_batchnorm=d_batchnorm, **options)
    if g_bn_stats != "batch" and not has_batch_statistics(g):
        raise ConfigError(f"arch '{arch}' has no batch norm in G (g_bn_stats '{g_bn_stats}' needs one)",
                          key="g_bn_stats")  # fmt: skip
    g = g_bn(g, pack)
    g.z_dist, g.data_range = z_dist, data_range(arch)
    return g, D_NORMS.get(d_norm)(d)


class PackSlotBatchNorm(nn.modules.batchnorm._BatchNorm):
    """Batch norm whose training statistics are those of each pack slot apart, as when G is called
    once per slot on `batch` latents (PacGAN's code: bricks.py, `compute_losses` applies the decoder
    to each of its m noise tensors; pacgan_task.py averages the m slots' batch statistics into one
    population update). The trainer's batch of m * B samples is input-major (lossbench.train.players.pack:
    sample j * m + i is slot i of D's input j), so slot i is every m-th sample from i:

        y[j*m + i] = (x[j*m + i] - mean_j' x[j'*m + i]) / sqrt(var_j' x[j'*m + i] + eps) * w + b

    (means and biased variances per channel, over the slot's B samples and any spatial positions);
    running averages move by momentum towards the mean over slots of the slots' means and unbiased
    variances. In eval mode, and with one slot, it is plain batch norm. Computed as one plain batch norm
    over m * C channels (slot i's channel c is channel i * C + c of the batch viewed as (B, m * C, ...)),
    one fused kernel, as G's ordinary batch norm is."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm, slots: int) -> None:
        super().__init__(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        self.load_state_dict(bn.state_dict())
        self.slots = slots

    def _check_input_dim(self, input: Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected a batch of at least 2-D input, got {input.dim()}-D")

    def forward(self, x: Tensor) -> Tensor:
        m = self.slots
        if not self.training or m == 1:
            return super().forward(x)
        if x.shape[0] % m:
            raise ValueError(f"a batch of {x.shape[0]} samples does not split into {m} pack slots")
        # (B * m, C, ...) -> (B, m * C, ...): slot i's channel c becomes channel i * C + c of one plain batch norm
        xs = x.reshape(x.shape[0] // m, m * x.shape[1], *x.shape[2:])
        factor, run_mean, run_var = 0.0, None, None
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            factor = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
            run_mean, run_var = self.running_mean.repeat(m), self.running_var.repeat(m)  # each slot: same start
        w, b = (self.weight.repeat(m), self.bias.repeat(m)) if self.affine else (None, None)
        y = nn.functional.batch_norm(xs, run_mean, run_var, w, b, True, factor, self.eps)
        if self.track_running_stats:  # the slots' moved averages, averaged: the move towards the slots' mean statistics
            with torch.no_grad():
                self.running_mean.copy_(run_mean.view(m, -1).mean(0))
                self.running_var.copy_(run_var.view(m, -1).mean(0))
        return y.reshape(x.shape)


@G_BN_STATS.register("batch")
def batch_statistics(g: nn.Module, pack: int) -> nn.Module:
    """G's batch norm over all batch * pack samples it makes in a step (one call)."""
    return g


@G_BN_STATS.register("pack-slot")
def pack_slot_statistics(g: nn.Module, pack: int) -> nn.Module:
    """G's batch norm over each pack slot's batch apart (PackSlotBatchNorm); the same parameters
    and state-dict keys, so checkpoints and sample loading are unchanged."""
    for parent in list(g.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(parent, name, PackSlotBatchNorm(child, pack))
    return g


def data_range(arch: str) -> tuple[float, float]:
    """The range of the architecture's G output, which is also the range D sees real data in."""
    return getattr(ARCHS.get(arch), "data_range", STANDARD_RANGE)


def rescale(x: Tensor, src: tuple[float, float], dst: tuple[float, float]) -> Tensor:
    """Affine map of x from the interval src to the interval dst (x itself when they are equal)."""
    if tuple(src) == tuple(dst):
        return x
    return (x - src[0]) * ((dst[1] - dst[0]) / (src[1] - src[0])) + dst[0]


def has_batch_statistics(module: nn.Module) -> bool:
    """Whether any layer of the module normalises by statistics over the batch."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in module.modules())


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, generator: torch.Generator, batch_size: int = 500) -> Tensor:
    """n samples from G in [-1, 1], in eval mode (batch-norm running statistics), without touching
    its state. z is drawn from G's latent distribution (its `z_dist`, normal by default)."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    dist = getattr(G, "z_dist", "normal")
    out = [
        G(latent.sample(dist, (min(batch_size, n - i), z_dim), generator, device)) for i in range(0, n, batch_size)
    ]
    G.train(was_training)
    return rescale(torch.cat(out), getattr(G, "data_range", STANDARD_RANGE), STANDARD_RANGE)

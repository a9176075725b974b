"""`--arch pacgan-dcgan`: PacGAN's stacked-MNIST DCGAN (Lin et al. 2018, §5.2, Table 2), with `--pack`
for PacDCGAN; lossbench.gan.models registers it.

Read from fjxmlzn/PacGAN, stacked_MNIST_experiments/VEEGAN_experiment/model.py (DCGAN.generator,
DCGAN.discriminator, gf_dim = df_dim = 64, z_dim 100 in config.py) and ops.py (conv2d, deconv2d,
linear, batch_norm, lrelu), for 28 x 28 x 3 images:

    G: z (100) -> FC 512*2*2 -> BN -> ReLU -> [ConvT 5x5/2 -> BN -> ReLU] 256 (4x4), 128 (7x7),
       64 (14x14) -> ConvT 5x5/2 -> 3 (28x28) -> tanh
    D: (3 * pack) x 28 x 28 -> Conv 5x5/2 64 (14) -> LReLU(0.2) -> [Conv 5x5/2 -> BN -> LReLU(0.2)]
       128 (7), 256 (4), 512 (2) -> FC 1 (a logit)

Weights: convolutions and FC layers from N(0, 0.02^2) (D's convolutions from that normal truncated
at 2 std, as tf.truncated_normal_initializer), biases 0; batch norm: scale 1, shift 0, eps 1e-5,
running-average momentum 0.1 (TF's decay 0.9). Packing concatenates the pack samples along the
channels, as PacGAN's tf.concat(G_sep, 3). D's batch norm is on with `d_batchnorm = true` (the
project's switch; PacGAN's D has it): without it D has no statistic across the batch.

Differences, with reasons: PyTorch pads a strided 'SAME' convolution symmetrically (padding 2,
output_padding 1 where the size doubles), TF on the right/bottom; shapes and widths are the same. The
D-size variants of PacGAN Table 3 (D = 1/4 and 1/2 of G) are not a width factor of this net: they are
another net (the Unrolled GAN experiment's: 3x3 convolutions of 2-4-8 or 4-8-16 channels, z 256,
unrolled_GAN_experiment/D=0.25G/model.py), so they are not offered here.
"""

from __future__ import annotations

from torch import nn

from lossbench.errors import ConfigError
from lossbench.gan.layers import Critic, Reshape

INIT_STD = 0.02
G_WIDTHS = (512, 256, 128, 64)  # gf_dim * (8, 4, 2, 1)
D_WIDTHS = (64, 128, 256, 512)  # df_dim * (1, 2, 4, 8)
SIZES = (2, 4, 7, 14, 28)  # ceil(28 / 2^k), k = 4 .. 0


def _init(module: nn.Module, truncated: bool) -> None:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            if truncated and isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, 0.0, INIT_STD, -2 * INIT_STD, 2 * INIT_STD)
            else:
                nn.init.normal_(m.weight, 0.0, INIT_STD)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def _up(w_in: int, w_out: int, size_in: int, size_out: int) -> nn.ConvTranspose2d:
    """5x5 stride-2 transposed convolution from size_in to size_out = ceil-doubling ('SAME')."""
    return nn.ConvTranspose2d(w_in, w_out, 5, 2, padding=2, output_padding=size_out - (2 * size_in - 1))


def pacgan_dcgan(shape: tuple[int, ...], z_dim: int, pack: int = 1, d_batchnorm: bool = False,
                 **_: object) -> tuple[nn.Module, nn.Module]:  # fmt: skip
    """See the module docstring."""
    if tuple(shape[1:]) != (28, 28):
        raise ConfigError(f"arch 'pacgan-dcgan' needs 28x28 images; this data set has shape {shape}", key="arch")
    channels = shape[0]
    g: list[nn.Module] = [nn.Linear(z_dim, G_WIDTHS[0] * SIZES[0] ** 2), Reshape(G_WIDTHS[0], SIZES[0], SIZES[0]),
                          nn.BatchNorm2d(G_WIDTHS[0]), nn.ReLU()]  # fmt: skip
    for i, (w_in, w_out) in enumerate(zip(G_WIDTHS, G_WIDTHS[1:])):
        g += [_up(w_in, w_out, SIZES[i], SIZES[i + 1]), nn.BatchNorm2d(w_out), nn.ReLU()]
    g += [_up(G_WIDTHS[-1], channels, SIZES[-2], SIZES[-1]), nn.Tanh()]

    d: list[nn.Module] = []
    for i, (w_in, w_out) in enumerate(zip((pack * channels,) + D_WIDTHS[:-1], D_WIDTHS)):
        d.append(nn.Conv2d(w_in, w_out, 5, 2, padding=2))
        if i > 0 and d_batchnorm:
            d.append(nn.BatchNorm2d(w_out, track_running_stats=False))  # D always uses the batch's statistics
        d.append(nn.LeakyReLU(0.2))
    d += [nn.Flatten(), nn.Linear(D_WIDTHS[-1] * SIZES[0] ** 2, 1)]
    G, D = nn.Sequential(*g), Critic(nn.Sequential(*d))
    _init(G, truncated=False)
    _init(D, truncated=True)
    return G, D


pacgan_dcgan.d_batchnorm = True  # type: ignore[attr-defined]  # honours d_batchnorm


def parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""Sample artifacts of a run: image grids, or 2-D scatter plots over the mixture's modes."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from lossbench.gan.models import generate

GRID_SAMPLES = 64
SCATTER_SAMPLES = 2000


def save_samples(
    G: nn.Module, z_dim: int, generator: torch.Generator, modes: Tensor | None, folder: Path, step: int
) -> Path:
    """G's samples at `step` as a PNG in folder: a scatter over the modes for 2-D data, else a grid."""
    if modes is not None:
        pts = generate(G, SCATTER_SAMPLES, z_dim, generator)
        return save_scatter(pts, modes, folder / f"scatter_{step:07d}.png", f"step {step}")
    if sample_dims(G, z_dim) == 1:  # samples on a line (the Dirac-GAN): where they lie
        pts = generate(G, SCATTER_SAMPLES, z_dim, generator)
        return save_histogram(pts[:, 0], folder / f"histogram_{step:07d}.png", f"step {step}")
    return save_grid(generate(G, GRID_SAMPLES, z_dim, generator), folder / f"samples_{step:07d}.png")


def save_grid(images: Tensor, path: Path, nrow: int = 8) -> Path:
    """Images in [-1, 1] as one PNG grid."""
    from torchvision.utils import save_image

    save_image(images.detach().cpu(), path, nrow=nrow, normalize=True, value_range=(-1, 1))
    return path


def save_scatter(points: Tensor, modes: Tensor | None, path: Path, title: str = "") -> Path:
    """Generated 2-D points (blue) over the mixture's modes (red crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    p = points.detach().cpu().numpy()
    ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.4, color="tab:blue", label="generated")
    if modes is not None:
        m = modes.cpu().numpy()
        ax.scatter(m[:, 0], m[:, 1], s=60, marker="x", color="tab:red", label="modes")
        lim = float(abs(m).max()) * 1.5
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
    ax.set_aspect("equal")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    return _save(fig, path)


def sample_dims(G: nn.Module, z_dim: int) -> int:
    """How many numbers one sample of G has (1 for the Dirac-GAN): one sample through `generate`, in
    eval mode (a batch of one through batch norm in training mode fails, and would move its running
    statistics), from a throwaway generator (the run's streams are left as they are)."""
    device = next(G.parameters()).device
    return int(generate(G, 1, z_dim, torch.Generator(device=device).manual_seed(0))[0].numel())


def save_histogram(values: Tensor, path: Path, title: str = "") -> Path:
    """Generated 1-D samples as a histogram, the data's point mass at 0 marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3), dpi=100)
    ax.hist(values.detach().cpu().numpy(), bins=50, color="tab:blue")
    ax.axvline(0.0, color="tab:red", label="data")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def save_path(xs: list[float], ys: list[float], names: list[str], path: Path, title: str = "") -> Path:
    """A path in the plane of two scalars (start dot, equilibrium (0, 0) as a red star)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
    ax.plot(xs, ys, lw=0.8, color="tab:blue")
    if xs:
        ax.plot(xs[0], ys[0], "o", ms=4, color="gray", label="start")
    ax.plot(0, 0, marker="*", ms=12, color="tab:red", label="equilibrium (0, 0)")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def _save(fig: object, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()  # type: ignore[attr-defined]
    fig.savefig(path)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    return path

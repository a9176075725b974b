"""Data sets: name -> one tensor (images N x C x H x W in [-1, 1], the range of G's tanh; or points
N x 2), plus what the metrics need to know of it. Small data sets live whole on the training device; the trainer batches
by index, so there is no per-sample PIL/ToTensor work per step.

Image sets come through torchvision from a data root (`--data-dir`, else LOSSBENCH_DATA_DIR, else
./data). Nothing touches the network when the files are present; when absent, torchvision's
download runs, and a failure is one clear error.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from lossbench import paths
from lossbench.errors import DataError
from lossbench.registry import Registry

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Dataset:
    """A data set in memory. `modes`/`mode_std` are set for synthetic 2-D mixtures."""

    name: str
    split: str
    x: Tensor  # float32: images in [-1, 1], points in the plane
    modes: Tensor | None = None
    mode_std: float | None = None

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    @property
    def is_image(self) -> bool:
        return self.x.dim() == 4


@dataclass(frozen=True)
class DataSource:
    """A registered loader: (root, split) -> Dataset."""

    loader: object  # Callable[[Path, str], Dataset]
    default_arch: str
    sample_shape: tuple[int, ...]
    needs_files: bool
    archs: tuple[str, ...] = ()  # the only architectures that fit it; () = any
    default_metrics: tuple[str, ...] = ()  # () = the defaults for its kind (images / 2-D points)


DATASETS: Registry[DataSource] = Registry("dataset")


def load(name: str, root: str | os.PathLike | None = None, split: str = "train") -> Dataset:
    """Load a registered data set (on the CPU; the caller moves it to its device)."""
    if split not in ("train", "test"):
        raise DataError(f"unknown split '{split}'; valid: train, test")
    source = DATASETS.get(name)
    return source.loader(paths.data_root(root), split)  # type: ignore[operator]


def _to_unit_range(images_uint8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range of G's tanh output."""
    return images_uint8.float().div_(127.5).sub_(1.0)


def _torchvision(cls_name: str, name: str, root: Path, split: str) -> Tensor:
    """A torchvision data set's images as uint8 N x C x H x W; downloads only when files are absent."""
    import torchvision.datasets as tvd  # deferred: importing torchvision costs a second

    cls = getattr(tvd, cls_name)
    kwargs = {"train": split == "train"}
    try:
        ds = cls(root=str(root), download=False, **kwargs)
    except RuntimeError:
        log.warning("%s not found under %s; downloading", name, root)
        try:
            ds = cls(root=str(root), download=True, **kwargs)
        except Exception as exc:  # network errors come in many types
            raise DataError(
                f"{name} is not under {root} and could not be downloaded ({type(exc).__name__}); "
                f"set --data-dir or LOSSBENCH_DATA_DIR to a folder that holds it"
            ) from None
    data = torch.as_tensor(ds.data)
    if data.dim() == 3:  # MNIST-like: N x H x W gray
        return data.unsqueeze(1)
    return data.permute(0, 3, 1, 2).contiguous()  # CIFAR: N x H x W x C


def _register_torchvision(name: str, cls_name: str, default_arch: str, shape: tuple[int, ...]) -> None:
    def loader(root: Path, split: str) -> Dataset:
        return Dataset(name=name, split=split, x=_to_unit_range(_torchvision(cls_name, name, root, split)))

    DATASETS.add(name, DataSource(loader, default_arch, shape, needs_files=True))


_register_torchvision("mnist", "MNIST", "mlp", (1, 28, 28))
_register_torchvision("fashion-mnist", "FashionMNIST", "mlp", (1, 28, 28))
_register_torchvision("cifar10", "CIFAR10", "dcgan", (3, 32, 32))


# --- synthetic 2-D mixtures -------------------------------------------------------------------

_POINTS = 65536  # a fixed pool, so 2-D data goes through the same index-batching path as images


def ring_modes(k: int = 8, radius: float = 2.0) -> Tensor:
    angles = torch.arange(k, dtype=torch.float64) * (2 * math.pi / k)
    return torch.stack([radius * angles.cos(), radius * angles.sin()], dim=1).float()


def grid_modes(side: int = 5, spacing: float = 2.0) -> Tensor:
    coords = (torch.arange(side, dtype=torch.float32) - (side - 1) / 2) * spacing
    return torch.cartesian_prod(coords, coords)


def _mixture(name: str, modes: Tensor, std: float, split: str) -> Dataset:
    g = torch.Generator().manual_seed(0 if split == "train" else 1)
    which = torch.randint(len(modes), (_POINTS,), generator=g)
    x = modes[which] + std * torch.randn(_POINTS, 2, generator=g)
    return Dataset(name=name, split=split, x=x, modes=modes, mode_std=std)


DATASETS.add(
    "ring8", DataSource(lambda root, split: _mixture("ring8", ring_modes(), 0.02, split), "mlp2d", (2,), False)
)
DATASETS.add(
    "grid25", DataSource(lambda root, split: _mixture("grid25", grid_modes(), 0.05, split), "mlp2d", (2,), False)
)


def names() -> list[str]:
    return DATASETS.names()


# --- the Dirac-GAN's data: a point mass at 0 on the line (Mescheder et al. 2018, §2) -----------


def _dirac(split: str) -> Dataset:
    return Dataset(name="dirac", split=split, x=torch.zeros(1024, 1))


DATASETS.add("dirac", DataSource(lambda root, split: _dirac(split), "dirac", (1,), False, archs=("dirac",),
                                 default_metrics=("none",)))  # fmt: skip

"""Data sets: name -> one tensor (images N x C x H x W in [-1, 1], the range of G's tanh; or points
N x 2), plus what the metrics need to know of it. Small data sets live whole on the training device; the trainer batches
by index, so there is no per-sample PIL/ToTensor work per step.

Image sets come through torchvision from a data root (`--data-dir`, else LOSSBENCH_DATA_DIR, else
./data). Nothing touches the network when the files are present; when absent, torchvision's
download runs, and a failure is one clear error. Files that are present but truncated or corrupt
are one clear error too (never a download attempt: torchvision would keep the bad files).

Every data set's size per split is registered with it (`size(name, split)`), so a budget in epochs
converts to steps without loading anything.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
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
    sizes: Mapping[str, int] = field(default_factory=dict, hash=False)  # split -> examples; {} = load to count
    revision: int = 0  # raised when the data change; > 0 enters configuration hashes (old runs stay apart)


DATASETS: Registry[DataSource] = Registry("dataset", key="dataset")


SPLITS = ("train", "test")


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}'; valid: {', '.join(SPLITS)}")


def load(name: str, root: str | os.PathLike | None = None, split: str = "train", download: bool = True) -> Dataset:
    """Load a registered data set (on the CPU; the caller moves it to its device). Without `download`,
    a data set whose files are absent is a DataError instead of a download (plans and dry runs)."""
    _check_split(split)
    source = DATASETS.get(name)
    if not download and source.needs_files:
        return source.loader(paths.data_root(root), split, download=False)  # type: ignore[operator]
    return source.loader(paths.data_root(root), split)  # type: ignore[operator]


def size(name: str, split: str = "train", root: str | os.PathLike | None = None) -> int:
    """The number of examples in a split, from the registry without loading anything (a source
    registered without sizes is loaded once to count it)."""
    _check_split(split)
    source = DATASETS.get(name)
    if split in source.sizes:
        return source.sizes[split]
    return len(load(name, root, split).x)


def _to_unit_range(images_uint8: Tensor) -> Tensor:
    """uint8 [0, 255] -> float32 [-1, 1], the range of G's tanh output."""
    return images_uint8.float().div_(127.5).sub_(1.0)


# MNIST-like files (torchvision's raw/ layout, uncompressed idx): name -> (header bytes, bytes per example).
# torchvision only checks that they exist, and reads a truncated one as a shape error.
_IDX_FILES = {"train-images-idx3-ubyte": (16, 28 * 28), "train-labels-idx1-ubyte": (8, 1),
              "t10k-images-idx3-ubyte": (16, 28 * 28), "t10k-labels-idx1-ubyte": (8, 1)}  # fmt: skip
_CORRUPT_HINT = "delete them to download again, or point --data-dir at a good copy"


def _check_idx_files(name: str, raw: Path, sizes: Mapping[str, int]) -> None:
    """One clear error when MNIST-like files are present under `raw` but not of their exact size."""
    bad = []
    for file, (header, per_example) in _IDX_FILES.items():
        path = raw / file
        if not path.is_file():
            continue  # absent: torchvision's own check and the download path handle it
        expected = header + per_example * sizes["train" if file.startswith("train") else "test"]
        if (actual := path.stat().st_size) != expected:
            bad.append(f"{file}: {actual:,} bytes, expected {expected:,}")
    if bad:
        raise DataError(f"{name} files under {raw} are truncated or corrupt ({'; '.join(bad)}); {_CORRUPT_HINT}")


def _not_found(exc: RuntimeError) -> bool:
    """torchvision's 'Dataset not found ...' (the files are absent), as opposed to a failed read."""
    return str(exc).startswith("Dataset not found")


def _torchvision(cls_name: str, name: str, root: Path, split: str, download: bool = True) -> Tensor:
    """A torchvision data set's images as uint8 N x C x H x W; downloads only when files are absent
    (and `download`)."""
    import torchvision.datasets as tvd  # deferred: importing torchvision costs a second

    cls = getattr(tvd, cls_name)
    if issubclass(cls, tvd.MNIST):  # MNIST, FashionMNIST: raw files of known size under root/<class>/raw
        _check_idx_files(name, root / cls.__name__ / "raw", DATASETS.get(name).sizes)
    kwargs = {"train": split == "train"}
    try:
        ds = cls(root=str(root), download=False, **kwargs)
    except Exception as exc:  # torchvision reads a bad file as RuntimeError, AssertionError, ValueError, ...
        if not (isinstance(exc, RuntimeError) and _not_found(exc)):  # present, but unreadable
            why = (f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__).splitlines()[0]
            raise DataError(f"{name} files under {root} could not be read ({why}); {_CORRUPT_HINT}") from None
        if not download:
            raise DataError(f"{name} is not under {root} (not downloaded here)") from None
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


def _register_torchvision(name: str, cls_name: str, default_arch: str, shape: tuple[int, ...], train: int,
                          test: int) -> None:  # fmt: skip
    def loader(root: Path, split: str, download: bool = True) -> Dataset:
        return Dataset(name=name, split=split, x=_to_unit_range(_torchvision(cls_name, name, root, split, download)))

    DATASETS.add(name, DataSource(loader, default_arch, shape, needs_files=True, sizes={"train": train, "test": test}))


_register_torchvision("mnist", "MNIST", "mlp", (1, 28, 28), 60000, 10000)
_register_torchvision("fashion-mnist", "FashionMNIST", "mlp", (1, 28, 28), 60000, 10000)
_register_torchvision("cifar10", "CIFAR10", "dcgan", (3, 32, 32), 50000, 10000)


# --- synthetic 2-D mixtures -------------------------------------------------------------------
# PacGAN's synthetic experiments (fjxmlzn/PacGAN, synthetic_data_experiments/2DRing_GAN&PacGAN and
# 2DGrid_GAN&PacGAN, config.py): ring8 = 8 equal Gaussians with means (cos 2 pi k/8, sin 2 pi k/8)
# (radius 1) and std 0.01; grid25 = 25 with means {-4, -2, 0, 2, 4}^2 and std 0.05; num_sample =
# 100,000 training points.

_POINTS = 100_000  # a fixed pool per split, so 2-D data goes through the same index-batching path as images


def ring_modes(k: int = 8, radius: float = 1.0) -> Tensor:
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


# name -> (means, standard deviation of every component)
MIXTURES: dict[str, tuple[Tensor, float]] = {"ring8": (ring_modes(), 0.01), "grid25": (grid_modes(), 0.05)}


def _register_mixture(name: str) -> None:
    modes, std = MIXTURES[name]
    DATASETS.add(name, DataSource(lambda root, split: _mixture(name, modes.clone(), std, split), "mlp2d", (2,), False,
                                  sizes={s: _POINTS for s in SPLITS}, revision=1))  # fmt: skip
    # revision 1: PacGAN's mixtures (ring radius 1, sigma 0.01; 100,000 points); 0 was radius 2, 65,536 points


_register_mixture("ring8")
_register_mixture("grid25")


def mixture(name: str) -> tuple[Tensor, float]:
    """The means (K x 2) and standard deviation of a 2-D mixture data set, without loading it."""
    DATASETS.get(name)  # an unknown name: the registry's error, with the valid names
    if name not in MIXTURES:
        raise DataError(f"data set '{name}' has no modes; mode metrics apply to {', '.join(MIXTURES)}")
    modes, std = MIXTURES[name]
    return modes.clone(), std


def names() -> list[str]:
    return DATASETS.names()


# --- the Dirac-GAN's data: a point mass at 0 on the line (Mescheder et al. 2018, §2) -----------


def _dirac(split: str) -> Dataset:
    return Dataset(name="dirac", split=split, x=torch.zeros(1024, 1))


DATASETS.add("dirac", DataSource(lambda root, split: _dirac(split), "dirac", (1,), False, archs=("dirac",),
                                 default_metrics=("none",), sizes={"train": 1024, "test": 1024}))  # fmt: skip


# --- stacked MNIST: three MNIST digits as R, G, B (lossbench.gan.stacked) ----------------------
from lossbench.gan import stacked as _stacked  # noqa: E402


def _stacked_mnist(root: Path, split: str, download: bool = True) -> Dataset:
    mnist = load("mnist", root, split, download=download).x
    return Dataset(name=_stacked.NAME, split=split, x=_stacked.stack(mnist, _stacked.checked_indices(split)))


DATASETS.add(_stacked.NAME, DataSource(_stacked_mnist, "pacgan-dcgan", (3, 28, 28), needs_files=True,
                                       default_metrics=("modes",), sizes=dict(_stacked.SIZES)))  # fmt: skip

"""FID and KID between two image sets (`lossbench fid`): folders of images or data set splits,
through the same feature extractor and metric code as runs."""

from __future__ import annotations

from pathlib import Path

import torch

from lossbench.errors import ConfigError
from lossbench.gan import data
from lossbench.metrics import features as metrics
from lossbench.options import resolve_device

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}


def load_images(spec: str, n: int, data_dir: str | None) -> tuple[str, torch.Tensor]:
    """A folder of images -> uint8 N x 3 x H x W; `dataset[:split]` -> up to n images of it."""
    path = Path(spec)
    if path.is_dir():
        from torchvision.io import ImageReadMode, decode_image

        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < 2:
            raise ConfigError(f"{path}: needs at least 2 images (.png, .jpg), found {len(files)}")
        imgs = [decode_image(str(p), mode=ImageReadMode.RGB) for p in files]
        if len({tuple(i.shape) for i in imgs}) != 1:
            raise ConfigError(f"{path}: images differ in size")
        return str(path), torch.stack(imgs)
    name, _, split = spec.partition(":")
    if name not in data.DATASETS:
        raise ConfigError(f"'{spec}' is neither a folder nor a data set ({', '.join(data.names())})")
    ds = data.load(name, data_dir, split or "train")
    if ds.modes is not None:
        raise ConfigError(f"'{name}' holds 2-D points, not images")
    subset = metrics.real_subset(ds.x, min(n, len(ds.x)))
    return f"{name}:{ds.split}", metrics.to_uint8(subset)


def fid_between(first: str, second: str, n: int, data_dir: str | None, device: str) -> dict[str, float | str | int]:
    dev = resolve_device(device)
    name_a, a = load_images(first, n, data_dir)
    name_b, b = load_images(second, n, data_dir)
    extractor = metrics.EXTRACTORS.get("inception-v3-compat")(dev)
    fa = metrics.Features(*metrics.extract(extractor, iter([a])))
    fb = metrics.Features(*metrics.extract(extractor, iter([b])))
    values = metrics.compare(("fid", "kid"), fa, fb)
    return {"first": name_a, "second": name_b, "n_first": len(a), "n_second": len(b)} | values

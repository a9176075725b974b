"""Image sample quality through torch-fidelity: FID (2048-d pool3), Inception Score (10 splits) and
KID, on the standard 'inception-2015-12-05' features with the TF-compatible resize.

Our code shapes the inputs ([-1, 1] floats -> uint8, gray -> 3 channels, straight from memory)
and caches the real statistics; torch-fidelity computes the numbers. Real features are cached per
(data set, split, sample count, extractor) under the cache folder. They are extracted in chunks, each
written atomically as soon as it is done, so an interrupted extraction keeps its work and the next
one continues from there; every file carries its length and a sha256 of its tensors, checked on
read, so a truncated or altered file (a full disk, a crash mid-write) is recomputed, never used.
"""

from __future__ import annotations

import functools
import hashlib
import io
import logging
import math
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from lossbench import paths
from lossbench.errors import MetricError
from lossbench.files import write_atomically
from lossbench.metrics import prdc
from lossbench.registry import Registry

log = logging.getLogger(__name__)

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
KID_SUBSETS = 100
KID_SUBSET_SIZE = 1000
IS_SPLITS = 10
PR_K = 3  # improved precision and recall (Kynkaanniemi et al. 2019)
DC_K = 5  # density and coverage (Naeem et al. 2020)
CACHE_VERSION = 2  # 2: chunked, each file with its length and checksum
CHUNK = 500  # images per chunk of a real-feature extraction (rounded down to the extractor's batches)


@dataclass(frozen=True)
class Extractor:
    """A named feature extractor: uint8 N x 3 x H x W -> (pool features N x F, logits N x K)."""

    name: str
    fn: Callable[[Tensor], tuple[Tensor, Tensor]]
    batch_size: int = 64


EXTRACTORS: Registry[Callable[[torch.device], Extractor]] = Registry("feature extractor")


@EXTRACTORS.register("inception-v3-compat")
def inception(device: torch.device) -> Extractor:
    """torch-fidelity's InceptionV3; weights from $TORCH_HOME/hub/checkpoints, downloaded if absent."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    weights = paths.torch_home() / "hub" / "checkpoints" / INCEPTION_FILE
    if not weights.is_file():
        log.warning("Inception weights not in %s; downloading them (about 95 MB)", weights.parent)
    try:
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048", "logits_unbiased"]).to(device)
    except Exception as exc:  # a failed download raises URLError, HTTPError, OSError...
        raise MetricError(
            f"Inception weights for FID/KID/IS are not in {weights.parent} and could not be downloaded "
            f"({type(exc).__name__}); set TORCH_HOME to a folder holding hub/checkpoints/{INCEPTION_FILE}"
        ) from None

    def fn(images: Tensor) -> tuple[Tensor, Tensor]:
        pool, logits = net(images.to(device))
        return pool, logits

    # small batches on a CPU keep peak memory low (Inception's activations at 299x299 are ~15 MB per
    # image) at no cost in throughput there; large ones keep a GPU busy
    return Extractor("inception-v3-compat", fn, batch_size=200 if device.type == "cuda" else 16)


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] floats N x C x H x W -> uint8 N x 3 x H x W (gray repeated to 3 channels)."""
    x = images.add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8)
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x


def extract(
    extractor: Extractor, batches: Iterator[Tensor], progress: Callable[[int], None] | None = None
) -> tuple[Tensor, Tensor]:
    """Features of uint8 batches (any batch size; split to the extractor's), on the CPU; `progress`
    is called with the number of images done after each of the extractor's batches. The features
    stay on the extractor's device until the end: one copy to the host, not one per batch, so a GPU
    is not made to wait for the host after every batch (2,048 + 1,008 floats an image: 122 MB per
    10,000 images, twice that during the final concatenation)."""
    pools, logits, done = [], [], 0
    with torch.no_grad():
        for chunk in batches:
            for i in range(0, len(chunk), extractor.batch_size):
                p, lg = extractor.fn(chunk[i : i + extractor.batch_size])
                pools.append(p.float())
                logits.append(lg.float())
                done += len(p)
                if progress is not None:
                    progress(done)
    return torch.cat(pools).cpu(), torch.cat(logits).cpu()


@dataclass(frozen=True)
class Features:
    pool: Tensor  # N x 2048
    logits: Tensor  # N x K

    @functools.cached_property
    def statistics(self) -> dict[str, np.ndarray]:
        """FID's mean and covariance of the pool features (torch-fidelity's), computed once per feature
        set: the real features' serve every evaluation compared against them (read, never changed)."""
        from torch_fidelity.metric_fid import fid_features_to_statistics

        return fid_features_to_statistics(self.pool)


def compare(names: tuple[str, ...], real: Features, fake: Features) -> dict[str, float]:
    """FID / IS (of `fake`) / KID between two feature sets, by torch-fidelity; improved precision and
    recall, density and coverage on the same pool features (lossbench.metrics.prdc)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric
    from torch_fidelity.metric_isc import isc_features_to_metric
    from torch_fidelity.metric_kid import kid_features_to_metric

    out: dict[str, float] = {}
    if "fid" in names:
        out["fid"] = fid_statistics_to_metric(real.statistics, fake.statistics, verbose=False)[
            "frechet_inception_distance"
        ]
    if "is" in names:
        isc = isc_features_to_metric(fake.logits, splits=IS_SPLITS)
        out["is_mean"], out["is_std"] = isc["inception_score_mean"], isc["inception_score_std"]
    if "kid" in names:
        size = min(KID_SUBSET_SIZE, len(real.pool), len(fake.pool))
        kid = kid_features_to_metric(real.pool, fake.pool, kid_subsets=KID_SUBSETS, kid_subset_size=size, verbose=False)
        out["kid_mean"], out["kid_std"] = kid["kernel_inception_distance_mean"], kid["kernel_inception_distance_std"]
    if "pr" in names:  # fidelity vs diversity (Kynkaanniemi et al. 2019, k = 3)
        out |= prdc.precision_recall(real.pool, fake.pool, k=PR_K)
    if "dc" in names:  # the same, robust to outliers (Naeem et al. 2020, k = 5)
        out |= prdc.density_coverage(real.pool, fake.pool, k=DC_K)
    return out


def drop_missing(values: dict[str, float]) -> dict[str, float]:
    """Drop NaN/inf values with a one-line warning each: a missing metric is never logged as a number."""
    kept = {}
    for key, value in values.items():
        if math.isfinite(value):
            kept[key] = value
        else:
            why = " (Inception weights without a classifier head give NaN IS)" if key.startswith("is_") else ""
            log.warning("metric %s came out %s%s; not logged", key, value, why)
    return kept


# --- real statistics, cached ------------------------------------------------------------------


def real_cache_path(dataset: str, split: str, n: int, extractor: str, cache_root: Path | None = None) -> Path:
    key = f"v{CACHE_VERSION}|{dataset}|{split}|{n}|{extractor}|subset-seed-0|uint8-round"
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return paths.cache_root(cache_root) / f"real-{dataset}-{split}-{n}-{digest}.pt"


def real_subset(images: Tensor, n: int) -> Tensor:
    """The same n reals every time: a fixed permutation (seed 0) of the split."""
    if n > len(images):
        raise MetricError(f"fid_samples={n} is larger than the reference set ({len(images)} images)")
    idx = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:n]
    return images[idx]


def real_features(
    extractor: Extractor, dataset: str, split: str, images: Tensor, n: int, cache_root: Path | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Features, bool]:  # fmt: skip
    """Features of n reals (images in [-1, 1]); returns (features, came_from_cache).

    Computed once per machine: a file lock lets one process (or Ray worker) compute while the others
    wait and then read its file. The work is done in chunks, each kept on disk (`<cache>.parts/`) as
    soon as it is done, so an interrupted extraction loses at most one chunk and the next call goes
    on from there; the result equals one extraction in one go (chunks are whole extractor batches).
    `progress` is called with the number of images done so far (chunks found on disk included)."""
    from filelock import FileLock

    path = real_cache_path(dataset, split, n, extractor.name, cache_root)
    cached = _read_cache(path, n, warn=False)  # without the lock: one warning, below, if it is damaged
    if cached is not None:
        return cached, True
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_suffix(".lock"))):
        cached = _read_cache(path, n)  # another process may have written it while we waited
        if cached is not None:
            return cached, True
        parts = path.with_name(path.stem + ".parts")
        size = max(1, CHUNK // extractor.batch_size) * extractor.batch_size
        subset = real_subset(images, n)
        chunks: list[Features] = []
        for start in range(0, n, size):
            stop = min(start + size, n)
            part = parts / f"{start:07d}-{stop:07d}.pt"
            chunk = _read_cache(part, stop - start)
            if chunk is None:
                report = None if progress is None else (lambda k, base=start: progress(base + k))
                try:
                    chunk = Features(*extract(extractor, iter([to_uint8(subset[start:stop])]), report))
                except KeyboardInterrupt:
                    raise MetricError(
                        f"interrupted while extracting real features of {dataset}/{split}: {start} of {n} images "
                        "done and kept; run again to continue"
                    ) from None
                _write_cache(part, chunk)
            elif progress is not None:
                progress(stop)
            chunks.append(chunk)
        features = Features(torch.cat([c.pool for c in chunks]), torch.cat([c.logits for c in chunks]))
        if _write_cache(path, features):
            shutil.rmtree(parts, ignore_errors=True)
    return features, False


def _checksum(features: Features) -> str:
    digest = hashlib.sha256()
    for t in (features.pool, features.logits):
        t = t.detach().cpu().contiguous()
        digest.update(f"{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _write_cache(path: Path, features: Features) -> bool:
    """Atomically (temporary file, fsync, rename), with length and checksum; a failed write (a full
    disk) leaves no file and one warning, and the run goes on with the features in memory."""
    blob = io.BytesIO()
    torch.save({"pool": features.pool, "logits": features.logits, "n": len(features.pool),
                "sha256": _checksum(features)}, blob)  # fmt: skip
    try:
        write_atomically(path, blob.getbuffer())  # a reader never sees half a file
        return True
    except OSError as exc:
        log.warning("cannot write the real-feature cache %s (%s); going on without it", path, exc.strerror or exc)
        return False


def _read_cache(path: Path, n: int, warn: bool = True) -> Features | None:
    """The cached features of n images, or None: absent, or unreadable, truncated or not matching its
    checksum (one warning line; it is then recomputed and rewritten)."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        features = Features(blob["pool"], blob["logits"])
        valid = blob["n"] == n == len(features.pool) == len(features.logits) and blob["sha256"] == _checksum(features)
    except Exception:  # noqa: BLE001 - whatever is wrong with the file, the answer is to recompute it
        valid = False
    if not valid:
        if warn:
            log.warning("real-feature cache %s is unreadable, truncated or fails its checksum; recomputing", path)
        return None
    return features


def fake_features(extractor: Extractor, batches: Iterator[Tensor]) -> Features:
    """Features of generated batches in [-1, 1], straight from memory."""
    pool, logits = extract(extractor, (to_uint8(b) for b in batches))
    return Features(pool, logits)

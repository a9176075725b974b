"""Sample-quality metrics: FID/KID sanity on real MNIST with real Inception, IS plumbing against a
hand computation with a toy extractor, the real-feature cache, and 2-D mode metrics."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from lossbench.errors import MetricError
from lossbench.gan import data
from lossbench.metrics import features as metrics
from lossbench.metrics import modes

N = 24  # images per set: Inception runs at a few images/s on a 2-core CPU. Margins here (FID of the
# uniform set / the test split's; 3 is asserted): 6.4 at 48 images, 4.7 at 24, 4.1 at 16; KIDs in order at all


# --- IS plumbing and the cache, with a toy extractor whose class probabilities are known -------


def toy_extractor(calls: list[int]) -> metrics.Extractor:
    """Image of constant gray level v -> a confident logit on class v (256 classes)."""

    def fn(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(images))
        level = images[:, 0, 0, 0].long()
        logits = 100.0 * torch.nn.functional.one_hot(level, 256).float()
        return images.float().flatten(1)[:, :8], logits

    return metrics.Extractor("toy", fn, batch_size=7)


def constant_images(levels: list[int]) -> torch.Tensor:
    """[-1, 1] images whose uint8 form is the given gray level everywhere."""
    values = torch.tensor(levels, dtype=torch.float32) / 127.5 - 1
    return values.view(-1, 1, 1, 1).expand(-1, 1, 4, 4).clone()


def test_inception_score_plumbing_matches_hand_computation() -> None:
    # 25 samples, each confidently in its own class. torch-fidelity splits N=25 into 10 chunks of
    # sizes 2,3,2,3,...; within a chunk of n distinct confident classes the marginal is uniform over
    # n, every KL(p(y|x) || p(y)) = log n, so the chunk's score is n: mean 2.5, std 0.5.
    calls: list[int] = []
    fake = metrics.fake_features(toy_extractor(calls), iter([constant_images(list(range(10, 35)))]))
    assert len(fake.logits) == 25 and calls == [7, 7, 7, 4]  # re-batched to the extractor's size
    assert fake.logits.argmax(1).tolist() == list(range(10, 35))  # [-1, 1] -> uint8 round trip exact
    result = metrics.compare(("is",), fake, fake)
    assert abs(result["is_mean"] - 2.5) < 1e-9
    assert abs(result["is_std"] - 0.5) < 1e-9


def test_nan_metric_is_dropped_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    kept = metrics.drop_missing({"fid": 12.5, "is_mean": float("nan"), "is_std": float("nan")})
    assert kept == {"fid": 12.5}
    assert "is_mean came out nan" in caplog.text


def test_real_features_are_cached_not_recomputed() -> None:
    calls: list[int] = []
    ext = toy_extractor(calls)
    images = constant_images(list(range(40)))
    first, cached = metrics.real_features(ext, "toyset", "train", images, 30)
    assert not cached and sum(calls) == 30
    path = metrics.real_cache_path("toyset", "train", 30, "toy")
    assert path.is_file()
    again, cached = metrics.real_features(ext, "toyset", "train", images, 30)
    assert cached and sum(calls) == 30  # the extractor did not run again
    assert torch.equal(first.pool, again.pool)
    other, cached = metrics.real_features(ext, "toyset", "test", images, 30)
    assert not cached  # a different split is a different key


def test_interrupted_extraction_keeps_its_chunks_and_continues_bit_for_bit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(metrics, "CHUNK", 14)  # chunks of two toy batches (7): [0, 14), [14, 28), [28, 30)
    images, cache = constant_images(list(range(40))), tmp_path / "cache"
    calls: list[int] = []
    toy = toy_extractor(calls)

    def dies_on_third_batch(batch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C in the second chunk
        return toy.fn(batch)

    interrupted = metrics.Extractor("toy", dies_on_third_batch, batch_size=7)
    with pytest.raises(MetricError, match="14 of 30 images done and kept; run again to continue"):
        metrics.real_features(interrupted, "toyset", "train", images, 30, cache)
    path = metrics.real_cache_path("toyset", "train", 30, "toy", cache)
    assert not path.exists() and [p.name for p in path.with_name(path.stem + ".parts").iterdir()] == [
        "0000000-0000014.pt"
    ]

    calls.clear()
    seen: list[int] = []
    resumed, cached = metrics.real_features(toy, "toyset", "train", images, 30, cache, progress=seen.append)
    assert not cached and calls == [7, 7, 2]  # only the 16 images the first attempt had not done
    assert seen == [14, 21, 28, 30]  # the chunk found on disk, then each batch
    assert not path.with_name(path.stem + ".parts").exists()
    one_go = metrics.extract(toy, iter([metrics.to_uint8(metrics.real_subset(images, 30))]))
    assert torch.equal(resumed.pool, one_go[0]) and torch.equal(resumed.logits, one_go[1])
    again, cached = metrics.real_features(toy, "toyset", "train", images, 30, cache)
    assert cached and torch.equal(again.pool, one_go[0]) and torch.equal(again.logits, one_go[1])


@pytest.mark.parametrize("damage", ["truncated", "altered"])
def test_damaged_cache_is_recomputed_with_one_warning(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[int] = []
    toy, images, cache = toy_extractor(calls), constant_images(list(range(40))), tmp_path / "cache"
    first, _ = metrics.real_features(toy, "toyset", "train", images, 30, cache)
    path = metrics.real_cache_path("toyset", "train", 30, "toy", cache)
    if damage == "truncated":  # a disk that filled, a copy cut short
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # readable, the right length, one number changed
        blob = torch.load(path, weights_only=True)
        blob["pool"][3, 0] += 1
        torch.save(blob, path)
    calls.clear()
    caplog.clear()
    again, cached = metrics.real_features(toy, "toyset", "train", images, 30, cache)
    assert not cached and sum(calls) == 30 and torch.equal(again.pool, first.pool)
    (warning,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "fails its checksum; recomputing" in warning
    assert metrics.real_features(toy, "toyset", "train", images, 30, cache)[1]  # rewritten whole: read back


def test_too_many_samples_is_a_clear_error() -> None:
    from lossbench.errors import MetricError

    with pytest.raises(MetricError, match="larger than the reference set"):
        metrics.real_subset(torch.zeros(10, 1, 2, 2), 11)


# --- FID/KID sanity (Heusel et al. 2017) on real MNIST and the real Inception network ----------


@pytest.fixture(scope="module")
def inception_features(mnist_dir: str) -> dict[str, metrics.Features]:
    ext = metrics.EXTRACTORS.get("inception-v3-compat")(torch.device("cpu"))
    train = metrics.real_subset(data.load("mnist", mnist_dir, "train").x, N)
    test = metrics.real_subset(data.load("mnist", mnist_dir, "test").x, N)
    g = torch.Generator().manual_seed(0)
    sets = {"train": train, "test": test}
    for sigma in (0.1, 0.6):
        sets[f"noise{sigma}"] = (test + sigma * torch.randn(test.shape, generator=g)).clamp(-1, 1)
    sets["uniform"] = torch.rand(test.shape, generator=g) * 2 - 1
    return {k: metrics.fake_features(ext, iter([v])) for k, v in sets.items()}


@pytest.mark.xdist_group("inception-features")  # one worker computes the module fixture once
def test_fid_of_a_set_with_itself_is_zero(inception_features: dict) -> None:
    f = inception_features["train"]
    result = metrics.compare(("fid",), f, f)
    assert abs(result["fid"]) < 1e-2


@pytest.mark.xdist_group("inception-features")
def test_fid_grows_with_noise_and_uniform_noise_is_far(inception_features: dict) -> None:
    real = inception_features["train"]
    fid = {k: metrics.compare(("fid", "kid"), real, v) for k, v in inception_features.items() if k != "train"}
    order = ["test", "noise0.1", "noise0.6"]
    values = [fid[k]["fid"] for k in order]
    assert values == sorted(values), values
    assert fid["uniform"]["fid"] > 3 * fid["test"]["fid"]
    kids = [fid[k]["kid_mean"] for k in order]
    assert kids[0] < kids[-1] < fid["uniform"]["kid_mean"]


# --- 2-D mode metrics --------------------------------------------------------------------------


def test_modes_all_half_and_noise() -> None:
    ds = data.load("ring8")
    m, std = ds.modes, ds.mode_std
    g = torch.Generator().manual_seed(0)

    all_modes = modes.mode_metrics(ds.x[:2500], m, std)  # 2-D: P(r < 3 sigma) = 1 - e^-4.5 = 0.989
    assert all_modes["modes"] == 8 and all_modes["high_quality"] > 0.98 and all_modes["reverse_kl"] < 0.01

    half = m[torch.arange(2500) % 4 * 2] + std * torch.randn(2500, 2, generator=g)  # modes 0, 2, 4, 6
    result = modes.mode_metrics(half, m, std)
    assert result["modes"] == 4 and result["high_quality"] > 0.98
    # about uniform over half of the modes: log 2, up to the few samples outside 3 sigma
    assert abs(result["reverse_kl"] - math.log(2)) < 1e-3

    noise = torch.rand(2500, 2, generator=g) * 20 - 10
    result = modes.mode_metrics(noise, m, std)
    assert result["modes"] == 0 and result["high_quality"] < 0.01


def test_grid25_modes() -> None:
    ds = data.load("grid25")
    assert len(ds.modes) == 25 and ds.mode_std == 0.05
    result = modes.mode_metrics(ds.x[:5000], ds.modes, ds.mode_std)
    assert result["modes"] == 25 and result["high_quality"] > 0.98 and result["reverse_kl"] < 0.01


def test_fid_and_kid_agree_with_torchmetrics_on_the_same_features() -> None:
    """An independent implementation of the same formulas: torchmetrics' FID and KID, fed the same
    feature vectors through an identity "extractor", against torch-fidelity's numbers as lossbench
    computes them (KID on the full sets: subsets as large as the sets)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    class Identity(torch.nn.Module):
        num_features = 16

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    g = torch.Generator().manual_seed(0)
    real = torch.randn(300, 16, generator=g, dtype=torch.float64)
    fake = 0.8 * torch.randn(300, 16, generator=g, dtype=torch.float64) + 0.3
    logits = torch.randn(300, 10, generator=g, dtype=torch.float64)  # FID and KID must not read these
    ours = metrics.compare(("fid", "kid"), metrics.Features(real, logits), metrics.Features(fake, logits))
    fid = FrechetInceptionDistance(feature=Identity())
    kid = KernelInceptionDistance(feature=Identity(), subsets=1, subset_size=300)
    for metric in (fid, kid):
        metric.update(real, real=True)
        metric.update(fake, real=False)
    assert ours["fid"] == pytest.approx(fid.compute().item(), rel=1e-6)
    assert ours["kid_mean"] == pytest.approx(kid.compute()[0].item(), rel=1e-6)
    assert ours["fid"] > 1.0  # the sets differ: a real comparison, not 0 == 0


def test_a_feature_sets_statistics_are_computed_once_and_are_torch_fidelitys() -> None:
    """The real features' mean and covariance serve every evaluation against them (a group's members,
    every step): computed on first use, the same arrays after, equal to torch-fidelity's."""
    from torch_fidelity.metric_fid import fid_features_to_statistics

    g = torch.Generator().manual_seed(0)
    real = metrics.Features(torch.randn(50, 8, generator=g, dtype=torch.float64), torch.zeros(50, 3))
    first = real.statistics
    assert real.statistics is first  # not recomputed
    expected = fid_features_to_statistics(real.pool)
    assert (first["mu"] == expected["mu"]).all() and (first["sigma"] == expected["sigma"]).all()
    fakes = [metrics.Features(real.pool + shift, real.logits) for shift in (0.5, 1.0)]
    fids = [metrics.compare(("fid",), real, fake)["fid"] for fake in fakes]
    assert real.statistics is first and fids[0] == pytest.approx(0.25 * 8) and fids[1] == pytest.approx(8.0)


def test_precision_recall_density_coverage_through_compare() -> None:
    """--metrics pr,dc: computed on the pool features compare() is given (not the logits), with k = 3
    for precision and recall and k = 5 for density and coverage; a fake set near half of the real one
    keeps its fidelity (precision, density) and loses diversity (recall, coverage)."""
    from lossbench.metrics import prdc

    g = torch.Generator().manual_seed(0)
    a = torch.randn(200, 8, generator=g)
    b = torch.randn(200, 8, generator=g) + 50.0  # a second, far cluster
    real = torch.cat([a, b])
    half = a[:150] + 0.05 * torch.randn(150, 8, generator=g)  # near the first cluster only
    noise = torch.randn(400, 5, generator=g)  # logits: what pr and dc must not read
    out = metrics.compare(("pr", "dc"), metrics.Features(real, noise), metrics.Features(half, noise[:150]))
    assert set(out) == {"precision", "recall", "density", "coverage"}
    expected = prdc.precision_recall(real, half, k=3) | prdc.density_coverage(real, half, k=5)
    assert out == pytest.approx(expected, abs=1e-12)
    assert out != pytest.approx(prdc.precision_recall(real, half, k=5) | prdc.density_coverage(real, half, k=3))
    assert out["precision"] > 0.9 and out["density"] > 0.8  # fidelity kept
    assert out["recall"] < 0.55 and out["coverage"] < 0.55  # half the modes lost
    same = metrics.compare(("pr", "dc"), metrics.Features(real, real), metrics.Features(real, real))
    assert same["precision"] == same["recall"] == same["coverage"] == 1.0

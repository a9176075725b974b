"""Stacked MNIST: the data set, the project's MNIST classifier, the mode metrics and fcd it scores,
PacGAN's DCGAN with packing (issue 25)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

import lossbench
from lossbench import config
from lossbench import train as trainer
from lossbench.errors import ConfigError, DataError, MetricError
from lossbench.exec import evaluation
from lossbench.gan import data, models, stacked
from lossbench.metrics import classified, classifier, modes
from lossbench.options import SpeedConfig

# sha256 of the (N, 3) int64 index tensors, as first drawn (torch's CPU generator, seeds 0 and 1)
TRAIN_INDEX_SHA256 = "d3d847638cd5df1c16813b9f99bd6e4c9e361cf1cbc394a2ffb7d50db96deeaa"
TEST_INDEX_SHA256 = "7378acde5b199f0c7a05518fc8228d7dcbf98fa1f72a1b60ddc79b7f2b1dbd55"


@pytest.fixture(scope="module")
def mnist_test(mnist_dir: str) -> tuple[torch.Tensor, torch.Tensor]:
    return classifier.mnist_split("test", mnist_dir)


@pytest.fixture(scope="module")
def stacked_test(mnist_dir: str) -> torch.Tensor:
    return data.load("stacked-mnist", mnist_dir, "test").x


# --- the classifier ---------------------------------------------------------------------------


def test_shipped_classifier_scores_at_least_99_percent_on_the_mnist_test_split(mnist_test) -> None:
    acc = classifier.accuracy(classifier.load(), *mnist_test)
    assert acc >= 0.99
    card = json.loads(classifier.CARD.read_text())
    assert card["test_accuracy"] == pytest.approx(acc, abs=1e-6)  # the card says what the weights do
    assert card["command"] == "lossbench classifier train" and card["seed"] == 0
    assert classifier.WEIGHTS.stat().st_size < 1_000_000


def test_shipped_weights_checksum_is_checked_on_load(tmp_path: Path) -> None:
    state = torch.load(classifier.WEIGHTS, weights_only=True)
    assert classifier.sha256(state) == json.loads(classifier.CARD.read_text())["sha256"]
    resaved = tmp_path / "resaved.pt"
    torch.save(state, resaved)  # another file (torch.save's random id), the same tensors: the same checksum
    classifier.load(resaved, classifier.CARD)
    classifier.load()  # the shipped pair loads
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"sha256": "0" * 64}))  # another checksum: the same file is refused
    with pytest.raises(MetricError, match="sha256"):
        classifier.load(classifier.WEIGHTS, card)


def test_corrupted_weights_are_refused_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "mnist_cnn.pt"
    shutil.copy(classifier.WEIGHTS, bad)
    blob = bytearray(bad.read_bytes())
    blob[len(blob) // 2] ^= 0xFF  # one flipped byte inside a tensor
    bad.write_bytes(bytes(blob))
    with pytest.raises(MetricError) as exc:
        classifier.load(bad, classifier.CARD)
    assert "corrupted" in str(exc.value) and "\n" not in str(exc.value)
    bad.write_bytes(classifier.WEIGHTS.read_bytes()[:1000])  # truncated: not even a tensor archive
    with pytest.raises(MetricError, match="could not be read") as exc:
        classifier.load(bad, classifier.CARD)
    assert "\n" not in str(exc.value)


# --- mode metrics on known answers --------------------------------------------------------------


@pytest.mark.slow  # 26,000 images: about 40 s on this CPU
def test_real_stacked_test_samples_capture_at_least_990_modes_at_26000(stacked_test: torch.Tensor) -> None:
    assert len(stacked_test) == modes.STACKED_SAMPLES == 26_000
    out = lossbench.mode_metrics(stacked_test, "stacked-mnist")
    assert out["modes"] >= 990
    assert out["reverse_kl"] < 0.1


def test_one_repeated_triple_captures_one_mode(stacked_test: torch.Tensor) -> None:
    out = lossbench.mode_metrics(stacked_test[:1].repeat(50, 1, 1, 1), "stacked-mnist")
    assert out["modes"] == 1
    assert out["reverse_kl"] == pytest.approx(math.log(1000))


@pytest.mark.parametrize("k", [1, 7, 1000])
def test_exactly_k_triples_capture_k(k: int) -> None:
    triples = torch.tensor([[t // 100, t // 10 % 10, t % 10] for t in range(0, 1000, 1000 // k)][:k])
    out = modes.triple_mode_metrics(triples.repeat(3, 1))
    assert out["modes"] == k
    assert out["reverse_kl"] == pytest.approx(math.log(1000 / k), abs=1e-12)


def test_images_of_exactly_7_triples_capture_7(mnist_test) -> None:
    images, labels = mnist_test
    right = classifier.predict(images) == labels
    by_digit = {d: images[(labels == d) & right][:1] for d in range(10)}  # one well-read example per digit
    triples = [(1, 2, 3), (3, 2, 1), (0, 0, 0), (9, 9, 9), (4, 5, 6), (7, 8, 9), (5, 0, 5)]
    x = torch.cat([torch.cat([by_digit[d] for d in t], dim=1) for t in triples]).repeat(4, 1, 1, 1)
    out = lossbench.mode_metrics(x, "stacked-mnist")
    assert out["modes"] == 7
    assert out["reverse_kl"] == pytest.approx(math.log(1000 / 7), abs=1e-12)


def test_mode_metrics_refuse_images_of_another_shape() -> None:
    with pytest.raises(ValueError, match="N x 3 x 28 x 28"):
        lossbench.mode_metrics(torch.zeros(4, 1, 28, 28), "stacked-mnist")


def test_fcd_is_small_between_real_halves_and_large_against_noise(stacked_test: torch.Tensor) -> None:
    a, b = classified.feature_statistics(stacked_test[:2000]), classified.feature_statistics(stacked_test[2000:4000])
    noise = classified.feature_statistics(
        torch.rand(2000, 3, 28, 28, generator=torch.Generator().manual_seed(0)) * 2 - 1
    )
    same, apart = classified.fcd(a, b), classified.fcd(a, noise)
    assert 0 <= same < apart / 20


# --- configuration and evaluation -----------------------------------------------------------------


def test_classifier_metrics_apply_only_where_the_classifier_reads_the_data() -> None:
    cfg = config.resolve(("flags", {"dataset": "stacked-mnist", "metrics": ["modes", "fcd"]}))
    assert cfg.model.arch == "pacgan-dcgan" and cfg.metrics.metrics == ("modes", "fcd")
    assert config.resolve(("flags", {"dataset": "stacked-mnist"})).metrics.metrics == ("modes",)
    config.resolve(("flags", {"dataset": "mnist", "metrics": ["fcd"]}))
    with pytest.raises(ConfigError, match="metric 'modes' does not apply to image data set 'mnist'"):
        config.resolve(("flags", {"dataset": "mnist", "metrics": ["modes"]}))
    with pytest.raises(ConfigError, match="metric 'fcd' does not apply"):
        config.resolve(("flags", {"dataset": "cifar10", "metrics": ["fcd"]}))


def test_the_evaluator_logs_modes_kl_and_fcd_on_stacked_mnist(stacked_test: torch.Tensor) -> None:
    cfg = config.resolve(("flags", {"dataset": "stacked-mnist", "metrics": ["modes", "fcd"], "mode_samples": 300,
                                    "fid_samples": 200}))  # fmt: skip
    train_set = data.Dataset(name="stacked-mnist", split="train", x=stacked_test[:1000])
    assert not evaluation.needs_images(cfg, train_set)  # no Inception
    torch.manual_seed(0)
    G, _ = models.build("pacgan-dcgan", (3, 28, 28), 100)
    out = evaluation.make_evaluator(cfg, torch.device("cpu"), None, train_set, show=False)(G, 0, 0)
    assert set(out) == {"modes", "reverse_kl", "fcd"}
    assert 1 <= out["modes"] <= 300 and 0 <= out["reverse_kl"] <= math.log(1000) and out["fcd"] > 0


# --- the data set ---------------------------------------------------------------------------------


def test_the_data_set_is_pinned(stacked_test: torch.Tensor, mnist_test, monkeypatch: pytest.MonkeyPatch) -> None:
    assert stacked.digest(stacked.indices("train")) == TRAIN_INDEX_SHA256
    assert stacked.digest(stacked.indices("test")) == TEST_INDEX_SHA256
    assert data.size("stacked-mnist", "train") == 128_000 and data.size("stacked-mnist", "test") == 26_000
    idx = stacked.indices("test")
    assert stacked_test.shape == (26_000, 3, 28, 28)
    torch.testing.assert_close(stacked_test[:5, 1], mnist_test[0][idx[:5, 1], 0], rtol=0, atol=0)
    cfg = config.resolve(("flags", {"dataset": "stacked-mnist", "loss": "non-saturating", "pack": 2}))
    assert cfg.config_hash() == "e010636a3d9cf57f"  # pinned: the data set and its defaults
    monkeypatch.setitem(stacked.INDEX_SHA256, "test", "f" * 64)  # a torch that draws other triples
    with pytest.raises(DataError, match="draws other triples"):
        data.load("stacked-mnist", None, "test")


# --- PacGAN's DCGAN, packed, parallel seeds --------------------------------------------------------


def test_pacgan_dcgan_has_the_papers_shapes() -> None:
    G, D = models.build("pacgan-dcgan", (3, 28, 28), 100, pack=3, d_batchnorm=True)
    assert G(torch.randn(2, 100)).shape == (2, 3, 28, 28)
    assert D(torch.randn(4, 9, 28, 28)).shape == (4,)
    assert [m.out_channels for m in D.modules() if isinstance(m, torch.nn.Conv2d)] == [64, 128, 256, 512]
    assert [m.out_channels for m in G.modules() if isinstance(m, torch.nn.ConvTranspose2d)] == [256, 128, 64, 3]
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in D.modules()) == 3
    assert G[0].out_features == 512 * 2 * 2


def _train(flags: dict, seeds: list[int], x: torch.Tensor, speed: SpeedConfig | None = None):
    cfg = config.resolve(("flags", {"dataset": "stacked-mnist", "log_every": 1, **flags}))
    state = trainer.setup(cfg, seeds, (3, 28, 28), torch.device("cpu"), speed)
    logged: dict[int, list] = {k: [] for k in range(len(seeds))}
    hooks = trainer.Hooks()
    hooks.log = lambda k, step, values: logged[k].append((step, values))
    return trainer.train(cfg, state, x, hooks), logged, state


@pytest.mark.slow  # PacGAN's DCGAN in float64: about a minute on this CPU
def test_parallel_seeds_equal_sequential_twins_on_stacked_mnist_with_packing(mnist_test) -> None:
    flags = {"pack": 2, "d_batchnorm": True, "z_dist": "uniform", "steps": 3, "batch_size": 4, "loss": "minimax"}
    torch.set_default_dtype(torch.float64)
    try:
        x = stacked.stack(mnist_test[0], stacked.indices("test")[:64]).double()
        seeds = [0, 1]
        outcomes, together, both = _train(flags, seeds, x, SpeedConfig(parallel_seeds=True))
        assert [o.status for o in outcomes] == ["finished"] * 2
        for k, seed in enumerate(seeds):
            _, alone, single = _train(flags, [seed], x)
            keys = ("d_loss", "g_loss")
            mine = torch.tensor([[v[key] for key in keys] for _, v in together[k]])
            theirs = torch.tensor([[v[key] for key in keys] for _, v in alone[0]])
            torch.testing.assert_close(mine, theirs, rtol=1e-9, atol=1e-9)
            a, b = both.state_dict(k), single.state_dict(0)
            for part in ("G", "D"):
                for name in a[part]:
                    torch.testing.assert_close(a[part][name], b[part][name], rtol=1e-9, atol=1e-9)
        assert together[0][-1][1]["d_loss"] != together[1][-1][1]["d_loss"]
    finally:
        torch.set_default_dtype(torch.float32)

"""The 2-D mode protocol of VEEGAN (Srivastava et al. 2017) and PacGAN (Lin et al. 2018): the metric
on hand-built point sets, the public lossbench.mode_metrics, what the evaluator scores, which way is
better, and the protocol a ring8 run logs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from torch import nn

import lossbench
from lossbench import cards, config
from lossbench.errors import ConfigError, DataError
from lossbench.exec.evaluation import make_evaluator
from lossbench.gan import data
from lossbench.metrics import modes
from lossbench.metrics.registry import METRICS, higher_is_better
from lossbench.report import against
from lossbench.tracking import TAG_CONFIG_HASH, TAG_OUTCOME, TAG_ROLE, TAG_SEED, Tracker

RING, RING_STD = data.mixture("ring8")
GRID, GRID_STD = data.mixture("grid25")


def at(mode: torch.Tensor, sigmas: float, std: float, angle: float = 0.7) -> torch.Tensor:
    """A point `sigmas` standard deviations from `mode`, in direction `angle` (off the axes)."""
    return mode.double() + sigmas * std * torch.tensor([math.cos(angle), math.sin(angle)], dtype=torch.float64)


def far(n: int) -> torch.Tensor:
    """n points at the origin: 1 (100 sigma) from every ring8 mode, so never high quality."""
    return torch.zeros(n, 2, dtype=torch.float64)


# --- the metric on hand-built point sets -------------------------------------------------------


def test_the_mixtures_are_pacgans() -> None:
    angles = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    assert torch.allclose(RING.double(), torch.stack([angles.cos(), angles.sin()], 1), atol=1e-7)  # radius 1
    assert RING_STD == 0.01 and GRID_STD == 0.05
    assert sorted({float(v) for v in GRID.flatten()}) == [-4.0, -2.0, 0.0, 2.0, 4.0] and len(GRID) == 25
    ring, grid = data.load("ring8"), data.load("grid25", split="test")
    assert ring.x.shape == grid.x.shape == (100_000, 2)  # PacGAN's num_sample
    assert torch.equal(ring.modes, RING) and ring.mode_std == RING_STD and grid.mode_std == GRID_STD
    assert torch.equal(ring.x, data.load("ring8").x)  # a fixed generator per split
    assert not torch.equal(ring.x, data.load("ring8", split="test").x)
    assert abs(float((ring.x - RING[torch.cdist(ring.x, RING).argmin(1)]).std()) - RING_STD) < 2e-4


def test_one_high_quality_sample_captures_its_mode() -> None:
    points = torch.cat([at(RING[3], 2.0, RING_STD)[None], far(99)])
    result = modes.mode_metrics(points, RING, RING_STD)  # threshold 1, PacGAN's
    assert result == {"modes": 1.0, "high_quality": 0.01, "reverse_kl": pytest.approx(math.log(8))}
    assert modes.mode_metrics(points, RING, RING_STD, threshold=2)["modes"] == 0.0  # the threshold is honoured
    two = torch.cat([points, at(RING[3], 1.0, RING_STD)[None]])
    assert modes.mode_metrics(two, RING, RING_STD, threshold=2)["modes"] == 1.0


def test_high_quality_is_strictly_within_three_sigma() -> None:
    for means, k, std in ((RING, 1, RING_STD), (GRID, 7, GRID_STD)):
        inside = modes.mode_metrics(at(means[k], 2.99, std)[None], means, std)
        outside = modes.mode_metrics(at(means[k], 3.01, std)[None], means, std)
        assert (inside["modes"], inside["high_quality"]) == (1.0, 1.0)
        assert (outside["modes"], outside["high_quality"]) == (0.0, 0.0)
        assert math.isnan(outside["reverse_kl"])  # no high-quality sample: the histogram is 0/0


def test_all_points_on_one_mode_give_log_k() -> None:
    offsets = torch.linspace(0.0, 2.5, 2500, dtype=torch.float64)  # 0 .. 2.5 sigma from mode 5
    points = torch.stack([at(RING[5], float(s), RING_STD, angle=float(s)) for s in offsets])
    result = modes.mode_metrics(points, RING, RING_STD)
    # p = (0, 0, 0, 0, 0, 1, 0, 0): KL(p || uniform) = 1 * log(8 * 1) + 7 * 0 (0 log 0 = 0)
    assert result["modes"] == 1.0 and result["high_quality"] == 1.0
    assert result["reverse_kl"] == pytest.approx(math.log(8), abs=1e-12)


def test_reverse_kl_is_over_the_high_quality_histogram_only() -> None:
    hq = [GRID[0]] * 1250 + [GRID[1]] * 625 + [GRID[2]] * 625  # p = (1/2, 1/4, 1/4, 0, ...)
    poor = [at(GRID[10], 5.0, GRID_STD)] * 500  # nearest to mode 10 but outside 3 sigma: not counted
    points = torch.stack([p.double() for p in hq + poor])
    result = modes.mode_metrics(points, GRID, GRID_STD)
    by_hand = 0.5 * math.log(25 * 0.5) + 2 * 0.25 * math.log(25 * 0.25)
    assert result["reverse_kl"] == pytest.approx(by_hand, abs=1e-12)
    assert result["modes"] == 3.0 and result["high_quality"] == pytest.approx(2500 / 3000)


@pytest.mark.parametrize(("means", "std", "per_mode"), [(RING, RING_STD, 312), (GRID, GRID_STD, 100)])
def test_uniform_over_all_modes_gives_zero(means: torch.Tensor, std: float, per_mode: int) -> None:
    points = torch.cat([at(m, 1.5, std)[None].expand(per_mode, 2) for m in means])
    result = modes.mode_metrics(points, means, std)
    assert result["modes"] == float(len(means)) and result["high_quality"] == 1.0
    assert result["reverse_kl"] == pytest.approx(0.0, abs=1e-12)


def test_bad_arguments_are_errors() -> None:
    with pytest.raises(ValueError, match="threshold"):
        modes.mode_metrics(RING, RING, RING_STD, threshold=0)
    with pytest.raises(ValueError, match="at least one sample"):
        modes.mode_metrics(torch.zeros(0, 2), RING, RING_STD)


# --- the public function -----------------------------------------------------------------------


def test_public_mode_metrics_takes_tensors_arrays_and_lists() -> None:
    points = torch.cat([RING[:4].double(), far(4)])
    expected = {"modes": 4.0, "high_quality": 0.5, "reverse_kl": pytest.approx(math.log(2))}
    assert lossbench.mode_metrics(points, "ring8") == expected
    assert lossbench.mode_metrics(points.numpy().astype(np.float32), "ring8") == expected
    assert lossbench.mode_metrics(points.tolist(), "ring8") == expected
    assert lossbench.mode_metrics(GRID, "grid25")["modes"] == 25.0
    with pytest.raises(DataError, match="'mnist' has no modes; mode metrics apply to ring8, grid25"):
        lossbench.mode_metrics(points, "mnist")
    with pytest.raises(ConfigError, match="unknown dataset 'ring9'"):
        lossbench.mode_metrics(points, "ring9")
    with pytest.raises(ValueError, match=r"N x 2 for 'ring8', got shape \(8, 3\)"):
        lossbench.mode_metrics(torch.zeros(8, 3), "ring8")


def test_import_lossbench_stays_cheap() -> None:
    code = "import sys, lossbench; print(json.dumps(sorted(m for m in ('torch', 'numpy') if m in sys.modules)))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# --- the evaluator: mode_samples points, mode_threshold ------------------------------------------


class Fixed(nn.Module):
    """G that puts every sample on `point` and counts how many it was asked for."""

    def __init__(self, point: torch.Tensor) -> None:
        super().__init__()
        self.point = nn.Parameter(point.float().clone())
        self.made = 0

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.made += len(z)
        return self.point.expand(len(z), 2) + 0 * z[:, :2]


def evaluator(**flags: object):  # noqa: ANN201
    cfg = config.resolve(("flags", {"dataset": "ring8", **flags}))
    return cfg, make_evaluator(cfg, torch.device("cpu"), None, data.load("ring8"))


def test_evaluation_scores_mode_samples_points_not_fid_samples() -> None:
    cfg, evaluate = evaluator()
    assert (cfg.metrics.mode_samples, cfg.metrics.mode_threshold, cfg.metrics.fid_samples) == (2500, 1, 10000)
    G = Fixed(RING[2])
    result = evaluate(G, 0, 10)
    assert G.made == 2500
    assert result == {"modes": 1.0, "high_quality": 1.0, "reverse_kl": pytest.approx(math.log(8))}


def test_evaluation_passes_mode_threshold_and_drops_an_undefined_reverse_kl() -> None:
    _, evaluate = evaluator(mode_samples=300, fid_samples=50, mode_threshold=300)
    G = Fixed(RING[2])
    assert evaluate(G, 0, 10)["modes"] == 1.0 and G.made == 300
    _, evaluate = evaluator(mode_samples=300, mode_threshold=301)
    assert evaluate(Fixed(RING[2]), 0, 10)["modes"] == 0.0
    assert evaluate(Fixed(torch.zeros(2)), 0, 10) == {"modes": 0.0, "high_quality": 0.0}  # NaN: not logged


# --- which way is better ----------------------------------------------------------------------


def test_reverse_kl_is_lower_is_better_and_the_others_higher() -> None:
    assert METRICS.get("modes").keys == ("modes", "high_quality", "reverse_kl")
    assert higher_is_better("modes") and higher_is_better("high_quality") and higher_is_better("best_modes")
    assert not higher_is_better("reverse_kl")
    assert not higher_is_better("fid") and higher_is_better("is_mean")


def test_against_picks_the_lowest_reverse_kl_and_scales_percent(tmp_path: Path, store: str) -> None:
    tracker = Tracker(store, "paper")  # the template's copy: a new store's migrations cost seconds
    configs = [config.resolve(("t", {"dataset": "ring8", "lr_g": lr})) for lr in (1e-4, 2e-4)]
    for cfg, kls, hq in ((configs[0], [0.9, 0.8], [0.90, 0.92]), (configs[1], [0.2, 0.3], [0.97, 0.99])):
        for seed, (kl, q) in enumerate(zip(kls, hq)):
            run = tracker.start_run(f"run/{seed}", cfg.flat() | {"seed": seed}, {
                TAG_CONFIG_HASH: cfg.config_hash(), TAG_ROLE: "seed", TAG_SEED: str(seed)})  # fmt: skip
            tracker.log_metrics(run, 100, {"reverse_kl": kl, "high_quality": q, "modes": 8.0})
            tracker.end_run(run, "FINISHED", {TAG_OUTCOME: "finished"})
    path = tmp_path / "p.toml"
    path.write_text('title = "T"\ncitation = "C"\ntable = "Table 1"\nurl = "u"\nspread = "std"\n'
                    '[protocol]\nmode_samples = 2500\nmode_threshold = 1\n'
                    '[[result]]\nmodel = "non-saturating"\nlabel = "GAN"\ndataset = "ring8"\nmetric = "reverse_kl"\n'
                    'mean = 0.45\npm = 0.1\n'
                    '[[result]]\nmodel = "non-saturating"\nlabel = "GAN"\ndataset = "ring8"\nmetric = "high_quality"\n'
                    'mean = 98.0\npm = 1.0\nunit = "percent"\n')  # fmt: skip
    comparison = against.compare(cards.paper(str(path)), tracker.runs("seed"))
    rows = {r.published.metric: r for r in comparison.rows}
    assert rows["reverse_kl"].config_hash == configs[1].config_hash()  # lower is better: the 0.25 median
    assert rows["reverse_kl"].values == pytest.approx((0.2, 0.3))
    assert rows["high_quality"].config_hash == configs[1].config_hash()  # higher is better
    assert rows["high_quality"].values == pytest.approx((97.0, 99.0))  # the paper's percent
    assert rows["reverse_kl"].protocol() == "matches: mode_samples, mode_threshold"
    assert "reverse_kl: lower is better" in "\n".join(comparison.notes())


def test_shipped_paper_protocols_use_lossbench_keys() -> None:
    pacgan, veegan = cards.paper("pacgan2018"), cards.paper("veegan2017")
    for paper in (pacgan, veegan):
        assert (paper.protocol["mode_samples"], paper.protocol["mode_threshold"]) == (2500, 1)
        assert paper.protocol["ring_radius"] == 1.0 and paper.protocol["grid_std"] == GRID_STD
    assert pacgan.protocol["ring_std"] == RING_STD and "ring_std" not in veegan.protocol  # VEEGAN's is not known
    assert {k for k in pacgan.protocol if k in config.KEYS} == {
        "loss", "arch", "d_batchnorm", "z_dim", "z_dist", "optimizer", "lr_g", "lr_d", "beta1", "n_critic",
        "batch_size", "epochs", "mode_samples", "mode_threshold", "updates", "epoch_samples", "batching",
        "g_bn_stats"}  # fmt: skip
    assert pacgan.protocol["updates"] == "simultaneous"  # ali_algorithm: both gradients at the same parameters
    assert (pacgan.protocol["grid_spacing"], pacgan.protocol["grid_std"]) == (2.0, GRID_STD)
    assert pacgan.protocol["data_points"] == data.size("ring8") == data.size("grid25", "test")


# --- the public path: a ring8 run logs the protocol ---------------------------------------------


def test_ring8_run_logs_the_mode_protocol(store: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "lossbench", "run", "--dataset", "ring8", "--steps", "5",
                           "--log-every", "5", "--tracking-uri", store, "--no-progress"],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(tracking_uri=store)
    (run,) = [r for r in client.search_runs([client.get_experiment_by_name("lossbench").experiment_id])
              if r.data.tags["lossbench.role"] == "seed"]  # fmt: skip
    p, m = run.data.params, run.data.metrics
    assert (p["dataset"], p["mode_samples"], p["mode_threshold"], p["fid_samples"]) == ("ring8", "2500", "1", "10000")
    assert {"modes", "high_quality"} <= set(m) and "mode_kl" not in m
    assert m["high_quality"] * 2500 == pytest.approx(round(m["high_quality"] * 2500))  # a count out of 2,500
    # reverse_kl is logged whenever some point is high quality (an untrained G rarely has one)
    assert ("reverse_kl" in m) == (m["high_quality"] > 0)
    assert "reverse_kl" not in m or 0.0 <= m["reverse_kl"] <= math.log(8) + 1e-9

"""`lossbench report` on a store built through MLflow's API with known numbers."""

from __future__ import annotations

import re
import shutil
import subprocess
from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_cli import lossbench, lossbench_here

from lossbench.report import stats as report_stats
from lossbench.tracking import TAG_CONFIG_HASH, TAG_OUTCOME, TAG_ROLE, TAG_SEED, Tracker

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"

MINIMAX = [10.0, 12.0, 14.0, 16.0, 18.0]
NONSAT = [5.0, 6.0, 7.0, 8.0, 9.5]
HINGE = [11.0, 13.0]


def make_store(uri: str, tmp: Path) -> None:
    tracker = Tracker(uri, "paper")
    grid = tmp / "grid.png"
    import torch

    from lossbench.exec.sample_figures import save_grid

    save_grid(torch.rand(4, 1, 8, 8) * 2 - 1, grid, nrow=2)
    for loss, fids, diverged in (("minimax", MINIMAX, 1), ("non-saturating", NONSAT, 0), ("hinge", HINGE, 0)):
        tags = {TAG_CONFIG_HASH: f"hash-{loss}"}
        parent = tracker.start_run(loss, {"loss": loss}, tags | {TAG_ROLE: "parent"})
        params = {"loss": loss, "penalty": "none", "dataset": "mnist", "arch": "mlp", "steps": 100}
        for seed, fid in enumerate(fids + [None] * diverged):
            run = tracker.start_run(
                f"{loss}/{seed}", params | {"seed": seed}, tags | {TAG_ROLE: "seed", TAG_SEED: str(seed)}, parent
            )
            for step in (50, 100):
                tracker.log_metrics(run, step, {"d_loss": 1.0 + seed + step / 100, "g_loss": 0.5})
            if fid is None:
                tracker.end_run(run, "FAILED", {TAG_OUTCOME: "diverged"})
                continue
            tracker.log_metrics(run, 50, {"fid": fid + 20})
            tracker.log_metrics(run, 100, {"fid": fid, "best_fid": fid, "kid_mean": fid / 100})
            tracker.log_artifact(run, grid, "samples")
            tracker.end_run(run, "FINISHED", {TAG_OUTCOME: "finished"})
        tracker.end_run(parent, "FINISHED")


@pytest.mark.xdist_group("paper-store")  # one worker builds the store (conftest) once
def test_summary_numbers_and_tests(paper_store: str, tmp_path: Path) -> None:
    store = paper_store  # make_store's, read-only here
    out = tmp_path / "report"
    proc = lossbench("report", "--tracking-uri", store, "--experiment", "paper", "--out", str(out))
    assert "index.html" in proc.stdout
    assert {p.name for p in out.iterdir()} >= {"index.html", "report.md", "runs.csv", "summary.csv", "figures"}

    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 5 + 1 + 5 + 2
    summary = pd.read_csv(out / "summary.csv").set_index("loss")
    mm = summary.loc["minimax"]
    assert (mm["seeds"], mm["finished"], mm["diverged"], mm["failed"]) == (6, 5, 1, 0)
    assert mm["fid_mean"] == 14.0 and abs(mm["fid_std"] - np.std(MINIMAX, ddof=1)) < 1e-12
    assert (mm["fid_median"], mm["fid_min"], mm["fid_max"]) == (14.0, 10.0, 18.0)
    ns = summary.loc["non-saturating"]
    assert abs(ns["fid_mean"] - np.mean(NONSAT)) < 1e-12 and ns["fid_median"] == 7.0
    assert abs(ns["kid_mean_mean"] - np.mean(NONSAT) / 100) < 1e-12
    assert summary.loc["hinge", "finished"] == 2

    md = (out / "report.md").read_text()
    expected_p = stats.mannwhitneyu(MINIMAX, NONSAT, alternative="two-sided").pvalue
    match = re.search(r"non-saturating < minimax on mnist \(fid\): p = ([0-9.e-]+), Holm p = ([0-9.e-]+)", md)
    assert match, md
    assert abs(float(match.group(1)) - expected_p) / expected_p < 1e-2  # printed to 3 significant digits
    assert "hinge vs minimax on mnist: no test (2 vs 5 seeds; needs >= 3 each)" in md
    assert summary.loc["minimax", "run_ids"].count(" ") == 5  # every seed run linked
    grids = sorted((out / "figures" / "samples").glob("*/*.png"))
    assert len(grids) == 3 and len({g.parent.name for g in grids}) == 3  # one median-seed grid per loss
    assert list(pd.read_csv(out / "summary.csv")["loss"]) == ["hinge", "minimax", "non-saturating"]

    # uncertainty: the mean's bootstrap interval (report.stats.describe) and P(one beats the other)
    d = report_stats.describe(MINIMAX)
    assert (mm["fid_ci_low"], mm["fid_ci_high"]) == pytest.approx((d.ci_low, d.ci_high), abs=1e-9)
    assert mm["fid_ci_low"] < 14.0 < mm["fid_ci_high"] and pd.isna(summary.loc["hinge", "fid_ci_low"])
    assert f"| {d.interval()} |" in md and "| n/a (2 seeds; needs >= 3) |" in md
    p_ns = report_stats.p_beats(NONSAT, MINIMAX)  # 24 of 25 pairs, 9.5 vs 10 the one close call... all won
    assert p_ns == 1.0 and "(5 vs 5 seeds); P(non-saturating beats minimax on a random seed pair) = 1.00" in md
    assert "P(hinge beats minimax on a random seed pair) = 0.70" in md  # 11: beats 4 of 5; 13: 3 of 5
    # the protocol header of a store whose runs logged none of it: said so, not guessed
    assert "- mnist (13 seed runs): metrics (names not logged); features not logged;" in md


@pytest.mark.slow  # a real run end to end (20-50 s on 2 cores): keeps the default suite short
def test_header_states_the_protocol_of_a_real_run_and_why_sections_are_empty(
    store: str, mnist_dir: str, tmp_path: Path
) -> None:
    lossbench("run", "--steps", "2", "--fid-samples", "8", "--metrics", "fid", "--eval-every", "1", "--reference-split",
              "test", "--tracking-uri", store, "--data-dir", mnist_dir, "--no-progress")  # fmt: skip
    out = tmp_path / "report"
    lossbench("report", "--tracking-uri", store, "--out", str(out))
    md, page = (out / "report.md").read_text(), (out / "index.html").read_text()
    header = md.split("## Summary")[0]
    protocol = ("mnist (1 seed run): metrics fid; features inception-v3-compat; 8 generated samples per evaluation "
                "against 8 real ones from the test split (the same fixed subset for every run); evaluated every 1 "
                "steps and at the last step (2)")  # fmt: skip
    assert f"- {protocol}" in header and "Hesterberg's expanded level" in header
    assert "- mnist: no pairwise tests: one configuration (non-saturating); a test needs two" in md
    assert "| n/a (1 seed; needs >= 3) |" in md
    assert "- Dirac-GAN trajectories in the (θ, ψ) plane: not drawn: no Dirac-GAN runs (no θ, ψ logged)" in md
    for line in (protocol, "mnist: no pairwise tests: one configuration (non-saturating); a test needs two",
                 "n/a (1 seed; needs &gt;= 3)", "not drawn: no Dirac-GAN runs"):  # fmt: skip
        assert line in page, line
    runs = pd.read_csv(out / "runs.csv")
    assert (runs["fid_samples"].tolist(), runs["reference_split"].tolist(), runs["eval_every"].tolist()) == (
        [8],
        ["test"],
        [1],
    )


def test_holm_and_expected_best() -> None:
    assert report_stats.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    curve = report_stats.expected_best(np.array([3.0, 1.0, 2.0]))  # exact: best of 2 of 3 is 1 in 2 of 3 pairs
    assert curve == pytest.approx([2.0, 1 * 2 / 3 + 2 * 1 / 3, 1.0], abs=1e-12)
    assert report_stats.expected_best(np.array([3.0, 1.0, 2.0]), lower_is_better=False) == pytest.approx(
        [2.0, 3 * 2 / 3 + 2 * 1 / 3, 3.0], abs=1e-12
    )
    values = np.array([4.0, 1.0, 7.0, 2.0, 9.0])  # against every k-subset, enumerated
    brute = [np.mean([min(c) for c in combinations(values, k)]) for k in range(1, 6)]
    assert report_stats.expected_best(values) == pytest.approx(brute, abs=1e-12)


def test_empty_store_is_a_clear_error(unmade_store: str, tmp_path: Path, new_store,
                                      caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """Refused before any report is built: in this process (a subprocess's imports cost 4-6 s each; a
    refused report through a real process: tests/test_report_folder.py)."""
    store = unmade_store
    proc = lossbench_here("report", "--tracking-uri", store, "--out", str(tmp_path / "r"), caplog=caplog)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "no tracking store" in proc.stderr
    new_store(Path(store.removeprefix("sqlite:///")))  # the template's copy: a new store's migrations cost seconds
    Tracker(store, "lossbench")  # a store with an experiment but no runs
    proc = lossbench_here("report", "--tracking-uri", store, "--out", str(tmp_path / "r"), caplog=caplog)
    assert proc.returncode != 0 and "no matching runs" in proc.stderr
    assert not (tmp_path / "r" / "index.html").exists()


@pytest.mark.xdist_group("paper-store")  # one worker builds the store (conftest) once
def test_html_renders_in_headless_chromium(paper_store: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed (Debian package chromium; .ci/run installs it)"
    store = paper_store  # make_store's, read-only here
    out = tmp_path / "report"
    lossbench("report", "--tracking-uri", store, "--experiment", "paper", "--out", str(out))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000"]  # fmt: skip
    url = (out / "index.html").as_uri()
    dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-ok="true"' in dom, dom[:500]
    count = int(re.search(r'data-image-count="(\d+)"', dom).group(1))
    assert count >= 5  # distribution, two loss curves, budget, sample grids
    assert '<table id="summary"' in dom or 'id="summary"' in dom
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "report.png"
    subprocess.run([browser, *flags, "--window-size=1280,2400", f"--screenshot={shot}", url],
                   capture_output=True, timeout=120)  # fmt: skip
    assert shot.is_file() and shot.stat().st_size > 10_000


def test_the_header_says_stacked_mnist_modes_are_classifier_triples_not_2d_points() -> None:
    """A stacked-MNIST modes run is described by what its numbers are (digit triples read by the
    project's classifier), not as 2-D points against a mixture's known modes."""
    from lossbench.report import protocol

    params = {"metrics": "modes", "feature_extractor": "none", "fid_samples": "10000", "reference_split": "train",
              "eval_every": "100", "mode_samples": "26000", "mode_threshold": "1", "steps": "200"}  # fmt: skip
    stacked = protocol.describe(params | {"dataset": "stacked-mnist"})
    assert (
        stacked.startswith(
            "metrics modes on 26000 generated images, each channel read as one digit by the project's MNIST classifier"
        )
        and "of 1,000" in stacked
        and "known modes" not in stacked
    )
    assert stacked.endswith("evaluated every 100 steps and at the last step (200)")
    ring = protocol.describe(params | {"dataset": "ring8"})
    assert "against the mixture's known modes" in ring and "classifier" not in ring

"""Suites and `lossbench sweep`: schema errors before training, the smoke suite end to end, skip on re-run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_cli import lossbench, lossbench_here, runs_by_role

from lossbench import cards
from lossbench.errors import ConfigError
from lossbench.exec import suites
from lossbench.gan import losses


def test_shipped_suites_resolve() -> None:
    assert {"smoke", "mnist-losses", "lucic2018"} <= set(cards.suite_names())
    smoke = suites.load("smoke")
    assert sorted(c.loss.loss for c in smoke.configs) == losses.names() and smoke.seeds == 3
    assert all(c.data.dataset == "ring8" for c in smoke.configs)
    mnist = suites.load("mnist-losses")
    assert [c.loss.loss for c in mnist.configs] == ["minimax", "non-saturating", "least-squares", "wgan-gp", "hinge"]
    assert all(c.model.arch == "dcgan" for c in mnist.configs) and mnist.seeds == 5
    # lucic2018's protocol fields are checked against the paper in tests/test_protocols.py; every other
    # shipped suite (the paper suites included) resolves
    for name in cards.suite_names():
        assert suites.load(name).configs, name


@pytest.mark.parametrize(
    "text, message",
    [
        ('seeds = 2\n[base]\nstpes = 3\n[grid]\nloss = ["hinge"]\n', "'stpes' (did you mean 'steps'?)"),
        ('[grid]\nloss = ["hinge", "minmax"]\n', "loss=minmax"),
        ('[base]\nsteps = "ten"\n', "'steps' must be an integer, got 'ten'"),
        ("seeds = 0\n", "'seeds' must be an integer in 1..1000, got 0"),
        ('[grid]\nloss = "hinge"\n', "grid.loss must be a non-empty list"),
        ("sedes = 3\n", "unknown top-level key 'sedes' (did you mean 'seeds'?)"),
        ("[grid\n", "not valid TOML"),
        ('settings = []\n[base]\ndataset = "ring8"\n', "multiply to zero configurations"),
    ],
)
def test_malformed_suite_names_file_and_key(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        suites.load(str(path))
    assert str(path) in str(info.value) and message in str(info.value)


def test_malformed_suite_fails_in_cli_before_training(tmp_path: Path, store: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('[grid]\nloss = ["hinge", "minmax"]\n')
    proc = lossbench("sweep", str(path), "--tracking-uri", store, check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr and "did you mean 'minimax'" in proc.stderr
    assert not runs_by_role(store)["seed"]


def test_small_sweep_then_rerun_skips_everything(store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    suite = tmp_path / "small.toml"
    suite.write_text('seeds = 2\n[base]\ndataset = "ring8"\nsteps = 30\nlog_every = 10\nsample_every = 30\n'
                     'fid_samples = 500\n[grid]\nloss = ["hinge", "wgan-gp"]\n')  # fmt: skip
    proc = lossbench("sweep", str(suite), "--tracking-uri", store, "--no-progress")
    assert (
        "2 configurations x 2 seeds; 0 finished, 4 to run" in proc.stdout and "suite small: 4 finished" in proc.stdout
    )
    runs = runs_by_role(store)
    assert len(runs["seed"]) == 4 and len(runs["parent"]) == 2
    assert all(r.info.status == "FINISHED" and "modes" in r.data.metrics for r in runs["seed"])
    # nothing left to train: the rerun only reads the store, in this process (a subprocess costs its imports)
    again = lossbench_here("sweep", str(suite), "--tracking-uri", store, "--no-progress", caplog=caplog)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "4 finished, 0 to run" in again.stdout and "nothing to run" in again.stdout
    assert len(runs_by_role(store)["seed"]) == 4


@pytest.mark.slow  # the same suite runs through Ray into PostgreSQL in tests/test_cluster.py
def test_sweep_smoke_end_to_end_then_skips_everything(store: str) -> None:
    proc = lossbench("sweep", "smoke", "--tracking-uri", store, "--no-progress")
    assert "27 to run" in proc.stdout
    runs = runs_by_role(store)
    assert len(runs["seed"]) == 27 and len(runs["parent"]) == 9
    finished = [r for r in runs["seed"] if r.info.status == "FINISHED"]
    diverged = [r for r in runs["seed"] if r.data.tags.get("lossbench.outcome") == "diverged"]
    assert len(finished) == 27 and not diverged  # as through Ray (tests/test_cluster.py)
    assert {r.data.params["loss"] for r in runs["seed"]} == set(losses.names())
    for r in finished:
        assert {"modes", "high_quality", "d_loss"} <= set(r.data.metrics)

    again = lossbench("sweep", "smoke", "--tracking-uri", store, "--no-progress")
    assert f"{len(finished)} finished, {27 - len(finished)} to run" in again.stdout
    assert len(runs_by_role(store)["seed"]) == 27 + len(diverged)


def test_sweep_filters_max_runs_and_dry_run(store: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # a dry run trains nothing: in this process (the command's dry run as a process: test_cli)
    dry = lossbench_here("sweep", "smoke", "--loss", "hinge", "--dry-run", "--tracking-uri", store, caplog=caplog)
    assert dry.returncode == 0, dry.stderr[-2000:]
    assert "1 configurations x 3 seeds; 0 finished, 3 to run" in dry.stdout and "steps/s" in dry.stdout
    assert not runs_by_role(store)["seed"]
    suite = tmp_path / "three.toml"
    suite.write_text('seeds = 3\n[base]\ndataset = "ring8"\nsteps = 20\nlog_every = 10\nsample_every = 20\n'
                     'fid_samples = 500\n[grid]\nloss = ["hinge", "minimax", "wgan"]\n')  # fmt: skip
    lossbench("sweep", str(suite), "--loss", "hinge", "--loss", "minimax", "--max-runs", "4", "--tracking-uri", store)
    seeds = runs_by_role(store)["seed"]
    assert len(seeds) == 4
    client = MlflowClient(tracking_uri=store)
    assert all(client.get_run(r.info.run_id).data.params["loss"] in ("hinge", "minimax") for r in seeds)

"""The `lossbench` command end to end, as a user runs it: real MNIST, real MLflow store, real files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path
from unittest import mock

import pytest
from mlflow import MlflowClient


def lossbench(*args: str, check: bool = True, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "lossbench", *args], capture_output=True, text=True, timeout=600,
                          env=os.environ | env if env else None)  # fmt: skip
    if check and proc.returncode != 0:
        raise AssertionError(f"lossbench {' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    return proc


def lossbench_here(*args: str, caplog: pytest.LogCaptureFixture) -> subprocess.CompletedProcess:
    """`lossbench ARGS` run by this process (click's runner), for input refused before any compute: what
    a subprocess would print on stderr, in order of kind: click's lines, then every log record (with
    its traceback, if any), then the traceback of an uncaught exception, as Python prints it on
    exit. The environment is restored after (the CLI sets defaults in it). A subprocess costs 3-5 s of
    imports here; refused input through a real process stays tested (the cases that name their own
    store or a Ray address, and tests/test_untrusted_files.py)."""
    from click.testing import CliRunner

    from lossbench.cli import main

    with mock.patch.dict(os.environ), caplog.at_level(logging.WARNING):
        caplog.clear()
        result = CliRunner().invoke(main, list(args), prog_name="lossbench")
        err = result.stderr + caplog.text
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        err += "Traceback (most recent call last):\n" + "".join(traceback.format_exception(result.exception))
    return subprocess.CompletedProcess(["lossbench", *args], result.exit_code, result.stdout, err)


def runs_by_role(uri: str, experiment: str = "lossbench") -> dict[str, list]:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id]) if exp else []
    out: dict[str, list] = {"parent": [], "seed": []}
    for r in runs:
        out[r.data.tags["lossbench.role"]].append(r)
    return out


def test_mnist_two_seeds_logged_to_mlflow(store: str, mnist_dir: str, tmp_path: Path,
                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    proc = lossbench(
        "run", "--loss", "minimax", "--seeds", "2", "--steps", "20", "--log-every", "5", "--sample-every", "10",
        "--eval-every", "10",
        "--fid-samples", "8", "--metrics", "fid,kid", "--tracking-uri", store, "--data-dir", mnist_dir,
        "--no-progress",
    )  # fmt: skip
    assert "2 finished" in proc.stdout
    assert "Traceback" not in proc.stderr
    client = MlflowClient(tracking_uri=store)
    runs = runs_by_role(store)
    assert len(runs["parent"]) == 1 and len(runs["seed"]) == 2
    parent = runs["parent"][0]
    seeds = sorted(runs["seed"], key=lambda r: int(r.data.params["seed"]))
    assert [r.data.params["seed"] for r in seeds] == ["0", "1"]
    for r in seeds:
        assert r.info.status == "FINISHED"
        assert r.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert r.data.tags["lossbench.config_hash"] == parent.data.tags["lossbench.config_hash"]
        p = r.data.params
        assert (p["loss"], p["dataset"], p["arch"], p["steps"], p["batch_size"], p["n_critic"]) == (
            "minimax", "mnist", "mlp", "20", "64", "1",
        )  # fmt: skip
        assert p["optimizer"] == "adam" and float(p["lr_d"]) == 2e-4 and p["device"] == "cpu"
        assert p["torch_version"] and p["lossbench_version"] and p["fid_samples"] == "8"
        history = client.get_metric_history(r.info.run_id, "d_loss")
        assert [m.step for m in history] == [5, 10, 15, 20]
        for key in ("g_loss", "d_real", "d_fake", "penalty", "images_per_s", "fid", "kid_mean", "best_fid"):
            assert key in r.data.metrics, key
        assert r.data.metrics["fid"] > 0
        fid_history = client.get_metric_history(r.info.run_id, "fid")
        assert [m.step for m in fid_history] == [10, 20]  # --eval-every 10, then the end
        best = min(fid_history, key=lambda m: m.value)
        assert r.data.metrics["best_fid"] == best.value and r.data.metrics["best_fid_step"] == best.step
        assert "is_mean" not in r.data.metrics  # not asked for
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id)}
        assert {"config.json", "samples", "weights"} <= artifacts
        grids = [a.path for a in client.list_artifacts(r.info.run_id, "samples")]
        assert grids == ["samples/samples_0000010.png", "samples/samples_0000020.png"]
    assert seeds[0].data.metrics["d_loss"] != seeds[1].data.metrics["d_loss"]
    fids = [r.data.metrics["fid"] for r in seeds]
    assert abs(parent.data.metrics["fid_mean"] - sum(fids) / 2) < 1e-9
    assert parent.data.metrics["seeds_finished"] == 2

    # in this process: a subprocess costs its imports (3-5 s); `sample` as a process: test_ring8_run_and_points_sample
    out = tmp_path / "samples"
    sampled = lossbench_here("sample", seeds[0].info.run_id, "-n", "16", "--out", str(out), "--tracking-uri", store,
                             caplog=caplog)  # fmt: skip
    assert sampled.returncode == 0, sampled.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == [f"{i:06d}.png" for i in range(16)]

    # the same code path measures a folder of samples against a data set (in this process too)
    measured = lossbench_here("fid", str(out), "mnist:test", "--samples", "8", "--data-dir", mnist_dir, caplog=caplog)
    assert measured.returncode == 0, measured.stderr[-2000:]
    result = json.loads(measured.stdout)
    assert result["n_first"] == 16 and result["n_second"] == 8 and result["second"] == "mnist:test"
    assert result["fid"] > 50 and "kid_mean" in result


def test_missing_inception_weights_fail_before_training(store: str, tmp_path: Path) -> None:
    env = os.environ | {"TORCH_HOME": str(tmp_path / "no-weights")}
    proc = subprocess.run(
        [sys.executable, "-m", "lossbench", "run", "--steps", "2", "--fid-samples", "8", "--tracking-uri", store],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert "TORCH_HOME" in error and "Inception weights" in error
    assert not runs_by_role(store)["seed"]


def test_ring8_run_and_points_sample(store: str, tmp_path: Path) -> None:
    lossbench(
        "run", "--dataset", "ring8", "--steps", "30", "--log-every", "10", "--tracking-uri", store, "--no-progress"
    )
    (run,) = runs_by_role(store)["seed"]
    assert {"modes", "high_quality"} <= set(run.data.metrics)  # reverse_kl: only once a sample is high quality
    client = MlflowClient(tracking_uri=store)
    assert [a.path for a in client.list_artifacts(run.info.run_id, "samples")] == ["samples/scatter_0000030.png"]
    lossbench("sample", run.info.run_id, "-n", "10", "--out", str(tmp_path / "pts"), "--tracking-uri", store)
    assert len((tmp_path / "pts" / "points.csv").read_text().splitlines()) == 11


def test_dry_run_prints_resolved_config() -> None:
    out = json.loads(lossbench("run", "--loss", "wgan-gp", "--dataset", "ring8", "--seeds", "3", "--dry-run").stdout)
    assert out["penalty"] == "gp" and out["n_critic"] == 5 and out["seeds"] == [0, 1, 2]
    assert out["arch"] == "mlp2d" and len(out["config_hash"]) == 16


def test_losses_lists_every_loss_with_formula() -> None:
    out = lossbench("losses").stdout
    from lossbench.gan import losses

    for name in losses.names():
        assert f"\n{name}  (" in "\n" + out
    assert "L_G = E[log(1 - σ(d_f))]" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--loss", "minmax"], "unknown loss 'minmax' (did you mean 'minimax'?)"),
        (["--dataset", "mnst"], "unknown dataset 'mnst' (did you mean 'mnist'?)"),
        (["--arch", "dcgn"], "unknown arch 'dcgn' (did you mean 'dcgan'?)"),
        (["--seeds", "0"], "'seeds' must be >= 1"),
        (["--steps", "0"], "'steps' must be >= 1"),
        (["--steps", "many"], "'many' is not a valid integer"),
        (["--fid-samples", "1"], "'fid_samples' must be >= 2"),
        (["--fid-samples", "70000"], "larger than the reference set"),
        (["--reference-split", "test", "--fid-samples", "10001"], "larger than the reference set"),
        (["--data-dir", "{tmp}/empty"], "mnist is not under"),
        (["--config", "{tmp}/missing.toml"], "cannot read"),
        (["--tracking-uri", "sqlite:///{tmp}/afile/mlflow.db"], "tracking store"),
        (["--device", "cuda"], "no CUDA device"),
        (["--device", "cpu", "--cuda-graphs"], "--cuda-graphs needs a CUDA device; this run is on cpu"),
        (["--tracking-uri", "http://127.0.0.1:9"], "tracking server http://127.0.0.1:9 is unreachable"),
        (["--tracking-uri", "http://bob:hunter2@127.0.0.1:9"], "tracking server http://127.0.0.1:9 is unreachable"),
        (["--executor", "ray", "--ray-address", "127.0.0.1:9", "--dataset", "ring8"], "cannot reach the Ray cluster"),
        (["--lr-d", "inf"], "'lr_d' must be a finite number, got inf"),
        (["--lr-g", "nan"], "'lr_g' must be a finite number, got nan"),
        (["--lr-g", "-0.001"], "'lr_g' must be > 0"),
        (["--penalty", "gp", "--penalty-weight", "nan"], "'penalty_weight' must be a finite number"),
        (["--penalty", "gp", "--penalty-weight", "-1"], "'penalty_weight' must be >= 0"),
        (["--dataset", "ring8", "--batch-size", "100001"], "larger than the ring8 training set (100000 samples)"),
        (["--dataset", "ring8", "--batch-size", "50001", "--pack", "2"], "'batch_size' x 'pack' (50001 x 2) 100002"),
        (["--seeds", "1001"], "'seeds' must be <= 1000, got 1001"),
        (["--config", "{tmp}/binary.toml"], "not UTF-8 text, as TOML must be"),
        (["--checkpoint-dir", "{tmp}/afile/ckpt"], "afile/ckpt cannot be made"),
        (["--tracking-uri", "mlfow://127.0.0.1:5000"], "unknown scheme 'mlfow'"),
        (["--executor", "ray", "--ray-address", "head-node", "--dataset", "ring8"], "--ray-address must be auto, HOST"),
        (["--data-dir", "{tmp}/truncated"], "are truncated or corrupt (train-images-idx3-ubyte: 4,096 bytes"),
        (["--config", "{tmp}/deep.toml"], "deep.toml: brackets nested 1000 deep; lossbench reads at most 16"),
        (["--config", "{tmp}/dotted.toml"], "dotted.toml: a dotted key of 8000 parts; lossbench reads at most 16"),
        (["--config", "{tmp}/big.toml"], "big.toml: larger than 262,144 bytes"),
        (["--config", "{tmp}/plugin.toml"], "loss 'os.path:join' is a plugin: loading it runs its module's code"),
    ],
)
def test_bad_input_is_one_line_no_traceback(args: list[str], message: str, tmp_path: Path, unmade_store: str,
                                            caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = unmade_store
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "empty").mkdir()
    (tmp_path / "binary.toml").write_bytes(bytes(range(256)))
    (tmp_path / "deep.toml").write_text("steps = " + "[" * 1000 + "]" * 1000 + "\n")  # tomllib: RecursionError
    (tmp_path / "dotted.toml").write_text(".".join(["a"] * 8000) + " = 1\n")  # tomllib: memory ~ parts^2
    (tmp_path / "big.toml").write_text("# padding\n" * 30_000 + "stpes = 1\n")
    (tmp_path / "plugin.toml").write_text('loss = "os.path:join"\n')  # a file names code: needs --allow-plugin
    if "{tmp}/truncated" in args:  # MNIST's files all there, the training images cut short
        raw, copy = Path(os.environ["LOSSBENCH_DATA_DIR"]) / "MNIST" / "raw", tmp_path / "truncated" / "MNIST" / "raw"
        copy.mkdir(parents=True)
        for f in raw.iterdir():
            if f.name == "train-images-idx3-ubyte":
                (copy / f.name).write_bytes(f.read_bytes()[:4096])
            else:
                (copy / f.name).symlink_to(f)
    own_store = "--tracking-uri" in args  # the case names its own store; else the fixture's, checked below
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    if not own_store:
        args += ["--tracking-uri", store]
    defaults = {"--steps": "2", "--fid-samples": "8"}  # cheap, should a case fail to be refused
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]
    if own_store or "--executor" in args:  # a store's or cluster's connection: as a separate process
        proc = lossbench("run", "--no-progress", *args, check=False)
    else:
        proc = lossbench_here("run", "--no-progress", *args, caplog=caplog)
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and message in errors[0], proc.stderr
    assert "hunter2" not in proc.stderr + proc.stdout  # credentials never reach a message
    if own_store:
        assert (tmp_path / "afile").read_text() == "not a folder"  # a store where a file is: the file untouched
    else:  # refused before anything was recorded
        assert not Path(store.removeprefix("sqlite:///")).exists() or not any(runs_by_role(store).values())


@pytest.mark.parametrize(
    "suite, message",
    [
        ("[search]\ndraws = 1000000000\n[search.keys]\nlr_g = {log-uniform = [1e-4, 1e-3]}\n",
         "search.draws is 1,000,000,000; lossbench draws at most 10,000"),  # was: out of memory
        ("[base]\nsteps = " + "[" * 1000 + "]" * 1000 + "\n", "brackets nested 1000 deep"),  # was: RecursionError
        ('[grid]\nloss = ["hinge", "os.path:join"]\n', "add --allow-plugin os.path:join if you trust that code"),
    ],
)  # fmt: skip
def test_hostile_suite_is_one_line(suite: str, message: str, tmp_path: Path, unmade_store: str,
                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    store = unmade_store
    path = tmp_path / "hostile.toml"
    path.write_text(suite)
    proc = lossbench_here("sweep", str(path), "--tracking-uri", store, "--no-progress", caplog=caplog)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("Error")]
    assert len(errors) == 1 and str(path) in errors[0] and message in errors[0], proc.stderr[-2000:]
    assert not Path(store.removeprefix("sqlite:///")).exists() or not any(runs_by_role(store).values())


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "--steps", "many"], "Error: Invalid value for '--steps': 'many' is not a valid integer. "
                                     "(see 'lossbench run --help')"),
        (["run", "--d-batchnorm", "maybe"], "Error: Invalid value for '--d-batchnorm': 'maybe' is neither true nor "
                                            "false (see 'lossbench run --help')"),
        (["run", "--stepz", "3"], "Error: No such option '--stepz'."),
        (["rnu"], "Error: No such command 'rnu'."),
        (["--bogus"], "Error: No such option '--bogus'."),
    ],
)  # fmt: skip
def test_flags_click_cannot_parse_are_one_line(args: list[str], message: str) -> None:
    """click's own form of these is a three-line usage block; here stderr is the one error line."""
    proc = lossbench(*args, check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1 and proc.stderr.startswith(message), proc.stderr


def test_boolean_flags_take_true_and_false_words() -> None:
    """Click's parsing of the words, in this process (the command's own dry run as a subprocess:
    test_dry_run_prints_resolved_config); five subprocesses cost 35 s here."""
    from click.testing import CliRunner

    from lossbench.cli import main

    for word, value in [("on", True), ("true", True), ("1", True), ("no", False), ("False", False)]:
        result = CliRunner().invoke(main, ["run", "--arch", "infogan", "--d-batchnorm", word, "--dry-run"])
        assert result.exit_code == 0 and result.exception is None, result.output
        assert json.loads(result.stdout)["d_batchnorm"] is value


def test_parallel_seeds_each_get_their_own_run(store: str) -> None:
    args = ["run", "--dataset", "ring8", "--loss", "wgan-gp", "--seeds", "3", "--steps", "20", "--log-every", "5",
            "--sample-every", "20", "--fid-samples", "500", "--no-progress"]  # fmt: skip
    proc = lossbench(*args, "--parallel-seeds", "--tracking-uri", store)
    assert "3 finished" in proc.stdout
    together = {r.data.params["seed"]: r for r in runs_by_role(store)["seed"]}
    (parent,) = runs_by_role(store)["parent"]
    assert sorted(together) == ["0", "1", "2"]
    a = MlflowClient(tracking_uri=store)
    for run in together.values():
        assert run.info.status == "FINISHED" and run.data.params["parallel_seeds"] == "True"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert {"modes", "high_quality"} <= set(run.data.metrics)  # reverse_kl: only once a sample is high quality
        assert [x.path for x in a.list_artifacts(run.info.run_id, "samples")] == ["samples/scatter_0000020.png"]
        assert [m.step for m in a.get_metric_history(run.info.run_id, "d_loss")] == [5, 10, 15, 20]
    # each seed trained on its own numbers (equality with sequential twins: tests/test_fast_paths.py)
    assert len({run.data.metrics["d_loss"] for run in together.values()}) == 3

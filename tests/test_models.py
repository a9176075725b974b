"""Generators as MLflow models, and MLflow's conventions on lossbench's runs: a logged generator loads
with `mlflow.pytorch.load_model` in a process that never imports lossbench and gives the run's own
samples; `lossbench sample` reads runs:/ and models:/ URIs; inputs, descriptions, tags; the registry."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from test_cli import lossbench, runs_by_role

TINY = ("--steps", "2", "--metrics", "none", "--no-progress")

LOAD = """
import sys, torch, mlflow, mlflow.pytorch
mlflow.set_tracking_uri(sys.argv[1])
G = mlflow.pytorch.load_model(sys.argv[2])
z = torch.load(sys.argv[3])
with torch.no_grad():
    torch.save(G(z), sys.argv[4])
print(sorted(m for m in sys.modules if m.split(".")[0] == "lossbench"))
"""


def _seed_run(store: str, *args: str):
    lossbench("run", "--dataset", "ring8", *TINY, "--tracking-uri", store, *args)
    (run,) = runs_by_role(store)["seed"]
    return run


@pytest.fixture(scope="module")
def ring8_run(tmp_path_factory: pytest.TempPathFactory, new_store) -> tuple[str, str]:
    """(store, seed run id) of one tiny ring8 run, trained once for the tests below that only read it
    (they share the xdist group "models-ring8-run"): a run's process costs 10-15 s here."""
    folder = tmp_path_factory.mktemp("ring8-run")
    store = new_store(folder / "mlflow.db", cwd=folder)
    with contextlib.chdir(folder):  # its artifacts beside its store
        return store, _seed_run(store).info.run_id


@pytest.mark.xdist_group("models-ring8-run")  # one worker trains the module's run once
def test_logged_generator_loads_without_lossbench_and_gives_the_runs_samples(ring8_run: tuple[str, str],
                                                                             tmp_path: Path) -> None:  # fmt: skip
    store, run_id = ring8_run
    from lossbench.exec.stored_generators import load_generator
    from lossbench.gan.models import STANDARD_RANGE, rescale

    G, cfg = load_generator(run_id, store, torch.device("cpu"))
    z = torch.randn(5, cfg.model.z_dim, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        own = rescale(G.eval()(z), getattr(G, "data_range", STANDARD_RANGE), STANDARD_RANGE)
    torch.save(z, tmp_path / "z.pt")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the loader cannot see the worktree
    proc = subprocess.run([sys.executable, "-c", LOAD, store, f"runs:/{run_id}/generator", str(tmp_path / "z.pt"),
                           str(tmp_path / "x.pt")], capture_output=True, text=True, timeout=300, env=env,
                          cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"  # no lossbench module was imported to load it
    loaded = torch.load(tmp_path / "x.pt")
    assert loaded.shape == own.shape == (5, 2)
    torch.testing.assert_close(loaded, own, rtol=0, atol=1e-6)
    (model,) = MlflowClient(store).search_logged_models([runs_by_role(store)["seed"][0].info.experiment_id])
    assert (model.name, model.source_run_id) == ("generator", run_id)  # on the run's page, in its experiment


@pytest.mark.slow  # a real run end to end (20-50 s on 2 cores): keeps the default suite short
def test_sample_reads_a_runs_uri(store: str, tmp_path: Path) -> None:
    run_id = _seed_run(store).info.run_id
    lossbench("sample", f"runs:/{run_id}/generator", "-n", "7", "--out", str(tmp_path / "a"), "--tracking-uri", store)
    lossbench("sample", run_id, "-n", "7", "--out", str(tmp_path / "b"), "--tracking-uri", store)
    from_uri = (tmp_path / "a" / "points.csv").read_text().splitlines()
    assert len(from_uri) == 8
    assert from_uri == (tmp_path / "b" / "points.csv").read_text().splitlines()  # same latents, same samples
    bad = lossbench("sample", f"runs:/{run_id}/nothing", "--out", str(tmp_path / "c"), "--tracking-uri", store,
                    check=False)  # fmt: skip
    assert bad.returncode != 0 and "Traceback" not in bad.stderr and "no logged generator" in bad.stderr


@pytest.mark.xdist_group("models-ring8-run")  # one worker trains the module's run once
def test_runs_record_their_data_description_stage_commit_and_sample_images(ring8_run: tuple[str, str]) -> None:
    store, run_id = ring8_run
    (seed,) = runs_by_role(store)["seed"]
    assert seed.info.run_id == run_id
    client = MlflowClient(store)
    (parent,) = runs_by_role(store)["parent"]
    from lossbench.tracking_conventions import DataInput, git_commit

    digest = DataInput("ring8", "train", 100_000, 1, "training").digest
    for run in (seed, parent):
        (inp,) = client.get_run(run.info.run_id).inputs.dataset_inputs
        assert (inp.dataset.name, inp.dataset.digest) == ("ring8:train", digest)
        assert [(t.key, t.value) for t in inp.tags] == [("mlflow.data.context", "training")]
        assert json.loads(inp.dataset.profile)["num_rows"] == 100_000
        assert run.data.tags["lossbench.stage"] == "run" and "lossbench.suite" not in run.data.tags
        commit = git_commit(Path(__file__).resolve().parent)
        assert commit and run.data.tags["mlflow.source.git.commit"] == commit
    note = parent.data.tags["mlflow.note.content"]
    assert note.startswith("**non-saturating on ring8 (configuration ")
    assert parent.data.tags["lossbench.config_hash"] in note
    images = [a.path for a in client.list_artifacts(seed.info.run_id, "images")]
    assert any(p.startswith("images/samples+step+2+") for p in images), images  # the UI's step slider, at step 2


SUITE = """description = "Two seeds of the best of two learning rates"
seeds = 1
reseeds = 2
best_by = "modes"
[base]
dataset = "ring8"
steps = 2
[grid]
loss = ["non-saturating"]
lr_g = [1e-4, 2e-4]
"""


@pytest.mark.slow  # two stages of a suite and three samplings: a minute on two CPU cores
def test_a_suites_seeds_stage_registers_its_best_seed_run(store: str, tmp_path: Path) -> None:
    (path := tmp_path / "tiny.toml").write_text(SUITE)
    lossbench("sweep", str(path), "--tracking-uri", store, "--no-progress")
    out = lossbench("sweep", str(path), "--stage", "seeds", "--tracking-uri", store, "--no-progress").stdout
    client = MlflowClient(store)
    version = client.get_model_version_by_alias("lossbench-tiny-non-saturating-ring8", "best")
    seeds = runs_by_role(store)["seed"]
    chosen = client.get_run(version.run_id)
    assert chosen.data.tags["lossbench.suite"] == "tiny"
    best_hash = chosen.data.tags["lossbench.config_hash"]
    reseeded = [r for r in seeds if r.data.tags["lossbench.config_hash"] == best_hash]
    assert {r.data.tags["lossbench.stage"] for r in reseeded} == {"search", "seeds"}
    best = max(reseeded, key=lambda r: (r.data.metrics["modes"], -int(r.data.tags["lossbench.seed"])))
    assert version.run_id == best.info.run_id and int(version.version) == 1
    logged = client.get_logged_model(version.source.removeprefix("models:/"))  # the UI's link back to the version
    assert json.loads(logged.tags["mlflow.modelVersions"]) == [{"name": version.name, "version": "1"}]
    assert "registered lossbench-tiny-non-saturating-ring8 version 1 as @best" in out
    for parent in runs_by_role(store)["parent"]:
        assert "Suite `tiny`: Two seeds of the best of two learning rates" in parent.data.tags["mlflow.note.content"]
    name = "models:/lossbench-tiny-non-saturating-ring8@best"  # the registered model samples as its run does
    lossbench("sample", name, "-n", "5", "--out", str(tmp_path / "m"), "--tracking-uri", store)
    lossbench("sample", best.info.run_id, "-n", "5", "--out", str(tmp_path / "r"), "--tracking-uri", store)
    assert (tmp_path / "m" / "points.csv").read_text() == (tmp_path / "r" / "points.csv").read_text()
    again = lossbench("sweep", str(path), "--stage", "seeds", "--tracking-uri", store, "--no-progress").stdout
    assert "registered" not in again
    assert len(client.search_model_versions("name='lossbench-tiny-non-saturating-ring8'")) == 1

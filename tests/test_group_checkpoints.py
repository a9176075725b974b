"""A group's checkpoint is one commit: seeds trained together (--parallel-seeds) are checkpointed all
at one step or none, whenever the process dies, so --resume continues them together, bit for bit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from test_cli import runs_by_role
from test_reliability import PARALLEL, final_metrics, generator_weights

from lossbench.train import checkpoint

ARGS = PARALLEL  # ring8 + gp, 200 steps, 3 seeds together: checkpoints at 50, 100, 150, 200
KEYS = ["d_loss", "g_loss", "penalty", "d_real", "d_fake", "modes", "high_quality"]

# `lossbench run` with the checkpoint writer (or the rename that puts a staged checkpoint in place)
# wrapped to SIGKILL the process right after its n-th call: a kill at an exact point of a group's commit.
DRIVER = """
import os, signal, sys
from pathlib import Path
from lossbench.train import checkpoint
where, n = sys.argv[1], int(sys.argv[2])
calls = [0]

def count(then):
    calls[0] += 1
    if calls[0] == n:
        os.kill(os.getpid(), signal.SIGKILL)
    return then

if where == "write":
    save = checkpoint.save
    checkpoint.save = lambda state, path: count(save(state, path))
else:
    replace = os.replace
    def renaming(src, dst):
        replace(src, dst)
        if Path(dst).name == checkpoint.FILENAME and Path(src).name.startswith("pending-"):
            count(None)
    os.replace = renaming
from lossbench.cli import main
main(prog_name="lossbench", args=sys.argv[3:])
"""


def run(cwd: Path, *args: str, kill: tuple[str, int] | None = None) -> subprocess.CompletedProcess:
    head = ["-c", DRIVER, kill[0], str(kill[1])] if kill else ["-m", "lossbench"]
    return subprocess.run([sys.executable, *head, *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def killed_at(store: str, ckpts: Path, died: subprocess.CompletedProcess,
              runs: dict[str, str] | None) -> tuple[dict[str, int], dict[str, str]]:  # fmt: skip
    """After a SIGKILL, every seed run of the store is still RUNNING (the runs `runs` names, where given):
    each seed's step in its checkpoint (the one its group's last made commit holds), and each seed's run."""
    assert died.returncode == -9, died.stderr[-3000:]
    killed = {r.data.params["seed"]: r.info.run_id for r in runs_by_role(store)["seed"]}
    assert len(killed) == 3 and all(r.info.status == "RUNNING" for r in runs_by_role(store)["seed"])
    assert runs is None or killed == runs
    return {s: checkpoint.load(checkpoint.current(ckpts, run_id))["step"] for s, run_id in killed.items()}, killed


def continuing(proc: subprocess.CompletedProcess, step: int) -> None:
    """Every seed of the resumed process (-v) said it continued at `step`."""
    lines = [line for line in proc.stderr.splitlines() if "continuing run" in line]
    assert len(lines) == 3 and all(line.endswith(f"at step {step}") for line in lines), lines


@pytest.mark.xdist_group("parallel-reference")  # one worker trains the reference (conftest) once
def test_sigkill_inside_a_group_checkpoint_then_resume_equals_uninterrupted(
    store: str, tmp_path: Path, parallel_reference: str
) -> None:
    """Two kills at exact points of a group's commit, one per process, then a resume to the end:
    between seed 0's and seed 1's checkpoint writes at step 100 (all stay at 50), then, resumed from
    50, after step 100's commit with one seed's file renamed into place (all go to 100)."""
    reference = parallel_reference  # the same three seeds trained without interruption
    ckpts = tmp_path / "ckpt"
    args = ["-v", "run", *ARGS, "--tracking-uri", store, "--checkpoint-dir", str(ckpts)]
    died = run(tmp_path, *args, kill=("write", 4))  # step 50's three writes, then seed 0's at 100
    steps, killed = killed_at(store, ckpts, died, None)
    assert steps == {"0": 50, "1": 50, "2": 50}

    died = run(tmp_path, *args, "--resume", kill=("rename", 1))  # step 100's first rename into place
    continuing(died, 50)
    steps, _ = killed_at(store, ckpts, died, killed)
    assert steps == {"0": 100, "1": 100, "2": 100}

    resumed = run(tmp_path, *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    continuing(resumed, 100)
    runs = {r.data.params["seed"]: r for r in runs_by_role(store)["seed"]}
    assert {s: r.info.run_id for s, r in runs.items()} == killed
    assert all(r.info.status == "FINISHED" for r in runs.values())
    assert not list(ckpts.glob("*/pending-*")) and not list(ckpts.glob(f"{checkpoint.COMMITS}/*"))

    ref = {r.data.params["seed"]: r for r in runs_by_role(reference)["seed"]}
    a, b = MlflowClient(tracking_uri=store), MlflowClient(tracking_uri=reference)
    for seed in ("0", "1", "2"):
        assert final_metrics(a, runs[seed].info.run_id, KEYS) == final_metrics(b, ref[seed].info.run_id, KEYS), seed
        wa = generator_weights(a, runs[seed].info.run_id, tmp_path / "wa" / seed)
        wb = generator_weights(b, ref[seed].info.run_id, tmp_path / "wb" / seed)
        assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa), seed


def state(step: int) -> dict:
    return {"step": step, "x": torch.full((2,), float(step))}


def test_a_group_commit_is_all_or_nothing(tmp_path: Path) -> None:
    root, runs = tmp_path / "ckpt", ["a", "b", "c"]
    first = checkpoint.GroupCommit(root)
    for run_id in runs:
        first.stage(state(50), run_id)
    first.commit(50)
    assert [checkpoint.load(checkpoint.current(root, r))["step"] for r in runs] == [50, 50, 50]
    assert not list(root.glob("*/pending-*")) and not list((root / checkpoint.COMMITS).iterdir())

    # staged but never committed (the process died before the marker): ignored, then removed
    dead = checkpoint.GroupCommit(root)
    dead.stage(state(100), "a")
    dead.stage(state(100), "b")
    assert [checkpoint.load(checkpoint.current(root, r))["step"] for r in runs] == [50, 50, 50]
    assert [checkpoint.load(checkpoint.recover(root, r))["step"] for r in runs] == [50, 50, 50]
    assert not list(root.glob("*/pending-*"))

    # committed, one file renamed into place, then the process died: every seed reads the new step,
    # and recovering each run finishes the renames and forgets the commit once all are done
    made = checkpoint.GroupCommit(root)
    for run_id in runs:
        made.stage(state(100), run_id)
    replace, renamed = os.replace, []

    def die_after_one(src: Path, dst: Path) -> None:  # the marker is written (renamed) first: not counted
        staged = Path(src).name.startswith("pending-")
        if staged and renamed:
            raise SystemExit("killed")
        replace(src, dst)
        if staged:
            renamed.append(dst)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(checkpoint.os, "replace", die_after_one)
        with pytest.raises(SystemExit):
            made.commit(100)
    assert len(renamed) == 1 and len(list((root / checkpoint.COMMITS).iterdir())) == 1
    assert [checkpoint.load(checkpoint.current(root, r))["step"] for r in runs] == [100, 100, 100]
    for run_id in runs:
        assert checkpoint.load(checkpoint.recover(root, run_id))["step"] == 100
    assert [checkpoint.load(checkpoint.path_for(root, r))["step"] for r in runs] == [100, 100, 100]
    assert not list(root.glob("*/pending-*")) and not list((root / checkpoint.COMMITS).iterdir())


def test_one_seed_checkpoint_needs_no_marker(tmp_path: Path) -> None:
    root = tmp_path / "ckpt"
    one = checkpoint.GroupCommit(root)
    one.stage(state(7), "solo")
    one.commit(7)
    assert checkpoint.load(checkpoint.path_for(root, "solo"))["step"] == 7
    assert not (root / checkpoint.COMMITS).exists() and not list(root.glob("*/pending-*"))

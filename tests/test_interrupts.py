"""Ctrl-C at the moments that matter, from outside, as a user presses it: during the real-feature
extraction (the chunks done are kept and the next run goes on from there) and during an evaluation
in training (it completes, the seed checkpoints and ends KILLED). Each ends in one line, non-zero,
no traceback, with nothing recorded lost or half-written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from mlflow import MlflowClient
from test_cli import runs_by_role

import lossbench.metrics.features as metrics
from lossbench.gan import data

TESTS = Path(__file__).resolve().parent
ENTRY = "import slow_extractor; from lossbench.cli import main; main(prog_name='lossbench')"


def start(args: list[str], tmp_path: Path, seconds: float) -> subprocess.Popen:
    env = os.environ | {
        "PYTHONPATH": str(TESTS), "LOSSBENCH_TEST_BATCHES": str(tmp_path / "batches"),
        "LOSSBENCH_TEST_BATCH_SECONDS": str(seconds), "LOSSBENCH_CACHE_DIR": str(tmp_path / "cache"),
    }  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", ENTRY, "run", "--no-progress", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def batches(tmp_path: Path) -> list[tuple[int, int]]:
    """(size, pixel sum) of every batch the fake extractor saw, in order."""
    path = tmp_path / "batches"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(n), int(total)) for n, total in (line.split() for line in lines)]


def interrupt_when(proc: subprocess.Popen, ready: Callable[[], bool]) -> tuple[str, str]:
    deadline = time.time() + 180
    while not ready():
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() < deadline, "the run never got that far"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)


def one_error(proc: subprocess.Popen, err: str) -> str:
    assert proc.returncode != 0 and "Traceback" not in err, err
    (error,) = [line for line in err.splitlines() if line.startswith("Error")]
    return error


def test_ctrl_c_during_real_feature_extraction_keeps_the_chunks_done(store: str, tmp_path: Path) -> None:
    args = ["--steps", "2", "--fid-samples", "1000", "--metrics", "fid", "--tracking-uri", store]
    path = metrics.real_cache_path("mnist", "train", 1000, "slow-fake", tmp_path / "cache")
    parts = path.with_name(path.stem + ".parts")
    proc = start(args, tmp_path, 0.05)  # 31 batches of 16 to a chunk: ~1.5 s for the second one
    _, err = interrupt_when(proc, lambda: (parts / "0000000-0000496.pt").exists())  # in the second chunk
    error = one_error(proc, err)
    assert "interrupted while extracting real features of mnist/train" in error
    assert "496 of 1000 images done and kept; run again to continue" in error
    assert not runs_by_role(store)["seed"]  # nothing was started
    assert not path.exists() and [p.name for p in parts.iterdir()] == ["0000000-0000496.pt"]

    (tmp_path / "batches").unlink()
    again = start(args, tmp_path, 0.0)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert path.is_file() and not parts.exists()
    reals = metrics.to_uint8(metrics.real_subset(data.load("mnist", None, "train").x, 1000))
    kept = {(16, int(reals[i : i + 16].long().sum())) for i in range(0, 496, 16)}
    rest = [(len(b), int(b.long().sum())) for b in reals[496:].split(16)]
    seen = batches(tmp_path)
    assert not kept & set(seen)  # the chunk kept on disk was not extracted again...
    assert all(b in seen for b in rest)  # ...the rest of the reals were


def test_ctrl_c_during_an_evaluation_lets_it_finish_then_checkpoints(store: str, tmp_path: Path) -> None:
    ckpts = tmp_path / "ckpt"
    args = ["--steps", "500", "--eval-every", "2", "--fid-samples", "160", "--metrics", "fid", "--tracking-uri", store,
            "--checkpoint-dir", str(ckpts)]  # fmt: skip
    proc = start(args, tmp_path, 0.3)  # an evaluation: 10 batches, 3 s
    seen: list[int] = []

    def evaluating() -> bool:  # one batch more than when training began (its lease taken): in the first one
        if not seen and any(ckpts.glob("*/lease.json")):
            seen.append(len(batches(tmp_path)))
        return bool(seen) and len(batches(tmp_path)) > seen[0]

    _, err = interrupt_when(proc, evaluating)
    assert "interrupted at step 2; continue with --resume" in one_error(proc, err)
    (run,) = runs_by_role(store)["seed"]
    assert run.info.status == "KILLED" and run.data.tags["lossbench.interrupted_step"] == "2"
    fid = MlflowClient(tracking_uri=store).get_metric_history(run.info.run_id, "fid")
    assert [m.step for m in fid] == [2]  # the evaluation it was in was completed and recorded, once
    assert torch.load(ckpts / run.info.run_id / "latest.pt", weights_only=True)["step"] == 2

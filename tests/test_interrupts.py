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
from pathlib import Path

from mlflow import MlflowClient
from test_cli import runs_by_role

import lossbench.metrics.features as metrics

TESTS = Path(__file__).resolve().parent
ENTRY = "import slow_extractor; from lossbench.cli import main; main(prog_name='lossbench')"


def start(args: list[str], tmp_path: Path, seconds: float) -> subprocess.Popen:
    env = os.environ | {
        "PYTHONPATH": str(TESTS), "LOSSBENCH_TEST_BATCHES": str(tmp_path / "batches"),
        "LOSSBENCH_TEST_BATCH_SECONDS": str(seconds), "LOSSBENCH_CACHE_DIR": str(tmp_path / "cache"),
    }  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", ENTRY, "run", "--no-progress", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def batches(tmp_path: Path) -> list[int]:
    path = tmp_path / "batches"
    return [int(line) for line in path.read_text().split()] if path.exists() else []


def interrupt_after(proc: subprocess.Popen, tmp_path: Path, n_batches: int) -> tuple[str, str]:
    deadline = time.time() + 180
    while len(batches(tmp_path)) < n_batches:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() < deadline, "the extraction never got that far"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)


def one_error(proc: subprocess.Popen, err: str) -> str:
    assert proc.returncode != 0 and "Traceback" not in err, err
    (error,) = [line for line in err.splitlines() if line.startswith("Error")]
    return error


def test_ctrl_c_during_real_feature_extraction_keeps_the_chunks_done(store: str, tmp_path: Path) -> None:
    args = ["--steps", "2", "--fid-samples", "1000", "--metrics", "fid", "--tracking-uri", store]
    proc = start(args, tmp_path, 0.05)
    _, err = interrupt_after(proc, tmp_path, 40)  # the first chunk (496 images, 31 batches) is on disk
    error = one_error(proc, err)
    assert "interrupted while extracting real features of mnist/train" in error
    assert "496 of 1000 images done and kept; run again to continue" in error
    assert not runs_by_role(store)["seed"]  # nothing was started
    path = metrics.real_cache_path("mnist", "train", 1000, "slow-fake", tmp_path / "cache")
    parts = path.with_name(path.stem + ".parts")
    assert not path.exists() and [p.name for p in parts.iterdir()] == ["0000000-0000496.pt"]

    (tmp_path / "batches").unlink()
    again = start(args, tmp_path, 0.0)
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert sum(batches(tmp_path)) == (1000 - 496) + 1000  # the reals not yet done, then one evaluation's fakes
    assert path.is_file() and not parts.exists()


def test_ctrl_c_during_an_evaluation_lets_it_finish_then_checkpoints(store: str, tmp_path: Path) -> None:
    args = ["--steps", "500", "--eval-every", "2", "--fid-samples", "64", "--metrics", "fid", "--tracking-uri", store,
            "--checkpoint-dir", str(tmp_path / "ckpt")]  # fmt: skip
    proc = start(args, tmp_path, 0.5)
    _, err = interrupt_after(proc, tmp_path, 4 + 1)  # 4 batches of reals, then the evaluation at step 2 began
    assert "interrupted at step 2; continue with --resume" in one_error(proc, err)
    (run,) = runs_by_role(store)["seed"]
    assert run.info.status == "KILLED" and run.data.tags["lossbench.interrupted_step"] == "2"
    fid = MlflowClient(tracking_uri=store).get_metric_history(run.info.run_id, "fid")
    assert [m.step for m in fid] == [2]  # the evaluation it was in was completed and recorded, once
    assert sum(batches(tmp_path)) == 64 + 64

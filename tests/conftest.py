"""Shared test setup: real MNIST and Inception weights from ../shared, nothing downloads.

LOSSBENCH_DATA_DIR and TORCH_HOME are taken from the environment when set (CI sets them), else from
the shared folder beside the checkout. Every test runs in its own working directory, so runs/ and
the default sqlite store never leak between tests; the real-feature cache is shared per session.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

os.environ.setdefault("LOSSBENCH_DATA_DIR", str(SHARED / "datasets"))
os.environ.setdefault("TORCH_HOME", str(SHARED / "models" / "torch-home"))
os.environ.pop("MLFLOW_TRACKING_URI", None)

# Tests send SIGINT to lossbench as a terminal's Ctrl-C does to a foreground process. A test run started
# in the background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and so would every
# process it starts, which then never sees the signal; a handler here resets to the default on exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

# Under pytest-xdist, share the cores between workers: two workers each running torch's default
# one-thread-per-core pools oversubscribe the machine, and OpenMP's spin-waiting then slows both by
# an order of magnitude. Subprocesses the tests start inherit the same limit.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(_threads)
    import torch

    torch.set_num_threads(_threads)


@pytest.fixture(scope="session")
def feature_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("feature-cache")
    os.environ["LOSSBENCH_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(autouse=True)
def _isolated_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, feature_cache: Path) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def store_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty MLflow sqlite store as MLflow's own first use leaves it (its schema migrated, its
    Default experiment), made once per session: a new store's migrations cost seconds in every
    process that makes one. First use itself stays tested wherever a test names a path nothing was
    copied to: `unmade_store`, tests/test_store.py's four processes at once, the default runs/ store."""
    from mlflow import MlflowClient

    db = tmp_path_factory.mktemp("store-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{db}").search_experiments()  # MLflow makes the schema here
    return db


@pytest.fixture(scope="session")
def new_store(store_template: Path) -> Callable[..., str]:
    """new_store(db, cwd=None) -> its URI: the template copied to `db`, its Default experiment's
    artifact folder where a process working in `cwd` (default: the current folder) would have put it."""

    def make(db: Path, cwd: Path | None = None) -> str:
        db.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(store_template, db)
        with contextlib.closing(sqlite3.connect(db)) as conn, conn:
            conn.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                         (str((cwd or Path.cwd()) / "mlruns" / "0"),))  # fmt: skip
        return f"sqlite:///{db}"

    return make


@pytest.fixture
def store(tmp_path: Path, new_store: Callable[..., str]) -> str:
    """An empty sqlite store of this test's own, made (copied) before the test."""
    return new_store(tmp_path / "store" / "mlflow.db")


@pytest.fixture(scope="session")
def parallel_reference(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[..., str],
                       feature_cache: Path) -> str:  # fmt: skip
    """The store of test_reliability.PARALLEL trained without interruption: what the SIGKILL tests of
    parallel seeds (test_reliability, test_group_checkpoints) must resume to. Its users share the
    xdist group "parallel-reference", so one worker trains it once."""
    from test_reliability import PARALLEL

    folder = tmp_path_factory.mktemp("parallel-reference")
    uri = new_store(folder / "mlflow.db", cwd=folder)
    done = subprocess.run([sys.executable, "-m", "lossbench", "run", *PARALLEL, "--tracking-uri", uri,
                           "--checkpoint-dir", str(folder / "ckpt")], capture_output=True, text=True, timeout=600,
                          cwd=folder)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return uri


@pytest.fixture(scope="session")
def paper_store(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[..., str]) -> str:
    """test_report.make_store's store (experiment "paper": 3 losses, 13 seed runs, a sample grid per
    finished run), built through MLflow's API once: 18-20 s each time. Its users only read it
    (reports, and report folders of their own) and share the xdist group "paper-store"."""
    from test_report import make_store

    tmp = tmp_path_factory.mktemp("paper-store")
    uri = new_store(tmp / "store" / "mlflow.db", cwd=tmp)
    make_store(uri, tmp)
    return uri


@pytest.fixture
def unmade_store(tmp_path: Path) -> str:
    """A sqlite URI where no store exists yet: for tests that a command makes none, or makes one."""
    return f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"


@pytest.fixture(scope="session")
def mnist_dir() -> str:
    root = os.environ["LOSSBENCH_DATA_DIR"]
    if not (Path(root) / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.fail(f"MNIST raw files not found under {root}; set LOSSBENCH_DATA_DIR")
    return root

"""The store under faults: a kill between a run's two closing writes (made deterministic by
LOSSBENCH_FAULT) or between seeds never trains or counts a seed twice nor splits a parent; first use
of a new sqlite store by several processes at once succeeds for all; a corrupt store and a tracking
server that fails or stalls are one line each."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_cli import lossbench, lossbench_here, runs_by_role

from lossbench.outcomes import one_per_seed, settle
from lossbench.tracking_records import RunRecord

TINY = ["--dataset", "ring8", "--steps", "20", "--log-every", "10", "--fid-samples", "100", "--no-progress"]


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr[-2000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    return error


def test_settle_and_one_per_seed() -> None:
    """RUNNING with a final outcome is that outcome's status; otherwise as stored; one run per
    (configuration, seed): the newest finished, else the newest."""
    assert settle("RUNNING", "finished") == ("FINISHED", "finished")
    assert settle("RUNNING", "diverged") == ("FAILED", "diverged")
    assert settle("RUNNING", "interrupted") == ("KILLED", "interrupted")  # a reopen killed before its tag
    assert settle("RUNNING", "running") == ("RUNNING", "running")
    assert settle("KILLED", "") == ("KILLED", "interrupted")  # an older store's run, without the tag
    assert settle("FINISHED", "finished") == ("FINISHED", "finished")
    table = [("a", 0, "finished", 1), ("a", 0, "finished", 3), ("a", 0, "interrupted", 5), ("a", 1, "failed", 2),
             ("a", 1, "running", 4), ("b", 0, "failed", 1)]  # fmt: skip
    runs = [RunRecord(f"r{i}", "", h, "", outcome, {}, {}, start, None, seed)
            for i, (h, seed, outcome, start) in enumerate(table)]  # fmt: skip
    assert [r.run_id for r in one_per_seed(runs)] == ["r1", "r4", "r5"]


@pytest.mark.parametrize("point", ["after-outcome-tag", "after-close"])
def test_kill_while_closing_a_seed_then_resume_trains_and_counts_each_seed_once(
        store: str, tmp_path: Path, point: str, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    """SIGKILL after seed 0's outcome tag (its status still RUNNING), or after seed 0 ended (between
    seeds): --resume trains only seed 1, under the same parent, and the report counts 2 seeds."""
    args = ["run", *TINY, "--seeds", "2", "--tracking-uri", store, "--checkpoint-dir", str(tmp_path / "ckpt")]
    killed = lossbench(*args, check=False, env={"LOSSBENCH_FAULT": point})
    assert killed.returncode == -9, killed.stderr[-2000:]
    (seed0,) = runs_by_role(store)["seed"]
    assert seed0.data.tags["lossbench.outcome"] == "finished"
    assert seed0.info.status == ("RUNNING" if point == "after-outcome-tag" else "FINISHED")
    (parent,) = runs_by_role(store)["parent"]
    assert parent.info.status == "RUNNING"

    lossbench(*args, "--resume")
    runs = runs_by_role(store)
    seeds = sorted((r.data.params["seed"], r.info.run_id, r.info.status) for r in runs["seed"])
    assert seeds == [("0", seed0.info.run_id, "FINISHED"), ("1", seeds[1][1], "FINISHED")]  # no seed twice
    assert [(p.info.run_id, p.info.status) for p in runs["parent"]] == [(parent.info.run_id, "FINISHED")]
    assert parent.info.run_id == {r.data.tags["mlflow.parentRunId"] for r in runs["seed"]}.pop()
    assert runs_by_role(store)["parent"][0].data.metrics["seeds_finished"] == 2  # aggregates over both seeds

    # the report only reads the store: in this process (a subprocess's imports cost 4-6 s)
    report = lossbench_here("report", "--tracking-uri", store, "--out", str(tmp_path / "report"), caplog=caplog)
    assert report.returncode == 0, report.stderr[-2000:]
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary["seeds"].tolist() == [2]
    assert len(pd.read_csv(tmp_path / "report" / "runs.csv")) == 2


def test_kill_while_closing_the_last_seed_then_resume_closes_the_parent(store: str, tmp_path: Path) -> None:
    """The status write of the only seed lost: --resume trains nothing, and ends it and its parent."""
    args = ["run", *TINY, "--tracking-uri", store, "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert lossbench(*args, check=False, env={"LOSSBENCH_FAULT": "after-outcome-tag"}).returncode == -9
    (seed,) = runs_by_role(store)["seed"]
    lossbench(*args, "--resume")
    runs = runs_by_role(store)
    assert [(r.info.run_id, r.info.status) for r in runs["seed"]] == [(seed.info.run_id, "FINISHED")]
    (parent,) = runs["parent"]
    assert parent.info.status == "FINISHED" and parent.data.tags["lossbench.outcome"] == "finished"
    assert parent.data.metrics["seeds_finished"] == 1 and "modes_mean" in parent.data.metrics


@pytest.mark.slow
def test_report_counts_a_seed_once_when_its_status_write_was_lost(store: str, tmp_path: Path) -> None:
    """Without --resume, the report reads a run killed between its writes as finished, once."""
    args = ["run", *TINY, "--seeds", "2", "--tracking-uri", store, "--checkpoint-dir", str(tmp_path / "ckpt")]
    assert lossbench(*args, check=False, env={"LOSSBENCH_FAULT": "after-outcome-tag"}).returncode == -9
    lossbench("run", *TINY, "--seeds", "2", "--tracking-uri", store)  # both seeds again, new runs
    lossbench("report", "--tracking-uri", store, "--out", str(tmp_path / "report"))
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert summary["seeds"].tolist() == [2]
    runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert sorted(runs["seed"]) == [0, 1] and set(runs["outcome"]) == {"finished"}


@pytest.mark.slow  # a real run end to end (20-50 s on 2 cores): keeps the default suite short
def test_first_use_of_a_new_sqlite_store_by_four_processes_at_once(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    procs = [subprocess.Popen([sys.executable, "-m", "lossbench", "run", *TINY, "--steps", "2", "--seed-start", str(i),
                               "--tracking-uri", store], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(4)]  # fmt: skip
    errors = [p.communicate(timeout=300)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], "\n".join(e[-1500:] for e in errors)
    assert len(runs_by_role(store)["seed"]) == 4


@pytest.mark.parametrize("command", ["run", "sweep", "report"])
def test_corrupt_store_is_one_line_naming_the_file(tmp_path: Path, command: str) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"this is not a database " * 200)
    args = {"run": ["run", *TINY], "sweep": ["sweep", "smoke", "--dry-run"], "report": ["report"]}[command]
    result = lossbench(*args, "--tracking-uri", f"sqlite:///{db}", check=False)
    error = _one_error_line(result)
    assert str(db) in error and "not a database" in error, error
    assert db.read_bytes() == b"this is not a database " * 200


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


def _serve(api: str) -> Iterator[str]:
    """A tracking server that answers /health, and whose API answers 500 or never."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def _answer(self) -> None:
            if self.path.startswith("/health"):
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"OK")
            elif api == "500":
                self.send_response(500)
                self.end_headers()
            else:
                time.sleep(600)

        do_GET = do_POST = _answer

        def log_message(self, *args: object) -> None:
            pass

    server = _Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


@pytest.mark.parametrize("api", ["500", "stall"])
def test_a_server_that_fails_or_stalls_is_one_line_within_the_bound(api: str) -> None:
    """Lossbench's bound (MLflow's retries 2, timeout 20 s unless set): a failing server is one line in
    seconds; a stalling one, here with a 1 s request timeout, within 3 tries of it."""
    uri = next(gen := _serve(api))
    env = {"MLFLOW_HTTP_REQUEST_TIMEOUT": "1"} if api == "stall" else {}
    try:
        started = time.monotonic()
        result = lossbench("run", *TINY, "--tracking-uri", uri, check=False, env=env)
        took = time.monotonic() - started
    finally:
        gen.close()
    error = _one_error_line(result)
    seen = "too many 500 error responses" if api == "500" else "Read timed out"
    assert f"tracking server {uri}: cannot open it: {seen} after 3 tries" in error, error
    assert took < (30 if api == "500" else 60), took  # MLflow's defaults: about 4 minutes, or 16 minutes stalled

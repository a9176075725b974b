"""Leases, unit by unit: one live owner per run, freed when its process dies, and the planner's view
of them (a run in training elsewhere is skipped in one line, a finished seed is not trained again)."""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from lossbench.config import resolve
from lossbench.exec import lease
from lossbench.exec.plan import Member, plan
from lossbench.options import ExecConfig
from lossbench.tracking_records import RunRecord


def test_lease_is_exclusive_and_freed_when_its_process_dies(tmp_path: Path) -> None:
    code = ("import sys, time; from lossbench.exec import lease; held = lease.Lease.take(sys.argv[1], 'r1'); "
            "print('held', flush=True); time.sleep(60)")  # fmt: skip
    owner = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline().strip() == "held"
        assert lease.holder(tmp_path, "r1") == f"{socket.gethostname()}:{owner.pid}"
        assert lease.Lease.take(tmp_path, "r1", timeout=0.2) is None  # a live owner keeps it
    finally:
        owner.kill()
        owner.wait()
    assert lease.holder(tmp_path, "r1") is None  # its process is gone: free, though lease.json still names it
    held = lease.Lease.take(tmp_path, "r1")
    assert held is not None and lease.holder(tmp_path, "r1") == lease.me()  # taken over
    held.release()
    assert not (tmp_path / "r1" / lease.OWNER).exists()


class FakeStore:
    def __init__(self, runs: list[RunRecord]) -> None:
        self.runs = runs

    def seed_runs(self, config_hash: str, role: str = "seed") -> list[RunRecord]:
        return self.runs if role == "seed" else []

    def end_stale(self, config_hash: str, live: object) -> list[str]:
        return []  # nothing left RUNNING with a final outcome here


def test_resume_plan_skips_finished_and_leased_seeds(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def run(seed: int, run_id: str, status: str, outcome: str) -> RunRecord:
        return RunRecord(run_id, f"parent-{run_id}", "h", status, outcome, {}, {}, start_time=seed, end_time=None,
                         seed=seed)  # fmt: skip

    store = FakeStore([run(0, "done", "FINISHED", "finished"), run(1, "elsewhere", "RUNNING", "running"),
                       run(2, "orphan", "RUNNING", "running")])  # fmt: skip
    held = lease.Lease.take(tmp_path, "elsewhere")  # another owner, as far as the planner can tell
    try:
        ex = ExecConfig.counted(4, checkpoint_dir=str(tmp_path), resume=True)
        with caplog.at_level(logging.WARNING):
            p = plan(store, resolve(("test", {"dataset": "ring8"})), ex)  # type: ignore[arg-type]
    finally:
        assert held is not None
        held.release()
    assert p.skipped == (0,) and p.busy == (1,)
    assert p.members == (Member(2, "orphan", known=frozenset({"orphan"})), Member(3))
    assert p.parent_id == "parent-orphan"  # the parent of the run it continues, never the busy one's
    assert f"seed 1: run elsewhere is being trained by {lease.me()}; skipped" in caplog.text
    again = plan(store, resolve(("test", {"dataset": "ring8"})), ex)  # type: ignore[arg-type]
    assert again.busy == () and len(again.members) == 3  # the lease given up: seed 1 is resumable again

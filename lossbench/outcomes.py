"""A run's outcome, and how readers settle it: the rules behind a close that a kill cannot split.

A run's close is two writes to the store: its outcome tag (lossbench.outcome), then MLflow's status.
MLflow has no public single write for both, so the outcome tag is the commit point, written only
once everything the run claims is stored: a RUNNING run with a final outcome is read as ended by it
(`settle`), whatever happened to the status write. A seed may have several runs (trained again
without --resume, or before this rule existed); readers count one per (configuration, seed)
(`one_per_seed`). `fault` makes a kill between two writes deterministic in tests.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterable
from typing import Any, TypeVar

# a run's final outcome -> the MLflow status its close writes after it (and that readers settle on)
STATUS_OF = {"finished": "FINISHED", "diverged": "FAILED", "failed": "FAILED", "interrupted": "KILLED"}
OUTCOME_OF = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "interrupted", "RUNNING": "running"}

R = TypeVar("R")


def settle(status: str, outcome: str) -> tuple[str, str]:
    """A run's (status, outcome) as every reader sees it: RUNNING with a final outcome is
    (STATUS_OF[outcome], outcome), its process killed before the status write; a run without the tag
    (older stores) has its status's outcome; anything else is as stored."""
    if status == "RUNNING" and outcome in STATUS_OF:
        return STATUS_OF[outcome], outcome
    return status, outcome or OUTCOME_OF.get(status, "failed")


def one_per_seed(runs: Iterable[R]) -> list[R]:
    """One run per (config_hash, seed), in the order first seen: the one with the largest
    (outcome == finished, start_time), i.e. the newest finished one, else the newest. A seed trained
    again (a run repeated without --resume, or resumed after a lost status write) counts once."""
    best: dict[tuple[str, int], Any] = {}
    for r in runs:
        key, rank = (r.config_hash, r.seed), (r.outcome == "finished", r.start_time)  # type: ignore[attr-defined]
        if key not in best or rank > (best[key].outcome == "finished", best[key].start_time):
            best[key] = r
    return list(best.values())


FAULT_ENV = "LOSSBENCH_FAULT"


def fault(point: str) -> None:
    """Fault injection for tests: SIGKILL this process at `point` when LOSSBENCH_FAULT names it, so a
    kill between two writes is deterministic, not a race. Points (tracking.Tracker.end_run):
    after-outcome-tag (a run's outcome tag is written, its status is not) and after-close (a run has
    just ended, before the next one starts)."""
    if os.environ.get(FAULT_ENV) == point:
        os.kill(os.getpid(), signal.SIGKILL)

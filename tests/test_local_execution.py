"""How the local executor picks its way of training (exec.executors.LOCAL_TRAINING), and the training
sets a sweep's plan times (exec.sweep.TrainingSets): each loaded once, a missing one said once."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossbench.config import resolve
from lossbench.exec import executors
from lossbench.exec.sweep import Planned, TrainingSets, grouped_estimate
from lossbench.options import ExecConfig, SpeedConfig


def test_the_local_executor_trains_through_its_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """--parallel-configs picks run_grouped, its absence run_each, by LOCAL_TRAINING (no if on the
    jobs): each entry replaced by a recorder, `execute(..., "local")` calls the one its flag names
    with every job; no jobs: nothing."""
    assert executors.LOCAL_TRAINING == {False: executors.run_each, True: executors.run_grouped}
    seen: list[tuple[bool, int]] = []
    for flag in (False, True):
        monkeypatch.setitem(executors.LOCAL_TRAINING, flag, lambda jobs, f=flag: seen.append((f, len(jobs))) or [])
    cfg = resolve(("t", {"dataset": "ring8"}))
    for flag in (True, False):
        ex = ExecConfig(speed=SpeedConfig(parallel_configs=flag))
        assert executors.execute([(cfg, ex), (cfg, ex)], "local") == []
    assert seen == [(True, 2), (False, 2)]
    assert executors.execute([], "local") == [] and seen == [(True, 2), (False, 2)]


def test_a_plans_training_sets_are_loaded_once_and_a_missing_one_is_said_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    """ring8 (made, not read) is loaded once; mnist, absent from an empty data folder, is None and one
    stderr line however often it is asked for. grouped_estimate reads them through TrainingSets: a
    ring8 group of 2 configurations x 2 seeds is timed, the mnist group of 2 seeds is not."""
    sets = TrainingSets(str(tmp_path))
    ring = sets.get("ring8")
    assert ring is not None and sets.get("ring8") is ring
    assert sets.get("mnist") is None and sets.get("mnist") is None
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("estimate: ") and err[0].endswith("; its configurations are not timed")

    planned = [Planned(resolve(("t", {"dataset": "ring8", "steps": 3, "lr": lr})), (0, 1), 0) for lr in (1e-3, 2e-3)]
    planned.append(Planned(resolve(("t", {"dataset": "mnist", "steps": 3})), (0, 1), 0))
    found = grouped_estimate(planned, SpeedConfig(parallel_configs=True), torch.device("cpu"), str(tmp_path))
    assert (sorted(found.sizes), found.timed) == ([2, 4], 1) and found.train_s > 0
    assert len(capsys.readouterr().err.splitlines()) == 1  # mnist said once

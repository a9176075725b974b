"""A seed run's best generator (exec.seed_run.SeedRun) with scripted metric values in a real sqlite
store: which evaluation's weights it keeps, across a resume, and which MLflow models it logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossbench.config import resolve
from lossbench.exec.seed_run import BEST_WEIGHTS, SeedRun
from lossbench.tracking import Tracker
from lossbench.train.loop import Outcome


def _G(fill: float) -> torch.nn.Module:
    """A toy generator (z of size 2 -> a point) whose weights are all `fill`: the step that made it."""
    G = torch.nn.Linear(2, 2)
    torch.nn.init.constant_(G.weight, fill)
    torch.nn.init.constant_(G.bias, fill)
    return G


def _start(tracker: Tracker, folder: Path, dataset: str = "ring8") -> SeedRun:
    cfg = resolve(("t", {"dataset": dataset, "steps": 8}))
    return SeedRun.start(tracker, cfg, {}, "", {}, 0, 100, folder)


def _kept(tracker: Tracker, run_id: str, tmp_path: Path) -> float:
    """The fill of the weights the run stored as generator_best.pt."""
    path = tracker.download(run_id, BEST_WEIGHTS, tmp_path / "dl")
    return float(torch.load(path, weights_only=True)["weight"][0, 0])


def test_a_resumed_run_keeps_the_better_steps_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FID 5, 3 (the best, step 4), then an interruption; resumed: 4 at step 6, 6 at the end. The
    resumed process knows step 4's 3 (read back once, not per evaluation) and keeps step 4's weights."""
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "lossbench")
    reads: list[str] = []
    history = tracker.metric_history
    monkeypatch.setattr(tracker, "metric_history", lambda run_id, key: reads.append(key) or history(run_id, key))
    run = _start(tracker, tmp_path / "a")
    for step, fid in ((2, 5.0), (4, 3.0)):
        run.log_evaluation(step, {"fid": fid, "is_mean": 1.0}, _G(step))
    assert reads == []  # a new run's evaluations read nothing back
    run.end(Outcome("interrupted", 4))
    resumed = SeedRun.resume(tracker, 0, run.run_id, 4, tmp_path / "b")
    resumed.log_evaluation(6, {"fid": 4.0}, _G(6))
    resumed.log_evaluation(7, {"fid": 3.5}, _G(7))
    result = resumed.finish(8, {"fid": 6.0}, _G(8), _G(0), 2, [])
    stored = tracker.client.get_run(run.run_id).data.metrics
    assert (result.metrics["best_fid"], result.metrics["best_fid_step"]) == (3.0, 4.0)
    assert (stored["best_fid"], stored["best_fid_step"]) == (3.0, 4.0)
    assert _kept(tracker, run.run_id, tmp_path) == 4.0
    assert reads == ["fid"]  # once, at the resumed run's first evaluation

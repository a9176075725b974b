"""A seed run's best generator (exec.seed_run.SeedRun) with scripted metric values in a real sqlite
store: which evaluation's weights it keeps, across a resume, and which MLflow models it logs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lossbench import tracking_models
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


def _calls(monkeypatch: pytest.MonkeyPatch, tracker: Tracker, method: str) -> list[str]:
    """Record the second argument (the key, the artifact path) of each call of one of the tracker's methods."""
    seen: list[str] = []
    real = getattr(tracker, method)
    monkeypatch.setattr(tracker, method, lambda run_id, what, *rest: seen.append(what) or real(run_id, what, *rest))
    return seen


def _kept(tracker: Tracker, run_id: str, tmp_path: Path) -> float:
    """The fill of the weights the run stored as generator_best.pt."""
    path = tracker.download(run_id, BEST_WEIGHTS, tmp_path / "dl")
    return float(torch.load(path, weights_only=True)["weight"][0, 0])


def test_a_resumed_run_keeps_the_better_steps_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FID 5, 3 (the best, step 4), then an interruption; resumed: 4 at step 6, 6 at the end. The
    resumed process knows step 4's 3 (read back once, not per evaluation) and keeps step 4's weights."""
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "lossbench")
    reads = _calls(monkeypatch, tracker, "metric_history")
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


def _samples(uri: str, model: str, run_id: str) -> torch.Tensor:
    """The logged model's samples of a fixed batch of latents."""
    from lossbench.tracking_models import load_generator

    G, z_dim, _ = load_generator(f"runs:/{run_id}/{model}", uri)
    with torch.no_grad():
        return G(torch.arange(2 * z_dim, dtype=torch.float32).reshape(2, z_dim))


def _models(tracker: Tracker, run_id: str) -> list[str]:
    """The names of the run's logged models, searched in the run's experiment."""
    return sorted(m.name for m in tracker.client.search_logged_models([tracker.experiment_id])
                  if m.source_run_id == run_id)  # fmt: skip


def test_higher_is_better_modes_keep_the_best_generator_from_the_weights_the_run_wrote(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    """modes (higher is better, the registry's ranking key for 2-D mixtures): 3, 7 (step 4), 5, final 6.
    best_modes is 7 at step 4; the model generator_best is step 4's G, from the file the run saved
    (nothing downloaded back), and the run's tag names it."""
    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "lossbench")
    downloads = _calls(monkeypatch, tracker, "download")
    run = _start(tracker, tmp_path / "a")
    for step, modes in ((2, 3.0), (4, 7.0), (6, 5.0)):
        run.log_evaluation(step, {"modes": modes, "high_quality": 0.5, "reverse_kl": 1.0 / step}, _G(step))
    run.finish(8, {"modes": 6.0, "high_quality": 0.5, "reverse_kl": 0.1}, _G(8), _G(0), 2, [])
    stored = tracker.client.get_run(run.run_id).data
    assert (stored.metrics["best_modes"], stored.metrics["best_modes_step"]) == (7.0, 4.0)
    assert _kept(tracker, run.run_id, tmp_path) == 4.0
    z = torch.arange(4, dtype=torch.float32).reshape(2, 2)
    torch.testing.assert_close(_samples(uri, "generator_best", run.run_id), _G(4)(z).detach(), rtol=0, atol=1e-6)
    assert _models(tracker, run.run_id) == ["generator", "generator_best"]  # in the run's experiment
    assert stored.tags["lossbench.best_model"] == "generator_best"
    assert downloads == ["weights/generator_best.pt"]  # _kept's own, after the run ended


def test_a_run_whose_last_evaluation_is_its_best_logs_one_model(tmp_path: Path) -> None:
    """FID 5, 3, final 2: the last step is the best; only `generator` is exported, the tag says it is
    the best one, and `lossbench sample runs:/<id>/generator_best` samples it. Its raw best weights are
    generator.pt's (tests/test_best_generator.py: stored once)."""
    from lossbench.exec.stored_generators import write_samples

    uri = f"sqlite:///{tmp_path}/m.db"
    tracker = Tracker(uri, "lossbench")
    run = _start(tracker, tmp_path / "a")
    for step, fid in ((2, 5.0), (4, 3.0)):
        run.log_evaluation(step, {"fid": fid}, _G(step))
    run.finish(8, {"fid": 2.0}, _G(8), _G(0), 2, [])
    stored = tracker.client.get_run(run.run_id).data
    assert (stored.metrics["best_fid"], stored.metrics["best_fid_step"]) == (2.0, 8.0)
    assert tracking_models.best_weights(stored.tags) == "weights/generator.pt"
    assert _models(tracker, run.run_id) == ["generator"]
    assert stored.tags["lossbench.best_model"] == "generator"
    for model in ("generator_best", "generator"):
        write_samples(f"runs:/{run.run_id}/{model}", 5, tmp_path / model, 3, uri, "cpu")
    best = (tmp_path / "generator_best" / "points.csv").read_text().splitlines()
    assert len(best) == 6 and best == (tmp_path / "generator" / "points.csv").read_text().splitlines()


def test_the_ranking_key_and_its_direction_come_from_the_metric_registry() -> None:
    from lossbench.metrics.registry import best, higher_is_better, ranking_key

    assert ranking_key(["is_mean", "kid_mean", "fid"]) == "fid"  # images: FID first
    assert ranking_key(["modes", "fid"]) == "fid"  # stacked MNIST with both: FID, as the report's score
    assert ranking_key(["modes", "high_quality", "reverse_kl", "fcd"]) == "modes"  # 2-D mixtures, stacked MNIST
    assert ranking_key(["fcd"]) == "fcd" and ranking_key(["precision", "recall"]) is None
    history = [(3.0, 2), (7.0, 4), (7.0, 6), (1.0, 8)]
    assert best(history, "modes") == (7.0, 4) and best(history, "fid") == (1.0, 8)  # ties: the earliest

    def newest_is_best(values: list[float], key: str) -> bool:  # as exec.seed_run asks, to keep the newest G
        return best(list(zip(values, (2, 4, 6))), key)[1] == 6

    # the newest evaluation is the best only when it beats every earlier one strictly
    assert newest_is_best([3.0, 7.0, 8.0], "modes") and not newest_is_best([3.0, 7.0, 7.0], "modes")
    assert newest_is_best([3.0, 7.0, 2.0], "fid") and not newest_is_best([3.0, 7.0, 3.0], "fid")
    assert higher_is_better("best_modes") and higher_is_better("best_is_mean") and not higher_is_better("best_fid")


def test_an_evaluation_ranked_by_another_key_is_not_compared_with_the_fids(tmp_path: Path) -> None:
    """FID 50, 40, then an evaluation whose FID is missing (dropped as non-finite) ranks by kid_mean
    0.05: that value is not a FID. The kept weights and best_fid stay step 4's 40."""
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "lossbench")
    run = _start(tracker, tmp_path / "a")
    run.log_evaluation(2, {"fid": 50.0}, _G(2))
    run.log_evaluation(4, {"fid": 40.0}, _G(4))
    run.log_evaluation(6, {"kid_mean": 0.05}, _G(6))
    result = run.finish(8, {"fid": 45.0}, _G(8), _G(0), 2, [])
    assert (result.metrics["best_fid"], result.metrics["best_fid_step"]) == (40.0, 4.0)
    assert _kept(tracker, run.run_id, tmp_path) == 4.0


def test_a_final_evaluation_without_the_runs_key_keeps_the_earlier_best(tmp_path: Path) -> None:
    """FID 50, 40 (step 4), then a final evaluation whose FID was dropped (kid_mean only): the close
    ranks by the run's key, fid, as training did: best_fid 40 at step 4, step 4's weights kept, and
    the best model is generator_best, not the last G."""
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "lossbench")
    run = _start(tracker, tmp_path / "a")
    run.log_evaluation(2, {"fid": 50.0, "kid_mean": 0.2}, _G(2))
    run.log_evaluation(4, {"fid": 40.0, "kid_mean": 0.1}, _G(4))
    result = run.finish(8, {"kid_mean": 0.3}, _G(8), _G(0), 2, [])
    assert (result.metrics["best_fid"], result.metrics["best_fid_step"]) == (40.0, 4.0)
    assert "best_kid_mean" not in result.metrics
    assert _kept(tracker, run.run_id, tmp_path) == 4.0
    assert tracker.client.get_run(run.run_id).data.tags["lossbench.best_model"] == "generator_best"

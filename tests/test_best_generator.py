"""A seed run's best generator as its readers find it: the model the run's tag lossbench.best_model
names, followed by the one shared loader (tracking_models.load_generator), and the raw weights stored
once where the last evaluation is the best (tracking_models.best_weights names the file)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_seed_run import _G, _calls, _start

from lossbench.exec.seed_run import SeedRun
from lossbench.tracking import Tracker
from lossbench.tracking_models import best_weights, load_generator
from lossbench.train.loop import Outcome

Z = torch.arange(4, dtype=torch.float32).reshape(2, 2)


def _fid_run(tmp_path: Path, final: float) -> tuple[str, str]:
    """A toy run with FID 5 (step 2), 3 (step 4), then `final` at step 8; its store URI and run id."""
    uri = f"sqlite:///{tmp_path}/m.db"
    run = _start(Tracker(uri, "lossbench"), tmp_path / "a")
    for step, fid in ((2, 5.0), (4, 3.0)):
        run.log_evaluation(step, {"fid": fid}, _G(step))
    run.finish(8, {"fid": final}, _G(8), _G(0), 2, [])
    return uri, run.run_id


def _sampled(uri: str, model_uri: str) -> torch.Tensor:
    G, z_dim, _ = load_generator(model_uri, uri)
    assert z_dim == 2
    with torch.no_grad():
        return G(Z)


def test_the_shared_loader_follows_the_runs_best_model_tag(tmp_path: Path) -> None:
    """Final FID 2 is the best: the run logs one model, `generator`, and tags it as the best;
    tracking_models.load_generator itself (every caller's loader, not `lossbench sample` alone) loads
    runs:/<id>/generator_best as it, step 8's G. A run whose best is earlier (final 6) loads its own
    generator_best, step 4's G."""
    uri, run_id = _fid_run(tmp_path / "last", final=2.0)
    torch.testing.assert_close(_sampled(uri, f"runs:/{run_id}/generator_best"), _G(8)(Z).detach(), rtol=0, atol=1e-6)
    uri, run_id = _fid_run(tmp_path / "earlier", final=6.0)
    torch.testing.assert_close(_sampled(uri, f"runs:/{run_id}/generator_best"), _G(4)(Z).detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(_sampled(uri, f"runs:/{run_id}/generator"), _G(8)(Z).detach(), rtol=0, atol=1e-6)


def _best_fill(tracker: Tracker, run_id: str, tmp_path: Path) -> float:
    """The fill (the step that made it) of the raw weights the run's tags name as its best."""
    path = tracker.download(run_id, best_weights(tracker.run_tags(run_id)), tmp_path / "dl")
    return float(torch.load(path, weights_only=True)["weight"][0, 0])


@pytest.mark.parametrize("resumed", [False, True], ids=["one-process", "resumed"])
def test_the_best_weights_are_stored_once_where_the_last_evaluation_is_the_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, resumed: bool) -> None:  # fmt: skip
    """FID 5, 3 (step 4; uploaded as generator_best.pt, for a resume), final 2 at step 8: the best is
    the last, so step 8's weights are uploaded once, as generator.pt; the earlier generator_best.pt
    (superseded) is removed after the close, the tag names generator and best_weights its file, which
    holds step 8's G. The same for a run interrupted after step 4 and resumed by another process."""
    tracker = Tracker(f"sqlite:///{tmp_path}/m.db", "lossbench")
    uploads = _calls(monkeypatch, tracker, "log_artifact")
    run = _start(tracker, tmp_path / "a")
    for step, fid in ((2, 5.0), (4, 3.0)):
        run.log_evaluation(step, {"fid": fid}, _G(step))
    if resumed:
        run.end(Outcome("interrupted", 4))
        tracker.flush()
        assert "weights/generator_best.pt" in tracker.artifacts(run.run_id, "weights")
        run = SeedRun.resume(tracker, 0, run.run_id, 4, tmp_path / "b")
    run.finish(8, {"fid": 2.0}, _G(8), _G(0), 2, [])
    assert [Path(u).parent.name for u in uploads if Path(u).name == "generator_best.pt"] == ["best-2", "best-4"]
    assert tracker.artifacts(run.run_id, "weights") == ["weights/discriminator.pt", "weights/generator.pt"]
    assert tracker.run_tags(run.run_id)["lossbench.best_model"] == "generator"
    assert best_weights(tracker.run_tags(run.run_id)) == "weights/generator.pt"
    assert _best_fill(tracker, run.run_id, tmp_path) == 8.0


def test_an_earlier_best_keeps_its_own_weights_file(tmp_path: Path) -> None:
    """FID 5, 3 (step 4), final 6: the best is not the last; generator_best.pt stays, holds step 4's G,
    and best_weights names it (as for a run stored before the tag: no tag, generator_best.pt)."""
    uri, run_id = _fid_run(tmp_path, final=6.0)
    tracker = Tracker(uri, "lossbench")
    assert "weights/generator_best.pt" in tracker.artifacts(run_id, "weights")
    assert best_weights(tracker.run_tags(run_id)) == best_weights({}) == "weights/generator_best.pt"
    assert _best_fill(tracker, run_id, tmp_path) == 4.0


def test_the_parent_and_the_report_show_best_modes_from_the_ranking_keys(store: str, tmp_path: Path) -> None:
    """`lossbench run` on ring8 with metrics modes (ranking key modes, higher is better), two seeds:
    each seed logs best_modes; its parent run aggregates best_modes_mean and _std over them (not
    best_fid alone), and the report's summary, table and header show best_modes with its direction."""
    import numpy as np
    import pandas as pd
    from test_cli import lossbench, runs_by_role

    from lossbench.report.build import build

    ran = lossbench("run", "--dataset", "ring8", "--seeds", "2", "--steps", "20", "--log-every", "10",
                    "--eval-every", "10", "--metrics", "modes", "--no-progress", "--tracking-uri", store)  # fmt: skip
    header = next(line for line in ran.stdout.splitlines() if line.lstrip().startswith("seed"))
    assert header.split()[3:7] == ["modes", "high_quality", "reverse_kl", "best_modes"]  # the run's own summary
    roles = runs_by_role(store)
    best = [r.data.metrics["best_modes"] for r in roles["seed"]]
    assert len(best) == 2 and all(r.data.metrics["best_modes"] >= r.data.metrics["modes"] for r in roles["seed"])
    (parent,) = roles["parent"]
    assert parent.data.metrics["best_modes_mean"] == pytest.approx(np.mean(best), abs=1e-12)
    assert parent.data.metrics["best_modes_std"] == pytest.approx(np.std(best, ddof=1), abs=1e-12)
    out = build(store, "lossbench", tmp_path / "report")
    summary = pd.read_csv(out / "summary.csv")
    assert summary.loc[0, "best_modes_mean"] == pytest.approx(np.mean(best), abs=1e-12)
    md = (out / "report.md").read_text()
    header, table = md.split("## Summary")[0], md.split("## Summary")[1].split("## Tests")[0]
    assert "- best_modes: each run's best evaluation by modes (higher is better;" in header
    assert "| best_modes mean ± std |" in table.splitlines()[2]
    assert (out / "figures" / "modes_curve.png").is_file()  # the report's score over training, not FID's
    assert "modes over training" in (out / "index.html").read_text()


def test_the_reports_score_and_best_keys_come_from_the_ranking() -> None:
    """The report's score is the first of RANKING the runs logged (fcd alone: fcd, not a missing fid),
    and best_keys picks the best_<key> columns in RANKING's order, best_<key>_step left out."""
    import pandas as pd

    from lossbench.metrics.registry import best_keys
    from lossbench.report.build import main_score

    def frame(**cols: list[float | None]) -> pd.DataFrame:
        return pd.DataFrame(cols)

    assert main_score(frame(modes=[3.0], fid=[40.0])) == "fid"  # stacked MNIST with both: FID first
    assert main_score(frame(fcd=[2.0], is_mean=[1.5])) == "fcd"
    assert main_score(frame(kid_mean=[0.1], equilibrium_distance=[1.0])) == "kid_mean"
    assert main_score(frame(fid=[None], equilibrium_distance=[0.5])) == "equilibrium_distance"
    assert main_score(frame(precision=[0.5])) == "fid"
    assert best_keys(["best_modes_step", "best_modes", "fid", "best_fid", "best_kid_mean"]) == [
        "best_fid", "best_modes", "best_kid_mean"]  # fmt: skip


def test_a_suite_may_rank_settings_by_the_best_key_its_runs_log() -> None:
    """best_by accepts the best_<key> a configuration's runs log (best_modes for a 2-D mixture with
    metrics modes), and refuses one they do not log in one line."""
    from lossbench import config
    from lossbench.errors import ConfigError
    from lossbench.exec.search import check_best_by, logged_keys

    assert logged_keys(("modes",)) == ["best_modes", "high_quality", "modes", "reverse_kl"]
    assert logged_keys(("fid", "kid")) == ["best_fid", "fid", "kid_mean"]
    assert logged_keys(("pr",)) == ["precision", "recall"]  # no ranking key: no best generator kept
    ring = config.resolve(("s", {"dataset": "ring8", "metrics": ["modes"]}))
    assert check_best_by("best_modes", (ring,), "suite.toml") == "best_modes"
    with pytest.raises(ConfigError, match="best_by = 'best_fid', but non-saturating on ring8 logs only best_modes"):
        check_best_by("best_fid", (ring,), "suite.toml")

"""A seed run's best generator as its readers find it: the model the run's tag lossbench.best_model
names, followed by the one shared loader (tracking_models.load_generator), and the raw weights stored
once where the last evaluation is the best (tracking_models.best_weights names the file)."""

from __future__ import annotations

from pathlib import Path

import torch
from test_seed_run import _G, _start

from lossbench.tracking import Tracker
from lossbench.tracking_models import load_generator

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

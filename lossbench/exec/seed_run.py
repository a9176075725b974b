"""One seed's run in the store, from open to close, while this process trains it: the local group
(exec.group) opens, logs and ends every seed run through `SeedRun`, whether `lossbench run` trains it
here or a Ray task (exec.executors.train_task) on a worker.

`start` creates the child run under its configuration's parent (parameters, tags, data inputs,
config.json); `resume` reopens an interrupted one under the same id. During training it logs the
metrics, the sample grids (also as MLflow images, the UI's step slider) and each evaluation, keeping
G's weights as generator_best.pt whenever the evaluation is the run's best so far by its ranking key
(metrics.registry.ranking_key and its direction: FID for images, modes for 2-D mixtures). Its close
writes the outcome tag, the commit point (lossbench.outcomes), then the status, and returns the
seed's `SeedResult` (exec.runs):

  finished     the final evaluation with best_<key> and best_<key>_step (best_fid, best_fid_step) over
               every evaluation of the run (a resumed run's earlier ones read back once), G's and D's
               weights, the readouts' path, the generators as MLflow models (exec.generators); tag
               lossbench.best_model names the model holding the best weights: generator where the last
               evaluation is the best (its weights stored once: generator_best.pt of an earlier best
               is removed after the close), else generator_best (tracking_models.best_weights: the
               raw file); FINISHED
  diverged     FAILED, tag lossbench.diverged_step
  interrupted  KILLED, tag lossbench.interrupted_step (the group checkpoints it first)
  an error     FAILED with tag lossbench.error; a second Ctrl-C: KILLED, interrupted (`fail`)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from lossbench import tracking_conventions as conventions
from lossbench import tracking_models
from lossbench.config import RunConfig
from lossbench.errors import TrackingError
from lossbench.exec import generators, sample_figures
from lossbench.exec.runs import SeedResult, data_inputs
from lossbench.metrics.registry import BEST_PREFIX, best, ranking_key
from lossbench.outcomes import STATUS_OF
from lossbench.tracking import TAG_BEST_MODEL, TAG_ERROR, TAG_OUTCOME, TAG_ROLE, TAG_SEED, Tracker, first_line
from lossbench.tracking_models import MODEL_BEST, MODEL_LAST, WEIGHTS
from lossbench.train.loop import Outcome

log = logging.getLogger(__name__)

BEST_WEIGHTS = WEIGHTS[MODEL_BEST]


class SeedRun:
    """The child run of one seed that this process trains: its store, seed and run id, and a local
    folder for the files it uploads (each stays in place until the tracker's flush)."""

    def __init__(self, tracker: Tracker, seed: int, run_id: str, folder: Path, resumed: bool = False) -> None:
        self.tracker, self.seed, self.run_id, self._folder = tracker, seed, run_id, folder
        # per ranking key, (value, step) of every value the run logged, in order: kept here, so an
        # evaluation costs no query of the store; a resumed run's earlier ones are read back once per key
        # (its ranking key, the (value, step) of every value of it the run logged, in order), fixed by the
        # first ranked evaluation this process sees; None before it
        self._ranked: tuple[str, list[tuple[float, int]]] | None = None
        self._resumed = resumed
        self._best_weights: Path | None = None  # the local generator_best.pt this process last wrote

    @classmethod
    def start(cls, tracker: Tracker, cfg: RunConfig, tags: dict[str, str], parent_id: str, params: dict[str, Any],
              seed: int, train_size: int, folder: Path) -> SeedRun:  # fmt: skip
        """A new run of `seed` under `parent_id`: `params` and the seed as parameters, the configuration's
        `tags` (exec.runs.run_tags) with the seed's (role seed, outcome running), its data inputs and
        its config.json."""
        run_id = tracker.start_run(
            f"{cfg.loss.loss}/{cfg.data.dataset}/seed{seed}",
            params | {"seed": seed},
            tags | {TAG_ROLE: "seed", TAG_SEED: str(seed), TAG_OUTCOME: "running"},
            parent_id=parent_id,
        )
        conventions.log_inputs(tracker.client, run_id, data_inputs(cfg, train_size))
        tracker.log_text(run_id, json.dumps(cfg.flat() | {"seed": seed}, indent=2, sort_keys=True), "config.json")
        return cls(tracker, seed, run_id, folder)

    @classmethod
    def resume(cls, tracker: Tracker, seed: int, run_id: str, step: int, folder: Path) -> SeedRun:
        """An interrupted run, RUNNING again, continued at `step` (its checkpoint's, or 0)."""
        tracker.reopen(run_id)
        log.info("seed %d: continuing run %s at step %d", seed, run_id, step)
        return cls(tracker, seed, run_id, folder, resumed=True)

    @property
    def folder(self) -> Path:
        self._folder.mkdir(exist_ok=True)
        return self._folder

    # --- during training ----------------------------------------------------------------------

    def log(self, step: int, values: dict[str, float]) -> None:
        self.tracker.log_metrics(self.run_id, step, values)

    def monitor(self) -> Any | None:
        """MLflow's system metrics monitor on the run, started (None where it cannot run); `.finish()` it."""
        return conventions.system_metrics(self.tracker.uri, self.run_id)

    def log_samples(self, path: Path, step: int) -> None:
        """A sample grid, as an artifact under samples/ and as an MLflow image at its step."""
        self.tracker.log_artifact(self.run_id, path, "samples")
        self.tracker.in_background(conventions.log_image, self.tracker.client, self.run_id, path, "samples", step)

    def log_evaluation(self, step: int, values: dict[str, float], G: torch.nn.Module) -> None:
        """An evaluation during training; G's weights kept as generator_best.pt when it is the run's best
        so far by its ranking key (strictly better than every earlier value, as best_<key>_step picks
        the first)."""
        ranked = self._ranking(values)  # read before the new value is logged
        self.log(step, values)
        if ranked is None or ranked[0] not in values:  # one missing the run's key (a dropped FID) competes with nothing
            return
        key, history = ranked
        history.append((values[key], step))
        if best(history, key)[1] == step:
            self._keep_best(step, G)

    def _ranking(self, values: dict[str, float]) -> tuple[str, list[tuple[float, int]]] | None:
        """The run's ranking key and its (value, step) so far: the key of the first ranked evaluation
        (metrics.registry.ranking_key), its earlier values read from the store once for a resumed run;
        None while no evaluation has one."""
        if self._ranked is None and (key := ranking_key(values)) is not None:
            earlier = self.tracker.metric_history(self.run_id, key) if self._resumed else []
            self._ranked = (key, [(m.value, m.step) for m in earlier])
        return self._ranked

    def _keep_best(self, step: int, G: torch.nn.Module) -> None:
        """G's weights at the run's best evaluation, in the store (weights/generator_best.pt), so a
        resumed run keeps them; one local file per step, as an upload reads it until flush()."""
        (folder := self.folder / f"best-{step}").mkdir(exist_ok=True)
        path = folder / "generator_best.pt"
        torch.save(G.state_dict(), path)
        self.tracker.log_artifact(self.run_id, path, "weights")
        self._best_weights = path

    # --- the close ----------------------------------------------------------------------------

    def end(self, outcome: Outcome) -> SeedResult:
        """Close a run that did not finish: diverged (FAILED) or interrupted (KILLED), with its step."""
        status, step = outcome.status, outcome.step
        if status == "diverged":
            log.warning("seed %d diverged at step %d (non-finite loss or weights)", self.seed, step)
        tags = {TAG_OUTCOME: status, f"lossbench.{status}_step": str(step)}  # lossbench.diverged_step, ...
        self.tracker.end_run(self.run_id, STATUS_OF[status], tags)
        return SeedResult(self.seed, self.run_id, status, step)

    def fail(self, exc: BaseException) -> None:
        """An exception stopped the group: a second Ctrl-C ends the run KILLED (it continues from its last
        checkpoint), anything else FAILED with the error."""
        if isinstance(exc, KeyboardInterrupt):
            self.tracker.end_run(self.run_id, "KILLED", {TAG_OUTCOME: "interrupted"})
        else:
            self.tracker.end_run(self.run_id, "FAILED", {TAG_OUTCOME: "failed", TAG_ERROR: str(exc)[:500]})

    def finish(self, step: int, final: dict[str, float], G: torch.nn.Module, D: torch.nn.Module, z_dim: int,
               readouts: list[str], averaged: torch.nn.Module | None = None) -> SeedResult:  # fmt: skip
        """Close a finished run: `final` (the last evaluation) with the run's best by its ranking key,
        the weights (and the averaged G's, with --ema), the path of the `readouts` (two of them: a
        plane), the generators as MLflow models; then FINISHED. Where the last evaluation is the best,
        its weights are generator.pt's, stored once: the tag says so, and a generator_best.pt an
        earlier best left in the store is removed after the close (until then the tag already names
        generator.pt)."""
        best_is_last = None  # unknown: no ranking key evaluated
        if (ranked := self._ranking(final)) is not None:
            key, history = ranked
            candidates = [*history, (final[key], step)] if key in final else history
            if candidates:
                value, at = best(candidates, key)
                final |= {f"{BEST_PREFIX}{key}": value, f"{BEST_PREFIX}{key}_step": float(at)}
                best_is_last = key in final and at == step
        self.log(step, final)
        weights = (("generator.pt", G), ("discriminator.pt", D), ("generator_ema.pt", averaged))
        for name, module in ((n, m) for n, m in weights if m is not None):
            torch.save(module.state_dict(), self.folder / name)
            self.tracker.log_artifact(self.run_id, self.folder / name, "weights")
        if len(readouts) == 2:  # the path of the architecture's scalars (the Dirac-GAN's theta, psi)
            self._log_path(readouts)
        self.tracker.flush()
        tags = self._log_models(G, z_dim, step, averaged, best_is_last)
        self.tracker.end_run(self.run_id, "FINISHED", {TAG_OUTCOME: "finished"} | tags)
        if best_is_last:
            self._drop_superseded_best()
        return SeedResult(self.seed, self.run_id, "finished", step, final)

    def _drop_superseded_best(self) -> None:
        """The store's generator_best.pt of a run whose last evaluation is its best: an earlier
        evaluation's weights (kept for a resume), superseded by generator.pt, which the run's tag names;
        removed, so the run stores its best weights once. The run is closed already: a store that
        refuses is a warning (the tag still names generator.pt), never a failed run."""
        try:  # this process uploaded it (known), or an earlier one of a resumed run may have (listed)
            if self._best_weights is not None or BEST_WEIGHTS in self.tracker.artifacts(self.run_id, "weights"):
                tracking_models.delete_artifact(self.tracker.uri, self.tracker.client, self.run_id, BEST_WEIGHTS)
        except Exception as exc:  # noqa: BLE001 - said in one line
            log.warning("seed %d: %s left in the store (%s); its best weights are %s (tag %s)", self.seed,
                        BEST_WEIGHTS, first_line(exc), WEIGHTS[MODEL_LAST], TAG_BEST_MODEL)  # fmt: skip

    def _log_path(self, keys: list[str]) -> None:
        """The run's own figure of its two readouts' path over training, read back from the store."""
        xs, ys = ([m.value for m in sorted(self.tracker.metric_history(self.run_id, key), key=lambda m: m.step)]
                  for key in keys)  # fmt: skip
        path = sample_figures.save_path(xs, ys, keys, self.folder / "trajectory.png", f"seed {self.seed}")
        self.tracker.log_artifact(self.run_id, path, "samples")

    def _log_models(self, G: torch.nn.Module, z_dim: int, step: int, averaged: torch.nn.Module | None,
                    best_is_last: bool | None) -> dict[str, str]:  # fmt: skip
        """The last, best and averaged generators as MLflow models (exec.generators), and the tag naming
        the model with the best evaluation's weights: `generator` itself where the last evaluation is
        the best (no second export nor upload of the same weights), else `generator_best`, from the
        local file this process wrote (a resumed run whose best came before it reads it back from the
        store). The tag is returned even where logging the models fails (a warning): it also names the
        raw weights file that holds the best weights (tracking_models.best_weights)."""
        best_weights = None
        if best_is_last is False:
            best_weights = self._best_weights
            if best_weights is None and BEST_WEIGHTS in self.tracker.artifacts(self.run_id, "weights"):
                best_weights = self.tracker.download(self.run_id, BEST_WEIGHTS, self.folder / "best-model")
        try:
            took = generators.log_models(self.tracker, self.run_id, G, z_dim, step, best_weights, averaged)
            log.info("seed %d: generator logged as an MLflow model in %.1f s", self.seed, took)
        except TrackingError as exc:
            log.warning("seed %d: %s", self.seed, exc)
        if best_is_last:
            log.info("seed %d: its last evaluation is its best: model %s is the best one (tag %s)", self.seed,
                     MODEL_LAST, TAG_BEST_MODEL)  # fmt: skip
            return {TAG_BEST_MODEL: MODEL_LAST}
        return {TAG_BEST_MODEL: MODEL_BEST} if best_weights is not None else {}

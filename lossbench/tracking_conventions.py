"""MLflow's own conventions on lossbench's runs: the data sets a run read (`log_inputs`, MLflow's
Datasets column), its description (`mlflow.note.content`), its suite and stage, the commit it ran
from (`mlflow.source.git.commit`), sample images on the UI's step slider, and system metrics.
Beside lossbench.tracking and lossbench.tracking_models, the one other module that imports mlflow."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

TAG_SUITE = "lossbench.suite"
TAG_STAGE = "lossbench.stage"  # search | seeds | run (a plain `lossbench run`)
TAG_NOTE = "mlflow.note.content"  # the run's description in MLflow's UI
TAG_GIT_COMMIT = "mlflow.source.git.commit"
CONTEXT_TRAINING, CONTEXT_EVALUATION = "training", "evaluation"
SOURCE_TYPE = "lossbench"


@dataclass(frozen=True)
class DataInput:
    """A data set split a run read: what MLflow's Datasets column shows."""

    name: str  # the data set (mnist, ring8, ...)
    split: str  # train | test
    size: int  # examples in the split
    revision: int  # lossbench.gan.data's revision of the data set
    context: str  # training | evaluation

    @property
    def digest(self) -> str:
        """sha256 of (name, split, size, revision), first 16 hex digits: the split's identity as lossbench
        versions its data (a change to the data raises its revision)."""
        return hashlib.sha256(f"{self.name}/{self.split}/{self.size}/r{self.revision}".encode()).hexdigest()[:16]


def log_inputs(client: Any, run_id: str, inputs: list[DataInput]) -> None:
    """The data sets a run read, each with its context (training, evaluation) as MLflow's input tag."""
    from mlflow.entities import Dataset, DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    client.log_inputs(run_id, datasets=[
        DatasetInput(
            Dataset(name=f"{i.name}:{i.split}", digest=i.digest, source_type=SOURCE_TYPE,
                    source=json.dumps({"dataset": i.name, "split": i.split, "revision": i.revision}),
                    profile=json.dumps({"num_rows": i.size, "split": i.split})),
            tags=[InputTag(MLFLOW_DATASET_CONTEXT, i.context)],
        ) for i in inputs
    ])  # fmt: skip


def description(suite: str, suite_description: str, label: str) -> str:
    """A parent run's description: the configuration's label, then the suite it belongs to and what the
    suite is for."""
    head = f"**{label}**"
    if not suite:
        return head
    return f"{head}\n\nSuite `{suite}`" + (f": {suite_description.strip()}" if suite_description.strip() else "")


@functools.lru_cache(maxsize=8)
def git_commit(start: Path) -> str | None:
    """The commit checked out in the git repository holding `start` (a worktree's too), read from its
    files without running git; None when it is not a git checkout or the files say nothing readable."""
    try:
        for folder in (start, *start.parents):
            dot = folder / ".git"
            if dot.is_dir():
                return _resolve(dot, dot)
            if dot.is_file():  # a worktree or submodule: "gitdir: PATH"
                text = dot.read_text().strip()
                if not text.startswith("gitdir:"):
                    return None
                gitdir = (folder / text.removeprefix("gitdir:").strip()).resolve()
                common = gitdir / "commondir"
                root = (gitdir / common.read_text().strip()).resolve() if common.is_file() else gitdir
                return _resolve(gitdir, root)
    except (OSError, UnicodeDecodeError):
        return None
    return None


def _resolve(gitdir: Path, common: Path) -> str | None:
    head = (gitdir / "HEAD").read_text().strip()
    if not head.startswith("ref:"):
        return head if _is_sha(head) else None
    ref = head.removeprefix("ref:").strip()
    for base in (gitdir, common):
        if (base / ref).is_file():
            sha = (base / ref).read_text().strip()
            return sha if _is_sha(sha) else None
    packed = common / "packed-refs"
    if packed.is_file():
        for line in packed.read_text().splitlines():
            sha, _, name = line.partition(" ")
            if name == ref and _is_sha(sha):
                return sha
    return None


def _is_sha(text: str) -> bool:
    return len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text)


def log_image(client: Any, run_id: str, path: Path, key: str, step: int) -> None:
    """A PNG as an MLflow image under `key` at `step` (the UI's step slider)."""
    from PIL import Image

    with Image.open(path) as img:
        client.log_image(run_id, img.convert("RGB"), key=key, step=step)


def system_metrics(uri: str, run_id: str) -> Any | None:
    """MLflow's system metrics monitor (CPU, memory, GPU where present) on the run, started; None when
    it cannot run here (psutil missing). Stop it with `.finish()`."""
    try:
        import mlflow
        import psutil  # noqa: F401  MLflow's monitor needs it
        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError:
        log.warning("system metrics: psutil is not installed; none are logged")
        return None
    mlflow.set_tracking_uri(uri)
    monitor = SystemMetricsMonitor(run_id, resume_logging=True)
    monitor.start()
    return monitor

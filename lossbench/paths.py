"""Where things live: every default location, and the one rule that picks it.

Each location is the flag when given, else its environment variable, else a default under the
output root `runs/` (data under `./data`, Inception weights under torch's own cache). Nothing else
in lossbench reads these environment variables; `options.resolve_exec` turns them into the concrete
paths a run uses and `--dry-run` prints.
"""

from __future__ import annotations

import os
from pathlib import Path

OUTPUT_ROOT = Path("runs")  # the MLflow store, checkpoints and caches, unless told otherwise


def setting(flag: str | os.PathLike | None, env: str, default: str | Path) -> str:
    """The flag, else the environment variable `env`, else the default."""
    return str(flag or os.environ.get(env) or default)


def data_root(flag: str | os.PathLike | None = None) -> Path:
    return Path(setting(flag, "LOSSBENCH_DATA_DIR", "data"))


def checkpoint_root(flag: str | os.PathLike | None = None) -> Path:
    return Path(setting(flag, "LOSSBENCH_CHECKPOINT_DIR", OUTPUT_ROOT / "checkpoints"))


def cache_root(flag: str | os.PathLike | None = None) -> Path:
    return Path(setting(flag, "LOSSBENCH_CACHE_DIR", OUTPUT_ROOT / "cache"))


def torch_home() -> Path:
    return Path(setting(None, "TORCH_HOME", Path.home() / ".cache" / "torch"))


def tracking_uri(flag: str | None = None) -> str:
    """--tracking-uri, else MLFLOW_TRACKING_URI, else the sqlite store under the output root."""
    return setting(flag, "MLFLOW_TRACKING_URI", f"sqlite:///{(OUTPUT_ROOT / 'mlflow.db').resolve()}")

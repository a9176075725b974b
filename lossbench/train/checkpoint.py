"""Checkpoint files: written atomically (temporary file, fsync, rename), so a crash mid-write
never leaves a corrupt latest checkpoint; read back with one clear error when unreadable."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import torch

from lossbench.errors import CheckpointError

FILENAME = "latest.pt"


def path_for(root: Path, run_id: str) -> Path:
    return root / run_id / FILENAME


def save(state: dict[str, Any], path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    blob = io.BytesIO()
    torch.save(state, blob)  # serialised in memory: a full disk then fails as a plain OSError on write
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(blob.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def load(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__})") from None

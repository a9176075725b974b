"""Checkpoint files: written atomically (temporary file, fsync, rename), so a crash mid-write
never leaves a corrupt latest checkpoint; read back with one clear error when unreadable.

A checkpoint holds tensors, plain containers and numbers only, and is read with torch's
`weights_only` unpickler: a file that would need anything more (any other class or function, which
unpickling could call) is refused in one line, never unpickled, so whoever can write into a
checkpoint folder cannot run code in the processes that resume from it."""

from __future__ import annotations

import io
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from lossbench.errors import CheckpointError
from lossbench.files import write_atomically

FILENAME = "latest.pt"


def path_for(root: Path, run_id: str) -> Path:
    return root / run_id / FILENAME


def save(state: dict[str, Any], path: Path) -> None:
    blob = io.BytesIO()
    torch.save(state, blob)  # serialised in memory: a full disk then fails as a plain OSError on write
    try:
        write_atomically(path, blob.getbuffer())
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def load(path: Path) -> dict[str, Any]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except pickle.UnpicklingError as exc:
        unsafe = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} needs {unsafe.group(1)} to load, which could run code; refused (not "
                f"unpickled). Start the seed again without --resume, or delete that file"
            ) from None
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt (UnpicklingError)") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a lossbench checkpoint (no step)")
    return state

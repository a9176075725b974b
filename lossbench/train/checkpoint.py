"""Checkpoint files: written atomically (temporary file, fsync, rename), so a crash mid-write
never leaves a corrupt latest checkpoint; read back with one clear error when unreadable.

A checkpoint holds tensors, plain containers and numbers only, and is read with torch's
`weights_only` unpickler: a file that would need anything more (any other class or function, which
unpickling could call) is refused in one line, never unpickled, so whoever can write into a
checkpoint folder cannot run code in the processes that resume from it. `load(path, expected)` then
checks every value against what the state it goes into takes (train.validate) and refuses the
first mismatch in one line, so a tampered file cannot crash the process in a kernel either.

Seeds trained together (--parallel-seeds) checkpoint as one commit, all at the same step or none:
a seed resumed at another step than its group-mates would train apart from them, on the single-seed
path, which equals the stacked one only to float rounding. Each seed's run has its own folder, and
no one rename moves files in several folders, so a group's checkpoint (`GroupCommit`) is written
in three phases:

1. stage: each seed's checkpoint is written atomically (fsync) as `<run>/pending-<id>.pt`, `id` new
   per commit; `latest.pt` is untouched.
2. commit point: the marker `<root>/commits/<id>.json` is written atomically, once every seed is
   staged (and the run folders fsynced). From here on the new step is the group's checkpoint.
3. apply: each `pending-<id>.pt` is renamed over its run's `latest.pt`; then the marker is removed.

Readers see a run's checkpoint as `current` says: its staged file whose marker exists (a commit
that died part way through phase 3), else `latest.pt`. A SIGKILL before the marker leaves every
seed at the previous commit (its staged files are ignored, and removed by `recover`); a SIGKILL
after it leaves every seed at the new one (`recover`, run under the run's lease before it resumes,
finishes the rename; the last run to do so removes the marker). Either way the seeds agree, so the
planner resumes them in one group. A group of one seed is one rename and needs no marker. A marker
left by a kill between the last rename and its removal names no staged file any more: harmless.
The file format is the same as ever: old checkpoints load as they are."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import re
import uuid
from pathlib import Path
from typing import Any

import torch

from lossbench.errors import CheckpointError
from lossbench.files import write_atomically
from lossbench.train import validate
from lossbench.train.validate import Expected

FILENAME = "latest.pt"
COMMITS = "commits"  # <root>/commits/<id>.json: the group commits that are made
_STAGED = re.compile(r"pending-([0-9a-f]{32})\.pt")
_AGAIN = "Start the seed again without --resume, or delete that file"


def path_for(root: Path, run_id: str) -> Path:
    return Path(root) / run_id / FILENAME


def _marker(root: Path, commit_id: str) -> Path:
    return Path(root) / COMMITS / f"{commit_id}.json"


def _staged(run_dir: Path) -> list[tuple[Path, str]]:
    """The run's staged files and their commit ids (made or not)."""
    try:
        names = sorted(os.listdir(run_dir))
    except OSError:
        return []
    return [(run_dir / name, m.group(1)) for name in names if (m := _STAGED.fullmatch(name))]


def current(root: Path, run_id: str) -> Path | None:
    """The file run_id resumes from, changing nothing: its staged file of a made commit (the process
    died before renaming it into place), else its latest.pt, else None (no checkpoint yet)."""
    for staged, commit_id in _staged(Path(root) / run_id):
        if _marker(root, commit_id).is_file():
            return staged
    latest = path_for(root, run_id)
    return latest if latest.is_file() else None


def recover(root: Path, run_id: str) -> Path | None:
    """Under the run's lease, before it resumes: finish a made commit that died before renaming this
    run's staged file into place, remove staged files of commits never made, and return `current`."""
    run_dir = Path(root) / run_id
    for tmp in run_dir.glob(".pending-*.tmp"):  # a staged file's write, killed before its rename
        tmp.unlink(missing_ok=True)
    for staged, commit_id in _staged(run_dir):
        marker = _marker(root, commit_id)
        if not marker.is_file():
            staged.unlink(missing_ok=True)
            continue
        try:
            os.replace(staged, path_for(root, run_id))
        except OSError as exc:
            raise CheckpointError(f"cannot finish checkpoint {staged}: {exc.strerror or exc}") from None
        _forget_if_applied(root, commit_id)
    return current(root, run_id)


def _forget_if_applied(root: Path, commit_id: str) -> None:
    """Remove a commit's marker once none of its runs holds a staged file of it any more (staged files
    of a made commit are only ever renamed away, so none can reappear)."""
    marker = _marker(root, commit_id)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        runs = json.loads(marker.read_text())["runs"]
        if not any((Path(root) / str(run) / f"pending-{commit_id}.pt").exists() for run in runs):
            marker.unlink(missing_ok=True)


class GroupCommit:
    """One checkpoint of a group of seeds: `stage` each seed's state, then `commit` them as one (see
    the module's docstring); `abort` removes what was staged when a commit cannot be made."""

    def __init__(self, root: Path) -> None:
        self.root, self.id = Path(root), uuid.uuid4().hex
        self.staged: list[tuple[str, Path]] = []  # (run id, staged file)

    def stage(self, state: dict[str, Any], run_id: str) -> None:
        path = Path(self.root) / run_id / f"pending-{self.id}.pt"
        save(state, path)
        self.staged.append((run_id, path))

    def commit(self, step: int) -> None:
        if not self.staged:
            return
        marker = _marker(self.root, self.id)
        if len(self.staged) > 1:
            for _, path in self.staged:  # the staged files' names are on disk before the marker is
                _fsync_dir(path.parent)
            blob = json.dumps({"step": step, "runs": [run_id for run_id, _ in self.staged]})
            try:
                write_atomically(marker, blob.encode())
            except OSError as exc:
                self.abort()
                raise CheckpointError(f"cannot write checkpoint {marker}: {exc.strerror or exc}") from None
        try:
            for run_id, path in self.staged:
                os.replace(path, path_for(self.root, run_id))
        except OSError as exc:
            raise CheckpointError(f"cannot finish checkpoint {path}: {exc.strerror or exc}") from None
        marker.unlink(missing_ok=True)
        self.staged = []

    def abort(self) -> None:
        for _, path in self.staged:
            path.unlink(missing_ok=True)
        self.staged = []


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot open or fsync a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save(state: dict[str, Any], path: Path) -> None:
    blob = io.BytesIO()
    torch.save(state, blob)  # serialised in memory: a full disk then fails as a plain OSError on write
    try:
        write_atomically(path, blob.getbuffer())
    except OSError as exc:
        raise CheckpointError(f"cannot write checkpoint {path}: {exc.strerror or exc}") from None


def load(path: Path, expected: Expected | None = None) -> dict[str, Any]:
    """The checkpoint at `path`, read as data only (torch's weights_only unpickler); with `expected`,
    checked against it before it is returned (train.validate): one line names the first mismatch."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except pickle.UnpicklingError as exc:
        # "Unsupported global: GLOBAL m.f ..." (not allowed) or "... GLOBAL os.f whose module os is blocked"
        unsafe = re.search(r"GLOBAL ([\w.]+)", str(exc))
        if unsafe:
            raise CheckpointError(
                f"checkpoint {path} needs {unsafe.group(1)} to load, which could run code; refused (not "
                f"unpickled). {_AGAIN}"
            ) from None
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt (UnpicklingError)") from None
    except Exception as exc:
        raise CheckpointError(f"checkpoint {path} is unreadable or corrupt ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not a lossbench checkpoint (no step)")
    if expected is not None and (problem := validate.mismatch(state, expected)):
        raise CheckpointError(f"checkpoint {path}: {problem}; not loaded. {_AGAIN}")
    return state

"""One owner per run. The process that trains a run holds the run's lease: an exclusive file lock,
`<checkpoints>/<run id>/lease.lock`, beside the run's checkpoint, with the owner's host and pid in
`lease.json` next to it (for messages only: the lock alone decides).

The lock is the kernel's (flock, through filelock), so it ends with its process however that ends:
SIGKILL or a crash frees it at once (on NFS, once the server's lease for that client lapses). A lease
whose process is gone is therefore simply free, and the next process to ask takes it over.

`claim` serialises, per configuration and seed, the short step "look at the store, pick or create
the seed's run, take its lease", so two processes never both start a run for the same seed.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock, Timeout

from lossbench.errors import CheckpointError

log = logging.getLogger(__name__)

LOCK = "lease.lock"
OWNER = "lease.json"
TAKE_TIMEOUT = 2.0  # seconds: a probe holds a free lease for microseconds; an owner holds it for hours
CLAIM_TIMEOUT = 300.0  # seconds: a claim is one store query and at most one new run


def me() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    """A held lease on one run; `release` (or the end of this process) gives it up."""

    def __init__(self, run_dir: Path, lock: FileLock) -> None:
        self.run_dir, self._lock = run_dir, lock

    @classmethod
    def take(cls, root: Path, run_id: str, timeout: float = TAKE_TIMEOUT) -> Lease | None:
        """The run's lease, or None while a live process holds it. A lease left by a process that
        is gone is taken over (and said so at INFO level)."""
        run_dir = Path(root) / run_id
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(run_dir / LOCK), timeout=timeout)
            lock.acquire()
        except Timeout:
            return None
        except OSError as exc:
            raise CheckpointError(f"cannot take the lease of run {run_id}: {run_dir}: {exc.strerror or exc}") from None
        previous = _read_owner(run_dir)
        if previous and previous != me():
            log.info("run %s: taking over its lease from %s (that process is gone)", run_id, previous)
        try:
            _write_owner(run_dir)
        except OSError as exc:
            lock.release()
            raise CheckpointError(f"cannot write {run_dir / OWNER}: {exc.strerror or exc}") from None
        return cls(run_dir, lock)

    def release(self) -> None:
        if not self._lock.is_locked:
            return
        with contextlib.suppress(OSError):
            (self.run_dir / OWNER).unlink(missing_ok=True)
        self._lock.release()


def holder(root: Path, run_id: str, timeout: float = 0.5) -> str | None:
    """The "host:pid" of the live process holding the run's lease, or None when the lease is free
    (never taken, released, or left by a process that is gone). Creates nothing."""
    run_dir = Path(root) / run_id
    if not (run_dir / LOCK).is_file():
        return None
    probe = FileLock(str(run_dir / LOCK), timeout=timeout)
    try:
        probe.acquire()
    except Timeout:
        return _read_owner(run_dir) or "another process"
    except OSError:
        return None  # unreadable folder: no lease can be held there either
    probe.release()
    return None


@contextlib.contextmanager
def claim(root: Path, config_hash: str, seed: int, timeout: float = CLAIM_TIMEOUT) -> Iterator[None]:
    """Hold the (configuration, seed) claim: one process at a time decides which run trains it."""
    folder = Path(root) / "claims"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(folder / f"{config_hash}-{seed}.lock"), timeout=timeout)
        lock.acquire()
    except Timeout:
        raise CheckpointError(f"seed {seed} of configuration {config_hash} stayed claimed by another process for "
                              f"{timeout:.0f} s ({folder}); is it stuck?") from None  # fmt: skip
    except OSError as exc:
        raise CheckpointError(f"cannot write in the checkpoint folder {root}: {exc.strerror or exc}") from None
    try:
        yield
    finally:
        lock.release()


def _read_owner(run_dir: Path) -> str | None:
    try:
        blob = json.loads((run_dir / OWNER).read_text())
        return f"{blob['host']}:{blob['pid']}"
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_owner(run_dir: Path) -> None:
    host, _, pid = me().rpartition(":")
    tmp = run_dir / f".{OWNER}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps({"host": host, "pid": int(pid), "since": time.time()}))
    os.replace(tmp, run_dir / OWNER)

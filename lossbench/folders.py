"""Replace a folder's contents all or nothing: write into a staging folder, then move it into place.

    with signals_interrupt(), replacing(out, owned) as staging:
        ...write every file under `staging`...

An exception, Ctrl-C (SIGINT), SIGTERM or SIGHUP before the block ends removes the staging folder
and leaves `out` exactly as it was (SIGTERM and SIGHUP raise KeyboardInterrupt inside
`signals_interrupt`, so the clean-up runs; a signal the process ignores stays ignored). The move
itself is not cut short by those signals: one that arrives during it is honoured, as
KeyboardInterrupt, just after. Only SIGKILL or a crash can leave a staging folder behind (hidden,
`.<name>.lossbench-<random>.tmp` beside `out`; safe to delete).

Where `out` does not exist, or holds nothing but files the writer owns (`Owned`), the folder is
replaced as a whole: on Linux (renameat2 RENAME_EXCHANGE) in one step, so `out` holds the old
contents or the new at every instant; elsewhere by renaming the old folder aside and the new one
in, with a window of microseconds in which `out` does not exist (the old one is then in
`<staging>.old`). The folder's permissions are kept. Where `out` holds other files too (or is the
current directory, a mount point, or sits in a folder this process cannot write), the new files
replace the old one by one, each rename atomic, the writer's old files that the new set lacks
removed: nothing changes until everything is written, but a SIGKILL during those renames can leave
some files old and some new. Used by `lossbench report` (lossbench.report.build).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import signal
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple

from lossbench.errors import LossbenchError

log = logging.getLogger(__name__)


class Owned(NamedTuple):
    """Which paths (relative, POSIX) under the folder are the writer's own: it may replace or
    remove those, never the others."""

    file: Callable[[str], bool]
    folder: Callable[[str], bool]


def _entries(root: Path, skip: Path | None = None) -> Iterator[tuple[str, bool]]:
    """(relative POSIX path, is a folder) of everything under `root` but `skip`; a link is not a folder."""
    for here, dirs, files in os.walk(root):
        rel = Path(here).relative_to(root)
        if skip is not None and Path(here) == root:
            dirs[:] = [d for d in dirs if root / d != skip]
        for d in dirs:
            yield (rel / d).as_posix(), not os.path.islink(os.path.join(here, d))
        for f in files:
            yield (rel / f).as_posix(), False


def _foreign(out: Path, owned: Owned, skip: Path | None = None) -> list[str]:
    """What in `out` is not the writer's own."""
    return [rel for rel, is_dir in _entries(out, skip) if not (owned.folder(rel) if is_dir else owned.file(rel))]


@contextlib.contextmanager
def signals_interrupt(pending: list[int] | None = None) -> Iterator[None]:
    """While the block runs, SIGINT, SIGTERM and SIGHUP raise KeyboardInterrupt, or, given `pending`,
    are only appended to it (for a step that must not be cut in two). A signal the process ignores
    stays ignored; outside the main thread (where Python sets no handlers) nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        if pending is None:
            raise KeyboardInterrupt
        pending.append(signum)

    wanted = [getattr(signal, n) for n in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, n)]
    previous = {s: signal.signal(s, handler) for s in wanted if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 with RENAME_EXCHANGE); False where the C library,
    kernel or file system cannot."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(a), None, str(b))


def _cwd_inside(folder: Path) -> bool:
    try:
        return Path.cwd().resolve().is_relative_to(folder)
    except OSError:  # a current directory that was deleted
        return False


def _make_staging(out: Path) -> Path:
    """An empty folder beside `out`, or inside it where `out` is a mount point or its parent is not
    writable; made with the umask's permissions (not mkdtemp's 0700), as `out` would have been."""
    inside = out.is_dir() and (os.path.ismount(out) or not os.access(out.parent, os.W_OK | os.X_OK))
    base = out if inside else out.parent
    base.mkdir(parents=True, exist_ok=True)
    for _ in range(100):
        path = base / f".{out.name}.lossbench-{secrets.token_hex(4)}.tmp"
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free name for a staging folder", str(base))


def _commit(staging: Path, out: Path, owned: Owned) -> None:
    """Move what was written in `staging` into `out` (see `replacing`); `staging` is removed after."""
    if staging.parent == out.parent and not _cwd_inside(out):
        if not os.path.lexists(out):
            try:
                os.rename(staging, out)
                return
            except OSError:  # made meanwhile: into it, as into any existing folder
                pass
        elif not _foreign(out, owned):
            os.chmod(staging, stat.S_IMODE(out.stat().st_mode))
            if _exchange(staging, out):
                return  # staging now holds the old report
            aside = staging.with_name(staging.name + ".old")
            os.rename(out, aside)  # from here to the next rename, no `out` (the old report is in `aside`)
            try:
                os.rename(staging, out)
            except BaseException:
                os.rename(aside, out)
                raise
            shutil.rmtree(aside, ignore_errors=True)
            return
    _commit_files(staging, out, owned)


def _commit_files(staging: Path, out: Path, owned: Owned) -> None:
    """Into a folder that holds other files too: each new file replaced in one rename, the old own
    files that the new set lacks removed, index.html (the entry point) last."""
    new = sorted((rel for rel, is_dir in _entries(staging) if not is_dir), key=lambda rel: (rel == "index.html", rel))
    fresh = set(new)
    stale = [rel for rel, is_dir in _entries(out, skip=staging) if not is_dir and owned.file(rel) and rel not in fresh]
    for rel in new:  # nothing moves unless everything can
        above = [out / p for p in Path(rel).parents if p != Path(".")]
        blocked = [p for p in above if os.path.lexists(p) and not p.is_dir()]
        blocked += [out / rel] if (out / rel).is_dir() and not (out / rel).is_symlink() else []
        if blocked:
            raise LossbenchError(f"cannot write into {out}: {blocked[0]} is in the way of {rel}")
    for rel in new[:-1]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, out / rel)
    for rel in stale:
        (out / rel).unlink(missing_ok=True)
        for parent in Path(rel).parents:  # the folders it leaves empty (figures/samples/<run>)
            if parent == Path(".") or not owned.folder(parent.as_posix()):
                break
            with contextlib.suppress(OSError):
                (out / parent).rmdir()
    for rel in new[-1:]:
        os.replace(staging / rel, out / rel)


@contextlib.contextmanager
def replacing(out: Path, owned: Owned) -> Iterator[Path]:
    """Yields an empty staging folder; when the block ends, what was written there replaces the
    previous contents of `out` (the files `owned` claims); when it raises (KeyboardInterrupt
    included), `out` is left as it was."""
    target = out.resolve()  # a link to a folder: the folder it points to, the link kept
    if os.path.lexists(target) and not target.is_dir():
        raise LossbenchError(f"the output folder {out} is a file")
    pending: list[int] = []  # signals held back while a step must not be cut in two
    staging: Path | None = None
    try:
        with signals_interrupt(pending):
            staging = _make_staging(target)
        if pending:
            raise KeyboardInterrupt
        yield staging
        with signals_interrupt(pending):
            _commit(staging, target, owned)
    finally:
        if staging is not None:
            with signals_interrupt(pending):  # a second Ctrl-C does not cut the clean-up short
                shutil.rmtree(staging, ignore_errors=True)
            if os.path.lexists(staging):
                log.warning("could not remove the staging folder %s", staging)
    if pending:
        raise KeyboardInterrupt

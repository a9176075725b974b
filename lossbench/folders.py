"""Replace a folder's contents all or nothing: write into a staging folder, then move it into place.

    with replacing(out, "lossbench report", "report") as staging:
        ...write every file under `staging`...

An exception, Ctrl-C (SIGINT), SIGTERM or SIGHUP before the block ends removes the staging folder
and leaves `out` exactly as it was (within `replacing`, SIGTERM and SIGHUP raise KeyboardInterrupt
as Ctrl-C does, so the clean-up runs; a signal the process ignores stays ignored). The move
itself is not cut short by those signals: one that arrives during it is honoured, as
KeyboardInterrupt, just after. Only SIGKILL or a crash can leave a staging folder behind (hidden,
`.<name>.lossbench-<random>.tmp` beside `out`; safe to delete).

What a writer owns. A writer writes only into a folder that does not exist, an empty one, or one it
wrote before: one whose manifest (`MANIFEST`, JSON: the writer's name and every file it wrote
there, relative) names that writer. Anything else is refused in one line before anything is
written (`claim`); so is a manifest that is not one (not a regular file, not JSON of that shape, a
path that leaves the folder). The manifest, not a file's name, says what the writer may replace or
remove: files in the folder that it does not list (yours, dropped in later) are never touched, and a
new file that would land on one of them is refused, in one line, before anything moves.

Where `out` does not exist, or holds nothing but the writer's own files, the folder is replaced as
a whole: on Linux (renameat2 RENAME_EXCHANGE) in one step, so `out` holds the old contents or the
new at every instant; elsewhere by renaming the old folder aside and the new one in, with a window
of microseconds in which `out` does not exist (the old one is then in `<staging>.old`). The
folder's permissions are kept. Where `out` holds other files too (or is the current directory, a
mount point, or sits in a folder this process cannot write), the new files replace the old one by
one, each rename atomic, the writer's old files that the new set lacks removed: nothing changes
until everything is written, but a SIGKILL during those renames can leave some files old and some
new. The manifest is then rewritten atomically twice, first listing the old files and the new,
last the new: a folder cut short there is still the writer's, and the next write tidies it. Used by
`lossbench report` (lossbench.report.build).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import secrets
import shutil
import stat
import sys
from collections.abc import Iterator
from pathlib import Path

from lossbench.errors import LossbenchError
from lossbench.files import write_atomically
from lossbench.manifest import MANIFEST, claim, encode
from lossbench.signal_handlers import handling, interrupt

log = logging.getLogger(__name__)


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


def _foreign(out: Path, own: frozenset[str], skip: Path | None = None) -> list[str]:
    """What in `out` is not the writer's: a file its manifest does not list, a folder above none of those."""
    above, files = {p.as_posix() for rel in own for p in Path(rel).parents if p != Path(".")}, own | {MANIFEST}
    return [rel for rel, is_dir in _entries(out, skip) if not (rel in above if is_dir else rel in files)]


def _through_link(out: Path, rel: str) -> Path | None:
    """The first folder on the way from `out` to `rel` that is a link or not a folder, if any: a
    write or removal there would land outside `out`, or fail."""
    for p in reversed(Path(rel).parents):
        if p != Path(".") and os.path.lexists(out / p) and (os.path.islink(out / p) or not (out / p).is_dir()):
            return out / p
    return None


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


def _commit(staging: Path, out: Path, writer: str, what: str) -> None:
    """Move what was written in `staging` into `out` (see `replacing`); `staging` is removed after."""
    beside = staging.parent == out.parent and not _cwd_inside(out)
    if beside and not os.path.lexists(out):
        with contextlib.suppress(OSError):  # made meanwhile: on, as into any existing folder
            os.rename(staging, out)
            return
    own = claim(out, writer, what, ignore=staging)  # again: the folder may have changed during the build
    if beside and not _foreign(out, own):
        os.chmod(staging, stat.S_IMODE(out.stat().st_mode))
        if _exchange(staging, out):
            return  # staging now holds the old contents
        aside = staging.with_name(staging.name + ".old")
        os.rename(out, aside)  # from here to the next rename, no `out` (the old contents are in `aside`)
        try:
            os.rename(staging, out)
        except BaseException:
            os.rename(aside, out)
            raise
        shutil.rmtree(aside, ignore_errors=True)
        return
    _commit_files(staging, out, own, writer, what)


def _commit_files(staging: Path, out: Path, own: frozenset[str], writer: str, what: str) -> None:
    """Into a folder that holds other files too: each new file replaced in one rename, the old own
    files that the new set lacks removed, index.html (the entry point) last, the manifest after it."""
    new = sorted((rel for rel, is_dir in _entries(staging) if not is_dir and rel != MANIFEST),
                 key=lambda rel: (rel == "index.html", rel))  # fmt: skip
    for rel in new:  # nothing moves unless everything can
        target = out / rel
        blocked = _through_link(out, rel) or (target if target.is_dir() and not target.is_symlink() else None)
        if blocked:
            raise LossbenchError(f"cannot write the {what} into {out}: {blocked} is in the way of {rel}")
        if os.path.lexists(target) and rel not in own:
            raise LossbenchError(f"refusing to write the {what} into {out}: {target} is not the {what}'s own (its "
                                 f"{MANIFEST} does not list it); move it away")  # fmt: skip
    write_atomically(out / MANIFEST, encode(writer, own | set(new)))  # cut short after this, the folder is still ours
    for rel in new[:-1]:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, out / rel)
    for rel in sorted(own - set(new)):
        stale = out / rel
        if _through_link(out, rel) or (stale.is_dir() and not stale.is_symlink()):
            continue  # not a file of ours any more: left alone
        stale.unlink(missing_ok=True)
        for parent in Path(rel).parents:  # the folders it leaves empty (figures/samples/<run>)
            if parent == Path("."):
                break
            with contextlib.suppress(OSError):
                (out / parent).rmdir()
    for rel in new[-1:]:
        os.replace(staging / rel, out / rel)
    os.replace(staging / MANIFEST, out / MANIFEST)


@contextlib.contextmanager
def replacing(out: Path, writer: str, what: str) -> Iterator[Path]:
    """Yields an empty staging folder; when the block ends, what was written there replaces the
    files of `out` that `writer` wrote before (its manifest's), and the manifest lists the new ones;
    when it raises (KeyboardInterrupt included, which SIGTERM and SIGHUP raise here too), `out` is
    left as it was. A folder `writer` did not make (`manifest.claim`) is refused before anything is
    written."""
    target = out.resolve()  # a link to a folder: the folder it points to, the link kept
    if os.path.lexists(target) and not target.is_dir():
        raise LossbenchError(f"the output folder {out} is a file")
    claim(target, writer, what)
    pending: list[int] = []  # signals held back while a step must not be cut in two, honoured after it
    staging: Path | None = None
    with handling(interrupt):
        try:
            with handling(pending.append):
                staging = _make_staging(target)
            if pending:
                raise KeyboardInterrupt
            yield staging
            staged = {rel for rel, is_dir in _entries(staging) if not is_dir}
            (staging / MANIFEST).write_bytes(encode(writer, staged))
            with handling(pending.append):
                _commit(staging, target, writer, what)
        finally:
            if staging is not None:
                with handling(pending.append):  # a second Ctrl-C does not cut the clean-up short
                    shutil.rmtree(staging, ignore_errors=True)
                if os.path.lexists(staging):
                    log.warning("could not remove the staging folder %s", staging)
        if pending:
            raise KeyboardInterrupt

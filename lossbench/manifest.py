"""Which files in a folder lossbench wrote: the folder's manifest, `.lossbench-manifest.json`.

    {"written_by": "lossbench report", "files": ["index.html", "figures/budget.png", ...]}

A writer (`lossbench report`) writes only into a folder that does not exist, an empty folder, or a
folder whose manifest names that writer; there it may replace or remove the files the manifest
lists, and nothing else. Ownership is what the writer recorded, never what a file is called: a
user's index.html beside a report is the user's. A folder of anything else is refused in one line
(`claim`), and so is a manifest that is not one (a link or special file, over `MAX_BYTES`, not JSON
of that shape, another writer's, a path that is absolute, empty, or leaves the folder).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

from lossbench.errors import LossbenchError

MANIFEST = ".lossbench-manifest.json"
MAX_BYTES = 64 << 20  # about 500,000 paths: far beyond any report (one sample grid per configuration)


def claim(out: Path, writer: str, what: str, ignore: Path | None = None) -> frozenset[str]:
    """The files (relative POSIX paths) that `writer` wrote in `out` and may replace or remove: none
    where `out` does not exist or is empty (but for `ignore`, the writer's staging folder), those its
    manifest lists where it has one of `writer`'s; any other folder raises LossbenchError, one line
    saying how to go on."""
    refuse = f"refusing to write the {what} into {out}"
    if not os.path.lexists(out):
        return frozenset()
    if not os.path.isdir(out):
        raise LossbenchError(f"{refuse}: it is not a folder")
    path = out / MANIFEST
    if not os.path.lexists(path):
        try:
            with os.scandir(out) as entries:
                if all(ignore is not None and os.path.samefile(e.path, ignore) for e in entries):
                    return frozenset()
        except OSError as e:
            raise LossbenchError(f"{refuse}: {e.strerror}") from None
        raise LossbenchError(
            f"{refuse}: it is not empty and {writer} did not make it (no {MANIFEST}; an older lossbench's "
            f"report has none either); move its contents away or delete it, or choose a new or empty folder"
        )
    try:
        return _parse(path, writer)
    except ValueError as e:
        raise LossbenchError(f"{refuse}: its {MANIFEST} is not {writer}'s ({e}); move the folder aside or "
                             f"choose a new or empty one") from None  # fmt: skip


def _parse(path: Path, writer: str) -> frozenset[str]:
    """The manifest's files; ValueError saying what is wrong with it."""
    info = os.lstat(path)
    if not stat.S_ISREG(info.st_mode):
        raise ValueError("not a regular file")
    if info.st_size > MAX_BYTES:
        raise ValueError(f"{info.st_size} bytes, over {MAX_BYTES}")
    try:
        data = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"unreadable: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), list):
        raise ValueError("no list of files")
    if data.get("written_by") != writer:
        raise ValueError(f"written by {data.get('written_by')!r}")
    files = data["files"]
    bad = next((f for f in files if not isinstance(f, str) or not inside(f)), None)
    if bad is not None:
        raise ValueError(f"{bad!r} is not a path inside the folder")
    return frozenset(files)


def inside(rel: str) -> bool:
    """`rel` names a file below the folder: relative, in POSIX form, no empty, '.' or '..' part, not
    the manifest itself."""
    parts = rel.split("/")
    return rel != MANIFEST and "\0" not in rel and all(p not in ("", ".", "..") for p in parts)


def encode(writer: str, files: set[str] | frozenset[str]) -> bytes:
    return (json.dumps({"written_by": writer, "files": sorted(files)}, indent=1) + "\n").encode()

"""Child processes that do not outlive lossbench (standard library only).

`run_group` runs a command in its own process group (a new session, so a terminal's signals reach it
only through lossbench) and passes SIGINT, SIGTERM and SIGHUP on to the whole group; whatever of the
group is still alive `grace` seconds later is SIGKILLed. However `run_group` returns, no process of
the group is left. `interrupt_on` makes SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does,
so that the `finally` blocks that take down other children (a local Ray cluster) run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE = 10.0  # seconds a group has to exit after the signal, before SIGKILL


def members(pgid: int) -> list[int]:
    """The live processes of a process group (zombies excluded), read from /proc; [] when it is empty."""
    if not os.path.isdir("/proc"):  # not Linux: whether anything of the group still exists
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return []
        return [pgid]
    return [pid for pid, fields in processes() if int(fields[2]) == pgid]


def processes() -> Iterator[tuple[int, list[str]]]:
    """(pid, the /proc stat fields after the command name: state, ppid, pgrp, session, ...) of every
    live process (zombies excluded). Linux only."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
        except OSError:  # it ended while we looked
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X"):
            yield int(entry.name), fields


def stop_group(pgid: int, first: int = signal.SIGTERM, grace: float = GRACE) -> None:
    """Send `first` to every process of the group, give them `grace` seconds, then SIGKILL the rest."""
    _killpg(pgid, first)
    deadline = time.monotonic() + grace
    while members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if members(pgid):
        _killpg(pgid, signal.SIGKILL)
        deadline = time.monotonic() + 5.0
        while members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)


def run_group(cmd: Sequence[str], grace: float = GRACE) -> int:
    """Run cmd in a process group of its own until it exits or this process gets SIGINT, SIGTERM or
    SIGHUP (passed on to the group). Returns its exit status, or 128 + the signal that stopped it."""
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        received.append(signum)

    previous = {s: signal.signal(s, handler) for s in FORWARDED}
    try:
        proc = subprocess.Popen(list(cmd), start_new_session=True)  # its pid is its group's id
        try:
            while not received:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:  # it exited, a signal came, or something raised here: the whole group goes
            stop_group(proc.pid, received[0] if received else signal.SIGTERM, grace)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 128 + received[0] if received else proc.returncode


@contextlib.contextmanager
def interrupt_on(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within: each of `signals` raises KeyboardInterrupt, like Ctrl-C. A signal this process was told to
    ignore (nohup's SIGHUP) stays ignored. Only in the main thread; elsewhere it does nothing."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    previous = {s: signal.getsignal(s) for s in signals}
    for s, h in previous.items():
        if h is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)

"""Child processes that do not outlive lossbench (standard library only).

`run_group` runs a command in its own process group (a new session, so a terminal's signals reach it
only through lossbench) and passes SIGINT, SIGTERM and SIGHUP on to the whole group; whatever of the
group is still alive `grace` seconds later is SIGKILLed. However `run_group` returns, no process of
the group is left. Nor when lossbench itself is SIGKILLed (no handler of its runs then): a watchdog
(`watch`: this file run on its own, in a session of its own) holds a pipe that only lossbench
writes to, and at its end of file, which the kernel gives when lossbench is gone however it went,
takes the group down the same way; on Linux the group's leader also gets SIGKILL from the kernel the
moment lossbench dies (prctl PR_SET_PDEATHSIG), which covers the instant before the watchdog runs.
`interrupt_on` makes SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so that the
`finally` blocks that take down other children (a local Ray cluster) run.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
GRACE = 10.0  # seconds a group has to exit after the signal, before SIGKILL
# ...once lossbench is gone (the watchdog's): nobody waits on a clean exit, and MLflow's uvicorn
# supervisor and multiprocessing's resource tracker (which ignores SIGTERM) outlast any grace
ORPHANED_GRACE = 2.0


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
    SIGHUP (passed on to the group). Returns its exit status, or 128 + the signal that stopped it.
    Should this process die without running its handlers (SIGKILL), the group goes down too (`watch`)."""
    from lossbench.signal_handlers import handling  # imported here: this file also runs alone (`watch`)

    received: list[int] = []
    with handling(received.append, FORWARDED, keep_ignored=False):
        # its pid is its group's id; on Linux it dies with this process (the thread that forks it)
        proc = subprocess.Popen(list(cmd), start_new_session=True, preexec_fn=_dying_with(os.getpid()))
        guard: subprocess.Popen | None = None
        try:
            guard = watch(proc.pid, min(grace, ORPHANED_GRACE))
            while not received:
                try:
                    proc.wait(timeout=0.2)
                    break
                except subprocess.TimeoutExpired:
                    continue
        finally:  # it exited, a signal came, or something raised here: the whole group goes
            stop_group(proc.pid, received[0] if received else signal.SIGTERM, grace)
            if guard is not None:
                guard.stdin.close()  # type: ignore[union-attr]  # its end of file: it finds the group empty
                with contextlib.suppress(subprocess.TimeoutExpired):
                    guard.wait(timeout=5.0)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5.0)
    return 128 + received[0] if received else proc.returncode


def watch(pgid: int, grace: float = ORPHANED_GRACE) -> subprocess.Popen:
    """Start a watchdog of the group `pgid`: a process of its own session (a signal to this process's
    group does not reach it) that blocks reading its stdin, a pipe whose only writer is this process,
    and at end of file (this process closed it, or is gone, SIGKILL included) runs `stop_group(pgid,
    SIGTERM, grace)` and exits. Close its stdin to end it; standard library only, so this file runs
    without the package (`-I`: no PYTHONPATH, no script folder on sys.path)."""
    return subprocess.Popen([sys.executable, "-I", os.path.abspath(__file__), "--watch", str(pgid), str(grace)],
                            stdin=subprocess.PIPE, start_new_session=True)  # fmt: skip


def _watch(pgid: int, grace: float) -> None:
    while os.read(0, 4096):
        pass
    stop_group(pgid, signal.SIGTERM, grace)


def _dying_with(parent: int) -> Any:
    """A preexec_fn (Linux; None elsewhere) that has the kernel SIGKILL the child when the thread that
    forked it ends (prctl PR_SET_PDEATHSIG), and SIGKILLs it at once if `parent` is gone already."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: no dlsym between fork and exec
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    pr_set_pdeathsig, sigkill = 1, int(signal.SIGKILL)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigkill, 0, 0, 0)
        if os.getppid() != parent:  # it died between the fork and the prctl
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


@contextlib.contextmanager
def interrupt_on(signals: Sequence[int] = (signal.SIGTERM, signal.SIGHUP)) -> Iterator[None]:
    """Within: each of `signals` raises KeyboardInterrupt, like Ctrl-C. A signal this process was told to
    ignore (nohup's SIGHUP) stays ignored. Only in the main thread; elsewhere it does nothing."""
    from lossbench.signal_handlers import handling, interrupt  # imported here: this file also runs alone

    with handling(interrupt, signals):
        yield


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:  # the watchdog (`watch`)
    _watch(int(sys.argv[2]), float(sys.argv[3]))

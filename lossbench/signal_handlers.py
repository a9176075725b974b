"""Signal handlers for the length of a block: the one skeleton behind every handler lossbench sets
(a training group's stop flag, an output folder's all-or-nothing write, a child process group's
forwarding, Ctrl-C semantics for SIGTERM and SIGHUP). Standard library only: lossbench.procs, which
also runs as a file of its own, uses it."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator, Sequence

# the signals that ask a process to stop: Ctrl-C, kill's default, a closed terminal
STOPPING = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


@contextlib.contextmanager
def handling(
    handler: Callable[[int], None], signals: Sequence[int] = STOPPING, keep_ignored: bool = True
) -> Iterator[bool]:
    """Within the block, each of `signals` calls `handler(signum)`; when it ends, the previous handlers
    are back. A signal this process was told to ignore (nohup's SIGHUP) stays ignored unless
    `keep_ignored` is False. Python sets handlers only in the main thread: elsewhere (some Ray
    workers) nothing changes, and the block gets False."""
    if threading.current_thread() is not threading.main_thread():
        yield False
        return
    previous: dict[int, object] = {}
    try:
        for s in signals:
            if not (keep_ignored and signal.getsignal(s) is signal.SIG_IGN):
                previous[s] = signal.signal(s, lambda signum, frame: handler(signum))
        yield True
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)  # type: ignore[arg-type]


def interrupt(signum: int) -> None:
    """A handler that makes the signal act as Ctrl-C does: KeyboardInterrupt where the program is."""
    raise KeyboardInterrupt

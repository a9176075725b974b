"""SIGINT/SIGTERM/SIGHUP during training: finish the step, checkpoint, end the runs KILLED."""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Iterator
from typing import Any

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """SIGINT/SIGTERM/SIGHUP (a closed terminal) set a flag the loop reads between steps; a second
    SIGINT interrupts at once. A signal this process was told to ignore (nohup's SIGHUP) stays ignored."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True
        log.warning("signal %d: saving a checkpoint and stopping after this step", signum)

    if threading.current_thread() is not threading.main_thread():  # e.g. some Ray workers: no handlers there
        yield flag
        return
    wanted = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, handler) for s in wanted if signal.getsignal(s) is not signal.SIG_IGN}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

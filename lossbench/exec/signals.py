"""SIGINT/SIGTERM during training: finish the step, checkpoint, end the runs KILLED."""

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
    """SIGINT/SIGTERM set a flag the loop reads between steps; a second SIGINT interrupts at once."""
    flag = [False]

    def handler(signum: int, frame: Any) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True
        log.warning("signal %d: saving a checkpoint and stopping after this step", signum)

    if threading.current_thread() is not threading.main_thread():  # e.g. some Ray workers: no handlers there
        yield flag
        return
    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

"""SIGINT/SIGTERM/SIGHUP during training: finish the step, checkpoint, end the runs KILLED."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator

from lossbench.signal_handlers import handling

log = logging.getLogger(__name__)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[list[bool]]:
    """SIGINT/SIGTERM/SIGHUP (a closed terminal) set a flag the loop reads between steps; a second
    SIGINT interrupts at once. A signal this process was told to ignore (nohup's SIGHUP) stays ignored."""
    flag = [False]

    def handler(signum: int) -> None:
        if flag[0] and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag[0] = True
        log.warning("signal %d: saving a checkpoint and stopping after this step", signum)

    with handling(handler):
        yield flag

"""The one signal-handling skeleton (lossbench.signal_handlers) that the training stop flag, the report's
all-or-nothing folder, run_group's forwarding and interrupt_on share: the handler runs for the
signals named, the previous handlers come back, an ignored signal stays ignored unless asked, and
outside the main thread nothing is set. Real signals, sent to this process."""

from __future__ import annotations

import os
import signal
import threading

import pytest

from lossbench.signal_handlers import STOPPING, handling, interrupt

ONE, TWO = signal.SIGUSR1, signal.SIGUSR2


def previous_handler(signum: int, frame: object) -> None:
    raise AssertionError("the previous handler ran inside the block")


def test_the_handler_runs_then_the_previous_handlers_are_back() -> None:
    before = signal.signal(ONE, previous_handler)
    try:
        seen: list[int] = []
        with handling(seen.append, (ONE, TWO)) as installed:
            os.kill(os.getpid(), ONE)
            os.kill(os.getpid(), TWO)
        assert installed and seen == [ONE, TWO]
        assert signal.getsignal(ONE) is previous_handler and signal.getsignal(TWO) is signal.SIG_DFL
    finally:
        signal.signal(ONE, before)


def test_an_ignored_signal_stays_ignored_unless_asked() -> None:
    before = signal.signal(ONE, signal.SIG_IGN)  # as nohup leaves SIGHUP
    try:
        seen: list[int] = []
        with handling(seen.append, (ONE,)):
            os.kill(os.getpid(), ONE)
        assert seen == [] and signal.getsignal(ONE) is signal.SIG_IGN
        with handling(seen.append, (ONE,), keep_ignored=False):  # run_group passes every signal on
            os.kill(os.getpid(), ONE)
        assert seen == [ONE] and signal.getsignal(ONE) is signal.SIG_IGN
    finally:
        signal.signal(ONE, before)


def test_interrupt_makes_a_signal_act_as_ctrl_c() -> None:
    with pytest.raises(KeyboardInterrupt), handling(interrupt, (ONE,)):
        os.kill(os.getpid(), ONE)
    assert signal.getsignal(ONE) is signal.SIG_DFL


def test_outside_the_main_thread_nothing_is_set() -> None:
    seen: list[object] = []

    def worker() -> None:
        with handling(seen.append) as installed:
            seen.append(installed)
            seen.append([signal.getsignal(s) for s in STOPPING])

    before = [signal.getsignal(s) for s in STOPPING]
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [False, before]

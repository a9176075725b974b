"""Long phases show themselves on stderr: a tqdm bar (count, rate, ETA) on a terminal; one start line
and one end line with the time taken elsewhere (logs, CI) or with --no-progress. Results stay on
stdout."""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, s = divmod(round(seconds), 60)
    return f"{minutes} min {s:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def shows_bar(bar: bool) -> bool:
    """A tqdm bar only on a terminal, and not with --no-progress (bar False): elsewhere, lines."""
    return bar and sys.stderr.isatty()


@contextlib.contextmanager
def phase(what: str, total: int | None = None, unit: str = "img", bar: bool = True) -> Iterator[Callable[[int], None]]:
    """`with phase("real features: mnist train, 10,000 images", 10000) as advance: ... advance(n)`.
    `bar` False (--no-progress) gives the start and end lines on a terminal too."""
    start = time.perf_counter()
    if shows_bar(bar):
        from tqdm import tqdm

        bar = tqdm(total=total, desc=what, unit=unit, leave=False, file=sys.stderr, dynamic_ncols=True)
        try:
            yield bar.update
        finally:
            bar.close()
    else:
        print(f"{what} ...", file=sys.stderr, flush=True)
        yield lambda n: None
    print(f"{what}: done in {duration(time.perf_counter() - start)}", file=sys.stderr, flush=True)


class Steps:
    """Training steps: a tqdm bar on a terminal; elsewhere (or with --no-progress) one start line and
    one line when the last step is done (an evaluation after it shows itself as its own phase).
    `update(n)` counts steps as the loop reports them: a resumed run's first report also holds the
    `pending` steps done before its checkpoint but not yet reported (its open log window)."""

    def __init__(self, what: str, total: int, initial: int = 0, pending: int = 0, bar: bool = True) -> None:
        self.what, self.total, self.initial = what, total, initial
        self.done = initial - pending  # steps reported so far, as the loop's reports will add up
        self.start = time.perf_counter()
        self.bar = None
        if shows_bar(bar):
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=self.done, desc=what, unit="step", leave=False, file=sys.stderr,
                            dynamic_ncols=True)  # fmt: skip
        elif initial >= total:
            print(f"{what}: at step {initial:,} of {total:,}, no steps left to train", file=sys.stderr, flush=True)
        else:
            since = f" from step {initial:,}" if initial else ""
            print(f"{what}: training {total - initial:,} steps{since} ...", file=sys.stderr, flush=True)

    def update(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)
            return
        before, self.done = self.done, self.done + n
        if before < self.total <= self.done:
            elapsed = time.perf_counter() - self.start
            rate = (self.total - self.initial) / max(elapsed, 1e-9)
            print(f"{self.what}: {self.total - self.initial:,} steps done in {duration(elapsed)} ({rate:,.1f} steps/s)",
                  file=sys.stderr, flush=True)  # fmt: skip

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

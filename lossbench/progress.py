"""Long phases show themselves on stderr: a tqdm bar (count, rate, ETA) on a terminal; one start line
and one end line with the time taken elsewhere (logs, CI). Results stay on stdout."""

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


@contextlib.contextmanager
def phase(what: str, total: int | None = None, unit: str = "img", bar: bool = True) -> Iterator[Callable[[int], None]]:
    """`with phase("real features: mnist train, 10,000 images", 10000) as advance: ... advance(n)`.
    `bar` False (--no-progress) gives the start and end lines on a terminal too."""
    start = time.perf_counter()
    if bar and sys.stderr.isatty():
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


"""Caps on what a file may ask of the process, each refused in one line before the work it bounds.

A config, suite, card or paper file is read whole (at most MAX_FILE_BYTES) and scanned for its
bracket nesting and its longest dotted key before the TOML parser sees it: the parser recurses once
per nested bracket (a file 1,000 deep is a RecursionError) and its cost grows with the square of a
dotted key's parts (a key of 8,000 parts takes 73 MB, of 16,000 parts 258 MB, of 100,000 parts tens
of GB). A suite's draws, configurations and (configuration, seed) runs are counted from its tables
before any configuration is built (lossbench.exec.suites).

The largest real files (registry/, measured): 11,295 bytes (papers/lucic2018.toml; the largest suite,
suites/lucic2018.toml, 3,516), bracket nesting 2, dotted keys of 3 parts (search.by-loss.wgan), 100
draws, 1,800 configurations (lucic2018: 18 grid points x 100 draws) and 1,800 runs. Each cap leaves
ample room above these.
"""

from __future__ import annotations

import re

from lossbench.errors import ConfigError

MAX_FILE_BYTES = 256 * 1024  # 23x the largest real file; the parser's worst case at this size: ~50 MB, 0.3 s
MAX_NESTING = 16  # brackets ([ and {) open at once; real files: 2
MAX_KEY_PARTS = 16  # parts of one dotted key or table header; real files: 3
MAX_DRAWS = 10_000  # search.draws; real suites: 100
MAX_CONFIGS = 20_000  # configurations of a suite (grid x settings x draws); real suites: 1,800
MAX_RUNS = 100_000  # (configuration, seed) pairs of a suite's stage; real suites: 1,800

_SIGNIFICANT = re.compile(r"[\"'#\[\]{}=,.\n]")


def check_size(n_bytes: int, where: str) -> None:
    """Refuse a file over MAX_FILE_BYTES (callers read at most MAX_FILE_BYTES + 1 bytes to know)."""
    if n_bytes > MAX_FILE_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_FILE_BYTES:,} bytes, the cap on a lossbench file "
                          "(the largest shipped one is 11,295 bytes)")  # fmt: skip


def check_toml_shape(text: str, where: str) -> None:
    """Refuse TOML text nested deeper than MAX_NESTING or with a dotted key of more than MAX_KEY_PARTS
    parts, read by `toml_shape` without parsing."""
    nesting, parts = toml_shape(text)
    if nesting > MAX_NESTING:
        raise ConfigError(f"{where}: brackets nested {nesting} deep; lossbench reads at most {MAX_NESTING}")
    if parts > MAX_KEY_PARTS:
        raise ConfigError(f"{where}: a dotted key of {parts} parts; lossbench reads at most {MAX_KEY_PARTS}")


def toml_shape(text: str) -> tuple[int, int]:
    """(deepest bracket nesting, most parts of one dotted key) of TOML text, outside strings and comments.

    nesting: [ and { open, ] and } close; a table header counts ([[a]] is 2).
    parts: 1 + the dots of one stretch of text between two of = , [ ] { } or a line end. Such a
    stretch is a key (a.b.c: 3 parts) or a value; a value's dots outside strings are a number's, at
    most one, so only a key reaches 3. One linear pass; malformed text is left to the parser.
    """
    depth = nesting = dots = most_dots = 0
    pos = 0
    while m := _SIGNIFICANT.search(text, pos):
        c, i = m.group(), m.start()
        pos = i + 1
        if c in "\"'":
            pos = _string_end(text, i)
        elif c == "#":
            pos = text.find("\n", i)
            if pos < 0:
                break
        elif c in "[{":
            depth, dots = depth + 1, 0
            nesting = max(nesting, depth)
        elif c == ".":
            dots += 1
            most_dots = max(most_dots, dots)
        else:  # ] } = , or a line end
            depth, dots = (depth - 1 if c in "]}" else depth), 0
    return nesting, most_dots + 1


def _string_end(text: str, i: int) -> int:
    """The index just past the string that opens at text[i] (a quote), or where it is cut short."""
    q = text[i]
    if text.startswith(q * 3, i):  # multi-line: ends at three quotes (up to two more are content)
        j = i + 3
        while (k := text.find(q * 3, j)) >= 0 and q == '"' and _escaped(text, k):
            j = k + 1
        if k < 0:
            return len(text)
        k += 3
        for _ in range(2):
            k += text.startswith(q, k)
        return k
    j = i + 1
    while j < len(text) and text[j] != "\n":
        if text[j] == q and not (q == '"' and _escaped(text, j)):
            return j + 1
        j += 1
    return j  # unterminated on its line: the parser says so


def _escaped(text: str, k: int) -> bool:
    """Whether text[k] follows an odd run of backslashes (a basic string's escaped character)."""
    n = 0
    while k - n - 1 >= 0 and text[k - n - 1] == "\\":
        n += 1
    return n % 2 == 1

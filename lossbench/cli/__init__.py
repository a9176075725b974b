"""The `lossbench` command: parse and validate flags, call the library, turn errors into one line.

app.py      the command group and its error handling (`main`, the entry point)
flags.py    the flags commands share: configuration keys, execution options, executor, store
runs.py     run, sweep (and what they print)
reports.py  report, papers
tools.py    losses, ui, sample, fid, classifier
"""

from lossbench.cli import reports, runs, tools  # noqa: F401  (each registers its commands on main)
from lossbench.cli.app import main

__all__ = ["main"]

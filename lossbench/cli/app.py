"""The `lossbench` command group: every user-caused error becomes one line on stderr.

Results go to stdout (for machines), progress and logs to stderr (for people).
"""

from __future__ import annotations

import atexit
import gc
import logging
import os
import sys
from typing import Any

import click

from lossbench.errors import LossbenchError


class _UsageLine(click.UsageError):
    """A flag click could not parse, said in one line with where to look (click's own form is a usage
    block of three lines)."""

    def show(self, file: Any = None) -> None:
        where = f" (see '{self.ctx.command_path} --help')" if self.ctx is not None else ""
        click.echo(f"Error: {self.message}{where}", err=True)


def _one_line(exc: click.UsageError) -> click.UsageError:
    no_args_is_help = getattr(click.exceptions, "NoArgsIsHelpError", ())  # shows the help: left as is
    return exc if isinstance(exc, (_UsageLine, no_args_is_help)) else _UsageLine(exc.format_message(), exc.ctx)


class Group(click.Group):
    """Every user-caused error becomes `error: <one line>` on stderr and a non-zero exit."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as exc:  # a sub-command's flags
            raise _one_line(exc) from None
        except LossbenchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:  # Ctrl-C (or SIGTERM/SIGHUP where they are made to act like it)
            click.echo("Error: interrupted", err=True)
            sys.exit(130)


def _setup_logging(verbose: bool) -> None:
    # MLflow's own INFO chatter (database migrations at first use, ...) only with -v
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "WARNING")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s: %(message)s")
    logging.getLogger("lossbench").setLevel(logging.INFO if verbose else logging.WARNING)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lossbench")
@click.option("-v", "--verbose", is_flag=True, help="Log progress events to stderr.")
def main(verbose: bool) -> None:
    """lossbench: a measured comparison of GAN cost functions."""
    _setup_logging(verbose)
    _exit_without_collecting()


def _exit_without_collecting() -> None:
    """At the process's exit, gc.freeze(): the interpreter's last garbage collections then skip every
    object alive by then (torch's, MLflow's, the run's), which the process is dropping anyway; they took
    1.4-2.3 s of each command's wall time on the 2-core CI machine. Exit handlers still run and files
    are still flushed; objects made after the freeze are collected as ever. Registered once per process."""
    atexit.unregister(gc.freeze)
    atexit.register(gc.freeze)

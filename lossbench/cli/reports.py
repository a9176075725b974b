"""`lossbench report` and `lossbench papers`: what the store's runs show, and the published tables
they are compared against."""

from __future__ import annotations

from pathlib import Path

import click

from lossbench.cli.app import main
from lossbench.cli.flags import store_options


@main.command()
@store_options
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Default reports/<experiment>/. A new or empty folder, or one a report made (it holds the "
                   "report's .lossbench-manifest.json); any other is refused.")
@click.option("--dataset", "dataset_filter", multiple=True, help="Only these data sets (repeatable).")
@click.option("--loss", "loss_filter", multiple=True, help="Only these losses (repeatable).")
@click.option("--against", default=None, metavar="PAPER",
              help="Add a table of this paper's published values beside ours (a name in registry/papers, e.g. "
                   "lucic2018, or a path).")
def report(
    tracking_uri: str | None, experiment: str, out: str | None, dataset_filter: tuple, loss_filter: tuple,
    against: str | None,
) -> None:  # fmt: skip
    """Compare losses across seeds: index.html, report.md, runs.csv, summary.csv, figures."""
    from lossbench.report import build as report_mod

    path = report_mod.build(tracking_uri, experiment, Path(out) if out else None, dataset_filter, loss_filter,
                            against)  # fmt: skip
    click.echo(f"report written to {path}/index.html")


@main.command(name="papers")
@click.argument("name", required=False)
@click.option("--reports", "reports_root", type=click.Path(file_okay=False), default=None,
              help="Folder of committed reports (default: the checkout's reports/).")
def list_papers(name: str | None, reports_root: str | None) -> None:
    """Published tables (registry/papers), and per cell where the committed reports compared against it."""
    from lossbench import cards
    from lossbench.report import papers

    root = Path(reports_root) if reports_root else papers.reports_dir()
    for paper in [cards.paper(name)] if name else [cards.paper(n) for n in cards.paper_names()]:
        lines = papers.listing(paper, root)
        click.echo("\n".join(lines if name else lines[:1]))

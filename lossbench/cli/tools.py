"""The commands around the runs: the registered losses, the MLflow UI, samples from a saved
generator, FID between folders, and the shipped MNIST classifier."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from lossbench.cli.app import Group, main
from lossbench.cli.flags import allow_plugin_option, plugins, store_options


@main.command(name="losses")
def list_losses() -> None:
    """Every registered loss with its formula, source and default penalty."""
    from lossbench import cards
    from lossbench.config import LossConfig, TrainConfig
    from lossbench.gan import losses

    for name in losses.names():
        card = cards.loss_card(name)
        d = {"penalty": LossConfig.penalty, "penalty_weight": LossConfig.penalty_weight,
             "n_critic": TrainConfig.n_critic, "optimizer": TrainConfig.optimizer, "lr_d": TrainConfig.lr_d}
        d |= card.get("defaults", {})  # fmt: skip
        click.echo(f"{name}  ({card.get('paper', 'plugin')})")
        if card:
            click.echo(f"    L_D = {card['d_loss']}")
            click.echo(f"    L_G = {card['g_loss']}")
            click.echo(f"    penalty: {d['penalty']} x {d['penalty_weight']}; n_critic {d['n_critic']}; "
                       f"{d['optimizer']} lr {d['lr_d']}")  # fmt: skip
        else:
            first = losses.describe(name).splitlines()
            click.echo(f"    {first[0] if first else ''}")


@main.command()
@store_options
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--open", "open_", is_flag=True, help="Also open the URL in a browser.")
def ui(tracking_uri: str | None, experiment: str, port: int, host: str, open_: bool) -> None:
    """Open the MLflow UI on the same store `lossbench run` writes to, at the experiment's runs table.

    MLflow runs in a process group of its own; Ctrl-C, SIGTERM or SIGHUP stop all of it, and it goes
    down with lossbench even on SIGKILL. A --host beyond loopback gets a warning line: no login."""
    from lossbench import procs
    from lossbench import ui as binding
    from lossbench.paths import tracking_uri as resolve_uri
    from lossbench.tracking import Tracker

    uri = resolve_uri(tracking_uri)
    if not uri.startswith(("http://", "https://")) and binding.beyond_loopback(host):
        click.echo(binding.warning(host, port), err=True)
    base = uri if uri.startswith(("http://", "https://")) else f"http://{host}:{port}"
    url = Tracker(uri, experiment).experiment_url(base)
    click.echo(url)
    if open_:
        import webbrowser

        webbrowser.open(url)  # the page retries until the server below answers
    if uri.startswith(("http://", "https://")):
        click.echo(f"the store is a server already: open {url} in a browser", err=True)
        return
    click.echo(f"MLflow UI for {uri}; select parent runs and Compare to compare configurations", err=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    sys.exit(procs.run_group(cmd))


@main.command()
@click.argument("run_id")
@click.option("-n", "count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise.")
@click.option("--tracking-uri", default=None)
@click.option("--device", default="auto", show_default=True)
@allow_plugin_option
def sample(
    run_id: str, count: int, out: str, seed: int, tracking_uri: str | None, device: str, allow_plugins: tuple[str, ...]
) -> None:  # fmt: skip
    """Write N PNGs (or points.csv for 2-D data) from a run's saved generator, or from a logged one:
    RUN_ID may be a runs:/<run id>/generator (or generator_best) or models:/<name>@<alias> URI. A run
    whose loss is a plugin is refused unless --allow-plugin names that plugin: the store does not choose
    code to run (a logged generator is a torch program: it needs no loss, nor any plugin)."""
    from lossbench.exec.stored_generators import write_samples

    written = write_samples(run_id, count, Path(out), seed, tracking_uri, device, plugins(allow_plugins))
    click.echo(f"wrote {written} to {out}")


@main.command()
@click.argument("first")
@click.argument("second")
@click.option(
    "--samples", type=click.IntRange(min=2), default=10000, show_default=True, help="Images used from a data set."
)
@click.option("--data-dir", default=None)
@click.option("--device", default="auto", show_default=True)
def fid(first: str, second: str, samples: int, data_dir: str | None, device: str) -> None:
    """FID and KID between two image folders, or a folder and a data set (mnist, mnist:test)."""
    from lossbench.exec import image_fid

    click.echo(json.dumps(image_fid.fid_between(first, second, samples, data_dir, device), indent=2))


@main.group(cls=Group)
def classifier() -> None:
    """The project's MNIST classifier (stacked-MNIST modes, fcd): shipped inside the package."""


@classifier.command(name="train")
@click.option("--data-dir", default=None)
@click.option("--seed", type=int, default=0, show_default=True)
def classifier_train(data_dir: str | None, seed: int) -> None:
    """Re-train it on MNIST's train split (CPU, 1 thread, deterministic) and overwrite the shipped
    weights and their card (sha256, command, seed, test accuracy); same machine, same checksum."""
    from lossbench.metrics import classifier as cnn

    cnn.main(data_dir, seed)


@classifier.command(name="check")
@click.option("--data-dir", default=None)
def classifier_check(data_dir: str | None) -> None:
    """Load the shipped weights (sha256 checked) and print their test accuracy."""
    from lossbench.metrics import classifier as cnn

    net = cnn.load()
    click.echo(f"sha256 ok; test accuracy {cnn.accuracy(net, *cnn.mnist_split('test', data_dir)):.4%}")

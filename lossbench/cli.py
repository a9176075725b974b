"""The `lossbench` command: parse and validate flags, call the library, turn errors into one line.

Results go to stdout (for machines), progress and logs to stderr (for people).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import click

from lossbench.errors import LossbenchError

log = logging.getLogger("lossbench")


class Group(click.Group):
    """Every user-caused error becomes `error: <one line>` on stderr and a non-zero exit."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except LossbenchError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _setup_logging(verbose: bool) -> None:
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


def _options(*options: Any) -> Any:
    """One decorator applying click options in the order listed (as --help shows them)."""

    def apply(f: Any) -> Any:
        for option in reversed(options):
            f = option(f)
        return f

    return apply


_store_options = _options(
    click.option("--tracking-uri", default=None,
                 help="MLflow store; default MLFLOW_TRACKING_URI or sqlite:///runs/mlflow.db."),
    click.option("--experiment", default="lossbench", show_default=True, help="MLflow experiment name."),
)  # fmt: skip


# flag -> flat config key; flags left unset do not override lower layers
CONFIG_FLAGS: list[tuple[str, str, Any, str]] = [
    ("--loss", "loss", str, "Loss name (see `lossbench losses`) or package.module:Class."),
    ("--penalty", "penalty", str, "Penalty on D: none, gp, r1, r2, dragan (default: the loss card's)."),
    ("--penalty-weight", "penalty_weight", float, "Weight of the penalty (lambda or gamma)."),
    ("--dataset", "dataset", str, "mnist, fashion-mnist, cifar10, ring8, grid25."),
    ("--arch", "arch", str, "mlp, mlp2d, dcgan (default: the data set's)."),
    ("--d-norm", "d_norm", str, "Normalisation of D's weights: none or spectral."),
    ("--z-dim", "z_dim", int, "Latent size."),
    ("--steps", "steps", int, "Budget in generator steps."),
    ("--batch-size", "batch_size", int, "Batch size."),
    ("--n-critic", "n_critic", int, "D steps per G step."),
    ("--optimizer", "optimizer", str, "adam or rmsprop."),
    ("--lr-g", "lr_g", float, "Generator learning rate."),
    ("--lr-d", "lr_d", float, "Discriminator learning rate."),
    ("--beta1", "beta1", float, "Adam beta1."),
    ("--beta2", "beta2", float, "Adam beta2."),
    ("--weight-clip", "weight_clip", float, "Clip D's weights to [-c, c]; 0 = off."),
    ("--log-every", "log_every", int, "Steps between logged loss means."),
    ("--sample-every", "sample_every", int, "Steps between sample grids."),
    ("--checkpoint-every", "checkpoint_every", int, "Steps between checkpoints."),
    ("--metrics", "metrics", str, "Comma list: fid,is,kid (images) or modes (2-D)."),
    ("--fid-samples", "fid_samples", int, "Generated samples per evaluation (default 10000)."),
    ("--eval-every", "eval_every", int, "Steps between evaluations (0 = only at the end)."),
    ("--reference-split", "reference_split", str, "Real statistics from train or test."),
]


def config_options(f: Any) -> Any:
    for flag, key, kind, help_ in reversed(CONFIG_FLAGS):
        f = click.option(flag, key, type=kind, default=None, help=help_)(f)
    return f


def flag_values(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Pop the config flags the user set; the rest of kwargs stays."""
    return {key: v for _, key, _, _ in CONFIG_FLAGS if (v := kwargs.pop(key, None)) is not None}


speed_options = _options(
    click.option("--parallel-seeds", is_flag=True,
                 help="Train the seeds of a configuration together on one device (vmap over stacked models)."),
    click.option("--precision", type=click.Choice(["fp32", "bf16"]), default="fp32", show_default=True,
                 help="bf16 autocasts model forwards; losses and penalties stay fp32."),
    click.option("--compile", "compile_", is_flag=True,
                 help="torch.compile G (and D when no penalty needs double backward)."),
    click.option("--fused-optim/--foreach-optim", default=True, show_default=True,
                 help="torch's fused Adam (one kernel per update), or its multi-kernel foreach form."),
    click.option("--cuda-graphs", is_flag=True,
                 help="CUDA graphs of G and D (torch.compile's reduce-overhead mode); CUDA only."),
)  # fmt: skip

executor_options = _options(
    click.option("--executor", type=click.Choice(["local", "ray"]), default="local", show_default=True,
                 help="Where seeds train: here, or as tasks on a Ray cluster."),
    click.option("--ray-address", default=None, help="Ray cluster: auto or HOST:PORT (default: start a local one)."),
    click.option("--task-cpus", type=float, default=1.0, show_default=True, help="CPUs per Ray task."),
    click.option("--task-gpus", type=float, default=0.0, show_default=True, help="GPUs per Ray task."),
)  # fmt: skip


def _executor(kwargs: dict[str, Any]) -> tuple[str, Any]:
    from lossbench.exec.executors import ExecutorOptions

    opts = ExecutorOptions(address=kwargs.pop("ray_address"), task_cpus=kwargs.pop("task_cpus"),
                           task_gpus=kwargs.pop("task_gpus"))  # fmt: skip
    return kwargs.pop("executor"), opts


exec_options = _options(
    click.option("--seeds", type=int, default=1, show_default=True, help="Number of seeds."),
    click.option("--seed-start", type=int, default=0, show_default=True, help="First seed."),
    click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda, cuda:N, mps."),
    click.option("--data-dir", default=None, help="Data root; default LOSSBENCH_DATA_DIR or ./data."),
    click.option("--checkpoint-dir", default=None, help="Default LOSSBENCH_CHECKPOINT_DIR or runs/checkpoints."),
    click.option("--resume", is_flag=True, help="Continue interrupted seeds of this configuration."),
    click.option("--no-progress", is_flag=True, help="No progress bar."),
    speed_options,
    executor_options,
    _store_options,
)


def _exec_config(kwargs: dict[str, Any], **extra: Any) -> Any:
    from lossbench.config import ExecConfig, SpeedConfig

    speed = SpeedConfig(
        parallel_seeds=kwargs["parallel_seeds"],
        precision=kwargs["precision"],
        compile=kwargs["compile_"],
        fused_optim=kwargs["fused_optim"],
        cuda_graphs=kwargs["cuda_graphs"],
    )
    return ExecConfig(
        speed=speed,
        seeds=kwargs["seeds"],
        seed_start=kwargs["seed_start"],
        device=kwargs["device"],
        data_dir=kwargs["data_dir"],
        tracking_uri=kwargs["tracking_uri"],
        experiment=kwargs["experiment"],
        checkpoint_dir=kwargs["checkpoint_dir"],
        resume=kwargs["resume"],
        progress=not kwargs["no_progress"],
        **extra,
    )


def _print_summary(summary: Any, cfg: Any) -> None:
    from lossbench.metrics.registry import METRICS

    keys = {k for name in cfg.metrics.metrics for k in METRICS.get(name).keys if not k.endswith("_std")}
    for s in summary.seeds:
        shown = {k: round(v, 4) for k, v in s.metrics.items() if k in keys}
        click.echo(f"seed {s.seed}: {s.outcome} at step {s.step}  run {s.run_id}  {shown}")
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.counts().items()))
    click.echo(f"config {summary.config_hash}: {counts}; parent run {summary.parent_run_id}")


@main.command()
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="TOML file of flat config keys; flags override it.",
)
@config_options
@exec_options
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit.")
def run(config_file: str | None, dry_run: bool, **kwargs: Any) -> None:
    """Train one configuration over several seeds and log it to MLflow."""
    from lossbench import config as config_mod

    flags = flag_values(kwargs)
    executor, opts = _executor(kwargs)
    layers = [("config file " + config_file, config_mod.load_file(config_file))] if config_file else []
    cfg = config_mod.resolve(*layers, ("command line", flags))
    ex = _exec_config(kwargs)
    if dry_run:
        shown = cfg.flat() | {"config_hash": cfg.config_hash(), "seeds": ex.seed_values()}
        click.echo(json.dumps(shown | {"execution": config_mod.describe_exec(ex)}, indent=2, sort_keys=True))
        return
    from lossbench.exec import executors

    (summary,) = executors.execute([(cfg, ex)], executor, opts)
    _print_summary(summary, cfg)


@main.command()
@click.argument("suite")
@click.option("--dry-run", is_flag=True, help="Print the plan (runs, estimated time) and exit.")
@click.option("--max-runs", type=click.IntRange(min=0), default=0, help="Run at most this many (config, seed) pairs.")
@click.option("--loss", "loss_filter", multiple=True, help="Only these losses (repeatable).")
@click.option("--dataset", "dataset_filter", multiple=True, help="Only these data sets (repeatable).")
@click.option("--device", default="auto", show_default=True)
@click.option("--data-dir", default=None)
@click.option("--checkpoint-dir", default=None)
@click.option("--no-progress", is_flag=True)
@speed_options
@executor_options
@_store_options
def sweep(suite: str, dry_run: bool, max_runs: int, loss_filter: tuple, dataset_filter: tuple, **kwargs: Any) -> None:
    """Run every (configuration, seed) of SUITE (a name in registry/suites or a path), skipping finished ones."""
    from lossbench.config import resolve_device
    from lossbench.exec import suites
    from lossbench.exec import sweep as sweep_mod
    from lossbench.tracking import Tracker

    executor, opts = _executor(kwargs)
    spec = suites.load(suite)
    tracker = Tracker(kwargs["tracking_uri"], kwargs["experiment"])
    planned = sweep_mod.plan(spec, tracker, loss_filter, dataset_filter, max_runs)
    todo = sum(len(p.seeds) for p in planned)
    done = sum(p.done for p in planned)
    click.echo(f"suite {spec.name}: {len(planned)} configurations x {spec.seeds} seeds; {done} finished, {todo} to run")
    if dry_run:
        device = resolve_device(kwargs["device"])
        total = 0.0
        for p in planned:
            c = p.cfg
            rate = sweep_mod.probe_steps_per_s(c, device, kwargs["data_dir"]) if p.seeds else float("nan")
            seconds = len(p.seeds) * c.train.steps / rate if p.seeds else 0.0
            total += seconds
            penalty = f"{c.loss.penalty}x{c.loss.penalty_weight:g}"
            click.echo(
                f"  {c.loss.loss:15s} {penalty:10s} {c.data.dataset:13s} "
                f"{c.model.arch:6s} steps {c.train.steps:6d}  seeds to run {list(p.seeds)}  "
                f"{rate:8.1f} steps/s  ~{seconds / 60:.1f} min"
            )
        click.echo(f"estimated training time: {total / 60:.1f} min on {device} (evaluation not included)")
        return
    ex = _exec_config(kwargs | {"seeds": 1, "seed_start": 0, "resume": True, "no_progress": kwargs["no_progress"]})
    summaries = sweep_mod.run(planned, ex, executor, opts)
    counts: dict[str, int] = {}
    for s in summaries:
        for k, n in s.counts().items():
            counts[k] = counts.get(k, 0) + n
    click.echo(f"suite {spec.name}: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to run"))


@main.command()
@_store_options
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Default reports/<experiment>/.")
@click.option("--dataset", "dataset_filter", multiple=True, help="Only these data sets (repeatable).")
@click.option("--loss", "loss_filter", multiple=True, help="Only these losses (repeatable).")
def report(
    tracking_uri: str | None, experiment: str, out: str | None, dataset_filter: tuple, loss_filter: tuple
) -> None:
    """Compare losses across seeds: index.html, report.md, runs.csv, summary.csv, figures."""
    from lossbench.report import build as report_mod

    path = report_mod.build(tracking_uri, experiment, Path(out) if out else None, dataset_filter, loss_filter)
    click.echo(f"report written to {path}/index.html")


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
@_store_options
@click.option("--port", type=int, default=5000, show_default=True)
@click.option("--host", default="127.0.0.1", show_default=True)
def ui(tracking_uri: str | None, experiment: str, port: int, host: str) -> None:
    """Open the MLflow UI on the same store `lossbench run` writes to."""
    from lossbench.paths import tracking_uri as resolve_uri

    uri = resolve_uri(tracking_uri)
    if uri.startswith(("http://", "https://")):
        click.echo(f"the store is a server already: open {uri} in a browser")
        return
    click.echo(f"MLflow UI for {uri} at http://{host}:{port}", err=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    sys.exit(subprocess.call(cmd))


@main.command()
@click.argument("run_id")
@click.option("-n", "count", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the latent noise.")
@click.option("--tracking-uri", default=None)
@click.option("--device", default="auto", show_default=True)
def sample(run_id: str, count: int, out: str, seed: int, tracking_uri: str | None, device: str) -> None:
    """Write N PNGs (or points.csv for 2-D data) from a run's saved generator."""
    from lossbench.exec import sampling

    written = sampling.write_samples(run_id, count, Path(out), seed, tracking_uri, device)
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
    from lossbench.exec import sampling

    click.echo(json.dumps(sampling.fid_between(first, second, samples, data_dir, device), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))

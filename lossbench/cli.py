"""The `lossbench` command: parse and validate flags, call the library, turn errors into one line.

Results go to stdout (for machines), progress and logs to stderr (for people).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import Any

import click

from lossbench.errors import LossbenchError

log = logging.getLogger("lossbench")


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
    ("--instance-noise", "instance_noise", float, "Sigma of Gaussian noise on D's real and fake inputs; 0 = off."),
    ("--penalty-weight", "penalty_weight", float,
     "Penalty weight: lambda (gp, dragan) or gamma (r1, r2 add gamma/2 E||grad D||^2)."),
    ("--dataset", "dataset", str, "mnist, fashion-mnist, cifar10, ring8, grid25, dirac."),
    ("--arch", "arch", str, "mlp, mlp2d, dcgan, infogan, pacgan-mlp, dirac (default: the data set's)."),
    ("--dirac-init", "dirac_init", str, "arch dirac: initial THETA,PSI of G(z)=theta, D(x)=psi x (default 1,1)."),
    ("--d-norm", "d_norm", str, "Normalisation of D's weights: none or spectral."),
    ("--d-batchnorm", "d_batchnorm", bool, "Batch norm in D where the arch has it (infogan); see --d-batchnorm-penalty."),  # noqa: E501
    ("--d-batchnorm-penalty", "d_batchnorm_penalty", bool,
     "Allow --d-batchnorm with a gradient penalty (through the penalty batch's statistics, as compare_gan)."),
    ("--z-dim", "z_dim", int, "Latent size."),
    ("--z-dist", "z_dist", str, "Latent distribution: normal (N(0,1)) or uniform (U(-1,1))."),
    ("--steps", "steps", int, "Budget in generator steps."),
    ("--epochs", "epochs", int, "Budget in passes of D over the training set (instead of --steps)."),
    ("--epoch-samples", "epoch_samples", int, "Examples in an epoch (compare_gan: 50000); 0 = the training set."),
    ("--batch-size", "batch_size", int, "Batch size."),
    ("--n-critic", "n_critic", int, "D steps per G step."),
    ("--updates", "updates", str, "alternating (D steps, then G) or simultaneous (both at one point; n_critic 1)."),
    ("--consensus", "consensus", float, "Consensus optimisation's gamma (with --updates simultaneous); 0 = off."),
    ("--pack", "pack", int, "PacGAN packing: D scores this many samples at once (1 = off)."),
    ("--batching", "batching", str, "Real batches: iid (default), epoch (a fresh shuffle each epoch) or "
     "epoch-bootstrap (PacGAN's: packed tuples from bootstrap resamples, shuffled each epoch)."),
    ("--g-bn-stats", "g_bn_stats", str, "G's batch-norm statistics: batch (all batch*pack samples) or "
     "pack-slot (each pack slot's batch apart, as PacGAN's code)."),
    ("--optimizer", "optimizer", str, "adam, rmsprop or sgd (plain gradient descent)."),
    ("--lr-g", "lr_g", float, "Generator learning rate."),
    ("--lr-d", "lr_d", float, "Discriminator learning rate."),
    ("--beta1", "beta1", float, "Adam beta1."),
    ("--beta2", "beta2", float, "Adam beta2."),
    ("--weight-clip", "weight_clip", float, "Clip D's weights to [-c, c]; 0 = off."),
    ("--g-noise", "g_noise", str, "G's z: fresh, or d-step (the z of the D step before it, as compare_gan)."),
    ("--log-every", "log_every", int, "Steps between logged loss means."),
    ("--sample-every", "sample_every", int, "Steps between sample grids."),
    ("--checkpoint-every", "checkpoint_every", int, "Steps between checkpoints."),
    ("--metrics", "metrics", str, "Comma list: fid,is,kid,pr,dc (images) or modes (2-D); none: no evaluation."),
    ("--fid-samples", "fid_samples", int, "Generated samples per evaluation (default 10000)."),
    ("--eval-every", "eval_every", int, "Steps between evaluations (0 = only at the end)."),
    ("--eval-epochs", "eval_epochs", int, "Epochs between evaluations (instead of --eval-every; 0 = off)."),
    ("--reference-split", "reference_split", str, "Real statistics from train or test."),
    ("--mode-samples", "mode_samples", int, "2-D data: generated points scored for modes (default 2500)."),
    ("--mode-threshold", "mode_threshold", int, "2-D data: high-quality samples that capture a mode (default 1)."),
]


class _Bool(click.ParamType):
    """true/false (also on/off, yes/no, 1/0) for the config's boolean fields."""

    name = "true|false"
    WORDS = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}

    def convert(self, value: Any, param: Any, ctx: Any) -> bool:
        if isinstance(value, bool):
            return value
        if (word := str(value).strip().lower()) in self.WORDS:
            return self.WORDS[word]
        self.fail(f"{value!r} is neither true nor false", param, ctx)


def config_options(f: Any) -> Any:
    for flag, key, kind, help_ in reversed(CONFIG_FLAGS):
        f = click.option(flag, key, type=_Bool() if kind is bool else kind, default=None, help=help_)(f)
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
    click.option("--system-metrics/--no-system-metrics", default=False, show_default=True,
                 help="MLflow's system metrics (CPU, memory, GPU) sampled on each seed run; needs psutil."),
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
    click.option("--resume", is_flag=True, help="Continue this configuration (finished seeds are skipped)."),
    click.option("--no-progress", is_flag=True, help="No progress bar."),
    speed_options,
    executor_options,
    _store_options,
)


allow_plugin_option = click.option(
    "--allow-plugin", "allow_plugins", multiple=True, metavar="MODULE:NAME",
    help="Load this plugin loss though only a file or the store names it: its module's code runs in this "
         "process (repeatable; see README, Threat model).",
)  # fmt: skip


def _plugins(allowed: tuple[str, ...], dry_run: bool = False) -> Any:
    from lossbench.plugins import Plugins

    return Plugins.from_flags(allowed, dry_run)


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
        system_metrics=kwargs.get("system_metrics", False),
        **extra,
    )


def _print_summary(summary: Any, cfg: Any) -> None:
    """Per seed: outcome, step and final metrics; then mean, std and median over finished seeds, and
    the mean's 95% bootstrap interval (lo95, hi95) where a column has 3 seeds or more: all from
    report.stats.across_seeds, the report's own statistics."""
    from lossbench.metrics.registry import METRICS
    from lossbench.report.stats import MIN_SEEDS_FOR_INTERVAL, across_seeds

    keys = [k for name in cfg.metrics.metrics for k in METRICS.get(name).keys if not k.endswith("_std")]
    if any("fid" in s.metrics for s in summary.seeds):
        keys.append("best_fid")
    width = max([10, *map(len, keys)]) + 2
    click.echo(f"{cfg.loss.loss} on {cfg.data.dataset}, configuration {summary.config_hash}:")
    click.echo(f"  {'seed':>4}  {'outcome':<11} {'step':>7}  " + "".join(f"{k:>{width}}" for k in keys) + "  run")
    for s in summary.seeds:
        values = "".join(f"{s.metrics[k]:>{width}.4f}" if k in s.metrics else f"{'':>{width}}" for k in keys)
        click.echo(f"  {s.seed:>4}  {s.outcome:<11} {s.step:>7}  {values}  {s.run_id or ''}")
    finished = [s for s in summary.seeds if s.outcome == "finished"]
    if across := across_seeds((s.metrics for s in finished), keys):
        described = [across.get(k) for k in keys]

        def row(stat: str) -> str:
            return "".join(f"{getattr(d, stat):>{width}.4f}" if d and not math.isnan(getattr(d, stat))
                           else f"{'':>{width}}" for d in described)  # fmt: skip

        click.echo(f"  {'mean':>4}  {f'{len(finished)} seeds':<11} {'':>7}  " + row("mean"))
        click.echo(f"  {'std':>4}  {'':<11} {'':>7}  " + row("std"))
        click.echo(f"  {'med':>4}  {'':<11} {'':>7}  " + row("median"))
        if any(d and d.n >= MIN_SEEDS_FOR_INTERVAL for d in described):
            click.echo(f"  {'lo95':>4}  {'(bootstrap':<11} {'':>7}  " + row("ci_low"))
            click.echo(f"  {'hi95':>4}  {' interval)':<11} {'':>7}  " + row("ci_high"))
    counts = ", ".join(f"{n} {k}" for k, n in sorted(summary.counts().items()))
    click.echo(f"config {summary.config_hash}: {counts}; parent run {summary.parent_run_id}")


def _print_next(tracking_uri: str | None, experiment: str) -> None:
    """The two commands that look further, with where they lead."""
    from lossbench.paths import tracking_uri as resolve_uri

    click.echo(f"next: lossbench report{_store_args(tracking_uri, experiment)}   "
               f"-> reports/{experiment}/index.html")  # fmt: skip
    if resolve_uri(tracking_uri).startswith(("http://", "https://")):
        click.echo(f"      the runs: {resolve_uri(tracking_uri)}")
    else:
        click.echo(f"      lossbench ui{_store_args(tracking_uri, experiment)}   -> prints the runs table's URL, "
                   f"http://127.0.0.1:5000/#/experiments/...")  # fmt: skip


def _store_args(tracking_uri: str | None, experiment: str) -> str:
    from lossbench.tracking import redact

    args = f" --tracking-uri {redact(tracking_uri)}" if tracking_uri else ""
    return args + (f" --experiment {experiment}" if experiment != "lossbench" else "")


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
@allow_plugin_option
@click.option("--dry-run", is_flag=True, help="Print the resolved configuration and exit (imports no plugin).")
def run(config_file: str | None, dry_run: bool, allow_plugins: tuple[str, ...], **kwargs: Any) -> None:
    """Train one configuration over several seeds and log it to MLflow."""
    from lossbench import config as config_mod
    from lossbench.plugins import DRY_RUN_NOTE, is_plugin

    flags = flag_values(kwargs)
    executor, opts = _executor(kwargs)
    layers = [("config file " + config_file, config_mod.load_file(config_file))] if config_file else []
    cfg = config_mod.resolve(*layers, (config_mod.COMMAND_LINE, flags), plugins=_plugins(allow_plugins, dry_run))
    ex = _exec_config(kwargs)
    if dry_run:
        shown = cfg.flat() | {"config_hash": cfg.config_hash(), "seeds": ex.seed_values()}
        shown |= {"plugin_loss": f"{cfg.loss.loss}: {DRY_RUN_NOTE}"} if is_plugin(cfg.loss.loss) else {}
        click.echo(json.dumps(shown | {"execution": config_mod.describe_exec(ex)}, indent=2, sort_keys=True))
        return
    from lossbench.exec import executors

    (summary,) = executors.execute([(cfg, ex)], executor, opts)
    _print_summary(summary, cfg)
    _print_next(kwargs["tracking_uri"], kwargs["experiment"])


def _print_sweep_plan(spec: Any, planned: list, device_name: str, data_dir: str | None) -> None:
    """One line per planned configuration with its measured estimate, then the total."""
    from lossbench.config import resolve_device
    from lossbench.exec import sweep as sweep_mod
    from lossbench.exec.estimate import evaluations_per_seed
    from lossbench.exec.search import drawn_fields
    from lossbench.plugins import is_plugin
    from lossbench.progress import duration, phase

    device = resolve_device(device_name)
    n = f"{len(planned):,} configuration{'s' * (len(planned) != 1)}"
    # a plugin loss is not timed: timing imports it, and a dry run imports no plugin
    timed = [dataclasses.replace(p, seeds=()) if is_plugin(p.cfg.loss.loss) else p for p in planned]
    with phase(f"timing the plan: {n} on {device}", len(planned), "config") as advance:
        found = sweep_mod.estimates(timed, device, data_dir, advance=advance)
    drawn = drawn_fields(spec.search)
    for p, e in zip(planned, found):
        c, flat = p.cfg, p.cfg.flat()
        penalty = "no penalty" if c.loss.penalty == "none" else f"{c.loss.penalty} {c.loss.penalty_weight:g}"
        penalty += f" pack {c.train.pack}" if c.train.pack > 1 else ""
        timing = f"{e.steps_per_s:8.1f} steps/s  ~{duration(e.train_s + e.eval_s)}" if e else ""
        timing = timing or "not timed" * bool(p.seeds)
        setting = " ".join(f"{k}={flat[k]:.3g}" if isinstance(flat[k], float) else f"{k}={flat[k]}" for k in drawn)
        click.echo(f"  {c.loss.loss:15s} {penalty:17s} {c.data.dataset:13s} {c.model.arch:6s} "
                   f"steps {c.train.steps:6d}  evals {evaluations_per_seed(c):3d}  "
                   f"seeds to run {list(p.seeds)}  {timing}"
                   + (f"  {c.config_hash()} {setting}" if setting else ""))  # fmt: skip
    train_s = sum(e.train_s for e in found if e)
    eval_s = sum(e.eval_s for e in found if e)
    untimed = sum(1 for p, e in zip(planned, found) if p.seeds and e is None)
    why = "data not here" + ", or a plugin loss" * any(t.seeds != p.seeds for t, p in zip(timed, planned))
    note = f"; {untimed} configuration{'s' * (untimed != 1)} not timed ({why})" if untimed else ""
    click.echo(f"estimated: {duration(train_s + eval_s)} on {device} (training {duration(train_s)}, "
               f"evaluation {duration(eval_s)}), from steps and Inception images timed now{note}")  # fmt: skip


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
@click.option("--stage", type=click.Choice(["search", "seeds"]), default=None,
              help="search (default): the suite's configurations, random-search draws included; seeds: each (loss, "
                   "dataset)'s best first-stage setting re-run with the suite's `reseeds` seeds. A --dry-run without "
                   "--stage prints both.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="With --dry-run: json prints one JSON object per planned (configuration, seed), nothing else.")
@speed_options
@executor_options
@_store_options
@allow_plugin_option
def sweep(
    suite: str, dry_run: bool, max_runs: int, loss_filter: tuple, dataset_filter: tuple, stage: str | None, fmt: str,
    allow_plugins: tuple[str, ...], **kwargs: Any,
) -> None:  # fmt: skip
    """Run every (configuration, seed) of SUITE (a name in registry/suites or a path), skipping finished ones."""
    from lossbench.errors import ConfigError, TrackingError
    from lossbench.exec import suites
    from lossbench.exec import sweep as sweep_mod
    from lossbench.plugins import DRY_RUN_NOTE, is_plugin
    from lossbench.tracking import Tracker

    executor, opts = _executor(kwargs)
    if fmt == "json" and not dry_run:
        raise ConfigError("--format json prints the plan: it goes with --dry-run")
    spec = suites.load(suite, _plugins(allow_plugins, dry_run))
    say = (lambda line: click.echo(line, err=True)) if fmt == "json" else click.echo  # stdout: JSON lines only
    if dry_run and (named := sorted({c.loss.loss for c in spec.configs if is_plugin(c.loss.loss)})):
        say(f"plugin losses {', '.join(named)}: {DRY_RUN_NOTE}")
    if stage == "seeds":
        if not spec.reseeds:
            raise ConfigError(f"suite {spec.name} has no second stage: add 'reseeds = N' to {spec.path}")
        try:  # the seeds stage reads first-stage results: it never creates a store
            tracker = Tracker(kwargs["tracking_uri"], kwargs["experiment"], create=False)
        except TrackingError as exc:
            raise ConfigError(f"suite {spec.name}: the seeds stage needs finished first-stage runs ({exc}); "
                              f"run `lossbench sweep {suite}` first") from None  # fmt: skip
    else:
        tracker = Tracker(kwargs["tracking_uri"], kwargs["experiment"])
    stages = [stage] if stage else ["search", "seeds"] if dry_run and spec.reseeds else ["search"]
    plans = {}
    for st in stages:
        if st == "search":
            planned = sweep_mod.plan(spec, tracker, loss_filter, dataset_filter, max_runs)
            drawn = f" ({spec.search.draws} random-search draws per grid point)" if spec.search else ""
            head = f"suite {spec.name}: {len(planned)} configurations{drawn} x {spec.seeds} seeds"
        else:
            chosen = sweep_mod.choices(spec, tracker, loss_filter, dataset_filter)
            if stage is None and not any(c.best for c in chosen):
                say(f"suite {spec.name}, stage seeds: needs first-stage results (none of its "
                    f"{sum(c.configs for c in chosen)} configurations has a finished run with '{spec.best_by}' yet)")
                continue
            planned = sweep_mod.plan_reseeds(spec, tracker, chosen, max_runs)
            for line in (line for c in chosen for line in c.lines()):
                say(line)
            head = f"suite {spec.name}, stage seeds: {len(planned)} best settings x {spec.reseeds} seeds"
        plans[st] = planned
        say(f"{head}; {sum(p.done for p in planned)} finished, {sum(len(p.seeds) for p in planned)} to run")
        if dry_run and fmt == "json":
            for line in sweep_mod.json_lines(planned):
                click.echo(line)
        elif dry_run:
            _print_sweep_plan(spec, planned, kwargs["device"], kwargs["data_dir"])
    if dry_run:
        return
    (st,) = stages
    ex = _exec_config(kwargs | {"seeds": 1, "seed_start": 0, "resume": True, "no_progress": kwargs["no_progress"]})
    summaries = sweep_mod.run(plans[st], ex, executor, opts, spec)
    if st == "seeds":  # each (loss, data set)'s best configuration, in MLflow's model registry
        for line in sweep_mod.register_best(spec, tracker, loss_filter, dataset_filter):
            say(line)
    counts: dict[str, int] = {}
    for s in summaries:
        for k, n in s.counts().items():
            counts[k] = counts.get(k, 0) + n
    name = spec.name if st == "search" else f"{spec.name}, stage seeds"
    click.echo(f"suite {name}: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to run"))
    if st == "search" and spec.reseeds:
        click.echo(f"next: lossbench sweep {suite} --stage seeds   -> each (loss, dataset)'s best setting by "
                   f"{spec.best_by}, with {spec.reseeds} seeds")  # fmt: skip
    _print_next(kwargs["tracking_uri"], kwargs["experiment"])


@main.command()
@_store_options
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
    from lossbench.exec import sampling

    written = sampling.write_samples(run_id, count, Path(out), seed, tracking_uri, device, _plugins(allow_plugins))
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


if __name__ == "__main__":  # pragma: no cover
    main(prog_name=os.path.basename(sys.argv[0]))

"""`lossbench run` and `lossbench sweep`: train configurations over seeds, and print what they did.
The planning is the library's (lossbench.exec.sweep); here flags are read and lines printed."""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

import click

from lossbench.cli.app import main
from lossbench.cli.flags import (
    allow_plugin_option,
    config_options,
    exec_options,
    exec_values,
    executor,
    executor_options,
    flag_values,
    plugins,
    speed_options,
    store_options,
)


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
    from lossbench.options import ExecConfig, describe_exec
    from lossbench.plugins import DRY_RUN_NOTE, is_plugin

    flags = flag_values(kwargs)
    where, opts = executor(kwargs)
    layers = [("config file " + config_file, config_mod.load_file(config_file))] if config_file else []
    cfg = config_mod.resolve(*layers, (config_mod.COMMAND_LINE, flags), plugins=plugins(allow_plugins, dry_run))
    ex = ExecConfig.counted(kwargs["seeds"], kwargs["seed_start"], resume=kwargs["resume"], **exec_values(kwargs))
    if dry_run:
        shown = cfg.flat() | {"config_hash": cfg.config_hash(), "seeds": list(ex.seeds)}
        shown |= {"plugin_loss": f"{cfg.loss.loss}: {DRY_RUN_NOTE}"} if is_plugin(cfg.loss.loss) else {}
        click.echo(json.dumps(shown | {"execution": describe_exec(ex)}, indent=2, sort_keys=True))
        return
    from lossbench.exec import executors

    (summary,) = executors.execute([(cfg, ex)], where, opts)
    _print_summary(summary, cfg)
    _print_next(kwargs["tracking_uri"], kwargs["experiment"])


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
@store_options
@allow_plugin_option
def sweep(
    suite: str, dry_run: bool, max_runs: int, loss_filter: tuple, dataset_filter: tuple, stage: str | None, fmt: str,
    allow_plugins: tuple[str, ...], **kwargs: Any,
) -> None:  # fmt: skip
    """Run every (configuration, seed) of SUITE (a name in registry/suites or a path), skipping finished ones."""
    from lossbench.errors import ConfigError
    from lossbench.exec import suites
    from lossbench.exec import sweep as sweep_mod
    from lossbench.options import ExecConfig
    from lossbench.plugins import DRY_RUN_NOTE, is_plugin

    where, opts = executor(kwargs)
    if fmt == "json" and not dry_run:
        raise ConfigError("--format json prints the plan: it goes with --dry-run")
    spec = suites.load(suite, plugins(allow_plugins, dry_run))
    say = (lambda line: click.echo(line, err=True)) if fmt == "json" else click.echo  # stdout: JSON lines only
    if dry_run and (named := sorted({c.loss.loss for c in spec.configs if is_plugin(c.loss.loss)})):
        say(f"plugin losses {', '.join(named)}: {DRY_RUN_NOTE}")
    stages = sweep_mod.stages(spec, stage, dry_run)
    tracker = sweep_mod.open_store(spec, stage, kwargs["tracking_uri"], kwargs["experiment"], suite)
    plans = []
    for st in stages:
        p = sweep_mod.plan_stage(spec, tracker, st, stage is not None, loss_filter, dataset_filter, max_runs)
        plans.append(p)
        for line in p.notes:
            say(line)
        if p.planned is None:
            continue
        say(p.summary())
        if dry_run and fmt == "json":
            for line in sweep_mod.json_lines(p.planned, exec_values(kwargs)["speed"]):
                click.echo(line)
        elif dry_run:
            _print_sweep_plan(spec, p.planned, kwargs["device"], kwargs["data_dir"], exec_values(kwargs)["speed"])
    if dry_run:
        return
    (p,) = plans
    ex = ExecConfig(resume=True, **exec_values(kwargs))
    counts, registered = sweep_mod.run_stage(spec, tracker, p, ex, where, opts, loss_filter, dataset_filter)
    for line in registered:  # the seeds stage: each (loss, data set)'s best configuration, in MLflow's model registry
        say(line)
    title = spec.name if p.stage == "search" else f"{spec.name}, stage seeds"
    click.echo(f"suite {title}: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "nothing to run"))
    if p.stage == "search" and spec.reseeds:
        click.echo(f"next: lossbench sweep {suite} --stage seeds   -> each (loss, dataset)'s best setting by "
                   f"{spec.best_by}, with {spec.reseeds} seeds")  # fmt: skip
    _print_next(kwargs["tracking_uri"], kwargs["experiment"])


def _print_summary(summary: Any, cfg: Any) -> None:
    """Per seed: outcome, step and final metrics; then mean, std and median over finished seeds, and
    the mean's 95% bootstrap interval (lo95, hi95) where a column has 3 seeds or more: all from
    report.stats.across_seeds, the report's own statistics."""
    from lossbench.metrics.registry import METRICS, best_keys
    from lossbench.report.stats import MIN_SEEDS_FOR_INTERVAL, across_seeds

    keys = [k for name in cfg.metrics.metrics for k in METRICS.get(name).keys if not k.endswith("_std")]
    keys += best_keys(k for s in summary.seeds for k in s.metrics)  # best_fid, best_modes, ...: what the runs kept
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


def _print_sweep_plan(spec: Any, planned: list, device_name: str, data_dir: str | None, speed: Any) -> None:
    """One line per planned configuration with its measured estimate, then the total; with
    --parallel-seeds or --parallel-configs, the groups and their training time timed as groups."""
    from lossbench.exec import sweep as sweep_mod
    from lossbench.exec.estimate import evaluations_per_seed
    from lossbench.exec.search import drawn_fields
    from lossbench.options import resolve_device
    from lossbench.plugins import is_plugin
    from lossbench.progress import duration, phase

    device = resolve_device(device_name)
    n = f"{len(planned):,} configuration{'s' * (len(planned) != 1)}"
    # a plugin loss is not timed: timing imports it, and a dry run imports no plugin
    timed = [dataclasses.replace(p, seeds=()) if is_plugin(p.cfg.loss.loss) else p for p in planned]
    sets = sweep_mod.TrainingSets(data_dir)  # each training set loaded once for both timings
    with phase(f"timing the plan: {n} on {device}", len(planned), "config") as advance:
        found = sweep_mod.estimates(timed, device, data_dir, advance=advance, sets=sets)
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
    if speed.parallel_seeds and any(p.seeds for p in planned):
        _print_groups(planned, speed, device, sets, eval_s)


def _print_groups(planned: list, speed: Any, device: Any, sets: Any, eval_s: float) -> None:
    """The groups the members train in, and the stage's time with training timed group by group
    (`sets`: the training sets the plan's timing loaded; a plugin loss is not timed)."""
    from collections import Counter

    from lossbench.exec import sweep as sweep_mod
    from lossbench.plugins import is_plugin
    from lossbench.progress import duration, phase

    n_groups = len(sweep_mod.planned_groups(planned, speed))
    with phase(f"timing the groups: {n_groups:,} on {device}", n_groups, "group") as advance:
        grouped = sweep_mod.grouped_estimate(planned, speed, device, None, advance, sets=sets,
                                             timeable=lambda cfg: not is_plugin(cfg.loss.loss))  # fmt: skip
    sizes = grouped.sizes
    how = "--parallel-configs" if speed.parallel_configs else "--parallel-seeds"
    shown = ", ".join(f"{n} of {size}" for size, n in sorted(Counter(sizes).items(), reverse=True))
    untimed = f"; {len(sizes) - grouped.timed} not timed (data not here, or a plugin loss)" \
        if grouped.timed < len(sizes) else ""
    click.echo(f"groups ({how}{f', --group-size {speed.group_size}' if speed.group_size else ''}): {len(sizes)} "
               f"({shown} members); estimated {duration(grouped.train_s + eval_s)} as groups (training "
               f"{duration(grouped.train_s)}, each group timed at its size{untimed}; evaluation as above)")  # fmt: skip

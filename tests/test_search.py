"""Random search in suites, the second stage's choice of the best setting, and published tables
beside ours (`lossbench report --against`): on suite files and on stores built through MLflow's API."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner

from lossbench import cards
from lossbench.cli import main
from lossbench.config import resolve
from lossbench.errors import ConfigError
from lossbench.exec import search, suites
from lossbench.exec import sweep as sweep_mod
from lossbench.report import against
from lossbench.report import build as report_mod
from lossbench.tracking import TAG_CONFIG_HASH, TAG_OUTCOME, TAG_ROLE, TAG_SEED, Tracker

SEARCH = """seeds = {seeds}
reseeds = 5
[base]
dataset = "mnist"
arch = "mlp"
steps = 10
[grid]
loss = ["minimax", "hinge"]
[search]
draws = {draws}
seed = {seed}
[search.keys]
lr_g = {{log-uniform = [1e-5, 1e-2]}}
{extra}"""


def write_suite(tmp: Path, name: str = "search", seeds: int = 3, draws: int = 3, seed: int = 7, extra: str = "") -> str:
    path = tmp / f"{name}.toml"
    path.write_text(SEARCH.format(seeds=seeds, draws=draws, seed=seed, extra=extra))
    return str(path)


def cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


def seed_run(tracker: Tracker, cfg_hash: str, params: dict, seed: int, metrics: dict | None = None,
             status: str = "FINISHED") -> None:  # fmt: skip
    run = tracker.start_run(f"run/{seed}", params | {"seed": seed},
                            {TAG_CONFIG_HASH: cfg_hash, TAG_ROLE: "seed", TAG_SEED: str(seed)})  # fmt: skip
    if metrics:
        tracker.log_metrics(run, 100, metrics)
    if status != "RUNNING":
        tracker.end_run(run, status, {TAG_OUTCOME: "finished" if status == "FINISHED" else "diverged"})


# --- the draws -------------------------------------------------------------------------------


def test_same_seed_same_draws_other_seed_other_draws(tmp_path: Path) -> None:
    first = suites.load(write_suite(tmp_path, "a", seed=7, draws=4))
    again = suites.load(write_suite(tmp_path, "b", seed=7, draws=4))
    other = suites.load(write_suite(tmp_path, "c", seed=8, draws=4))
    hashes = [c.config_hash() for c in first.configs]
    assert len(first.configs) == 2 * 4 and len(set(hashes)) == 8  # each draw crossed with the grid, its own hash
    assert hashes == [c.config_hash() for c in again.configs]
    assert [c.train.lr_g for c in first.configs] == [c.train.lr_g for c in again.configs]
    assert not {c.train.lr_g for c in first.configs} & {c.train.lr_g for c in other.configs}
    # the draws are the same across the grid (paired), and every other key is the base's
    assert [c.train.lr_g for c in first.configs[:4]] == [c.train.lr_g for c in first.configs[4:]]
    assert {c.loss.loss for c in first.configs[4:]} == {"hinge"} and all(c.train.steps == 10 for c in first.configs)
    # more draws keep the first ones; another key leaves this key's draws as they were
    more = suites.load(write_suite(tmp_path, "d", seed=7, draws=6, extra="beta1 = {uniform = [0.0, 0.9]}\n"))
    assert [c.train.lr_g for c in more.configs[:4]] == [c.train.lr_g for c in first.configs[:4]]


def test_draws_respect_their_distributions(tmp_path: Path) -> None:
    raw = {"draws": 400, "seed": 3, "keys": {
        "lr_g": {"log-uniform": [1e-5, 1e-2]}, "beta1": {"uniform": [0.2, 0.6]},
        "n_critic": {"int-range": [1, 5]}, "optimizer": {"choice": ["adam", "rmsprop"]},
    }}  # fmt: skip
    draws = search.parse(raw, "t", set()).settings()
    assert len(draws) == 400
    lr = [d["lr_g"] for d in draws]
    assert all(1e-5 <= v <= 1e-2 for v in lr)
    decades = [sum(10.0**e <= v < 10.0 ** (e + 1) for v in lr) for e in (-5, -4, -3)]
    assert all(100 <= n <= 170 for n in decades), decades  # log-uniform: a third per decade
    beta = [d["beta1"] for d in draws]
    assert all(0.2 <= v < 0.6 for v in beta) and min(beta) < 0.22 and max(beta) > 0.58
    assert abs(sum(beta) / len(beta) - 0.4) < 0.02
    n_critic = [d["n_critic"] for d in draws]
    assert set(n_critic) == {1, 2, 3, 4, 5} and all(isinstance(v, int) for v in n_critic)  # both ends included
    assert min(n_critic.count(k) for k in range(1, 6)) > 50
    assert {d["optimizer"] for d in draws} == {"adam", "rmsprop"}
    # and through the loader: each draw is a resolved configuration with those values
    suite = suites.load(write_suite(tmp_path, draws=20, extra='n_critic = {int-range = [2, 3]}\n'
                                    'optimizer = {choice = ["adam", "rmsprop"]}\n'))  # fmt: skip
    assert {c.train.n_critic for c in suite.configs} == {2, 3} and {c.train.optimizer for c in suite.configs} == {
        "adam", "rmsprop"}  # fmt: skip


@pytest.mark.parametrize(
    "extra, message",
    [
        (
            "beta1 = {log-normal = [0.1, 0.9]}\n",
            "unknown distribution 'log-normal' (did you mean 'log-uniform'?); "
            "valid: choice, int-range, log-uniform, uniform",
        ),
        ("beta1 = {uniform = [0.5, 0.5]}\n", "uniform [0.5, 0.5] is empty"),
        ("beta1 = {uniform = [0.9, 0.1]}\n", "uniform [0.9, 0.1] is reversed"),
        ("n_critic = {int-range = [5, 1]}\n", "int-range [5, 1] is empty"),
        ("lr_d = {log-uniform = [0.0, 0.1]}\n", "log-uniform needs 0 < lo"),
        ("optimizer = {choice = []}\n", "choice needs a non-empty list"),
        ("n_critic = {int-range = [1, 2.5]}\n", "int-range needs two integers"),
        ("bta1 = {uniform = [0.1, 0.2]}\n", "'bta1' (did you mean 'beta1'?)"),
        ('loss = {choice = ["hinge"]}\n', "'loss' is both searched and set by [grid]"),
        ("n_critic = {int-range = [0, 2]}\n", "'n_critic' must be >= 1"),  # a draw that does not resolve
    ],
)
def test_bad_search_is_one_line_at_load(extra: str, message: str, tmp_path: Path) -> None:
    path = write_suite(tmp_path, extra=extra, seed=1, draws=30)
    with pytest.raises(ConfigError) as info:
        suites.load(path)
    assert message in str(info.value) and path in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "extra, message",
    [
        ("beta1 = {log-normal = [0.1, 0.9]}\n", "unknown distribution 'log-normal'"),
        ("beta1 = {uniform = [0.9, 0.1]}\n", "is reversed"),
    ],
)
def test_bad_search_in_the_cli_writes_nothing(extra: str, message: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = cli("sweep", write_suite(tmp_path, extra=extra), "--dry-run", "--format", "json",
                 "--tracking-uri", f"sqlite:///{store / 'mlflow.db'}")  # fmt: skip
    assert result.exit_code != 0 and result.stdout == ""
    assert result.stderr.startswith("Error: ") and message in result.stderr and result.stderr.count("\n") == 1
    assert not store.exists() and not (tmp_path / "runs").exists()


# --- the second stage ------------------------------------------------------------------------

MINIMAX = {0: [10.0, 30.0, 12.0], 1: [11.0, 11.0, 50.0]}  # medians 12 and 11 (means 17.3 and 24)
HINGE = {0: [19.0, 21.0], 1: [20.0], 2: [25.0]}  # medians 20, 20 (a tie) and 25


@pytest.fixture(scope="module")
def first_stage(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[..., str]) -> tuple[str, str]:
    """A search suite and a store holding its first stage (built once: MLflow takes a second per run)."""
    tmp = tmp_path_factory.mktemp("first-stage")
    path, uri = write_suite(tmp), new_store(tmp / "store" / "mlflow.db", cwd=tmp)
    first_stage_store(suites.load(path), uri)
    return path, uri


def first_stage_store(suite: suites.Suite, uri: str) -> Tracker:
    tracker = Tracker(uri, "lossbench")
    mm, hinge = suite.configs[:3], suite.configs[3:]
    for group, fids in ((mm, MINIMAX), (hinge, HINGE)):
        for i, values in fids.items():
            for seed, fid in enumerate(values):
                seed_run(tracker, group[i].config_hash(), group[i].flat(), seed, {"fid": fid, "best_fid": 1.0})
    params = mm[0].flat()
    for seed in (3, 4):  # second-stage seeds of a first-stage loser: never part of the choice
        seed_run(tracker, mm[0].config_hash(), params, seed, {"fid": 1.0})
    seed_run(tracker, mm[2].config_hash(), mm[2].flat(), 0, {"fid": 2.0}, "FAILED")  # diverged
    seed_run(tracker, mm[2].config_hash(), mm[2].flat(), 1, {"fid": 3.0}, "RUNNING")  # still training
    return tracker


@pytest.mark.xdist_group("search-first-stage")  # one worker builds the module store once
def test_best_setting_per_loss_and_dataset(first_stage: tuple[str, str]) -> None:
    suite = suites.load(first_stage[0])
    tracker = Tracker(first_stage[1], "lossbench", create=False)
    mm, hinge = suite.configs[:3], suite.configs[3:]
    chosen = sweep_mod.choices(suite, tracker)
    assert [(c.loss, c.dataset) for c in chosen] == [("minimax", "mnist"), ("hinge", "mnist")]
    first, second = chosen
    assert first.best == mm[1] and first.score == 11.0 and first.seeds == 3
    assert (first.configs, first.scored, first.tied) == (3, 2, (mm[1].config_hash(),))
    lines = first.lines()
    assert len(lines) == 2
    assert f"best fid 11 (median of 3 finished seeds), configuration {mm[1].config_hash()}" in lines[0]
    assert "lr_g=" in lines[0]
    assert "1 of 3 configurations have no finished first-stage run with 'fid' yet; chosen among the other 2" in lines[1]
    tied = sorted([hinge[0].config_hash(), hinge[1].config_hash()])
    assert second.tied == tuple(tied) and second.best.config_hash() == tied[0] and second.score == 20.0
    assert f"2 configurations tie at fid 20 ({', '.join(tied)}); took the lowest hash, {tied[0]}" in second.lines()[1]

    planned = sweep_mod.plan_reseeds(suite, tracker, chosen)
    assert [p.stage for p in planned] == ["seeds", "seeds"] and planned[0].cfg == mm[1]
    assert (planned[0].done, planned[0].seeds) == (3, (3, 4))  # its first-stage seeds count among the reseeds
    hinge_done = len(HINGE[0 if tied[0] == hinge[0].config_hash() else 1])
    assert (planned[1].done, planned[1].seeds) == (hinge_done, tuple(range(hinge_done, 5)))
    # a loss filter narrows the choice; a higher-is-better metric turns it around
    assert [c.loss for c in sweep_mod.choices(suite, tracker, losses=("hinge",))] == ["hinge"]
    worst = search.choose(suite.configs[:3], suite.seeds, "is_mean", tracker)
    assert worst[0].best is None and "none of its 3 configurations" in worst[0].lines()[0]


@pytest.mark.xdist_group("search-first-stage")  # one worker builds the module store once
def test_json_dry_run_plans_both_stages(first_stage: tuple[str, str]) -> None:
    path, store = first_stage
    suite = suites.load(path)
    fresh = cli("sweep", path, "--dry-run", "--format", "json", "--tracking-uri", store, "--experiment", "fresh")
    assert fresh.exit_code == 0, fresh.output
    runs = [json.loads(line) for line in fresh.stdout.splitlines()]
    assert len(runs) == 6 * 3 and {r["stage"] for r in runs} == {"search"}
    keys = set(suite.configs[0].flat())
    for i, (r, (cfg, seed)) in enumerate(zip(runs, [(c, s) for c in suite.configs for s in range(3)])):
        assert set(r) == keys | {"stage", "config_hash", "evaluations", "seed", "group"}
        assert r["group"] == i  # trained one at a time: a group each
        assert list(r)[:3] == ["stage", "loss", "dataset"]
        assert r["seed"] == seed and r["config_hash"] == cfg.config_hash() and r["lr_g"] == cfg.train.lr_g
        assert resolve(("json", {k: v for k, v in r.items() if k in keys})) == cfg  # every key, exactly
    assert "stage seeds: needs first-stage results" in fresh.stderr

    both = cli("sweep", path, "--dry-run", "--format", "json", "--tracking-uri", store)
    assert both.exit_code == 0, both.output
    runs = [json.loads(line) for line in both.stdout.splitlines()]
    # first stage: 18 (configuration, seed) pairs less the 10 finished ones
    assert sum(r["stage"] == "search" for r in runs) == 8
    seeds_stage = [(r["loss"], r["config_hash"], r["seed"]) for r in runs if r["stage"] == "seeds"]
    assert ("minimax", suite.configs[1].config_hash(), 3) in seeds_stage
    assert {s for loss, _, s in seeds_stage if loss == "minimax"} == {3, 4}
    assert "took the lowest hash" in both.stderr
    only = cli("sweep", path, "--dry-run", "--format", "json", "--stage", "seeds", "--tracking-uri", store)
    assert {json.loads(line)["stage"] for line in only.stdout.splitlines()} == {"seeds"}


@pytest.mark.xdist_group("search-first-stage")  # one worker builds the module store once
def test_seeds_stage_before_any_first_stage_run_writes_nothing(first_stage: tuple[str, str], tmp_path: Path) -> None:
    path = first_stage[0]
    store = tmp_path / "store"
    for uri, experiment in ((f"sqlite:///{store / 'mlflow.db'}", "lossbench"), (first_stage[1], "nothing-yet")):
        for args in (["--stage", "seeds"], ["--stage", "seeds", "--dry-run"]):
            result = cli("sweep", path, *args, "--tracking-uri", uri, "--experiment", experiment)
            assert result.exit_code != 0 and result.stdout == "" and result.stderr.count("\n") == 1
            assert result.stderr.startswith("Error: suite search: the seeds stage needs finished first-stage runs")
    assert not store.exists() and not (tmp_path / "runs").exists()
    assert Tracker(first_stage[1], None).client.get_experiment_by_name("nothing-yet") is None
    suite = suites.load(path)
    tracker = Tracker(first_stage[1], "diverged")  # an experiment whose only first-stage run diverged
    seed_run(tracker, suite.configs[0].config_hash(), suite.configs[0].flat(), 0, {"fid": 1.0}, "FAILED")
    result = cli("sweep", path, "--stage", "seeds", "--tracking-uri", first_stage[1], "--experiment", "diverged")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1
    assert "none of its 6 configurations has one with 'fid'" in result.stderr
    assert len(tracker.runs("seed")) == 1 and len(tracker.runs("parent")) == 0
    uri = first_stage[1]
    plain = tmp_path / "plain.toml"
    plain.write_text('[base]\ndataset = "ring8"\n')
    result = cli("sweep", str(plain), "--stage", "seeds", "--tracking-uri", uri)
    assert result.exit_code != 0 and "has no second stage: add 'reseeds = N'" in result.stderr


def test_the_library_plans_a_sweeps_stages(tmp_path: Path, store: str) -> None:
    """Which stages a sweep plans and what an unasked seeds stage says before any first-stage result
    are exec.sweep's (the CLI prints them): a dry run plans both, a run the one asked for or the first."""
    two = suites.load(write_suite(tmp_path, draws=1))
    plain = tmp_path / "plain.toml"
    plain.write_text('[base]\ndataset = "ring8"\n')
    one = suites.load(str(plain))
    assert sweep_mod.stages(two, None, dry_run=True) == ["search", "seeds"]
    assert sweep_mod.stages(two, None, dry_run=False) == ["search"] == sweep_mod.stages(one, None, dry_run=True)
    assert sweep_mod.stages(two, "seeds", dry_run=False) == ["seeds"]
    with pytest.raises(ConfigError, match=r"suite plain has no second stage: add 'reseeds = N' to .*plain.toml$"):
        sweep_mod.stages(one, "seeds", dry_run=True)
    tracker = Tracker(store, "empty")  # the template's copy: a new store's migrations cost seconds
    search_stage = sweep_mod.plan_stage(two, tracker, "search", asked=False)
    assert search_stage.summary() == ("suite search: 2 configurations (1 random-search draws per grid point) x 3 "
                                      "seeds; 0 finished, 6 to run")  # fmt: skip
    unasked = sweep_mod.plan_stage(two, tracker, "seeds", asked=False)
    assert unasked.planned is None and unasked.notes == (
        "suite search, stage seeds: needs first-stage results (none of its 2 configurations has a finished run "
        "with 'fid' yet)",)  # fmt: skip
    with pytest.raises(ConfigError, match="the seeds stage needs finished first-stage runs"):
        sweep_mod.plan_stage(two, tracker, "seeds", asked=True)


# --- published tables beside ours ------------------------------------------------------------


@pytest.fixture(scope="module")
def lucic(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[..., str]) -> str:
    """A store with runs to set beside Lucic et al. 2018 (and one ring8 configuration), built once."""
    tmp = tmp_path_factory.mktemp("lucic")
    uri = new_store(tmp / "store" / "mlflow.db", cwd=tmp)
    lucic_store(uri)
    return uri


def lucic_store(uri: str) -> Tracker:
    tracker = Tracker(uri, "paper")
    dcgan = resolve(("t", {"loss": "minimax", "dataset": "mnist", "arch": "dcgan", "fid_samples": 10000}))
    mlp = resolve(("t", {"loss": "minimax", "dataset": "mnist", "arch": "mlp", "fid_samples": 10000}))
    ns = resolve(("t", {"loss": "non-saturating", "dataset": "mnist", "arch": "dcgan", "reference_split": "test"}))
    wgan = resolve(("t", {"loss": "wgan", "dataset": "mnist"}))
    ring = resolve(("t", {"loss": "hinge", "dataset": "ring8"}))
    for cfg, fids in ((dcgan, [10.7, 11.6, 9.8]), (mlp, [5.0]), (ns, [6.8, 6.8])):
        for seed, fid in enumerate(fids):
            seed_run(tracker, cfg.config_hash(), cfg.flat(), seed, {"fid": fid})
    seed_run(tracker, dcgan.config_hash(), dcgan.flat(), 3, {"fid": 99.0}, "FAILED")  # diverged: not ours
    seed_run(tracker, wgan.config_hash(), wgan.flat(), 0, {"fid": 3.0}, "FAILED")
    for seed, hq in enumerate([0.95, 0.85]):
        seed_run(tracker, ring.config_hash(), ring.flat(), seed, {"high_quality": hq, "modes": 8.0})
    return tracker


@pytest.mark.xdist_group("search-lucic-store")  # one worker builds the module store once
def test_report_against_lucic2018(lucic: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report_mod.build(lucic, "paper", out, against="lucic2018")
    table = pd.read_csv(out / "against-lucic2018.csv").set_index("loss")
    assert list(table.index) == ["minimax", "non-saturating"]  # present in both; wgan only diverged here
    mm = table.loc["minimax"]
    assert (mm["paper_mean"], mm["paper_std"], mm["ours_seeds"]) == (9.8, 0.9, 3)  # the 3-seed configuration
    assert mm["ours_mean"] == pytest.approx(10.7) and mm["ours_std"] == pytest.approx(0.9)
    assert mm["diff_in_paper_std"] == pytest.approx(1.0) and not mm["protocol_matches"]
    assert mm["protocol_differs"] == ("reference_split (paper test, ours train); z_dist (paper uniform, ours normal); "
                                      "z_dim (paper 64, ours 100); arch (paper infogan, ours dcgan); "
                                      "epochs (paper 20, ours 2,000 steps, not epochs); "
                                      "epoch_samples (paper 50000, ours 60000)")  # fmt: skip
    ns = table.loc["non-saturating"]
    assert ns["diff_in_paper_std"] == pytest.approx(0.0)
    assert ns["protocol_differs"] == ("z_dist (paper uniform, ours normal); z_dim (paper 64, ours 100); "
                                      "arch (paper infogan, ours dcgan); "
                                      "epochs (paper 20, ours 2,000 steps, not epochs); "
                                      "epoch_samples (paper 50000, ours 60000)")  # fmt: skip
    md = (out / "report.md").read_text()
    assert "## Beside Lucic, Kurach, Michalski, Gelly, Bousquet, NeurIPS 2018, Table 2" in md
    row = next(line for line in md.splitlines() if line.startswith("| mnist | minimax (MM GAN)"))
    assert "| 9.8 ± 0.9 (std, 50 runs) | 0.9 (std as printed) | 10.7 ± 0.9 (3) | +0.9 | +1.00 |" in row
    assert "(1 of 2)" in row
    assert ("differs: reference_split (paper test, ours train), z_dist (paper uniform, ours normal), z_dim (paper "
            "64, ours 100), arch (paper infogan, ours dcgan), epochs (paper 20, ours 2,000 steps, not epochs), "
            "epoch_samples (paper 50000, ours 60000); "
            "matches: fid_samples, optimizer, batch_size") in row  # fmt: skip
    assert "not compared (no lossbench parameter): fid_reference_samples, fid_extractor, hyperparameter_settings" in md
    assert "WGAN on mnist (fid)" in md  # a published value with no finished run here
    page = (out / "index.html").read_text()
    assert 'id="against"' in page and "ours infogan" not in page and "paper infogan, ours dcgan" in page


@pytest.mark.xdist_group("search-lucic-store")  # one worker builds the module store once
def test_against_percent_units_flags_and_protocol_fields(lucic: str, tmp_path: Path) -> None:
    tracker = Tracker(lucic, "paper", create=False)
    path = tmp_path / "mine.toml"
    path.write_text('title = "T"\ncitation = "Someone 2020"\ntable = "Table 9"\nurl = "https://example.org"\n'
                    'spread = "std"\n'
                    '[protocol]\nbatch_size = 64\nz_dim = { ring8 = 2, mnist = 64 }\nlr_g = [1e-4, 2e-4]\n'
                    'ring_radius = 1.0\nprotocol_note = "ring of radius 1"\n'
                    '[[result]]\nmodel = "hinge"\nlabel = "Hinge"\ndataset = "ring8"\nmetric = "high_quality"\n'
                    'mean = 80.0\npm = 5.0\nunit = "percent"\nverified = false\n')  # fmt: skip
    comparison = against.compare(cards.paper(str(path)), tracker.runs("seed"))
    (row,) = comparison.rows
    assert row.values == pytest.approx((95.0, 85.0)) and row.z == pytest.approx(2.0)  # ours x100, in paper std
    assert [(f.key, f.matches) for f in row.fields] == [("batch_size", True), ("z_dim", False), ("lr_g", True)]
    assert row.protocol() == "differs: z_dim (paper 2, ours 100); matches: batch_size, lr_g"
    shown = comparison.display().iloc[0]
    assert shown["metric"] == "high_quality (%)" and shown["flags"] == "unverified"
    assert shown["ours mean ± std (n seeds)"] == "90 ± 7.1 (2)" and shown["(ours − paper) / paper std"] == "+2.00"
    notes = "\n".join(comparison.notes())
    assert "high_quality: the paper gives percent; lossbench logs a fraction, shown here ×100." in notes
    assert "not compared (no lossbench parameter): ring_radius;" in notes and "ring of radius 1" in notes
    assert math.isnan(against.Row(row.published, "h", 1, (1.0,), ()).std)  # one seed: no std


@pytest.mark.parametrize(
    "text, message",
    [
        ('citation = "c"\ntable = "t"\nurl = "u"\nspread = "std"\n', "'title' is required"),
        ('title = "x"\ncitation = "c"\ntable = "t"\nurl = "u"\nspread = "std"\ntitel = "y"\n',
         "'titel' (did you mean 'title'?)"),
        (
            'title = "x"\ncitation = "c"\ntable = "t"\nurl = "u"\nspread = "std"\n[[result]]\nmodel = "m"\n'
            'label = "l"\ndataset = "d"\nmetric = "fid"\nmean = "9.8"\npm = 1.0\n',
            "result[0] (l on d): 'mean' must be a number",
        ),
        (
            'title = "x"\ncitation = "c"\ntable = "t"\nurl = "u"\nspread = "std"\n[[result]]\nmodel = "m"\n'
            'label = "l"\ndataset = "d"\nmetric = "fid"\nmean = 1.0\n',
            "'pm' (the ± as printed) is required where spread is 'std'",
        ),
        (
            'title = "x"\ncitation = "c"\ntable = "t"\nurl = "u"\nspread = "std"\n[[result]]\nmodel = "m"\n'
            'label = "l"\ndataset = "d"\nmetric = "fid"\nmean = 1.0\npm = -1.0\n',
            "pm finite and >= 0",
        ),
        (
            'title = "x"\ncitation = "c"\ntable = "t"\nurl = "u"\nspread = "std"\n[[result]]\nmodel = "m"\n'
            'label = "l"\ndataset = "d"\nmetric = "fid"\nmean = 1.0\npm = 1.0\nunit = "%"\n',
            "'unit' must be \"percent\"",
        ),
    ],
)
def test_malformed_paper_file_is_one_line(text: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        cards.paper(str(path))
    assert message in str(info.value) and str(path) in str(info.value) and "\n" not in str(info.value)


def test_shipped_paper_files_load() -> None:
    assert cards.paper_names() == ["lucic2018", "pacgan2018", "pacgan2018-stacked", "veegan2017"]
    lucic = cards.paper("lucic2018")
    assert len(lucic.results) == 28 and lucic.protocol["reference_split"] == "test"
    mm = next(r for r in lucic.results if (r.model, r.dataset) == ("minimax", "mnist"))
    assert (mm.mean, mm.pm, mm.spread, mm.runs, mm.pack) == (9.8, 0.9, "std", 50, 1)
    pacgan = cards.paper("pacgan2018")
    assert len(pacgan.results) == 30 and {(r.spread, r.runs) for r in pacgan.results} == {("se", 10)}
    assert sorted(r.label for r in pacgan.results if r.context) == ["ALI"] * 6
    assert {r.unit for r in pacgan.results if r.metric == "high_quality"} == {"percent"}
    veegan = cards.paper("veegan2017")
    assert len(veegan.results) == 16 and {(r.spread, r.runs, r.pm) for r in veegan.results} == {("none", 5, None)}
    assert [r.label for r in veegan.results if not r.context] == ["GAN"] * 4


def test_unknown_paper_is_one_line_naming_the_valid_ones(unmade_store: str, tmp_path: Path) -> None:
    store = unmade_store
    out = tmp_path / "report"  # the name is checked first: no store is needed, none is created
    result = cli("report", "--tracking-uri", store, "--experiment", "paper", "--out", str(out), "--against", "lucic")
    assert result.exit_code != 0 and result.stderr.count("\n") == 1
    assert result.stderr == ("Error: unknown paper 'lucic' (did you mean 'lucic2018'?); "
                             "valid: lucic2018, pacgan2018, pacgan2018-stacked, veegan2017\n")  # fmt: skip
    assert not out.exists() and not (tmp_path / "store").exists()


# --- compare_gan's own draws, replayed (Lucic et al. 2018) ----------------------------------------


def test_compare_gan_replay_is_its_own_sequence() -> None:
    """The first draws of each loss, computed here from Python's random directly with compare_gan's
    algorithm (generate_tasks_lib.GetTasks / TuneParams / GetSample, params.py's wide ranges, read at
    623f646), independently of lossbench.exec.compare_gan:

        random.seed(123); per model in GAN, GAN_MINMAX, WGAN, WGAN_GP, DRAGAN, VAE, LSGAN, BEGAN: the
        default first, then 99 samples, each one random() per parameter in sorted name order;
        Python 2 choice(seq) = seq[int(random() * len(seq))]; uniform(a, b) = a + (b - a) * random();
        a log-scale parameter is 10 ** uniform(lo, hi) over the exponents.

    Parameters per model (sorted): beta1, disc_iters, discriminator_batchnorm, learning_rate (4), plus
    weight_clipping (WGAN: 5, last), lambda (WGAN_GP, DRAGAN: 5, before learning_rate), lambda and
    gamma (BEGAN: 6)."""
    import random as py_random

    rng = py_random.Random(123)
    u = rng.random

    def first_two(extra: str | None, extra_range: tuple[float, float] = (0.0, 0.0)) -> list[dict]:
        out = []
        for _ in range(2):
            d = {"beta1": 0.0 + (1.0 - 0.0) * u(), "n_critic": [1, 5][int(u() * 2)],
                 "d_batchnorm": [True, False][int(u() * 2)]}  # fmt: skip
            if extra == "penalty_weight":  # "lambda" sorts before "learning_rate"
                d["penalty_weight"] = 10 ** (extra_range[0] + (extra_range[1] - extra_range[0]) * u())
            d["lr"] = 10 ** (-5.0 + 3.0 * u())
            if extra == "weight_clip":  # "weight_clipping" sorts last
                d["weight_clip"] = 10 ** (extra_range[0] + (extra_range[1] - extra_range[0]) * u())
            out.append(d)
        return out

    def skip(n_params: int) -> None:  # the rest of the model's 99 samples
        for _ in range(97 * n_params):
            u()

    expected = {}
    expected["non-saturating"] = first_two(None); skip(4)  # noqa: E702  GAN
    expected["minimax"] = first_two(None); skip(4)  # noqa: E702  GAN_MINMAX
    expected["wgan"] = first_two("weight_clip", (-3.0, 0.0)); skip(5)  # noqa: E702
    expected["wgan-gp"] = first_two("penalty_weight", (-1.0, 2.0)); skip(5)  # noqa: E702
    expected["dragan"] = first_two("penalty_weight", (-1.0, 2.0)); skip(5)  # noqa: E702
    for _ in range(99 * 4):  # VAE: its draws are consumed
        u()
    expected["least-squares"] = first_two(None)
    defaults = {  # each model's own default setting is its sample 0 (the list, params.py)
        "non-saturating": {"beta1": 0.0, "lr": 5e-5, "n_critic": 1, "d_batchnorm": True},
        "minimax": {"beta1": 0.0, "lr": 5e-5, "n_critic": 1, "d_batchnorm": True},
        "least-squares": {"beta1": 0.5, "lr": 2e-4, "n_critic": 1, "d_batchnorm": True},
        "wgan": {"beta1": 0.5, "lr": 5e-5, "n_critic": 5, "d_batchnorm": True, "weight_clip": 0.01},
        "wgan-gp": {"beta1": 0.5, "lr": 1e-4, "n_critic": 5, "d_batchnorm": False, "penalty_weight": 10.0},
        "dragan": {"beta1": 0.5, "lr": 1e-4, "n_critic": 1, "d_batchnorm": True, "penalty_weight": 10.0},
    }
    from lossbench.exec import compare_gan

    for loss, draws in expected.items():
        got = compare_gan.settings(loss, 3)
        assert [{k: g[k] for k in defaults[loss]} for g in got[:1]] == [defaults[loss]], loss
        for want, g in zip(draws, got[1:]):
            assert {k: g[k] for k in want} == pytest.approx(want, rel=1e-12), loss
    # and pinned, so a change of Python's random would show: GAN's first draw
    assert compare_gan.settings("non-saturating", 2)[1]["lr"] == pytest.approx(2.1042663234335317e-05, rel=1e-12)


def test_compare_gan_replay_draws_disc_iters_from_1_5_and_defaults_first() -> None:
    from lossbench.exec import compare_gan

    for loss in compare_gan.LOSSES.values():
        got = compare_gan.settings(loss, 100)
        assert len(got) == 100 and {s["n_critic"] for s in got} == {1, 5}, loss  # never 2, 3 or 4
        assert {s["d_batchnorm"] for s in got} == {True, False}, loss
    assert compare_gan.settings("wgan-gp", 1) == [
        {"beta1": 0.5, "lr": 1e-4, "n_critic": 5, "d_batchnorm": False, "penalty_weight": 10.0, "g_noise": "fresh"}]


@pytest.mark.parametrize("extra, message", [
    ('replay = "compare-gan"', "unknown replay 'compare-gan'"),
    ('replay = "compare_gan"\nseed = 3', "drop search.seed"),
])  # fmt: skip
def test_bad_replay_is_one_line_at_load(extra: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(f'[base]\ndataset = "mnist"\narch = "mlp"\nsteps = 10\n[grid]\nloss = ["minimax"]\n'
                    f'[search]\ndraws = 3\n{extra}\n')  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        suites.load(str(path))


def test_replay_refuses_a_loss_it_never_drew_and_more_than_its_draws(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    text = ('[base]\ndataset = "mnist"\narch = "mlp"\nsteps = 10\n[grid]\nloss = ["{loss}"]\n[search]\ndraws = {n}\n'
            'replay = "compare_gan"\n')
    path.write_text(text.format(loss="hinge", n=3))
    with pytest.raises(ConfigError, match="compare_gan drew no settings for loss 'hinge'"):
        suites.load(str(path))
    path.write_text(text.format(loss="minimax", n=101))
    with pytest.raises(ConfigError, match="drew 100 settings per model"):
        suites.load(str(path))

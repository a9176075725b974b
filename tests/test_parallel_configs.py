"""Configurations trained as one group (issue 27): members that share a shape and differ in learning
rates, betas, penalty weight, weight clip or instance-noise sigma equal their sequential twins in
float64, a member's checkpoint moves between a group and a run alone, and one member's divergence
leaves the others bit for bit."""

from __future__ import annotations

import copy
import json
import re

import pytest
import torch

from lossbench import config
from lossbench import train as trainer
from lossbench.gan import data
from lossbench.gan.member_adam import MemberAdam
from lossbench.options import SpeedConfig
from lossbench.train import members
from lossbench.train.state import training_data

CPU = torch.device("cpu")
PARALLEL = SpeedConfig(parallel_seeds=True)
STATS = ("d_loss", "d_real", "d_fake", "penalty", "g_loss", "g_signal", "d_grad_norm", "g_grad_norm")


@pytest.fixture
def float64():
    """In float64 a group's kernels and a run alone round apart at 1e-16: 1e-9 over these runs."""
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(torch.float32)


def resolve(flags: dict) -> config.RunConfig:
    return config.resolve(("flags", {"dataset": "ring8", "log_every": 2, **flags}))


def data_for(cfg: config.RunConfig, mnist_dir: str | None) -> tuple[torch.Tensor, tuple[int, ...]]:
    ds = data.load(cfg.data.dataset, mnist_dir if cfg.data.dataset == "mnist" else None, "train")
    x = training_data(cfg, ds.x[:2048].to(torch.get_default_dtype()), CPU)
    return x, ds.sample_shape


def train(cfgs: list[config.RunConfig], seeds: list[int], x: torch.Tensor, shape: tuple[int, ...], log=None):
    state = trainer.setup(cfgs[0], seeds, shape, CPU, PARALLEL if len(seeds) > 1 else None, configs=cfgs)
    logged: dict[int, list] = {k: [] for k in range(len(seeds))}

    def record(k: int, step: int, values: dict) -> None:
        logged[k].append((step, values))
        if log is not None:
            log(state, k, step)

    outcomes = trainer.train(cfgs[0], state, x, trainer.Hooks(log=record))
    return outcomes, logged, state


def stats(logged: list) -> torch.Tensor:
    return torch.tensor([[v[k] for k in STATS] for _, v in logged])


BASE_MNIST = {"dataset": "mnist", "steps": 4, "batch_size": 8}
CASES = {
    "mlp/mnist, lr and beta1": (
        {**BASE_MNIST, "arch": "mlp", "loss": "non-saturating"},
        [{"lr_g": 1e-3, "lr_d": 2e-4, "beta1": 0.5}, {"lr_g": 3e-4, "lr_d": 1e-3, "beta1": 0.9},
         {"lr_g": 2e-4, "lr_d": 2e-4, "beta1": 0.0, "beta2": 0.9}]),
    "wgan-gp, lambda": ({"loss": "wgan-gp", "steps": 6}, [{"penalty_weight": 1.0}, {"penalty_weight": 10.0},
                                                           {"penalty_weight": 0.1}]),
    "wgan, clip (RMSprop)": ({"loss": "wgan", "steps": 6}, [{"weight_clip": 0.01}, {"weight_clip": 0.1},
                                                             {"weight_clip": 0.5}]),
    "infogan/mnist, D batch norm, uniform z, lr and beta1": (
        {**BASE_MNIST, "arch": "infogan", "d_batchnorm": True, "z_dim": 16, "z_dist": "uniform", "loss": "minimax"},
        [{"lr": 1e-3, "beta1": 0.5}, {"lr": 2e-4, "beta1": 0.7}]),
    "pacgan-mlp pack 2, lr": ({"arch": "pacgan-mlp", "pack": 2, "z_dim": 2, "steps": 6},
                              [{"lr": 1e-3}, {"lr": 1e-4}]),
    "instance noise sigma": ({"loss": "least-squares", "steps": 6}, [{"instance_noise": 0.1},
                                                                       {"instance_noise": 0.5}]),
    "wgan (RMSprop), clip and an unused beta1": ({"loss": "wgan", "steps": 6}, [{"weight_clip": 0.01, "beta1": 0.5},
                                                                                {"weight_clip": 0.1, "beta1": 0.9}]),
}  # fmt: skip


@pytest.mark.parametrize("base, varied", CASES.values(), ids=CASES.keys())
def test_grouped_configurations_equal_their_sequential_twins(base, varied, mnist_dir: str, float64: None) -> None:
    cfgs = [resolve(base | v) for v in varied]
    assert len({c.config_hash() for c in cfgs}) == len(cfgs)  # different configurations
    assert len({members.shape_key(c) for c in cfgs}) == 1  # of one shape
    x, shape = data_for(cfgs[0], mnist_dir)
    seeds = list(range(len(cfgs)))[::-1]  # seeds and configurations both differ per member
    outcomes, together, group = train(cfgs, seeds, x, shape)
    assert [o.status for o in outcomes] == ["finished"] * len(cfgs)
    for k, (cfg, seed) in enumerate(zip(cfgs, seeds)):
        _, alone, single = train([cfg], [seed], x, shape)
        assert [s for s, _ in together[k]] == [s for s, _ in alone[0]]
        torch.testing.assert_close(stats(together[k]), stats(alone[0]), rtol=1e-9, atol=1e-9)
        mine, theirs = group.state_dict(k), single.state_dict(0)
        for part in ("G", "D"):
            for name in theirs[part]:
                torch.testing.assert_close(mine[part][name], theirs[part][name], rtol=1e-9, atol=1e-9)
        for opt in ("opt_g", "opt_d"):  # a member's optimiser state is its run's own, in torch's format
            assert mine[opt]["param_groups"] == theirs[opt]["param_groups"]  # fused included: resumed alone alike
    # and the members trained differently from one another
    assert not torch.allclose(stats(together[0]), stats(together[1]))


def test_a_group_with_different_learning_rates_uses_per_member_adam(float64: None) -> None:
    cfgs = [resolve({"steps": 1, "lr": lr}) for lr in (1e-3, 1e-4)]
    state = trainer.setup(cfgs[0], [0, 1], (2,), CPU, PARALLEL, configs=cfgs)
    assert isinstance(state.players.opt_g, MemberAdam)
    same = trainer.setup(cfgs[0], [0, 1], (2,), CPU, PARALLEL)  # one configuration's seeds: torch's Adam
    assert type(same.players.opt_g) is torch.optim.Adam


def test_a_members_checkpoint_moves_between_the_group_and_a_run_alone(float64: None) -> None:
    cfgs = [resolve({"loss": "wgan-gp", "steps": 8, "lr": lr, "penalty_weight": w})
            for lr, w in ((1e-3, 10.0), (1e-4, 1.0))]  # fmt: skip
    x, shape = data_for(cfgs[0], None)
    saved: dict[int, dict] = {}

    def keep(state, k: int, step: int) -> None:
        if step == 4:
            saved[k] = copy.deepcopy(state.state_dict(k))

    _, together, _ = train(cfgs, [0, 1], x, shape, log=keep)
    # member 1 continues alone from the group's checkpoint, exactly as it went on in the group
    single = trainer.setup(cfgs[1], 1, shape, CPU)
    single.load_state_dict(copy.deepcopy(saved[1]))
    logged: list = []
    trainer.train(cfgs[1], single, x, trainer.Hooks(log=lambda k, s, v: logged.append((s, v))))
    torch.testing.assert_close(stats(logged), stats([e for e in together[1] if e[0] > 4]), rtol=1e-9, atol=1e-9)
    # and both checkpoints load back into a new group, which goes on bit for bit
    group = trainer.setup(cfgs[0], [0, 1], shape, CPU, PARALLEL, configs=cfgs)
    for k in (0, 1):
        group.load_state_dict(copy.deepcopy(saved[k]), k)
    again: dict[int, list] = {0: [], 1: []}
    trainer.train(cfgs[0], group, x, trainer.Hooks(log=lambda k, s, v: again[k].append((s, v))))
    for k in (0, 1):
        assert torch.equal(stats(again[k]), stats([e for e in together[k] if e[0] > 4]))


def test_a_diverging_member_leaves_the_others_bit_for_bit() -> None:
    cfgs = [resolve({"steps": 12, "lr": lr}) for lr in (1e-3, 3e-4, 1e-4)]
    x, shape = data_for(cfgs[0], None)
    _, clean, _ = train(cfgs, [0, 1, 2], x, shape)

    def poison(state, k: int, step: int) -> None:
        if k == 1 and step == 2:  # member 1's generator turns NaN after its first log
            with torch.no_grad():
                next(iter(state.players.g_params.values()))[1].fill_(float("nan"))

    outcomes, logged, _ = train(cfgs, [0, 1, 2], x, shape, log=poison)
    assert [o.status for o in outcomes] == ["finished", "diverged", "finished"]
    assert [s for s, _ in logged[1]] == [2]
    for k in (0, 2):
        assert torch.equal(stats(logged[k]), stats(clean[k]))


def test_configurations_of_different_shapes_never_share_a_group() -> None:
    base = {"steps": 1}
    apart = [({"n_critic": 1}, {"n_critic": 2}), ({"weight_clip": 0.0}, {"weight_clip": 0.01}),
             ({"instance_noise": 0.0}, {"instance_noise": 0.1}), ({"loss": "minimax"}, {"loss": "hinge"}),
             ({"optimizer": "sgd", "lr": 1e-3}, {"optimizer": "sgd", "lr": 1e-2})]  # fmt: skip
    for a, b in apart:
        cfgs = [resolve(base | a), resolve(base | b)]
        assert members.shape_key(cfgs[0]) != members.shape_key(cfgs[1]), (a, b)
        with pytest.raises(ValueError):
            trainer.setup(cfgs[0], [0, 1], (2,), CPU, PARALLEL, configs=cfgs)
    together = ({"lr": 1e-3, "beta1": 0.5}, {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "penalty_weight": 3.0})
    assert members.shape_key(resolve(base | together[0])) == members.shape_key(resolve(base | together[1]))


def test_members_group_by_configuration_or_shape_and_start_step_capped_by_group_size() -> None:
    """exec.plan.groups, the one grouping of training, the Ray driver and the dry run: alone without
    --parallel-seeds; else a configuration's members (with --parallel-configs a shape's) that start at
    one step, in order of step (a resumed member joins those at its checkpoint's step), at most
    --group-size each."""
    from lossbench.exec.plan import groups

    a, a2, b = resolve({"lr": 1e-3}), resolve({"lr": 1e-4}), resolve({"loss": "hinge"})  # a, a2: one shape
    # (name, configuration, start step): planned order
    items = [("a0", a, 0), ("a1", a, 10), ("a2", a, 0), ("x0", a2, 0), ("b0", b, 0), ("x1", a2, 10)]

    def names(speed: SpeedConfig) -> list[list[str]]:
        return [[n for n, _, _ in g] for g in groups(items, lambda it: (it[1], it[2]), speed)]

    assert names(SpeedConfig()) == [["a0"], ["a1"], ["a2"], ["x0"], ["b0"], ["x1"]]
    assert names(PARALLEL) == [["a0", "a2"], ["x0"], ["b0"], ["a1"], ["x1"]]
    assert names(SpeedConfig(parallel_configs=True)) == [["a0", "a2", "x0"], ["b0"], ["a1", "x1"]]
    assert names(SpeedConfig(parallel_configs=True, group_size=2)) == [["a0", "a2"], ["x0"], ["b0"], ["a1", "x1"]]


# --- lossbench sweep --parallel-configs ---------------------------------------------------------

def search_suite(base: dict, keys: dict[str, tuple[str, float, float]], grid: dict | None = None) -> str:
    """A suite on ring8 (2 seeds, 500 mode samples): 2 random-search draws of `keys` (name: (distribution,
    low, high)) per point of `grid` over `base`, as TOML."""

    def lines(table: dict) -> str:
        return "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())

    return ('seeds = 2\n[base]\n' + lines({"dataset": "ring8", **base, "mode_samples": 500})
            + (f"[grid]\n{lines(grid)}" if grid else "") + "[search]\ndraws = 2\n[search.keys]\n"
            + "".join(f"{k} = {{{dist} = [{lo}, {hi}]}}\n" for k, (dist, lo, hi) in keys.items()))  # fmt: skip


SEARCH_BASE = {"steps": 20, "log_every": 10, "sample_every": 20}
SEARCH_KEYS = {"lr": ("log-uniform", 1e-4, 1e-3), "beta1": ("uniform", 0.0, 0.9)}
SEARCH_GRID = {"loss": ["non-saturating", "wgan-gp"]}
SEARCH_SUITE = search_suite(SEARCH_BASE, SEARCH_KEYS, SEARCH_GRID)


def test_a_search_sweep_trains_as_one_group_per_loss_each_member_its_own_run(store: str, tmp_path, caplog) -> None:
    from test_cli import lossbench, lossbench_here, runs_by_role

    suite = tmp_path / "search.toml"
    suite.write_text(SEARCH_SUITE)
    proc = lossbench("sweep", str(suite), "--parallel-configs", "--tracking-uri", store, "--no-progress")
    assert "4 configurations" in proc.stdout and "suite search: 8 finished" in proc.stdout
    runs = runs_by_role(store)
    assert len(runs["seed"]) == 8 and len(runs["parent"]) == 4
    assert all(r.info.status == "FINISHED" and "modes" in r.data.metrics for r in runs["seed"])
    parents = {r.info.run_id: r for r in runs["parent"]}
    for r in runs["seed"]:  # each member logged its own configuration, under its own parent
        parent = parents[r.data.tags["mlflow.parentRunId"]]
        assert all(r.data.params[k] == parent.data.params[k] for k in ("lr_g", "beta1"))
        assert r.data.params["parallel_configs"] == "True"
    assert len({(r.data.params["loss"], r.data.params["lr_g"]) for r in runs["seed"]}) == 4
    # one group per loss: its 2 settings x 2 seeds
    groups = {r.data.tags["lossbench.group"] for r in runs["seed"]}
    assert len(groups) == 2 and {r.data.tags["lossbench.group_size"] for r in runs["seed"]} == {"4"}
    assert all(len({r.data.params["loss"] for r in runs["seed"] if r.data.tags["lossbench.group"] == g}) == 1
               for g in groups)  # fmt: skip
    assert all(p.info.status == "FINISHED" for p in runs["parent"])
    # the same configurations trained one at a time end where the group left them: within float32's
    # rounding for non-saturating; wgan-gp (5 D steps per G step) amplifies it (about 6% at lr 8e-4 in
    # 20 steps), but each member still ends nearest its own twin of all its loss's settings
    alone = "sequential"
    lossbench("sweep", str(suite), "--tracking-uri", store, "--experiment", alone, "--no-progress")

    def setting(r) -> tuple:
        return tuple(r.data.params[k] for k in ("loss", "lr_g", "beta1", "seed"))

    def losses(r) -> torch.Tensor:
        return torch.tensor([r.data.metrics["d_loss"], r.data.metrics["g_loss"]])

    seq = {setting(r): r for r in runs_by_role(store, alone)["seed"]}
    assert {r.data.tags["lossbench.group_size"] for r in seq.values()} == {"1"}
    for r in runs["seed"]:
        loss, _, _, seed = setting(r)
        if loss == "non-saturating":
            torch.testing.assert_close(losses(r), losses(seq[setting(r)]), rtol=1e-3, atol=1e-4)
        same = [k for k in seq if k[0] == loss and k[3] == seed]
        assert min(same, key=lambda k: float((losses(seq[k]) - losses(r)).norm())) == setting(r)
    # nothing left to train: the rerun only reads the store, in this process (a subprocess costs its imports)
    again = lossbench_here("sweep", str(suite), "--parallel-configs", "--tracking-uri", store, "--no-progress",
                           caplog=caplog)  # fmt: skip
    assert again.returncode == 0 and "8 finished, 0 to run" in again.stdout, again.stderr[-2000:]


def test_a_group_size_of_zero_is_refused_in_one_line(store: str, tmp_path, caplog) -> None:
    from test_cli import lossbench_here, runs_by_role  # refused before any compute: in this process

    suite = tmp_path / "search.toml"
    suite.write_text(SEARCH_SUITE)
    proc = lossbench_here("sweep", str(suite), "--parallel-configs", "--group-size", "0", "--tracking-uri", store,
                          caplog=caplog)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip() == "Error: --group-size must be >= 1 (members trained together), got 0"
    alone = lossbench_here("sweep", str(suite), "--group-size", "2", "--tracking-uri", store, caplog=caplog)
    assert alone.returncode != 0 and alone.stderr.strip() == (
        "Error: --group-size bounds the groups of --parallel-seeds or --parallel-configs: give one")
    assert not runs_by_role(store)["seed"]


def test_the_dry_run_shows_each_members_group(store: str, tmp_path, caplog) -> None:
    """In this process (a dry run computes nothing; five subprocesses cost 25-30 s of imports): the
    command's own dry run as a process is tests/test_cli.py's test_dry_run_prints_resolved_config."""
    import json

    from test_cli import lossbench_here, runs_by_role

    suite = tmp_path / "search.toml"
    suite.write_text(SEARCH_SUITE)

    def dry_run(*flags: str):
        proc = lossbench_here("sweep", str(suite), "--dry-run", *flags, "--tracking-uri", store, caplog=caplog)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        return proc

    def groups(*flags: str) -> list[int]:
        return [json.loads(line)["group"] for line in dry_run("--format", "json", *flags).stdout.splitlines()]

    # planned order: 2 non-saturating settings x 2 seeds, then 2 wgan-gp settings x 2 seeds
    assert groups() == list(range(8))  # one at a time
    assert groups("--parallel-seeds") == [0, 0, 1, 1, 2, 2, 3, 3]  # a configuration's seeds
    assert groups("--parallel-configs") == [0] * 4 + [1] * 4  # one group per loss: its draws share a shape
    assert groups("--parallel-configs", "--group-size", "3") == [0, 0, 0, 1, 2, 2, 2, 3]
    text = dry_run("--parallel-configs").stdout
    assert "groups (--parallel-configs): 2 (2 of 4 members); estimated" in text
    assert not runs_by_role(store)["seed"]


def test_a_suite_that_cannot_train_in_groups_is_refused_before_any_run(store: str, tmp_path, caplog) -> None:
    from test_cli import lossbench_here, runs_by_role  # refused before any compute: in this process

    suite = tmp_path / "spectral.toml"
    suite.write_text(search_suite({**SEARCH_BASE, "d_norm": "spectral"}, SEARCH_KEYS, SEARCH_GRID))
    proc = lossbench_here("sweep", str(suite), "--parallel-configs", "--tracking-uri", store, "--no-progress",
                          caplog=caplog)  # fmt: skip
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("Error: --parallel-seeds, --parallel-configs and --whole-step do not "
                                          "support d_norm=spectral")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert runs_by_role(store) == {"parent": [], "seed": []}  # not even a parent run


KILL_BASE = {"penalty": "gp", "steps": 120, "log_every": 20, "sample_every": 120, "checkpoint_every": 20}
KILL_KEYS = {"lr": ("log-uniform", 1e-4, 1e-3), "penalty_weight": ("uniform", 1.0, 10.0)}
KILL_SUITE = search_suite({"loss": "non-saturating", **KILL_BASE}, KILL_KEYS)


def test_a_group_killed_and_resumed_equals_an_uninterrupted_one(store: str, tmp_path, new_store) -> None:
    import signal
    import subprocess
    import sys

    from mlflow import MlflowClient
    from test_cli import lossbench, runs_by_role
    from test_reliability import final_metrics, wait_for_checkpoint

    suite = tmp_path / "kill.toml"
    suite.write_text(KILL_SUITE)
    args = ["sweep", str(suite), "--parallel-configs", "--no-progress"]
    ckpts = tmp_path / "ckpt"
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", *args, "--tracking-uri", store, "--checkpoint-dir",
                             str(ckpts)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for_checkpoint(proc, ckpts)
    assert proc.poll() is None, "the sweep finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = {(r.data.params["lr_g"], r.data.params["seed"]): r.info.run_id for r in runs_by_role(store)["seed"]}
    assert len(killed) == 4  # two draws x two seeds started together

    resume = lossbench("-v", "sweep", str(suite), "--parallel-configs", "--no-progress", "--tracking-uri", store,
                       "--checkpoint-dir", str(ckpts))  # fmt: skip
    continued = dict(re.findall(r"continuing run ([0-9a-f]+) at step (\d+)", resume.stderr))
    assert continued.keys() == set(killed.values()) and len(set(continued.values())) == 1
    resumed = {(r.data.params["lr_g"], r.data.params["seed"]): r for r in runs_by_role(store)["seed"]}
    assert {k: r.info.run_id for k, r in resumed.items()} == killed  # every member went on in its own run
    assert all(r.info.status == "FINISHED" and r.data.tags["lossbench.group_size"] == "4" for r in resumed.values())

    reference = new_store(tmp_path / "ref" / "mlflow.db")  # made by copying: a new store's migrations cost seconds
    lossbench(*args, "--tracking-uri", reference, "--checkpoint-dir", str(tmp_path / "c2"))
    ref = {(r.data.params["lr_g"], r.data.params["seed"]): r for r in runs_by_role(reference)["seed"]}
    a, b = MlflowClient(tracking_uri=store), MlflowClient(tracking_uri=reference)
    keys = ["d_loss", "g_loss", "penalty", "modes", "high_quality"]
    for k in killed:
        assert final_metrics(a, resumed[k].info.run_id, keys) == final_metrics(b, ref[k].info.run_id, keys)


def test_members_evaluated_together_score_as_each_alone(mnist_dir: str, tmp_path) -> None:
    from lossbench.config import build_models
    from lossbench.exec.evaluation import make_evaluator

    cfg = resolve({**BASE_MNIST, "arch": "mlp", "metrics": "fid,kid", "fid_samples": 10})
    train_set = data.load("mnist", mnist_dir, "train")
    evaluate = make_evaluator(cfg, CPU, mnist_dir, train_set, tmp_path, show=False)
    Gs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        Gs.append(build_models(cfg, train_set.sample_shape)[0])
    alone = [evaluate(G, seed, 7) for G, seed in zip(Gs, (3, 4))]
    together = evaluate.members(Gs, [3, 4], 7)  # one stream of extractor batches, split back per member
    assert len({round(a["fid"], 3) for a in alone}) == 2  # two different generators
    for a, t in zip(alone, together):
        assert a.keys() == t.keys() == {"fid", "kid_mean", "kid_std"}
        for key in a:
            assert t[key] == pytest.approx(a[key], rel=1e-4, abs=1e-6), key


def test_members_features_extracted_together_are_each_ones_alone() -> None:
    """exec.evaluation._member_features: the members' i-th batches go through the extractor as one
    chunk (in its batches), one extraction over all chunks, and each member gets back exactly the
    features its own batches give alone, in its order; the progress counts every image."""
    from test_metrics import constant_images, toy_extractor

    from lossbench.exec.evaluation import _member_features
    from lossbench.metrics import features as metrics

    levels = [[10, 11, 12, 13, 14], [20, 21, 22, 23, 24], [30, 31, 32, 33, 34]]  # member k's images, 3 + 2
    streams = [iter([constant_images(lv[:3]), constant_images(lv[3:])]) for lv in levels]
    calls: list[int] = []
    done: list[int] = []
    together = _member_features(toy_extractor(calls), streams, done.append)
    assert calls == [7, 2, 6] and done == [9, 6]  # chunks of 9 and 6 images, the extractor's batches of 7
    for lv, features in zip(levels, together):
        alone = metrics.fake_features(toy_extractor([]), iter([constant_images(lv)]))
        assert features.logits.argmax(1).tolist() == lv
        assert torch.equal(features.pool, alone.pool) and torch.equal(features.logits, alone.logits)


def test_ctrl_c_in_a_later_group_leaves_the_earlier_groups_parents_finished(store: str, tmp_path) -> None:
    import signal
    import subprocess
    import sys
    import time

    from test_cli import runs_by_role

    suite = tmp_path / "two.toml"
    two_losses = {"loss": ["non-saturating", "least-squares"]}  # two groups, one after the other
    suite.write_text(search_suite({**KILL_BASE, "steps": 300}, KILL_KEYS, two_losses))
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "sweep", str(suite), "--parallel-configs",
                             "--no-progress", "--tracking-uri", store, "--checkpoint-dir", str(tmp_path / "ckpt")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    started = deadline = time.time()
    deadline += 300
    while True:  # until the first group's four runs have ended and the second group's have started
        try:  # the sweep makes the store: read it once it is there
            runs = runs_by_role(store)["seed"] if time.time() > started + 8 else []
        except Exception:  # noqa: BLE001 - a store still being created
            runs = []
        first = [r for r in runs if r.data.tags.get("lossbench.loss") == "non-saturating"]
        second = [r for r in runs if r.data.tags.get("lossbench.loss") == "least-squares"]
        if len(first) == 4 and all(r.info.status == "FINISHED" for r in first) and second:
            break
        assert proc.poll() is None, proc.stderr.read()
        assert time.time() < deadline, "the first group did not finish"
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "continue with --resume" in err
    parents = runs_by_role(store)["parent"]
    status = {r.data.params["loss"]: set() for r in parents}
    for r in parents:
        status[r.data.params["loss"]].add(r.info.status)
    assert status == {"non-saturating": {"FINISHED"}, "least-squares": {"KILLED"}}
    assert all("modes_mean" in r.data.metrics for r in parents if r.data.params["loss"] == "non-saturating")

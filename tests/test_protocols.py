"""The papers' protocols: Lucic et al. 2018 (infogan nets, z 64 uniform, Adam, epochs, test split,
random search over the paper's ranges) and PacGAN (pacgan-mlp, packing), and the options they are
built from: --z-dist, --epochs, --pack, --d-batchnorm, the DRAGAN point, the search's per-loss keys."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from torch import nn

from lossbench.cli import main
from lossbench.config import RunConfig, epochs_to_steps, resolve
from lossbench.errors import ConfigError
from lossbench.exec import suites
from lossbench.gan import latent, models, penalties
from lossbench.train.players import pack
from lossbench.train.state import training_data


def cli(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


# --- Lucic et al. 2018: every protocol field of the suite against the paper ----------------------

LUCIC_LOSSES = {"minimax", "non-saturating", "least-squares", "wgan", "wgan-gp", "dragan"}
UNPENALISED = {"minimax", "non-saturating", "least-squares", "wgan"}


@pytest.fixture(scope="module")
def lucic() -> suites.Suite:
    return suites.load("lucic2018")


def test_lucic2018_suite_is_compare_gans_protocol(lucic: suites.Suite) -> None:
    assert (lucic.seeds, lucic.reseeds, lucic.best_by) == (1, 50, "best_fid")  # best FID over checkpoints, x 50
    assert lucic.search is not None and (lucic.search.draws, lucic.search.replay) == (100, "compare_gan")
    assert {c.loss.loss for c in lucic.configs} == LUCIC_LOSSES
    assert {c.data.dataset for c in lucic.configs} == {"mnist", "fashion-mnist", "cifar10"}
    assert len(lucic.configs) == 6 * 3 * 100
    for c in lucic.configs:
        assert (c.model.arch, c.model.z_dim, c.model.z_dist) == ("infogan", 64, "uniform")
        assert (c.train.optimizer, c.train.beta2, c.train.batch_size, c.train.pack) == ("adam", 0.999, 64, 1)
        assert (c.metrics.reference_split, c.metrics.fid_samples) == ("test", 10000)
        assert "fid" in c.metrics.metrics
        # compare_gan's epoch of 50,000 examples: 20 (CIFAR-10: 100) * 50000 // 64 D steps
        epochs = 100 if c.data.dataset == "cifar10" else 20
        assert (c.train.epochs, c.train.epoch_samples) == (epochs, 50000)
        assert c.train.steps * c.train.n_critic == epochs * 50000 // 64  # 15,625 or 78,125: 5^k, exact
        assert c.metrics.eval_every == 5 * 50000 // 64 // c.train.n_critic  # save_checkpoint_steps 3,906
        assert c.train.lr_g == c.train.lr_d and 1e-5 <= c.train.lr_g <= 1e-2
        assert 0.0 <= c.train.beta1 < 1.0 and c.train.n_critic in (1, 5)
        assert c.train.g_noise == ("fresh" if c.loss.loss == "wgan-gp" else "d-step")
        if c.loss.loss == "wgan":
            assert 1e-3 <= c.train.weight_clip <= 1.0
        else:
            assert c.train.weight_clip == 0.0
        if c.loss.loss in ("wgan-gp", "dragan"):
            assert 0.1 <= c.loss.penalty_weight <= 100.0 and c.model.d_batchnorm_penalty
            assert c.loss.penalty == {"wgan-gp": "gp", "dragan": "dragan"}[c.loss.loss]
        else:
            assert c.loss.penalty == "none"


def test_lucic2018_searches_disc_iters_in_1_5_and_batch_norm_for_every_loss(lucic: suites.Suite) -> None:
    for loss in LUCIC_LOSSES:
        mine = [c for c in lucic.configs if c.loss.loss == loss and c.data.dataset == "mnist"]
        assert {c.train.n_critic for c in mine} == {1, 5}, loss  # AddRange("disc_iters", 1, [1, 5], discrete)
        assert {c.model.d_batchnorm for c in mine} == {True, False}, loss  # WGAN-GP and DRAGAN too
        lrs = [c.train.lr_g for c in mine]
        assert min(lrs) < 1e-4 and max(lrs) > 1e-3  # log-uniform over three decades
    # every data set re-seeds: the same 100 settings per loss on each
    by = {d: [c.train.lr_g for c in lucic.configs if c.loss.loss == "dragan" and c.data.dataset == d]
          for d in ("mnist", "fashion-mnist", "cifar10")}  # fmt: skip
    assert by["mnist"] == by["fashion-mnist"] == by["cifar10"] and len(set(by["mnist"])) == 100


def test_lucic2018_mnist_is_the_first_draws_of_lucic2018(lucic: suites.Suite) -> None:
    small = suites.load("lucic2018-mnist")
    assert small.reseeds == 5 and small.search is not None and small.search.draws == 6
    assert {c.data.dataset for c in small.configs} == {"mnist"} and len(small.configs) == 36
    assert {c.config_hash() for c in small.configs} <= {c.config_hash() for c in lucic.configs}


def test_pacgan2018_suite_is_the_authors_protocol() -> None:
    spec = suites.load("pacgan2018")
    assert spec.seeds == 10
    assert {(c.data.dataset, c.train.pack) for c in spec.configs} == {
        (d, m) for d in ("ring8", "grid25") for m in (1, 2, 3, 4)}  # fmt: skip
    for c in spec.configs:
        assert (c.loss.loss, c.model.arch) == ("non-saturating", "pacgan-mlp")
        assert (c.model.z_dim, c.model.z_dist) == (2, "normal")
        assert (c.train.batch_size, c.train.lr_g, c.train.lr_d, c.train.beta1) == (100, 1e-4, 1e-4, 0.8)
        assert (c.train.epochs, c.train.steps) == (400, 400 * 1000)  # 100,000 packed inputs at batch 100
        assert (c.metrics.metrics, c.metrics.mode_samples, c.metrics.mode_threshold) == (("modes",), 2500, 1)


# --- epochs ---------------------------------------------------------------------------------------


def test_epochs_convert_to_generator_steps_as_compare_gan_counts() -> None:
    assert epochs_to_steps("mnist", 20, 64, 1) == 20 * 937
    assert epochs_to_steps("mnist", 20, 64, 5) == 20 * 937 // 5
    assert epochs_to_steps("cifar10", 100, 64, 1) == 100 * 781
    packed = resolve(("t", {"dataset": "ring8", "epochs": 400, "batch_size": 100, "pack": 2}))
    assert packed.train.steps == 400_000  # packed: an epoch is N packed inputs
    cfg = resolve(("flags", {"epochs": 2, "n_critic": 2}))
    assert (cfg.train.epochs, cfg.train.steps) == (2, 937)
    assert resolve(("json", cfg.flat())) == cfg  # a resolved configuration's flat form resolves to itself


def test_the_higher_layer_budget_wins_and_one_layer_may_not_set_both() -> None:
    assert resolve(("suite", {"epochs": 1}), ("flags", {"steps": 10})).train.steps == 10
    assert resolve(("suite", {"epochs": 1}), ("flags", {"steps": 10})).train.epochs == 0
    assert resolve(("suite", {"steps": 10}), ("flags", {"epochs": 1})).train.steps == 937
    with pytest.raises(ConfigError, match="set either 'steps' or 'epochs', not both"):
        resolve(("flags", {"epochs": 1, "steps": 10}))


def test_cli_dry_run_shows_steps_and_epochs_and_refuses_both(tmp_path: Path) -> None:
    result = cli("run", "--epochs", "3", "--dry-run", "--tracking-uri", f"sqlite:///{tmp_path}/m.db")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout[result.stdout.index("{"): result.stdout.rindex("}") + 1])
    shown = shown.get("config", shown)
    assert (shown["epochs"], shown["steps"]) == (3, 3 * 937)
    bad = cli("run", "--epochs", "3", "--steps", "10", "--dry-run")
    assert bad.exit_code != 0 and "not both" in bad.stderr and "Traceback" not in bad.output
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("flags, message", [
    (["--pack", "0"], "'pack' must be >= 1"),
    (["--epochs", "-1"], "'epochs' must be >= 0"),
    (["--epochs", "-1", "--steps", "2"], "'epochs' must be >= 0"),
    (["--z-dist", "cauchy"], "unknown z-dist 'cauchy'"),
    (["--d-batchnorm", "true", "--arch", "mlp"], "has no batch norm in D"),
    (["--d-batchnorm", "true", "--arch", "infogan", "--loss", "wgan-gp"], "d_batchnorm with penalty 'gp'"),
    (["--g-noise", "last"], "'g_noise' must be fresh or d-step"),
    (["--dataset", "dirac", "--pack", "2"], "takes no packing"),
])  # fmt: skip
def test_bad_protocol_options_are_one_line(flags: list[str], message: str, tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = cli("run", *flags, "--dry-run", "--tracking-uri", f"sqlite:///{store}/m.db")
    assert result.exit_code != 0 and message in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1 and not store.exists()


# --- latent distributions -------------------------------------------------------------------------


def test_uniform_latent_is_u_minus_one_one() -> None:
    z = latent.sample("uniform", (200_000, 4), torch.Generator().manual_seed(0), "cpu")
    assert z.min() >= -1 and z.max() < 1
    assert abs(z.mean().item()) < 0.01 and z.var().item() == pytest.approx(1 / 3, rel=0.01)
    n = latent.sample("normal", (200_000, 4), torch.Generator().manual_seed(0), "cpu")
    assert n.var().item() == pytest.approx(1.0, rel=0.01) and n.abs().max() > 3


def test_generate_draws_from_the_generators_own_latent() -> None:
    G, _ = models.build("mlp2d", (2,), 3, z_dist="uniform")

    class Echo(nn.Module):  # G(z) = z[:, :2]: shows which z it was given
        def __init__(self) -> None:
            super().__init__()
            self.unused = nn.Parameter(torch.zeros(()))  # generate reads the device off a parameter

        def forward(self, z: torch.Tensor) -> torch.Tensor:
            return z[:, :2]

    echo = Echo()
    echo.z_dist = G.z_dist
    pts = models.generate(echo, 5000, 3, torch.Generator().manual_seed(0))
    assert pts.min() >= -1 and pts.max() < 1 and pts.var().item() == pytest.approx(1 / 3, rel=0.1)


# --- infogan ----------------------------------------------------------------------------------------


def test_infogan_shapes_sigmoid_range_and_data_range() -> None:
    for shape in ((1, 28, 28), (3, 32, 32)):
        G, D = models.build("infogan", shape, 64, z_dist="uniform", d_batchnorm=True)
        z = latent.sample("uniform", (8, 64), torch.Generator().manual_seed(0), "cpu")
        x = G(z)
        assert x.shape == (8, *shape) and x.min() >= 0 and x.max() <= 1  # sigmoid output, as the paper's
        assert D(x).shape == (8,) and models.has_batch_statistics(D)
        assert not models.has_batch_statistics(models.build("infogan", shape, 64)[1])
        out = models.generate(G, 16, 64, torch.Generator().manual_seed(0))
        G.eval()
        z = latent.sample("uniform", (16, 64), torch.Generator().manual_seed(0), "cpu")
        torch.testing.assert_close(out, 2 * G(z) - 1)  # mapped back to [-1, 1] for the metrics
    cfg = resolve(("t", {"arch": "infogan"}))
    data = torch.tensor([[-1.0, 0.0, 1.0]])
    assert training_data(cfg, data, torch.device("cpu")).tolist() == [[0.0, 0.5, 1.0]]  # D sees [0, 1] data
    assert training_data(resolve(("t", {"arch": "dcgan"})), data, torch.device("cpu")).tolist() == data.tolist()


# --- packing ----------------------------------------------------------------------------------------


def test_pack_concatenates_consecutive_samples_along_the_first_sample_axis() -> None:
    x = torch.arange(12.0).view(1, 6, 2)  # one seed, six 2-D points
    packed = pack(x, 3, batch_dim=1)
    assert packed.shape == (1, 2, 6)
    assert packed[0, 0].tolist() == [0, 1, 2, 3, 4, 5] and packed[0, 1].tolist() == [6, 7, 8, 9, 10, 11]
    images = torch.arange(4 * 2 * 2.0).view(4, 1, 2, 2)
    assert torch.equal(pack(images, 2)[1], torch.cat([images[2], images[3]]))  # channels of samples 2, 3
    assert pack(x, 1, batch_dim=1) is x


def test_packed_discriminators_take_pack_times_the_input() -> None:
    for arch, shape in (("mlp2d", (2,)), ("pacgan-mlp", (2,)), ("dcgan", (1, 28, 28)), ("infogan", (3, 32, 32))):
        G, D = models.build(arch, shape, 2, pack=3)
        fake = G(torch.randn(12, 2))
        assert D(pack(fake, 3)).shape == (4,)


def test_gradient_penalty_on_packed_inputs_is_per_packed_input() -> None:
    """A linear critic on packs of 2 points: ||grad|| is the norm of the whole packed weight."""
    w = torch.tensor([3.0, 0.0, 0.0, 4.0])  # ||w|| = 5
    critic = lambda x: x @ w  # noqa: E731
    real, fake = pack(torch.randn(8, 2), 2), pack(torch.randn(8, 2), 2)
    value = penalties.get("gp")(critic, real, fake, torch.Generator().manual_seed(0))
    assert value.item() == pytest.approx((5.0 - 1.0) ** 2)


def test_pacgan_mlp_is_the_authors_net() -> None:
    torch.manual_seed(0)
    G, D = models.build("pacgan-mlp", (2,), 2, pack=2)
    linears = [m for m in G.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features, m.bias is not None) for m in linears] == [
        (2, 400, False), (400, 400, False), (400, 400, False), (400, 400, False), (400, 2, True)]  # fmt: skip
    assert sum(isinstance(m, nn.BatchNorm1d) for m in G.modules()) == 4
    maxouts = [m for m in D.modules() if isinstance(m, models.Maxout)]
    assert [(m.linear.in_features, m.units, m.pieces) for m in maxouts] == [(4, 200, 5), (200, 200, 5), (200, 200, 5)]
    weights = torch.cat([m.weight.flatten() for m in D.modules() if isinstance(m, nn.Linear)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)  # N(0, 0.02^2), as PacGAN initialises
    x = torch.tensor([[1.0, -2.0, 0.5, 3.0]])
    m = maxouts[0]
    assert torch.equal(m(x), m.linear(x).view(1, 200, 5).amax(-1))


def test_packed_runs_train_through_the_cli(tmp_path: Path, store: str) -> None:
    uri = store  # the template's copy: a new store's migrations cost seconds
    result = cli("run", "--dataset", "ring8", "--arch", "pacgan-mlp", "--pack", "2", "--z-dim", "2", "--steps", "4",
                 "--log-every", "2", "--mode-samples", "300", "--tracking-uri", uri, "--checkpoint-dir",
                 str(tmp_path / "ck"), "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    from lossbench.tracking import Tracker

    cfg = resolve(("t", {"dataset": "ring8", "arch": "pacgan-mlp", "pack": 2, "z_dim": 2, "steps": 4, "log_every": 2,
                         "mode_samples": 300}))  # fmt: skip
    (r,) = [r for r in Tracker(uri, "lossbench").seed_results({cfg.config_hash()}) if r.finished]
    assert "modes" in r.metrics  # the run of this configuration (its hash holds pack and arch) finished


# --- DRAGAN: the gradient point lies on the segment [x, x_p] -----------------------------------------


def test_dragan_takes_the_gradient_on_the_segment_between_x_and_its_perturbation() -> None:
    """With D(x) = ||x||^2 / 2, grad D(x_hat) = x_hat, so the penalty reads off where x_hat is."""
    critic = lambda x: 0.5 * x.pow(2).sum(dim=1)  # noqa: E731
    dragan = penalties.get("dragan")
    assert dragan.noise == ("elementwise", "per-sample")
    x = torch.randn(6, 3, generator=torch.Generator().manual_seed(1))
    noise = torch.rand(6, 3, generator=torch.Generator().manual_seed(2))
    x_p = x + 0.5 * x.std() * noise

    def at(points: torch.Tensor) -> float:
        return (points.norm(dim=1) - 1).pow(2).mean().item()

    zeros, ones = torch.zeros(6, 1), torch.ones(6, 1)
    assert dragan(critic, x, x, u=(noise, zeros)).item() == pytest.approx(at(x), rel=1e-6)  # alpha 0: at x
    assert dragan(critic, x, x, u=(noise, ones)).item() == pytest.approx(at(x_p), rel=1e-6)  # alpha 1: at x_p
    alpha = torch.rand(6, 1, generator=torch.Generator().manual_seed(3))
    assert dragan(critic, x, x, u=(noise, alpha)).item() == pytest.approx(at(x + alpha * (x_p - x)), rel=1e-6)
    u = dragan.draw(x, torch.Generator().manual_seed(0))
    assert u is not None and [t.shape for t in u] == [(6, 3), (6, 1)]  # alpha: one per sample


# --- the search's per-loss keys, the lr alias and per-data-set keys -----------------------------------

CONDITIONAL = """seeds = 1
[base]
dataset = "mnist"
arch = "mlp"
steps = 10
[grid]
loss = ["minimax", "wgan", "wgan-gp"]
dataset = ["mnist", "ring8"]
[by-dataset.ring8]
arch = "mlp2d"
[search]
draws = 4
seed = 3
[search.keys]
lr = {{log-uniform = [1e-5, 1e-2]}}
[search.by-loss.wgan]
weight_clip = {{log-uniform = [1e-3, 1.0]}}
{extra}"""


def test_by_loss_keys_are_drawn_only_for_their_loss(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(CONDITIONAL.format(extra=""))
    spec = suites.load(str(path))
    assert len(spec.configs) == 3 * 2 * 4
    by_loss: dict[str, list[RunConfig]] = {}
    for c in spec.configs:
        by_loss.setdefault(c.loss.loss, []).append(c)
        assert c.train.lr_g == c.train.lr_d  # the alias sets both
        assert c.model.arch == ("mlp2d" if c.data.dataset == "ring8" else "mlp")  # [by-dataset]
    assert all(1e-3 <= c.train.weight_clip <= 1 for c in by_loss["wgan"])
    assert {c.train.weight_clip for c in by_loss["minimax"]} == {0.0}
    assert {c.train.weight_clip for c in by_loss["wgan-gp"]} == {0.0}
    assert [c.train.lr_g for c in by_loss["minimax"]] == [c.train.lr_g for c in by_loss["wgan"]]


@pytest.mark.parametrize("extra, message", [
    ("[search.by-loss.hinge]\nlr_d = {log-uniform = [1e-5, 1e-2]}", "no configuration of this suite has loss 'hinge'"),
    ("[search.by-loss.nope]\nlr_d = {log-uniform = [1e-5, 1e-2]}", "unknown loss 'nope'"),
    ("[search.by-loss.minimax]\nlr = {log-uniform = [1e-5, 1e-2]}", "in both [search.keys] and [search.by-loss."),
    ("[search.by-loss.minimax]\nwarp = {uniform = [0, 1]}", "[search.by-loss.minimax]: unknown key 'warp'"),
    ("[by-dataset.cifar10]\nsteps = 5", "no configuration of this suite uses data set 'cifar10'"),
])  # fmt: skip
def test_bad_conditional_search_is_one_line(extra: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    text = CONDITIONAL.format(extra="")
    if extra.startswith("[by-dataset"):
        text = text.replace("[search]", extra + "\n[search]")
    else:
        text += extra + "\n"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        suites.load(str(path))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_lr_alias() -> None:
    assert resolve(("t", {"lr": 3e-4})).train.lr_g == resolve(("t", {"lr": 3e-4})).train.lr_d == 3e-4
    assert (resolve(("t", {"lr": "1e-3,2e-4"})).train.lr_g, resolve(("t", {"lr": "1e-3,2e-4"})).train.lr_d) == (
        1e-3, 2e-4)  # fmt: skip
    with pytest.raises(ConfigError, match="'lr' must be 2 finite numbers"):
        resolve(("t", {"lr": math.nan}))


def test_report_labels_name_the_packing() -> None:
    from lossbench.report.build import _label

    assert _label({"loss": "non-saturating", "pack": "2"}) == "non-saturating pack 2"
    assert _label({"loss": "non-saturating", "pack": "1"}) == "non-saturating"


def test_sweep_estimates_time_a_step_once_per_cost_and_scale_by_each_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Configurations that differ in learning rate and budget (a random search over epochs and n_critic
    changes the steps) share one timing; each estimate keeps its own steps."""
    from lossbench.exec import estimate as estimate_mod
    from lossbench.exec import sweep as sweep_mod

    timed: list[RunConfig] = []
    monkeypatch.setattr(estimate_mod, "steps_per_s", lambda cfg, *a, **k: timed.append(cfg) or 100.0)
    base = {"dataset": "ring8", "metrics": "none"}
    cfgs = [resolve(("t", base | {"lr": 1e-4, "steps": 100})), resolve(("t", base | {"lr": 1e-3, "epochs": 2})),
            resolve(("t", base | {"lr": 1e-3, "steps": 50, "n_critic": 2}))]  # fmt: skip
    planned = [sweep_mod.Planned(c, (0, 1), 0) for c in cfgs]
    found = sweep_mod.estimates(planned, torch.device("cpu"), None)
    assert len(timed) == 2  # n_critic changes the cost of a step; lr and budget do not
    assert [e.steps for e in found] == [100, 2 * (100_000 // 64), 50]
    assert found[1].train_s == pytest.approx(2 * 2 * (100_000 // 64) / 100.0)


def test_infogan_runs_finish_through_the_cli(tmp_path: Path, store: str) -> None:
    """infogan's G starts with batch norm over a linear layer: the end-of-run sample grid and the
    evaluation must run it in eval mode (one sample through training-mode batch norm fails)."""
    uri = store  # the template's copy: a new store's migrations cost seconds
    result = cli("run", "--dataset", "mnist", "--arch", "infogan", "--z-dist", "uniform", "--z-dim", "64",
                 "--d-batchnorm", "true", "--steps", "2", "--log-every", "1", "--fid-samples", "8", "--metrics", "kid",
                 "--tracking-uri", uri, "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    from lossbench.tracking import Tracker

    cfg = resolve(("t", {"dataset": "mnist", "arch": "infogan", "z_dist": "uniform", "z_dim": 64, "d_batchnorm": True,
                         "steps": 2, "log_every": 1, "fid_samples": 8, "metrics": "kid"}))  # fmt: skip
    (r,) = Tracker(uri, "lossbench").seed_results({cfg.config_hash()})
    assert r.finished and "kid_mean" in r.metrics


def test_a_dry_run_never_downloads(tmp_path: Path, store: str) -> None:
    """A plan over a data set that is not on this machine says so and writes nothing into the data root."""
    suite = tmp_path / "s.toml"
    suite.write_text('seeds = 1\n[base]\nsteps = 10\nmetrics = "none"\n[grid]\n'
                     'dataset = ["fashion-mnist", "ring8"]\n')  # fmt: skip
    empty = tmp_path / "data"
    empty.mkdir()
    result = cli("sweep", str(suite), "--dry-run", "--data-dir", str(empty), "--tracking-uri", store)  # template's copy
    assert result.exit_code == 0, result.output
    assert "fashion-mnist is not under" in result.stderr and "not timed" in result.stdout
    assert "1 configuration not timed" in result.stdout and "steps/s" in result.stdout  # ring8 still timed
    assert "timing the plan: 2 configurations on cpu: done in" in result.stderr  # a long timing shows itself
    assert "  no penalty " in result.stdout  # the penalty column in words, not "nonex0"
    assert list(empty.iterdir()) == []


# --- compare_gan's schedule, batch norm with a penalty, G's noise (Lucic et al. 2018) -------------


def test_compare_gan_epoch_and_evaluation_schedule() -> None:
    """TuneParams: training_steps = 20 * 50000 // 64 D steps, save_checkpoint_steps = 5 * 50000 // 64."""
    assert epochs_to_steps("mnist", 20, 64, 1, epoch_samples=50000) == 15625
    assert epochs_to_steps("mnist", 20, 64, 5, epoch_samples=50000) == 3125
    assert epochs_to_steps("cifar10", 100, 64, 1, epoch_samples=50000) == 78125
    cfg = resolve(("suite", {"epochs": 20, "epoch_samples": 50000, "eval_epochs": 5, "n_critic": 5}))
    assert (cfg.train.steps, cfg.metrics.eval_every) == (3125, 781)
    assert resolve(("json", cfg.flat())) == cfg  # its flat form resolves to itself
    # a higher layer's eval_every wins over a lower layer's eval_epochs
    assert resolve(("suite", {"eval_epochs": 5}), ("flags", {"eval_every": 10})).metrics.eval_every == 10
    assert resolve(("d", {})).config_hash() == resolve(("d", {"epoch_samples": 0, "eval_epochs": 0, "g_noise": "fresh",
                                                       "d_batchnorm_penalty": False})).config_hash()  # fmt: skip


def test_sweep_dry_run_shows_the_evaluation_schedule(store: str) -> None:
    result = cli("sweep", "lucic2018-mnist", "--dry-run", "--format", "json", "--loss", "wgan",
                 "--tracking-uri", store)  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == 6 and {r["n_critic"] for r in rows} == {1, 5}
    for r in rows:  # 4 evaluations every 5 epochs (3,906 D steps) and the final one
        assert (r["steps"] * r["n_critic"], r["eval_every"]) == (15625, 3906 // r["n_critic"])
        assert r["evaluations"] == 5


def test_batch_norm_with_a_gradient_penalty_is_compare_gans() -> None:
    """compare_gan's WGAN_GP and DRAGAN call D on the penalty's points alone, in training mode, and take
    tf.gradients of the summed outputs: the gradient runs through that batch's own mean and variance.
    Allowed only with d_batchnorm_penalty; the penalty equals that computation by hand."""
    with pytest.raises(ConfigError, match="d_batchnorm with penalty 'gp'"):
        resolve(("t", {"arch": "infogan", "loss": "wgan-gp", "d_batchnorm": True}))
    cfg = resolve(("t", {"arch": "infogan", "loss": "wgan-gp", "d_batchnorm": True, "d_batchnorm_penalty": True}))
    assert cfg.model.d_batchnorm and cfg.loss.penalty == "gp"
    torch.manual_seed(0)
    _, D = models.build("infogan", (1, 28, 28), 64, "none", d_batchnorm=True)
    real, fake, a = torch.rand(8, 1, 28, 28), torch.rand(8, 1, 28, 28), torch.rand(8, 1, 1, 1)
    got = penalties.PENALTIES.get("gp").fn(D, real, fake, (a,))
    x_hat = (a * real + (1 - a) * fake).requires_grad_(True)
    (g,) = torch.autograd.grad(D(x_hat).sum(), x_hat)  # through the batch statistics of x_hat
    assert got.item() == pytest.approx((g.flatten(1).norm(dim=1) - 1).pow(2).mean().item(), rel=1e-5)
    # the batch's coupling counts: sample 0's own output alone has another gradient at x_0
    (own,) = torch.autograd.grad(D(x_hat)[0].sum(), x_hat)
    assert not torch.allclose(own[0], g[0], atol=1e-6)


def test_g_noise_d_step_reuses_the_d_steps_z_and_draws_nothing() -> None:
    from lossbench.train.loop import Draws

    def draws(reuse: bool) -> Draws:
        return Draws(torch.zeros(10, 2), [{"noise": torch.Generator().manual_seed(3)}], 4, 5, reuse_d_noise=reuse)

    fresh, reuse = draws(False), draws(True)
    z_fresh, z_reuse = fresh.noise(), reuse.noise()
    assert torch.equal(z_fresh, z_reuse)
    assert torch.equal(reuse.g_noise(), z_reuse)  # G's step on the D step's z
    g_fresh = fresh.g_noise()
    assert not torch.equal(g_fresh, z_fresh)  # a fresh draw
    assert torch.equal(reuse.noise(), g_fresh)  # reuse drew nothing for G: its next D step takes draw 2


@pytest.mark.slow  # about a minute of CPU (Inception at five evaluations)
def test_best_fid_is_the_min_over_a_runs_evaluations_and_its_generator_is_kept(
        tmp_path: Path, feature_cache: Path) -> None:
    """compare_gan's number is the best FID over a run's checkpoints (BestFIDPerModel): best_fid is the
    min over every logged fid, best_fid_step its step, and weights/generator_best.pt scores exactly it
    (each evaluation draws its own stream, eval/<step>). The run is the protocol's: infogan with batch
    norm in D and WGAN-GP through it, G on the D step's z, evaluations on a schedule."""
    from lossbench.exec.evaluation import make_evaluator
    from lossbench.gan import data
    from lossbench.tracking import Tracker

    uri = f"sqlite:///{tmp_path}/m.db"
    flags = {"dataset": "mnist", "arch": "infogan", "z_dist": "uniform", "z_dim": 64, "loss": "wgan-gp",
             "d_batchnorm": True, "d_batchnorm_penalty": True, "g_noise": "d-step", "lr": 0.01, "steps": 8,
             "eval_every": 2, "log_every": 2, "fid_samples": 16, "metrics": "fid", "reference_split": "test"}
    args = [a for k, v in flags.items() if k != "lr" for a in (f"--{k.replace('_', '-')}", str(v))]
    result = cli("run", *args, "--lr-g", "0.01", "--lr-d", "0.01", "--seed-start", "4", "--tracking-uri", uri,
                 "--checkpoint-dir", str(tmp_path / "ck"), "--no-progress")  # fmt: skip
    assert result.exit_code == 0, result.output
    cfg = resolve(("t", flags))
    tracker = Tracker(uri, "lossbench")
    (r,) = tracker.seed_results({cfg.config_hash()})
    history = [(m.value, m.step) for m in tracker.metric_history(r.run_id, "fid")]
    assert len(history) == 4  # steps 2, 4, 6 and the final 8
    assert (r.metrics["best_fid"], r.metrics["best_fid_step"]) == min(history)
    assert min(history)[1] not in (6, 8)  # this seed's best is neither its last evaluation nor its last in training
    best = Path(tracker.client.download_artifacts(r.run_id, "weights/generator_best.pt", str(tmp_path / "dl")))
    G, _ = models.build("infogan", (1, 28, 28), 64, "none", z_dist="uniform", d_batchnorm=True)
    G.load_state_dict(torch.load(best))
    train_set = data.load("mnist", None, "train")
    evaluate = make_evaluator(cfg, torch.device("cpu"), None, train_set, feature_cache, show=False)
    assert evaluate(G, 4, int(min(history)[1]))["fid"] == pytest.approx(min(history)[0], rel=1e-4)


def test_report_labels_name_the_optimiser_and_batching() -> None:
    """Two configurations that differ only by optimiser (or batching) get different report labels;
    the card's optimiser and iid batches (also when a run predates the field) are not named."""
    from lossbench.report.build import _label

    assert _label({"loss": "minimax", "optimizer": "sgd"}) == "minimax sgd"
    assert _label({"loss": "minimax", "optimizer": "adam"}) == _label({"loss": "minimax"}) == "minimax"
    assert _label({"loss": "wgan", "optimizer": "rmsprop", "n_critic": "5"}) == "wgan"  # its card's optimiser
    assert _label({"loss": "wgan", "optimizer": "adam", "n_critic": "5"}) == "wgan adam"
    assert _label({"loss": "non-saturating", "batching": "epoch"}) == "non-saturating epoch batches"
    assert _label({"loss": "non-saturating", "batching": "iid"}) == "non-saturating"

"""Configuration layering, validation and hashing."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossbench import config
from lossbench.errors import ConfigError


def test_card_defaults_then_file_then_flags() -> None:
    cfg = config.resolve(("file", {"loss": "wgan-gp", "n_critic": 3, "steps": 10}), ("flags", {"steps": 20}))
    assert cfg.loss.penalty == "gp" and cfg.loss.penalty_weight == 10.0  # card
    assert cfg.train.beta1 == 0.0 and cfg.train.lr_d == 1e-4  # card
    assert cfg.train.n_critic == 3  # file over card
    assert cfg.train.steps == 20  # flags over file


def test_penalty_override_is_one_flag() -> None:
    cfg = config.resolve(("flags", {"loss": "wgan-gp", "penalty": "r1", "penalty_weight": 0.5}))
    assert (cfg.loss.penalty, cfg.loss.penalty_weight) == ("r1", 0.5)


def test_auto_arch_and_metrics_follow_dataset() -> None:
    assert config.resolve(("f", {"dataset": "ring8"})).model.arch == "mlp2d"
    assert config.resolve(("f", {"dataset": "ring8"})).metrics.metrics == ("modes",)
    assert config.resolve(("f", {"dataset": "mnist"})).metrics.metrics == ("fid", "is", "kid")
    assert config.resolve(("f", {"dataset": "cifar10"})).model.arch == "dcgan"


@pytest.mark.parametrize(
    "values, message",
    [
        ({"stpes": 10}, "flags: unknown key 'stpes' (did you mean 'steps'?)"),
        ({"steps": "ten"}, "'steps' must be an integer"),
        ({"steps": 0}, "'steps' must be >= 1"),
        ({"lr_g": -1.0}, "'lr_g' must be > 0"),
        ({"loss": "hinj"}, "did you mean 'hinge'"),
        ({"dataset": "mnsit"}, "did you mean 'mnist'"),
        ({"penalty": "gpp"}, "did you mean 'gp'"),
        ({"arch": "dcgan", "dataset": "ring8"}, "arch 'dcgan' needs 28x28 or 32x32 images"),
        ({"d_norm": "spectrall"}, "did you mean 'spectral'"),
        ({"metrics": "fid", "dataset": "ring8"}, "does not apply to 2-D point data"),
        ({"fid_samples": 1}, "'fid_samples' must be >= 2"),
        ({"fid_samples": 60001}, "fid_samples=60001 is larger than the reference set (mnist train: 60000 images)"),
        ({"fid_samples": 10001, "reference_split": "test"}, "larger than the reference set (mnist test: 10000"),
        ({"beta1": 1.0}, "'beta1' must be in [0, 1)"),
    ],
)
def test_bad_values_are_one_clear_error(values: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config.resolve(("flags", values))
    assert message in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "layers, message",
    [
        ([("a.toml", {"loss": "minmax"}), ("command line", {"steps": 5})], "a.toml: unknown loss 'minmax'"),
        ([("a.toml", {"loss": "hinge"}), ("command line", {"loss": "minmax"})], "unknown loss 'minmax'"),
        ([("a.toml", {"steps": -3}), ("command line", {"loss": "hinge"})], "a.toml: 'steps' must be >= 1, got -3"),
        ([("a.toml", {"steps": 3}), ("command line", {"steps": -3})], "'steps' must be >= 1, got -3"),
        ([("a.toml", {"lr": 1e-3, "lr_g": 2e-3})], "a.toml: 'lr' sets lr_g and lr_d; 'lr_g' is set too"),
        ([("a.toml", {"dataset": "ring8"}), ("b.toml", {"beta1": 1.0})], "b.toml: 'beta1' must be in [0, 1)"),
        ([("a.toml", {"dataset": "mnsit"})], "a.toml: unknown dataset 'mnsit'"),
        ([("a.toml", {"penalty": "gpp"})], "a.toml: unknown penalty 'gpp'"),
        ([("a.toml", {"optimizer": "adamm"})], "a.toml: unknown optimizer 'adamm'"),
        ([("a.toml", {"dataset": "ring8"}), ("b.toml", {"arch": "dcgan"})], "b.toml: arch 'dcgan' needs 28x28"),
        ([("a.toml", {"dataset": "ring8"}), ("b.toml", {"metrics": "fid"})], "b.toml: metric 'fid' does not apply"),
        ([("a.toml", {"dataset": "ring8", "arch": "mlp2d"}), ("command line", {"dataset": "mnist"})],
         "a.toml: arch 'mlp2d' is for 2-D points"),
        ([("a.toml", {"arch": "mlp"}), ("b.toml", {"z_dist": "unifrom"})], "b.toml: unknown z-dist 'unifrom'"),
        ([("a.toml", {"arch": "mlp"}), ("b.toml", {"d_norm": "spectrall"})], "b.toml: unknown d-norm 'spectrall'"),
        ([("a.toml", {"arch": "mlp"}), ("b.toml", {"d_batchnorm": True})], "b.toml: arch 'mlp' has no batch norm"),
    ],
)  # fmt: skip
def test_errors_name_the_file_that_set_the_value(layers: list, message: str) -> None:
    """A value from a file is named with its file; a flag names itself (no prefix)."""
    with pytest.raises(ConfigError) as info:
        config.resolve(*layers)
    assert str(info.value).startswith(message), str(info.value)


@pytest.mark.parametrize(
    "values, expected",
    [
        ({}, "781a6d108a2e6d43"),  # every default: non-saturating, mlp, mnist
        ({"loss": "minimax"}, "659f4a52609688d9"),  # the design card's command (reports/design-card/runs.csv)
        ({"loss": "minimax", "steps": 1000, "fid_samples": 200}, "04f38e8f6045e88c"),  # the README's quick start
        ({"dataset": "ring8", "loss": "wgan-gp"}, "03dfb13cd9663966"),  # a data set at revision 1
    ],
)
def test_config_hash_is_the_one_stores_already_hold(values: dict, expected: str) -> None:
    """Stored runs are found by this hash (--resume, skipping finished seeds, report grouping): a new
    field left out of ADDED_FIELDS, a changed serialisation or a dropped data revision would move
    every configuration to a new hash and orphan every store. Change these only with a migration."""
    assert config.resolve(("command line", values)).config_hash() == expected


def test_lr_alias_sets_both_rates_in_its_own_layer() -> None:
    cfg = config.resolve(("a.toml", {"lr": 1e-3}), ("command line", {"lr_g": 2e-3}))
    assert (cfg.train.lr_g, cfg.train.lr_d) == (2e-3, 1e-3)  # a higher layer may refine one of them


def test_hash_is_stable_and_ignores_execution_settings() -> None:
    a = config.resolve(("flags", {"loss": "hinge", "steps": 100}))
    b = config.resolve(("file", {"loss": "hinge"}), ("flags", {"steps": 100}))
    assert a == b and a.config_hash() == b.config_hash()
    assert a.config_hash() != config.resolve(("flags", {"loss": "hinge", "steps": 101})).config_hash()
    assert "seed" not in a.flat() and "device" not in a.flat()


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('loss = "least-squares"\nsteps = 7\n')
    assert config.resolve(("file", config.load_file(path))).train.steps == 7
    path.write_text("steps = [\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        config.load_file(path)
    with pytest.raises(ConfigError, match="cannot read"):
        config.load_file(tmp_path / "missing.toml")


def test_plugin_loss_loads_only_when_the_command_line_names_it() -> None:
    """A plugin named by a file is refused before any import; the flag's own layer, or --allow-plugin
    (Plugins.allowed), admits it; load=False (a dry run) checks the form and imports nothing."""
    from lossbench.plugins import Plugins

    spec = "no_such_module_anywhere:Loss"  # importing it would fail: a refusal must come first
    with pytest.raises(ConfigError, match=f"a.toml: loss '{spec}' is a plugin: .* add --allow-plugin {spec} "):
        config.resolve(("a.toml", {"loss": spec, "dataset": "ring8"}))
    with pytest.raises(ConfigError, match=f"cannot load loss '{spec}'"):  # asked for: imported (and missing)
        config.resolve((config.COMMAND_LINE, {"loss": spec, "dataset": "ring8"}))
    with pytest.raises(ConfigError, match=f"cannot load loss '{spec}'"):
        config.resolve(("a.toml", {"loss": spec, "dataset": "ring8"}), plugins=Plugins(frozenset({spec})))
    dry = Plugins.from_flags((spec,), dry_run=True)
    assert config.resolve(("a.toml", {"loss": spec, "dataset": "ring8"}), plugins=dry).loss.loss == spec
    with pytest.raises(ConfigError, match="plugin loss 'a-b:C' must be package.module:Name"):
        config.resolve((config.COMMAND_LINE, {"loss": "a-b:C"}), plugins=dry)


def test_execution_options_name_seeds_one_way() -> None:
    """ExecConfig.seeds is the tuple of seeds; --seeds N --seed-start S is ExecConfig.counted, with the
    flags' own error lines (a count past the cap refused before any tuple is built)."""
    from lossbench.options import ExecConfig, describe_exec

    assert ExecConfig.counted(3, 5).seeds == (5, 6, 7) and ExecConfig().seeds == (0,)
    assert describe_exec(ExecConfig.counted(2, 4, device="cpu"))["seeds"] == [4, 5]
    for count, start, message in [(0, 0, "'seeds' must be >= 1, got 0"), (10**12, 0, "'seeds' must be <= 1000, got "
                                  "1000000000000"), (1, -1, "'seed_start' must be >= 0, got -1")]:  # fmt: skip
        with pytest.raises(ConfigError, match=f"^{message}$"):
            ExecConfig.counted(count, start)
    with pytest.raises(TypeError, match="a tuple of seeds"):
        ExecConfig(seeds=4)  # a count is not a seeds form
    for seeds in [(), tuple(range(1001)), (0, -1)]:
        with pytest.raises(ConfigError, match="seeds"):
            ExecConfig(seeds=seeds)

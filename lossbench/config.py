"""Typed, frozen configuration and the one function that resolves it.

Layers, lowest first: dataclass field defaults < the loss's card (registry/losses/<loss>.toml)
< a config file (`--config`, or a suite entry) < command-line flags. Every field name is unique
across sections, so files and flags use flat keys (`loss = "hinge"`, `steps = 2000`). Unknown keys
and ill-typed values are errors, never silently dropped. Past this module nothing re-checks or
re-defaults: the resolved `RunConfig` is what is printed, logged and hashed. How and where it runs
(seeds, device, folders, store, fast paths) is lossbench.options's business, never part of the hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lossbench import cards
from lossbench.errors import ConfigError
from lossbench.gan import batches, data, losses, models, optim, penalties, update_rules
from lossbench.metrics import registry as metrics_registry
from lossbench.plugins import Plugins, is_plugin
from lossbench.registry import unknown_name_message


@dataclass(frozen=True)
class LossConfig:
    loss: str = "non-saturating"  # registry name, or package.module:Class
    penalty: str = "none"  # registry name of the penalty on D
    penalty_weight: float = 0.0  # lambda (gp, dragan) or gamma (r1, r2: gamma/2 E||grad D||^2)
    instance_noise: float = 0.0  # sigma of Gaussian noise on every input of D, real and fake; 0 = off


@dataclass(frozen=True)
class ModelConfig:
    arch: str = "auto"  # "auto": the data set's default architecture
    z_dim: int = 100  # latent size
    z_dist: str = "normal"  # latent distribution: normal (N(0, 1)) | uniform (U(-1, 1)), per coordinate
    d_batchnorm: bool = False  # batch norm in D where the architecture has it (infogan); with a penalty, see below
    d_batchnorm_penalty: bool = False  # allow d_batchnorm with an input-gradient penalty, as compare_gan ran it
    d_norm: str = "none"  # normalisation of D's weights: none | spectral
    dirac_theta: float = 1.0  # arch dirac: initial theta of G(z) = theta
    dirac_psi: float = 1.0  # arch dirac: initial psi of D(x) = psi * x
    g_bn_stats: str = "batch"  # G's batch norm: over all batch_size * pack samples | pack-slot: per slot (PacGAN)


@dataclass(frozen=True)
class DataConfig:
    dataset: str = "mnist"


@dataclass(frozen=True)
class TrainConfig:
    steps: int = 2000  # budget, in generator steps
    epochs: int = 0  # alternative budget: passes of D over the training set (steps derived); 0 = use steps
    epoch_samples: int = 0  # examples in an epoch (compare_gan: 50000 on MNIST); 0 = the training set's size
    batch_size: int = 64
    n_critic: int = 1  # D steps per G step
    updates: str = "alternating"  # update rule: alternating | simultaneous (lossbench.train.updates)
    consensus: float = 0.0  # consensus optimisation's gamma (simultaneous updates only); 0 = off
    pack: int = 1  # PacGAN packing: D sees `pack` samples concatenated (Lin et al. 2018); 1 = off
    batching: str = "iid"  # real batches: iid | epoch | epoch-bootstrap (lossbench.gan.batches)
    optimizer: str = "adam"  # adam | rmsprop | sgd (lossbench.gan.optim)
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5  # Adam only
    beta2: float = 0.999  # Adam only
    weight_clip: float = 0.0  # clip D's weights to [-c, c] after each D step; 0 = off (WGAN)
    g_noise: str = "fresh"  # G's step: fresh (its own z) | d-step (the z of the D step before it, as compare_gan)
    log_every: int = 50  # steps between reads of the loss accumulators
    sample_every: int = 500  # steps between sample grids
    checkpoint_every: int = 500  # steps between checkpoints
    ema: float = 0.0  # beta of an exponential moving average of G's weights, evaluated beside G; 0 = off


@dataclass(frozen=True)
class MetricConfig:
    metrics: tuple[str, ...] = ()  # empty: the data set's defaults (fid, is, kid / modes)
    fid_samples: int = 10000  # generated samples per evaluation (Lucic et al. 2018)
    eval_every: int = 0  # generator steps between evaluations; 0 = only at the end
    eval_epochs: int = 0  # alternative: epochs between evaluations (eval_every derived as steps are); 0 = off
    reference_split: str = "train"  # real statistics from train or test
    mode_samples: int = 2500  # 2-D mixtures: generated points scored for modes (VEEGAN, PacGAN)
    mode_threshold: int = 1  # 2-D mixtures: high-quality samples that capture a mode (PacGAN's code: 1)


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's results, except the seed."""

    loss: LossConfig = field(default_factory=LossConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    metrics: MetricConfig = field(default_factory=MetricConfig)

    def flat(self) -> dict[str, Any]:
        """Flat {field: value}, the form of files, flags and MLflow params."""
        out: dict[str, Any] = {}
        for section in fields(self):
            out.update(dataclasses.asdict(getattr(self, section.name)))
        out["metrics"] = list(out["metrics"])
        return out

    def config_hash(self) -> str:
        """Stable across processes and machines: identical configurations share it. Fields added
        since 0.1 enter it only when they differ from their default, so earlier stores stay valid; a
        data set's revision (lossbench.gan.data) enters it once the data set has changed, so runs on
        its earlier data are never taken for runs on the current one."""
        flat = {k: v for k, v in self.flat().items() if not (k in ADDED_FIELDS and v == ADDED_FIELDS[k])}
        if revision := data.DATASETS.get(self.data.dataset).revision:  # the data changed since revision 0
            flat["data_revision"] = revision
        blob = json.dumps(flat, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


# fields added after 0.1 -> their default (left out of the configuration hash at that value)
ADDED_FIELDS: dict[str, Any] = {
    "instance_noise": 0.0, "dirac_theta": 1.0, "dirac_psi": 1.0, "z_dist": "normal", "d_batchnorm": False,
    "epochs": 0, "pack": 1, "mode_samples": 2500, "mode_threshold": 1, "updates": "alternating", "consensus": 0.0,
    "batching": "iid", "g_bn_stats": "batch", "d_batchnorm_penalty": False, "epoch_samples": 0, "g_noise": "fresh",
    "eval_epochs": 0, "ema": 0.0,
}  # fmt: skip

_SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(RunConfig)[f.name] for f in fields(RunConfig)}
# flat key -> (section attribute, field type)
KEYS: dict[str, tuple[str, Any]] = {
    f.name: (section, typing.get_type_hints(cls)[f.name]) for section, cls in _SECTIONS.items() for f in fields(cls)
}
_POSITIVE = {"steps", "batch_size", "n_critic", "z_dim", "log_every", "sample_every", "checkpoint_every", "pack",
             "mode_samples", "mode_threshold"}  # fmt: skip
_NON_NEGATIVE = {"penalty_weight", "weight_clip", "eval_every", "instance_noise", "epochs", "epoch_samples",
                 "eval_epochs", "consensus"}
# a key that stands for several fields: dirac_init = "theta,psi" (or [theta, psi]); lr = one number for
# both players (lr_g = lr_d, as compare_gan's single learning rate), or "g,d"
ALIASES: dict[str, tuple[str, ...]] = {"dirac_init": ("dirac_theta", "dirac_psi"), "lr": ("lr_g", "lr_d")}
_BROADCAST = {"lr"}  # aliases whose one number sets every field


def _expand_aliases(values: dict[str, Any], where: str) -> dict[str, Any]:
    out = {k: v for k, v in values.items() if k not in ALIASES}
    for alias, targets in ALIASES.items():
        if values.get(alias) is None:
            continue
        raw = values[alias]
        parts = [p.strip() for p in raw.split(",")] if isinstance(raw, str) else raw
        if alias in _BROADCAST and (isinstance(parts, (int, float)) or len(parts) == 1) and not isinstance(parts, bool):
            parts = [parts if isinstance(parts, (int, float)) else parts[0]] * len(targets)
        try:
            numbers = [float(p) for p in parts] if isinstance(parts, (list, tuple)) else []
        except (TypeError, ValueError):
            numbers = []
        if len(numbers) != len(targets) or not all(map(math.isfinite, numbers)):
            raise ConfigError(f"{where}: '{alias}' must be {len(targets)} finite numbers "
                              f"({','.join(targets)}), got {raw!r}")  # fmt: skip
        both = [t for t in targets if values.get(t) is not None]
        if both:  # which one was meant is not ours to guess
            raise ConfigError(f"{where}: '{alias}' sets {' and '.join(targets)}; '{both[0]}' is set too: "
                              "set one of them (a suite's tables merge into one layer)")
        out |= dict(zip(targets, numbers))
    return out


def _coerce(key: str, value: Any, kind: Any, where: str) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{where}: '{key}' must be {expected}, got {value!r}")

    if kind is bool:
        if not isinstance(value, bool):
            if isinstance(value, str) and value.lower() in ("true", "false"):
                return value.lower() == "true"
            raise bad("true or false")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad("a number")
        return float(value)
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise bad("an integer")
        return value
    if kind is str:
        if not isinstance(value, str):
            raise bad("a string")
        return value
    # tuple[str, ...]
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise bad("a list of names")
    return tuple(value)


def check_keys(values: dict[str, Any], where: str) -> None:
    for key in values:
        if key not in KEYS and key not in ALIASES:
            raise ConfigError(f"{where}: {unknown_name_message('key', key, list(KEYS))}")


def resolve(*layers: tuple[str, dict[str, Any]], plugins: Plugins = Plugins()) -> RunConfig:
    """Build the RunConfig from (source name, {flat key: value}) layers, lowest precedence first.

    The loss card is inserted below all given layers once the loss name is known. A plugin loss
    (package.module:Name) is imported only when the command line named it (lossbench.plugins): in
    the COMMAND_LINE layer or in `plugins.allowed`; with plugins.load False its name's form is checked.
    """
    layers = tuple((where, _expand_aliases(values, where)) for where, values in layers)
    for where, values in layers:
        check_keys(values, where)
    loss_name, loss_where = LossConfig.loss, COMMAND_LINE
    for where, values in layers:
        if values.get("loss") is not None:
            loss_name, loss_where = values["loss"], where
    if not isinstance(loss_name, str):
        raise _named(loss_where, ConfigError(f"'loss' must be a string, got {loss_name!r}"))
    try:
        if not is_plugin(loss_name) or plugins.admit(loss_name, on_command_line=loss_where == COMMAND_LINE):
            losses.check(loss_name)  # unknown loss: clear error with the closest name (built by train.setup)
    except ConfigError as exc:
        raise _named(loss_where, exc) from None
    card_defaults = cards.loss_card(loss_name).get("defaults", {})
    card_where = f"registry/losses/{loss_name}.toml"
    check_keys(card_defaults, card_where)

    merged: dict[str, tuple[Any, str]] = {}
    level: dict[str, int] = {}  # key -> the layer that set it (0: the card)
    for i, (where, values) in enumerate([(card_where, card_defaults), *layers]):
        for key, value in values.items():
            if value is not None:
                merged[key], level[key] = (value, where), i
    # the budget: the higher layer's steps or epochs wins; one layer that sets both must agree (a
    # resolved configuration's own flat form carries both)
    both = "epochs" in level and level["epochs"] == level.get("steps") and merged["epochs"][0] != 0
    if level.get("steps", -1) > level.get("epochs", -1):
        merged.pop("epochs", None)
    if level.get("eval_every", -1) > level.get("eval_epochs", -1):  # the same for the evaluation schedule
        merged.pop("eval_epochs", None)

    sections: dict[str, dict[str, Any]] = {name: {} for name in _SECTIONS}
    for key, (value, where) in merged.items():
        section, kind = KEYS[key]
        sections[section][key] = _coerce(key, value, kind, where)

    dataset = sections["data"].get("dataset", DataConfig.dataset)
    try:
        source = data.DATASETS.get(dataset)
    except ConfigError as exc:
        raise _blamed(exc, merged) from None
    if sections["model"].get("arch", "auto") == "auto":
        sections["model"]["arch"] = source.default_arch
    if not sections["metrics"].get("metrics"):
        sections["metrics"]["metrics"] = source.default_metrics or metrics_registry.defaults_for(
            points=not source.needs_files
        )

    t = sections["train"]
    per_epoch = [t.get(k, getattr(TrainConfig, k)) for k in ("batch_size", "n_critic", "epoch_samples")]
    if (e := sections["metrics"].get("eval_epochs")) and e > 0:
        sections["metrics"]["eval_every"] = epochs_to_steps(dataset, e, *per_epoch)
    if sections["train"].get("epochs"):
        steps = epochs_to_steps(dataset, t["epochs"], *per_epoch)
        if both and t["epochs"] > 0 and t.get("steps") != steps:  # a negative count: validate names it
            raise ConfigError(f"{merged['epochs'][1]}: set either 'steps' or 'epochs', not both ({t['epochs']} "
                              f"epochs are {steps} steps here, not {t.get('steps')})")  # fmt: skip
        t["steps"] = steps
    cfg = RunConfig(**{name: cls(**sections[name]) for name, cls in _SECTIONS.items()})
    try:
        validate(cfg)
    except ConfigError as exc:
        raise _blamed(exc, merged) from None
    return cfg


G_NOISE = ("fresh", "d-step")  # TrainConfig.g_noise
COMMAND_LINE = "command line"  # the layer of flags: its errors need no prefix, the flag names itself


def _blamed(exc: ConfigError, merged: dict[str, tuple[Any, str]]) -> ConfigError:
    """exc named with the file that set its key (a flag names itself; an error without one key, as is)."""
    return _named(merged[exc.key][1], exc) if exc.key in merged else exc


def _named(where: str, exc: ConfigError) -> ConfigError:
    """exc with the layer that set its value in front, unless that is the command line or already said."""
    message = str(exc)
    if where == COMMAND_LINE or message.startswith(where):
        return exc
    return ConfigError(f"{where}: {message}", key=exc.key)


def epochs_to_steps(dataset: str, epochs: int, batch_size: int, n_critic: int, epoch_samples: int = 0) -> int:
    """Generator steps of `epochs` passes of D over the N training samples, as compare_gan and PacGAN
    count them: an epoch is floor(N / batch_size) D steps, and G steps once every n_critic D steps:

        steps = max(1, floor(epochs * floor(N / batch_size) / n_critic))

    With `epoch_samples` E > 0 an epoch is E examples, counted as compare_gan's TuneParams counts
    them (`20 * epoch // BATCH_SIZE`, epoch = 50000 on MNIST: 15,625 D steps):

        steps = max(1, floor(floor(epochs * E / batch_size) / n_critic))

    Packing does not enter it: each of D's batch_size inputs is then `pack` samples, so an epoch
    reads pack * N samples, as PacGAN's data set holds N packed examples (its
    GaussianPackingMixture), one pass of which is its epoch.
    """
    if epochs < 0 or min(batch_size, n_critic) < 1:
        return 1  # validate names the bad key
    if epoch_samples > 0:
        return max(1, epochs * epoch_samples // batch_size // n_critic)
    n = data.size(dataset, "train")
    return max(1, epochs * (n // batch_size) // n_critic)


def validate(cfg: RunConfig) -> None:
    """Ranges and names; each failure is one line naming the key and what was expected, with the key
    in ConfigError.key where one key is at fault (registries and the models' shape checks set it too)."""
    flat = cfg.flat()
    for key, (_, kind) in KEYS.items():  # nan and inf parse as numbers (flags, TOML) but are never meant
        if kind is float and not math.isfinite(flat[key]):
            raise ConfigError(f"'{key}' must be a finite number, got {flat[key]}", key=key)
    for key in _POSITIVE:
        if flat[key] < 1:
            raise ConfigError(f"'{key}' must be >= 1, got {flat[key]}", key=key)
    for key in _NON_NEGATIVE:
        if flat[key] < 0:
            raise ConfigError(f"'{key}' must be >= 0, got {flat[key]}", key=key)
    for key in ("lr_g", "lr_d"):
        if not flat[key] > 0:
            raise ConfigError(f"'{key}' must be > 0, got {flat[key]}", key=key)
    for key in ("beta1", "beta2", "ema"):
        if not 0 <= flat[key] < 1:
            raise ConfigError(f"'{key}' must be in [0, 1), got {flat[key]}", key=key)
    penalty = penalties.PENALTIES.get(cfg.loss.penalty)
    if cfg.model.d_batchnorm and penalty.input_gradient and not cfg.model.d_batchnorm_penalty:  # two keys at fault
        raise ConfigError(f"d_batchnorm with penalty '{cfg.loss.penalty}': a gradient penalty needs each sample's "
                          f"own grad_x D(x), which batch norm in D mixes across the batch; switch one off (or set "
                          f"d_batchnorm_penalty = true for compare_gan's protocol)")  # fmt: skip
    if cfg.train.g_noise not in G_NOISE:
        raise ConfigError(f"'g_noise' must be {' or '.join(G_NOISE)}, got {cfg.train.g_noise!r}", key="g_noise")
    source = data.DATASETS.get(cfg.data.dataset)
    if source.archs and cfg.model.arch not in source.archs:
        raise ConfigError(f"data set '{cfg.data.dataset}' takes arch {' or '.join(source.archs)}, "
                          f"not '{cfg.model.arch}'", key="arch")  # fmt: skip
    with torch.device("meta"):  # shape check only: no memory, no RNG
        build_models(cfg)
    optim.OPTIMIZERS.get(cfg.train.optimizer)
    update_rules.check(cfg.train.updates, cfg.train.n_critic, cfg.train.consensus)
    batches.BATCHINGS.get(cfg.train.batching)
    if cfg.train.batching != "iid" and (n := data.size(cfg.data.dataset)) < cfg.train.batch_size:
        raise ConfigError(f"batching '{cfg.train.batching}' reads batches of {cfg.train.batch_size} without "
                          f"replacement; data set '{cfg.data.dataset}' holds {n}", key="batch_size")  # fmt: skip
    if cfg.metrics.reference_split not in ("train", "test"):
        raise ConfigError(f"'reference_split' must be train or test, got {cfg.metrics.reference_split!r}",
                          key="reference_split")  # fmt: skip
    points = not source.needs_files
    metrics_registry.check(cfg.metrics.metrics, points=points, dataset=cfg.data.dataset)
    if not points and metrics_registry.evaluates(cfg.metrics.metrics):  # the one check of the sample count
        n, split = cfg.metrics.fid_samples, cfg.metrics.reference_split
        if n < 2:
            raise ConfigError(f"'fid_samples' must be >= 2, got {n}", key="fid_samples")
        if n > (size := data.size(cfg.data.dataset, split)):
            raise ConfigError(f"fid_samples={n} is larger than the reference set ({cfg.data.dataset} {split}: "
                              f"{size} images)", key="fid_samples")  # fmt: skip


def build_models(cfg: RunConfig, sample_shape: tuple[int, ...] | None = None) -> tuple[nn.Module, nn.Module]:
    """G and D as the configuration names them, for samples of `sample_shape` (default: its data
    set's); their initial weights come from torch's global generator (train.setup forks it per seed)."""
    m = cfg.model
    shape = sample_shape or data.DATASETS.get(cfg.data.dataset).sample_shape
    return models.build(m.arch, shape, m.z_dim, m.d_norm, z_dist=m.z_dist, pack=cfg.train.pack,
                        d_batchnorm=m.d_batchnorm, dirac_theta=m.dirac_theta, dirac_psi=m.dirac_psi,
                        g_bn_stats=m.g_bn_stats)  # fmt: skip


def load_file(path: str | Path) -> dict[str, Any]:
    """A run config file (TOML, flat keys as in a suite entry)."""
    values = cards.read_toml(Path(path))
    check_keys(values, str(path))
    return values


def to_json(cfg: RunConfig) -> str:
    return json.dumps(cfg.flat(), indent=2, sort_keys=True)


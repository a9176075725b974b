"""compare_gan's own hyperparameter draws, replayed: draw k of a loss here is draw k there.

Lucic et al. 2018 drew their settings with google/compare_gan (commit 623f646,
`compare_gan/src/generate_tasks_lib.py` and `params.py`): `GetTasks` seeds Python's global `random`
with 123, then `TuneParams(ALL_GANS, dataset, 100, 1, "wide")` walks the models in the order

    GAN, GAN_MINMAX, WGAN, WGAN_GP, DRAGAN, VAE, LSGAN, BEGAN

and gives each 100 samples: the model's own default setting first (no draw), then 99 calls of
`GetSample`, which draws the model's parameters in sorted name order, one `random()` each:

    discrete (Python 2's random.choice):  seq[int(random() * len(seq))]
    continuous (random.uniform):          v = lo + (hi - lo) * random()
    log scale:                            10 ** v, v drawn as above over the exponents [lo, hi]

Python 2's Mersenne Twister seeded with an int, its `random()` and `uniform` are Python 3's; only
`choice` differs (Python 3 draws through getrandbits), so it is computed from `random()` here. VAE
and BEGAN are not lossbench losses but consume their draws, so the models after them stay aligned.
Every data set re-seeds (one GetTasks call per experiment), so MNIST, Fashion-MNIST and CIFAR-10
draw the same 100 settings per model.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

from lossbench.errors import ConfigError

SEED = 123  # GetTasks: random.seed(123)
SAMPLES = 100  # TuneParams(..., num_samples=100, ...): the default, then 99 draws
ORDER = ("GAN", "GAN_MINMAX", "WGAN", "WGAN_GP", "DRAGAN", "VAE", "LSGAN", "BEGAN")  # ALL_GANS
LOSSES = {"GAN": "non-saturating", "GAN_MINMAX": "minimax", "WGAN": "wgan", "WGAN_GP": "wgan-gp",
          "DRAGAN": "dragan", "LSGAN": "least-squares"}  # fmt: skip  # compare_gan model -> lossbench loss
KEYS = {"beta1": "beta1", "learning_rate": "lr", "disc_iters": "n_critic", "discriminator_batchnorm": "d_batchnorm",
        "weight_clipping": "weight_clip", "lambda": "penalty_weight"}  # fmt: skip  # its name -> our key
# per model, what it does besides its draws: WGAN_GP's resample_before_generator() draws a fresh z for
# G's step; every other model's G step reuses the z of its D step (abstract_gan.run_single_train_step)
FIXED = {model: {"g_noise": "fresh" if model == "WGAN_GP" else "d-step"} for model in LOSSES}


@dataclass(frozen=True)
class Param:
    default: Any
    range: tuple[Any, ...]  # the choices (discrete), or [lo, hi] (of the exponent, on a log scale)
    log: bool = False
    discrete: bool = False


def _wide(beta1: float, lr: float, disc_iters: int, bn: bool, **extra: Param) -> dict[str, Param]:
    """params.GetDefaultWideRange with the model's UpdateDefaults, plus its own ranges."""
    return {"beta1": Param(beta1, (0.0, 1.0)), "learning_rate": Param(lr, (-5.0, -2.0), log=True),
            "disc_iters": Param(disc_iters, (1, 5), discrete=True),
            "discriminator_batchnorm": Param(bn, (True, False), discrete=True), **extra}  # fmt: skip


_LAMBDA = Param(10.0, (-1.0, 2.0), log=True)
PARAMS: dict[str, dict[str, Param]] = {  # params.GetParameters(model, dataset, "wide")
    "GAN": _wide(0.0, 0.00005, 1, True),
    "GAN_MINMAX": _wide(0.0, 0.00005, 1, True),
    "WGAN": _wide(0.5, 0.00005, 5, True, weight_clipping=Param(0.01, (-3.0, 0.0), log=True)),
    "WGAN_GP": _wide(0.5, 0.0001, 5, False, **{"lambda": _LAMBDA}),
    "DRAGAN": _wide(0.5, 0.0001, 1, True, **{"lambda": _LAMBDA}),
    "VAE": _wide(0.5, 0.00005, 1, True),
    "LSGAN": _wide(0.5, 0.0002, 1, True),
    "BEGAN": _wide(0.5, 0.0001, 5, False, **{"lambda": Param(0.001, (-4.0, -2.0), log=True),
                                             "gamma": Param(0.75, (0.0, 1.0))}),
}


def _sample(params: dict[str, Param], rng: random.Random) -> dict[str, Any]:
    """generate_tasks_lib.GetSample: one random() per parameter, in sorted name order."""
    out = {}
    for name, p in sorted(params.items()):
        if p.discrete:
            out[name] = p.range[int(rng.random() * len(p.range))]  # Python 2's random.choice
        else:
            lo, hi = p.range
            v = lo + (hi - lo) * rng.random()  # random.uniform
            out[name] = math.pow(10, v) if p.log else v
    return out


def samples() -> dict[str, list[dict[str, Any]]]:
    """Per compare_gan model, its 100 settings in compare_gan's names, as TuneParams made them."""
    rng, out = random.Random(SEED), {}
    for model in ORDER:
        params = PARAMS[model]
        out[model] = [{k: p.default for k, p in params.items()}] + [_sample(params, rng) for _ in range(SAMPLES - 1)]
    return out


_CACHE: dict[str, list[dict[str, Any]]] = {}


def settings(loss: str, draws: int) -> list[dict[str, Any]]:
    """The first `draws` settings of a lossbench loss, as flat lossbench keys (the default first)."""
    if not _CACHE:
        _CACHE.update(samples())
    model = next((m for m, name in LOSSES.items() if name == loss), None)
    if model is None:
        raise ConfigError(f"compare_gan drew no settings for loss '{loss}'; it has {', '.join(LOSSES.values())}")
    if not 1 <= draws <= SAMPLES:
        raise ConfigError(f"search.draws: compare_gan drew {SAMPLES} settings per model; replay 1..{SAMPLES}, "
                          f"not {draws}")  # fmt: skip
    return [{KEYS[k]: v for k, v in s.items()} | FIXED[model] for s in _CACHE[model][:draws]]


def fields() -> list[str]:
    """The lossbench keys a replay sets."""
    return [*KEYS.values(), "g_noise"]

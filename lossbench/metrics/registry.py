"""Names of the sample-quality metrics, what they log and which way is better. Light on purpose:
config validation reads it without loading any metric engine."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from lossbench.errors import ConfigError
from lossbench.registry import Registry


@dataclass(frozen=True)
class MetricSpec:
    keys: tuple[str, ...]  # the MLflow metric keys it logs
    higher_is_better: bool  # the direction of its keys (and of best_NAME) ...
    points: bool | None  # for 2-D point data (True), images (False), or any (None)
    lower_is_better: tuple[str, ...] = ()  # ... except these keys, where lower is better (modes: reverse_kl)
    datasets: tuple[str, ...] = ()  # image data sets it applies to (its own scorer); () = by `points` alone

    def applies(self, points: bool, dataset: str | None) -> bool:
        """Whether it scores this data: 2-D points by `points`; images by `points`, and when
        `datasets` is set only those (modes: 2-D mixtures and stacked-mnist; fcd: mnist, stacked-mnist)."""
        if points:
            return self.points in (True, None)
        if self.datasets:
            return dataset in self.datasets
        return self.points in (False, None)

    def __post_init__(self) -> None:
        if stray := set(self.lower_is_better) - set(self.keys):
            raise ValueError(f"lower_is_better names keys the metric does not log: {', '.join(sorted(stray))}")


EMA_PREFIX = "ema_"  # the averaged generator's (--ema) scores: ema_fid, ema_modes, ... (same directions)
BEST_PREFIX = "best_"  # a run's best evaluation by its ranking key: best_fid, best_modes (best_fid_step: its step)
# the keys that pick a run's best evaluation (and keep its generator), in order of preference: the first
# an evaluation logged decides (images by FID, 2-D mixtures by modes, as the report's score)
RANKING = ("fid", "modes", "fcd", "kid_mean", "is_mean")
BEST_KEYS = tuple(BEST_PREFIX + k for k in RANKING)  # what runs log of their best: best_fid, best_modes, ...

METRICS: Registry[MetricSpec] = Registry("metric", key="metrics")
METRICS.add("fid", MetricSpec(("fid",), higher_is_better=False, points=False))
METRICS.add("is", MetricSpec(("is_mean", "is_std"), higher_is_better=True, points=False))
METRICS.add("kid", MetricSpec(("kid_mean", "kid_std"), higher_is_better=False, points=False))
METRICS.add("pr", MetricSpec(("precision", "recall"), higher_is_better=True, points=False))
METRICS.add("dc", MetricSpec(("density", "coverage"), higher_is_better=True, points=False))
METRICS.add("modes", MetricSpec(("modes", "high_quality", "reverse_kl"), higher_is_better=True, points=True,
                                lower_is_better=("reverse_kl",), datasets=("stacked-mnist",)))  # fmt: skip
# the classifier Frechet distance (lossbench.metrics.classified): the project's MNIST CNN, never Inception
METRICS.add("fcd", MetricSpec(("fcd",), higher_is_better=False, points=False, datasets=("mnist", "stacked-mnist")))
METRICS.add("none", MetricSpec((), higher_is_better=False, points=None))  # no evaluation: losses only


def evaluates(names: tuple[str, ...]) -> bool:
    """Whether these metrics need generated samples scored at all ('none' does not)."""
    return any(METRICS.get(n).keys for n in names)


def defaults_for(points: bool) -> tuple[str, ...]:
    return ("modes",) if points else ("fid", "is", "kid")


def check(names: tuple[str, ...], points: bool, dataset: str | None = None) -> None:
    if "none" in names and len(names) > 1:
        raise ConfigError(f"metric 'none' (no evaluation) cannot be combined with others: {', '.join(names)}",
                          key="metrics")  # fmt: skip
    for name in names:
        if not METRICS.get(name).applies(points, dataset):
            kind = "2-D point" if points else "image"
            kind = f"{kind} data set '{dataset}'" if dataset else f"{kind} data"
            valid = [n for n in METRICS.names() if METRICS.get(n).applies(points, dataset)]
            raise ConfigError(f"metric '{name}' does not apply to {kind}; valid: {', '.join(valid)}",
                              key="metrics")  # fmt: skip


def higher_is_better(key: str) -> bool:
    """By logged key: kid_mean -> False, is_mean -> True; fid and best_fid -> False; modes and
    high_quality -> True, reverse_kl -> False; an ema_ or best_ key as its own (ema_modes,
    best_is_mean -> True)."""
    key = key.removeprefix(EMA_PREFIX).removeprefix(BEST_PREFIX)
    for name in METRICS.names():
        spec = METRICS.get(name)
        if key in spec.lower_is_better:
            return False
        if key in spec.keys or key == name:
            return spec.higher_is_better
    return False


def ranking_key(keys: Iterable[str]) -> str | None:
    """The key of an evaluation (its logged `keys`) that picks a run's best evaluation: the first of
    RANKING among them; None when none is (pr, dc alone: no best generator is kept)."""
    logged = set(keys)
    return next((k for k in RANKING if k in logged), None)


def best_keys(logged: Iterable[str]) -> list[str]:
    """The best_<key> among `logged` (the metric keys of a run, or of several), in RANKING's order:
    ['best_fid'] for image runs, ['best_modes'] for 2-D mixtures, both where runs of each are mixed;
    best_<key>_step is not one of them."""
    present = set(logged)
    return [k for k in BEST_KEYS if k in present]


def best(history: Iterable[tuple[float, int]], key: str) -> tuple[float, int]:
    """The best (value, step) of a run's evaluations by `key`: the lowest value (the highest where
    higher is better), the earliest step among equal values."""
    sign = -1.0 if higher_is_better(key) else 1.0
    return min(history, key=lambda vs: (sign * vs[0], vs[1]))


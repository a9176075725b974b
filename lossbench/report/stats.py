"""Statistics across seeds, pure functions of pandas/numpy data, the one place they are computed
(the report calls `describe`, the parent run's aggregates and `lossbench run`'s summary `across_seeds`):
per-configuration summaries with a bootstrap confidence interval of the mean, pairwise Mann-Whitney
U tests with Holm correction and the probability that one configuration beats the other on a random
seed pair, and Lucic et al.'s expected best score as a function of the number of runs drawn (the
computational-budget view) with its bootstrap band.

The interval: scipy's `bootstrap`, percentile method, at Hesterberg's expanded level (2015, "What
teachers should know about the bootstrap", Am. Stat. 69(4)): the plain percentile and BCa intervals
are too narrow with few seeds (measured over 2000 normal samples at 95%: n = 5 covers 85%, n = 10
91%, both methods), because the bootstrap's spread of a mean is sqrt((n-1)/n) of the true one and
uses z, not t. Expanding the level to 1 - a', a'/2 = Phi(-sqrt(n/(n-1)) t_{1-a/2, n-1}), brings
n = 10 to 95% (n = 5: 93%, n = 4: 88%). BCa is not used: its jackknife acceleration is noisy with a
handful of seeds and undefined when they tie, and it covered no better. No resampling interval can
cover 95% with 3 seeds: its ends are at most the smallest and largest seed, which hold the mean
between them 75% of the time (1 - 2 * 0.5^3, symmetric data). Fewer than 3 seeds: no interval.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from lossbench.metrics.registry import BEST_KEYS, EMA_PREFIX

# scipy is imported where it is used: `lossbench run` imports this module for its summary, which
# needs no scipy below 3 seeds, and importing scipy.stats took 0.6 s of every run

MIN_SEEDS_FOR_TEST = 3
MIN_SEEDS_FOR_INTERVAL = 3
CONFIDENCE = 0.95
RESAMPLES = 9999  # bootstrap resamples per interval; the expanded level's tails need thousands
GROUP = ["config_hash", "label", "loss", "penalty", "dataset", "arch"]
# each run's best evaluation by its ranking key (metrics.registry.BEST_KEYS: best_fid, best_modes, ...)
BASE_SCORES = ["fid", *BEST_KEYS, "is_mean", "kid_mean", "precision", "recall", "density", "coverage", "modes",
               "high_quality", "reverse_kl", "equilibrium_distance"]  # fmt: skip
# and the averaged generator's (--ema), where the runs logged them
SCORES = BASE_SCORES + [EMA_PREFIX + s for s in BASE_SCORES if s not in (*BEST_KEYS, "equilibrium_distance")]


def finished_with(runs: pd.DataFrame, score: str) -> pd.DataFrame:
    """The finished seed runs that have `score` (diverged and failed runs never enter a statistic)."""
    if score not in runs:
        return runs.iloc[0:0]
    return runs[(runs["outcome"] == "finished") & runs[score].notna()]


def expanded_level(n: int, confidence: float = CONFIDENCE) -> float:
    """Hesterberg's expanded percentile level for a mean of n values: 1 - a', where
    a'/2 = Phi(-sqrt(n / (n - 1)) * t_{1 - a/2, n - 1}) and a = 1 - confidence (n >= 2)."""
    from scipy import stats

    a = 1.0 - confidence
    return float(1.0 - 2.0 * stats.norm.cdf(-np.sqrt(n / (n - 1)) * stats.t.ppf(1.0 - a / 2.0, n - 1)))


def mean_interval(
    values: np.ndarray, confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap confidence interval of the mean along the last axis (one interval per row):
    scipy.stats.bootstrap, percentile method, at `expanded_level(n, confidence)` (module docstring).
    NaN where n < MIN_SEEDS_FOR_INTERVAL; [v, v] where every value is v."""
    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    if n < MIN_SEEDS_FOR_INTERVAL:
        nan = np.full(values.shape[:-1], np.nan)
        return nan, nan.copy()
    from scipy import stats

    res = stats.bootstrap((values,), np.mean, axis=-1, vectorized=True, method="percentile",
                          confidence_level=expanded_level(n, confidence), n_resamples=resamples, batch=1000,
                          random_state=np.random.default_rng(seed))  # fmt: skip
    lo, hi = res.confidence_interval
    flat = np.ptp(values, axis=-1) == 0  # a degenerate bootstrap: the interval is the value itself
    return np.where(flat, values[..., 0], lo), np.where(flat, values[..., 0], hi)


@dataclass(frozen=True)
class Description:
    """One score across seeds: count, mean, sample std (0 for one value), median, extremes, and the
    bootstrap interval of the mean (NaN below MIN_SEEDS_FOR_INTERVAL values)."""

    n: int
    mean: float
    std: float
    median: float
    min: float
    max: float
    ci_low: float
    ci_high: float

    def interval(self, fmt: str = ".4g") -> str:
        return interval_text(self.n, self.ci_low, self.ci_high, fmt)


def interval_text(n: int, low: float, high: float, fmt: str = ".4g") -> str:
    """'[low, high]', or 'n/a (k seeds; needs >= 3)' where there is no interval."""
    if np.isnan(low):
        return f"n/a ({n} seed{'s' * (n != 1)}; needs >= {MIN_SEEDS_FOR_INTERVAL})"
    return f"[{low:{fmt}}, {high:{fmt}}]"


def describe(values: np.ndarray | list[float], confidence: float = CONFIDENCE) -> Description:
    """Mean, std (ddof 1), median, min, max and the bootstrap interval of the mean of one score's seeds."""
    x = np.asarray(values, dtype=float)
    if x.size == 0:
        raise ValueError("describe needs at least one value")
    lo, hi = mean_interval(x, confidence)
    return Description(len(x), float(x.mean()), float(x.std(ddof=1)) if len(x) > 1 else 0.0, float(np.median(x)),
                       float(x.min()), float(x.max()), float(lo), float(hi))  # fmt: skip


def across_seeds(seeds: Iterable[Mapping[str, float]], keys: Iterable[str]) -> dict[str, Description]:
    """Each key's `describe` over the seeds whose metrics have it (one mapping per seed), in the order
    of `keys`; a key no seed has is left out."""
    seeds = list(seeds)
    out: dict[str, Description] = {}
    for key in keys:
        if values := [s[key] for s in seeds if key in s]:
            out[key] = describe(values)
    return out


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: seed counts by outcome, and mean/std/median/min/max and the mean's
    bootstrap interval (ci_low, ci_high) of each score over the finished seeds (diverged and failed
    seeds are counted apart, never averaged in)."""
    rows = []
    for key, group in runs.groupby(GROUP, sort=True):
        row = dict(zip(GROUP, key))
        row["seeds"] = len(group)
        for outcome in ("finished", "diverged", "failed", "interrupted"):
            row[outcome] = int((group["outcome"] == outcome).sum())
        done = group[group["outcome"] == "finished"]
        for score in SCORES:
            values = done[score].dropna() if score in done else pd.Series(dtype=float)
            if values.empty:
                continue
            d = describe(values.to_numpy())
            row[f"{score}_n"] = d.n
            for stat in ("mean", "std", "median", "min", "max", "ci_low", "ci_high"):
                row[f"{score}_{stat}"] = getattr(d, stat)
        row["wall_time_s_mean"] = float(done["wall_time_s"].mean()) if len(done) else float("nan")
        row["run_ids"] = " ".join(group["run_id"])
        rows.append(row)
    return pd.DataFrame(rows)


def p_beats(a: np.ndarray, b: np.ndarray, lower_is_better: bool = True) -> float:
    """P(A better than B) + 0.5 P(tie) for one seed drawn from each: the share of the n_a * n_b seed
    pairs where a's score is better, ties counted half (= U / (n_a n_b), U Mann-Whitney's statistic
    of the better side). Lower is better: P(X_a < X_b) + 0.5 P(X_a = X_b)."""
    a, b = np.asarray(a, dtype=float)[:, None], np.asarray(b, dtype=float)[None, :]
    wins = (a < b) if lower_is_better else (a > b)
    return float((wins.sum() + 0.5 * (a == b).sum()) / (a.size * b.size))


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    m = len(pvalues)
    order = np.argsort(pvalues)
    adjusted = np.empty(m)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, (m - rank) * pvalues[i])
        adjusted[i] = min(1.0, running)
    return adjusted.tolist()


@dataclass(frozen=True)
class Comparison:
    dataset: str
    a: str
    b: str
    n_a: int
    n_b: int
    statistic: float | None
    p: float | None
    p_holm: float | None
    p_a_beats_b: float  # P(a's seed better than b's) + 0.5 P(tie), one seed drawn from each
    statement: str


def compare_losses(runs: pd.DataFrame, score: str = "fid", lower_is_better: bool = True) -> list[Comparison]:
    """Pairwise two-sided Mann-Whitney U on the final score of finished seeds, per data set,
    Holm-corrected within each data set, and P(one beats the other on a random seed pair) (p_beats).
    Fewer than 3 seeds on a side: no test, said so (the probability is still given)."""
    from scipy import stats

    out: list[Comparison] = []
    done = finished_with(runs, score)
    for dataset, group in done.groupby("dataset", sort=True):
        labels = sorted(group["label"].unique())
        pending = []
        for i, a in enumerate(labels):
            for b in labels[i + 1 :]:
                xa = group.loc[group["label"] == a, score].to_numpy()
                xb = group.loc[group["label"] == b, score].to_numpy()
                if min(len(xa), len(xb)) < MIN_SEEDS_FOR_TEST:
                    pab = p_beats(xa, xb, lower_is_better)
                    text = (f"{a} vs {b} on {dataset}: no test ({len(xa)} vs {len(xb)} seeds; needs >= 3 each); "
                            f"{_beats_text(a, b, pab)}")  # fmt: skip
                    out.append(Comparison(dataset, a, b, len(xa), len(xb), None, None, None, pab, text))
                    continue
                res = stats.mannwhitneyu(xa, xb, alternative="two-sided")
                pending.append((a, b, xa, xb, float(res.statistic), float(res.pvalue)))
        adjusted = holm([p[-1] for p in pending]) if pending else []
        for (a, b, xa, xb, u, p), ph in zip(pending, adjusted):
            better_a = (np.median(xa) < np.median(xb)) == lower_is_better
            first, second = (a, b) if better_a else (b, a)
            sign = "<" if lower_is_better else ">"
            pab = p_beats(xa, xb, lower_is_better)
            text = (
                f"{first} {sign} {second} on {dataset} ({score}): p = {p:.3g}, Holm p = {ph:.3g} "
                f"({len(xa)} vs {len(xb)} seeds); {_beats_text(first, second, pab if better_a else 1 - pab)}"
            )
            out.append(Comparison(dataset, a, b, len(xa), len(xb), u, p, ph, pab, text))
    return out


def no_pairs(runs: pd.DataFrame, score: str) -> list[str]:
    """Why a data set has no pairwise test at all: one line per data set with fewer than two
    configurations holding finished seeds with `score`, or one line if no run has it."""
    done = finished_with(runs, score)
    if done.empty:
        return [f"no pairwise tests: no finished seed run has {score}"]
    return [f"{dataset}: no pairwise tests: one configuration ({group['label'].iloc[0]}); a test needs two"
            for dataset, group in done.groupby("dataset", sort=True) if group["label"].nunique() < 2]  # fmt: skip


def _beats_text(a: str, b: str, p: float) -> str:
    return f"P({a} beats {b} on a random seed pair) = {p:.2f}"


def expected_best(values: np.ndarray, lower_is_better: bool = True) -> np.ndarray:
    """E[best of k runs drawn without replacement], k = 1..n, exactly, along the last axis: with the
    n values sorted best first, v_(1) .. v_(n), E_k = sum_i v_(i) C(n - i, k - 1) / C(n, k) (the
    best of the k drawn is v_(i) when v_(i) is drawn and the other k - 1 come from the n - i after it)."""
    from scipy import special

    values = np.asarray(values, dtype=float)
    n = values.shape[-1]
    ordered = np.sort(values, axis=-1)
    if not lower_is_better:
        ordered = ordered[..., ::-1]
    i, k = np.arange(1, n + 1)[:, None], np.arange(1, n + 1)[None, :]
    weights = special.comb(n - i, k - 1) / special.comb(n, k)  # (i, k): P(best of k is v_(i))
    return ordered @ weights


def expected_best_band(
    values: np.ndarray, lower_is_better: bool = True, confidence: float = CONFIDENCE, resamples: int = 2000,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray] | None:  # fmt: skip
    """A percentile bootstrap band around `expected_best`: the seeds resampled with replacement
    `resamples` times, the curve recomputed on each, its (1 -/+ confidence)/2 quantiles per k. None
    below MIN_SEEDS_FOR_INTERVAL seeds."""
    values = np.asarray(values, dtype=float)
    if len(values) < MIN_SEEDS_FOR_INTERVAL:
        return None
    rng = np.random.default_rng(seed)
    curves = expected_best(rng.choice(values, size=(resamples, len(values)), replace=True), lower_is_better)
    tail = (1.0 - confidence) / 2.0
    return np.quantile(curves, tail, axis=0), np.quantile(curves, 1.0 - tail, axis=0)


def early_signal(history: pd.DataFrame, runs: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Per configuration, the median across seeds of each seed's median g_signal over the first
    `fraction` of its steps: how much gradient G's loss passed while D was winning early."""
    h = history[history["key"] == "g_signal"].merge(runs[["run_id", "config_hash", "steps"]], on="run_id")
    h = h[h["step"] <= fraction * h["steps"]]
    if h.empty:
        return pd.DataFrame(columns=["config_hash", "g_signal_early"])
    per_seed = h.groupby(["config_hash", "run_id"])["value"].median()
    return per_seed.groupby("config_hash").median().rename("g_signal_early").reset_index()

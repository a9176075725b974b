"""Statistics across seeds, pure functions of pandas/numpy data: per-configuration summaries,
pairwise Mann-Whitney U tests with Holm correction, and Lucic et al.'s expected best score as a
function of the number of runs drawn (the computational-budget view)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

MIN_SEEDS_FOR_TEST = 3
GROUP = ["config_hash", "label", "loss", "penalty", "dataset", "arch"]
SCORES = ["fid", "best_fid", "is_mean", "kid_mean", "precision", "recall", "density", "coverage", "modes",
          "high_quality", "reverse_kl", "equilibrium_distance"]  # fmt: skip


def finished_with(runs: pd.DataFrame, score: str) -> pd.DataFrame:
    """The finished seed runs that have `score` (diverged and failed runs never enter a statistic)."""
    if score not in runs:
        return runs.iloc[0:0]
    return runs[(runs["outcome"] == "finished") & runs[score].notna()]


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: seed counts by outcome, and mean/std/median/min/max of each score
    over the finished seeds (diverged and failed seeds are counted apart, never averaged in)."""
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
            row[f"{score}_mean"] = float(values.mean())
            row[f"{score}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
            row[f"{score}_median"] = float(values.median())
            row[f"{score}_min"] = float(values.min())
            row[f"{score}_max"] = float(values.max())
        row["wall_time_s_mean"] = float(done["wall_time_s"].mean()) if len(done) else float("nan")
        row["run_ids"] = " ".join(group["run_id"])
        rows.append(row)
    return pd.DataFrame(rows)


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
    statement: str


def compare_losses(runs: pd.DataFrame, score: str = "fid", lower_is_better: bool = True) -> list[Comparison]:
    """Pairwise two-sided Mann-Whitney U on the final score of finished seeds, per data set,
    Holm-corrected within each data set. Fewer than 3 seeds on a side: no test, said so."""
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
                    text = f"{a} vs {b} on {dataset}: no test ({len(xa)} vs {len(xb)} seeds; needs >= 3 each)"
                    out.append(Comparison(dataset, a, b, len(xa), len(xb), None, None, None, text))
                    continue
                res = stats.mannwhitneyu(xa, xb, alternative="two-sided")
                pending.append((a, b, xa, xb, float(res.statistic), float(res.pvalue)))
        adjusted = holm([p[-1] for p in pending]) if pending else []
        for (a, b, xa, xb, u, p), ph in zip(pending, adjusted):
            better_a = (np.median(xa) < np.median(xb)) == lower_is_better
            first, second = (a, b) if better_a else (b, a)
            sign = "<" if lower_is_better else ">"
            text = (
                f"{first} {sign} {second} on {dataset} ({score}): p = {p:.3g}, Holm p = {ph:.3g} "
                f"({len(xa)} vs {len(xb)} seeds)"
            )
            out.append(Comparison(dataset, a, b, len(xa), len(xb), u, p, ph, text))
    return out


def expected_best(values: np.ndarray, lower_is_better: bool = True, draws: int = 2000, seed: int = 0) -> np.ndarray:
    """E[best of k runs drawn without replacement], k = 1..n, estimated by resampling the runs."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    n = len(values)
    out = np.empty(n)
    for k in range(1, n + 1):
        picks = np.array([rng.choice(values, size=k, replace=False) for _ in range(draws)])
        best = picks.min(axis=1) if lower_is_better else picks.max(axis=1)
        out[k - 1] = best.mean()
    return out


def early_signal(history: pd.DataFrame, runs: pd.DataFrame, fraction: float = 0.1) -> pd.DataFrame:
    """Per configuration, the median across seeds of each seed's median g_signal over the first
    `fraction` of its steps: how much gradient G's loss passed while D was winning early."""
    h = history[history["key"] == "g_signal"].merge(runs[["run_id", "config_hash", "steps"]], on="run_id")
    h = h[h["step"] <= fraction * h["steps"]]
    if h.empty:
        return pd.DataFrame(columns=["config_hash", "g_signal_early"])
    per_seed = h.groupby(["config_hash", "run_id"])["value"].median()
    return per_seed.groupby("config_hash").median().rename("g_signal_early").reset_index()

"""The report's figures (matplotlib, written as PNG files)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lossbench.report import stats as report_stats  # noqa: E402


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _panels(datasets: list[str], height: float) -> tuple[plt.Figure, list[tuple[plt.Axes, str]]]:
    """One figure, one panel per data set side by side."""
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.5 * len(datasets), height), squeeze=False)
    return fig, list(zip(axes[0], datasets))


def score_distribution(runs: pd.DataFrame, score: str, path: Path) -> Path | None:
    """Box plot plus every seed as a dot, per configuration label, one panel per data set."""
    done = report_stats.finished_with(runs, score)
    if done.empty:
        return None
    fig, panels = _panels(sorted(done["dataset"].unique()), 3.6)
    for ax, dataset in panels:
        group = done[done["dataset"] == dataset]
        labels = sorted(group["label"].unique())
        data = [group.loc[group["label"] == lb, score].to_numpy() for lb in labels]
        ax.boxplot(data, tick_labels=labels, showfliers=False)
        for i, values in enumerate(data, start=1):
            ax.scatter(np.full(len(values), i) + np.linspace(-0.08, 0.08, len(values)), values, s=14, zorder=3)
        ax.set_title(f"{dataset}: final {score} across seeds", fontsize=9)
        ax.tick_params(axis="x", rotation=30, labelsize=8)
    return _save(fig, path)


def curves(history: pd.DataFrame, runs: pd.DataFrame, key: str, path: Path, log: bool = False) -> Path | None:
    """Median and interquartile band across seeds of one metric over steps, per configuration label
    (on a log scale with `log`)."""
    h = history[history["key"] == key].merge(runs[["run_id", "label", "dataset"]], on="run_id")
    if h.empty:
        return None
    fig, panels = _panels(sorted(h["dataset"].unique()), 3.4)
    for ax, dataset in panels:
        for label, group in h[h["dataset"] == dataset].groupby("label"):
            q = group.groupby("step")["value"].quantile([0.25, 0.5, 0.75]).unstack()
            ax.plot(q.index, q[0.5], label=label)
            ax.fill_between(q.index, q[0.25], q[0.75], alpha=0.2)
        ax.set_title(f"{dataset}: {key} (median, IQR over seeds)", fontsize=9)
        ax.set_xlabel("generator step")
        if log:
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    return _save(fig, path)


def trajectories(history: pd.DataFrame, runs: pd.DataFrame, path: Path) -> Path | None:
    """Dirac-GAN paths in the (theta, psi) plane, one panel per configuration, every seed overlaid,
    the equilibrium (0, 0) marked."""
    h = history[history["key"].isin(["theta", "psi"])]
    if h.empty:
        return None
    wide = h.pivot_table(index=["run_id", "step"], columns="key", values="value").reset_index()
    wide = wide.merge(runs[["run_id", "label", "seed"]], on="run_id").dropna(subset=["theta", "psi"])
    labels = sorted(wide["label"].unique())
    cols = min(4, len(labels))
    rows = -(-len(labels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    for ax, label in zip(axes.flat, labels):
        for _, run in wide[wide["label"] == label].groupby("run_id"):
            run = run.sort_values("step")
            ax.plot(run["theta"], run["psi"], lw=0.8, alpha=0.7)
            ax.plot(run["theta"].iloc[0], run["psi"].iloc[0], "o", ms=3, color="gray")
        ax.plot(0, 0, marker="*", ms=11, color="tab:red", label="equilibrium (0, 0)")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("θ (generator)", fontsize=8)
        ax.set_ylabel("ψ (discriminator)", fontsize=8)
        ax.legend(fontsize=6, loc="upper right")
    return _save(fig, path)


def budget(runs: pd.DataFrame, score: str, path: Path, lower_is_better: bool = True) -> Path | None:
    """Expected best score against the number of runs drawn (Lucic et al. 2018, fig. 4 style), per
    configuration over its seeds, with a 95% percentile bootstrap band over those seeds (resampled
    with replacement, the curve recomputed on each; report_stats.expected_best_band) where it has
    at least 3."""
    done = report_stats.finished_with(runs, score)
    if done.empty:
        return None
    fig, panels = _panels(sorted(done["dataset"].unique()), 3.4)
    for ax, dataset in panels:
        for label, group in done[done["dataset"] == dataset].groupby("label"):
            values = group[score].to_numpy()
            curve, k = report_stats.expected_best(values, lower_is_better), np.arange(1, len(values) + 1)
            (line,) = ax.plot(k, curve, marker="o", label=label)
            if (band := report_stats.expected_best_band(values, lower_is_better)) is not None:
                ax.fill_between(k, band[0], band[1], color=line.get_color(), alpha=0.2)
        ax.set_title(f"{dataset}: expected best {score} vs runs drawn\n(band: 95% bootstrap over seeds, n >= 3)",
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("number of runs (budget)")
        ax.legend(fontsize=7)
    return _save(fig, path)

"""The saturation study's stated tests and its two figures, from the store the sweep wrote.

    python reports/saturation/study.py [--tracking-uri URI] [--experiment NAME] [--out reports/saturation]

Reads every finished seed run of the experiment, groups them into the suite's cells (loss x
optimiser x n_critic; the seed's loop, batching "epoch", apart) and computes exactly the tests
registry/suites/saturation.toml states before any run: the primary family (one-sided exact
Mann-Whitney U on fcd at the last step, minimax > non-saturating, Holm over the four cells) and the
secondary S1-S3. Prints markdown tables (for the report's README) and writes
figures/fcd_by_cell.png and figures/counterfactual_signals.png (files of the report folder that
`lossbench report` never touches). Not part of the package: the study's own arithmetic, kept next
to its numbers.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import numpy as np
from scipy import stats

from lossbench.report.stats import holm
from lossbench.tracking import Tracker

LOSSES = ("minimax", "non-saturating")
CELLS = [("adam", 1), ("adam", 5), ("sgd", 1), ("sgd", 5)]
PREDICTED = {("adam", 1): False, ("adam", 5): False, ("sgd", 1): True, ("sgd", 5): True}  # primary: rejects?
SEED_LOOP = "the seed's loop"
ALPHA = 0.05


def load(tracker: Tracker) -> dict:
    """{cell: {loss or SEED_LOOP: [per-seed {key: {step: value}}]}} of finished runs."""
    keys = ("fcd", "g_signal", "g_signal_minimax", "g_signal_ns", "d_fake")
    out: dict = defaultdict(lambda: defaultdict(list))
    for r in tracker.runs("seed"):
        if r.outcome != "finished":
            continue
        p = r.params
        cell = (p.get("optimizer", "adam"), int(p.get("n_critic", 1)))
        who = SEED_LOOP if p.get("batching", "iid") == "epoch" else p["loss"]
        hist = {k: {m.step: m.value for m in tracker.metric_history(r.run_id, k)} for k in keys}
        out[cell][who].append(hist | {"seed": int(p.get("seed", -1))})
    return out


def at(runs: list[dict], key: str, step: int) -> np.ndarray:
    return np.array([r[key][step] for r in runs if step in r[key]])


def early_median(runs: list[dict], key: str, last: int) -> float:
    """Median over seeds of each seed's median over its log windows at steps <= last."""
    return float(np.median([np.median([v for s, v in r[key].items() if s <= last]) for r in runs]))


def mwu_greater(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.mannwhitneyu(a, b, alternative="greater", method="exact").pvalue)


def spread(x: np.ndarray) -> str:
    return f"{np.median(x):.1f} [{x.min():.1f}-{x.max():.1f}]"


def analyse(data: dict, steps: int, eval_every: int) -> str:
    first, early = eval_every, 2 * eval_every
    md = [f"| optimiser, n_critic | minimax fcd, step {steps} (median [min-max], 5 seeds) | non-saturating | "
          "ratio of medians | p (one-sided U) | p Holm | rejects? | predicted |", "|---|---|---|---|---|---|---|---|"]
    ps, rows = [], []
    for cell in CELLS:
        mm, ns = at(data[cell]["minimax"], "fcd", steps), at(data[cell]["non-saturating"], "fcd", steps)
        ps.append(mwu_greater(mm, ns))
        rows.append((cell, mm, ns))
    for (cell, mm, ns), p, ph in zip(rows, ps, holm(ps)):
        md.append(f"| {cell[0]}, {cell[1]} | {spread(mm)} | {spread(ns)} | {np.median(mm) / np.median(ns):.2f} | "
                  f"{p:.3f} | {ph:.3f} | {'yes' if ph < ALPHA else 'no'} | {'yes' if PREDICTED[cell] else 'no'} |")
    mm, ns = at(data[("adam", 5)]["minimax"], "fcd", early), at(data[("adam", 5)]["non-saturating"], "fcd", early)
    md += ["", f"S1 (Adam, n_critic 5, step {early}): minimax {spread(mm)}, non-saturating {spread(ns)}, "
           f"one-sided U p = {mwu_greater(mm, ns):.3f} (predicted < {ALPHA})", ""]
    md += [f"S2, on each run's own logits, median over the first {steps // 10} steps "
           "(minimax runs | non-saturating runs):", "",
           "| optimiser, n_critic | g_signal_minimax | g_signal_ns | g_signal_minimax | g_signal_ns | "
           "minimax runs' d_fake |", "|---|---|---|---|---|---|"]
    for cell in CELLS:
        vals = [early_median(data[cell][loss], key, steps // 10) for loss in LOSSES
                for key in ("g_signal_minimax", "g_signal_ns")]  # fmt: skip
        d = early_median(data[cell]["minimax"], "d_fake", steps // 10)
        md.append(f"| {cell[0]}, {cell[1]} | " + " | ".join(f"{v:.3f}" for v in vals) + f" | {d:.2f} |")
    md += ["", f"S3, fcd improvement of the median seed from step {first} to step {steps} "
           f"(1 - fcd_{steps} / fcd_{first}):", "",
           "| optimiser, n_critic | minimax | non-saturating |", "|---|---|---|"]
    for cell in CELLS:
        gains = [1 - np.median(at(data[cell][loss], "fcd", steps)) / np.median(at(data[cell][loss], "fcd", first))
                 for loss in LOSSES]  # fmt: skip
        md.append(f"| {cell[0]}, {cell[1]} | {100 * gains[0]:.0f}% | {100 * gains[1]:.0f}% |")
    if SEED_LOOP in data[("adam", 1)]:
        seed = at(data[("adam", 1)][SEED_LOOP], "fcd", steps)
        ns = at(data[("adam", 1)]["non-saturating"], "fcd", steps)
        p = float(stats.mannwhitneyu(seed, ns, alternative="two-sided", method="exact").pvalue)
        md += ["", f"The seed's loop (non-saturating, Adam, n_critic 1, epoch batching): fcd at step {steps} "
               f"{spread(seed)}; beside non-saturating, Adam, n_critic 1 ({spread(ns)}): "
               f"two-sided U p = {p:.3f}"]
    return "\n".join(md)


def aligned(runs: list[dict], key: str) -> tuple[list[int], np.ndarray]:
    """The steps every run logged `key` at, and the runs x steps matrix of its values there."""
    steps = sorted(set.intersection(*(set(r[key]) for r in runs)))
    return steps, np.array([[r[key][s] for s in steps] for r in runs])


def figures(data: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"minimax": "tab:red", "non-saturating": "tab:blue", SEED_LOOP: "tab:green"}

    def panels(name: str, title: str, draw, ylabel: str | None = None, **grid) -> None:  # noqa: ANN001
        """One panel per (optimiser, n_critic) cell, drawn by draw(ax, cell), saved as out/name."""
        fig, axes = plt.subplots(2, 2, figsize=(10, 7), sharex=True, **grid)
        for ax, cell in zip(axes.flat, CELLS):
            draw(ax, cell)
            ax.set_title(f"{'Adam 2e-4' if cell[0] == 'adam' else 'SGD 0.05'}, n_critic {cell[1]}")
            ax.set_yscale("log")
            if ylabel:
                ax.set_ylabel(ylabel)
            ax.legend(fontsize=7)
        for ax in axes[1]:
            ax.set_xlabel("generator step")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)

    def fcd(ax, cell) -> None:  # noqa: ANN001
        for who, runs in sorted(data[cell].items()):
            steps, v = aligned(runs, "fcd")
            for row in v:
                ax.plot(steps, row, color=colours[who], alpha=0.25, lw=0.8)
            ax.plot(steps, np.median(v, 0), color=colours[who], lw=2, ls="--" if who == SEED_LOOP else "-",
                    label=f"{who} (median of {len(runs)})")  # fmt: skip

    def signals(ax, cell) -> None:  # noqa: ANN001
        for loss in LOSSES:
            for key, ls in (("g_signal_minimax", "-"), ("g_signal_ns", ":")):
                steps, v = aligned(data[cell][loss], key)
                ax.plot(steps, np.median(v, 0), color=colours[loss], ls=ls, label=f"{key} on {loss}'s logits")

    panels("fcd_by_cell.png", "Sample quality over training: fcd per seed (thin) and median (thick)", fcd,
           ylabel="fcd (lower is better)")  # fmt: skip
    panels("counterfactual_signals.png", "What each loss would pass back through the same d_f (median over 5 seeds)",
           signals, sharey=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--experiment", default="lossbench")
    parser.add_argument("--out", type=Path, default=Path("reports/saturation"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--eval-every", type=int, default=200)
    args = parser.parse_args()
    data = load(Tracker(args.tracking_uri, args.experiment, create=False))
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    figures(data, args.out / "figures")
    print(analyse(data, args.steps, args.eval_every))


if __name__ == "__main__":
    main()

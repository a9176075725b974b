"""The mescheder2018 study drawn as the paper draws it, and its numbers for the verdict table.

    python reports/mescheder2018/paper_panels.py --tracking-uri sqlite:///runs/mlflow.db \
        --out reports/mescheder2018

Reads the suite's seed runs from the store; writes figures/paper_panels.png (one (theta, psi) panel
per method and update rule, psi in the paper's sign: lossbench's psi is the paper's -psi; start
point red, equilibrium a star, the authors' window [-2, 2]^2; WGAN's forbidden |psi| > 1 shaded)
and verdicts.csv: per method and rule, ||(theta, psi)|| at the start and at step 500 (median over
seeds), the measured per-step rate over the last 250 steps (geometric mean of ||x_t+1|| / ||x_t||,
seed 0) and the rate the linearisation at (0, 0) predicts (largest |eigenvalue| of the update map;
none for WGAN-GP, whose field is not smooth at psi = 0, nor with clipping).
"""

from __future__ import annotations

import argparse
import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from lossbench.tracking import Tracker  # noqa: E402

H = 0.2  # the authors' step size
A = 0.5  # f'(0) for f(t) = -log(1 + e^-t)
F2 = -0.25  # f''(0)

# (column title, match on the run's parameters, linearised field M at (0, 0) in the paper's signs)
METHODS = [
    ("GAN", {"loss": "minimax", "penalty": "none", "instance_noise": 0, "consensus": 0}, [[0, -A], [A, 0]]),
    ("NSGAN", {"loss": "non-saturating", "penalty": "none"}, [[0, -A], [A, 0]]),
    ("WGAN (clip 1)", {"loss": "wgan"}, None),
    ("WGAN-GP (reg 0.7)", {"loss": "wgan-gp"}, None),
    ("consensus, γ 1", {"loss": "minimax", "consensus": 1}, [[-A * A, -A], [A, -A * A]]),
    ("instance noise, σ 0.7", {"loss": "minimax", "instance_noise": 0.7}, [[0, -A], [A, 2 * F2 * 0.49]]),
    ("R1, γ 0.3", {"loss": "minimax", "penalty": "r1", "penalty_weight": 0.3}, [[0, -A], [A, -0.3]]),
    ("R1, γ 1 (critical)", {"loss": "minimax", "penalty": "r1", "penalty_weight": 1}, [[0, -A], [A, -1.0]]),
    ("R2, γ 0.3", {"loss": "minimax", "penalty": "r2", "penalty_weight": 0.3}, [[0, -A], [A, -0.3]]),
    ("NSGAN + R1, γ 0.3", {"loss": "non-saturating", "penalty": "r1"}, [[0, -A], [A, -0.3]]),
]
# (row title, update rule, D steps per G step)
RULES = [("simultaneous", "simultaneous", 1), ("alternating", "alternating", 1),
         ("alternating, 5 D steps", "alternating", 5)]  # fmt: skip


def _num(params: dict[str, str], key: str) -> float:
    return float(params.get(key) or 0)


def _matches(params: dict[str, str], want: dict) -> bool:
    for key, value in want.items():
        have = params.get(key, "none" if key == "penalty" else "0")
        if isinstance(value, str) and have != value:
            return False
        if not isinstance(value, str) and abs(float(have or 0) - value) > 1e-9:
            return False
    return True


def predicted_rate(M: list[list[float]] | None, rule: str, n_critic: int) -> float | None:
    """Largest |eigenvalue| of the linearised update map: simultaneous I + hM; alternating (D first,
    as lossbench) G (D)^k with D = I + h e_psi M[1], G = I + h e_theta M[0]."""
    if M is None:
        return None
    m = np.array(M, dtype=float)
    if rule == "simultaneous":
        step = np.eye(2) + H * m
    else:
        d = np.eye(2) + H * np.outer([0, 1], m[1])
        g = np.eye(2) + H * np.outer([1, 0], m[0])
        step = g @ np.linalg.matrix_power(d, n_critic)
    return float(max(abs(np.linalg.eigvals(step))))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tracking-uri", required=True)
    ap.add_argument("--experiment", default="lossbench")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    tracker = Tracker(args.tracking_uri, args.experiment, create=False)
    runs = [r for r in tracker.runs("seed") if r.params.get("dataset") == "dirac"]

    cells: dict[tuple[int, int], list] = {}
    for r in runs:
        rule = r.params.get("updates") or "alternating"
        n_critic = int(_num(r.params, "n_critic") or 1)
        j = next((j for j, (_, u, k) in enumerate(RULES) if u == rule and k == n_critic), None)
        i = next((i for i, (_, want, _) in enumerate(METHODS) if _matches(r.params, want)), None)
        if i is None or j is None:
            continue
        h = {key: {p.step: p.value for p in tracker.metric_history(r.run_id, key)} for key in ("theta", "psi")}
        steps = sorted(set(h["theta"]) & set(h["psi"]))
        path = np.array([[h["theta"][s], -h["psi"][s]] for s in steps])  # the paper's psi
        cells.setdefault((i, j), []).append((int(r.params.get("seed", 0) or 0), path))

    fig, axes = plt.subplots(len(RULES), len(METHODS), figsize=(2.3 * len(METHODS), 2.4 * len(RULES)), squeeze=False)
    rows = []
    for (i, j), paths in sorted(cells.items()):
        paths.sort(key=lambda p: p[0])
        ax = axes[j][i]
        for _, path in paths:
            ax.plot(path[:, 0], path[:, 1], "b-", lw=0.7, alpha=0.8)
        ax.plot(*paths[0][1][0], "ro", ms=4)
        ax.plot(0, 0, "*", color="k", ms=8)
        if METHODS[i][0].startswith("WGAN ("):
            ax.axhspan(1, 2, color="0.2", alpha=0.3)
            ax.axhspan(-2, -1, color="0.2", alpha=0.3)
        ax.set_xlim(-2, 2)
        ax.set_ylim(-2, 2)
        ax.set_title(f"{METHODS[i][0]}\n{RULES[j][0]}", fontsize=8)
        ax.set_xlabel("θ", fontsize=8)
        ax.set_ylabel("ψ (paper's sign)", fontsize=8)
        ax.tick_params(labelsize=6)
        dist = [np.hypot(*p[-1]) for _, p in paths]
        n = np.hypot(paths[0][1][:, 0], paths[0][1][:, 1])
        tail = n[len(n) // 2 :]
        measured = float(np.exp(np.mean(np.diff(np.log(tail))))) if tail.min() > 0 else float("nan")
        pred = predicted_rate(METHODS[i][2], RULES[j][1], RULES[j][2])
        rows.append({"method": METHODS[i][0], "updates": RULES[j][0], "seeds": len(paths),
                     "start": f"{n[0]:.3g}", "end_median": f"{np.median(dist):.3g}",
                     "end_min": f"{min(dist):.3g}", "end_max": f"{max(dist):.3g}",
                     "rate_last_250": f"{measured:.5f}",
                     "rate_linearised": "" if pred is None else f"{pred:.5f}"})  # fmt: skip
    for ax in axes.flat:
        if not ax.lines:
            ax.axis("off")
    fig.tight_layout()
    (args.out / "figures").mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out / "figures" / "paper_panels.png", dpi=110)
    with open(args.out / "verdicts.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for row in rows:
        print(" | ".join(str(v) for v in row.values()))
    print(f"{len(runs)} runs; {math.fsum(len(v) for v in cells.values()):.0f} drawn")


if __name__ == "__main__":
    main()

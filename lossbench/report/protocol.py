"""What each number in a report is: the evaluation protocol as the seed runs logged it (their MLflow
params), one line per data set and protocol, and how the across-seed statistics are made. Pure
functions of the report's runs frame; a param a run did not log (older stores) reads "not logged"."""

from __future__ import annotations

import pandas as pd

from lossbench.metrics.registry import BEST_PREFIX, best_keys, higher_is_better
from lossbench.report import stats as report_stats

# the seed-run params that say how a score was measured (lossbench.config.MetricConfig, exec/group.py)
PARAMS = ("metrics", "feature_extractor", "fid_samples", "reference_split", "eval_every", "mode_samples",
          "mode_threshold", "steps")  # fmt: skip
MISSING = "not logged"


def columns(params: dict[str, str]) -> dict[str, str]:
    """The protocol params of one run, as logged, for the runs frame ('not logged' where absent);
    steps is the frame's already (an integer)."""
    return {k: str(params[k]) if params.get(k) not in (None, "") else MISSING for k in PARAMS if k != "steps"}


def schedule(eval_every: str, steps: str) -> str:
    """'at the last step only (step 2)' or 'every 500 steps and at the last step (10000)'
    (lossbench.train.loop: at multiples of eval_every before the last step, then at the last)."""
    if MISSING in (eval_every, steps):
        return f"schedule {MISSING}"
    every = int(eval_every)
    if every == 0 or every >= int(steps):
        return f"evaluated at the last step only (step {steps})"
    return f"evaluated every {every} steps and at the last step ({steps})"


def describe(p: dict[str, str]) -> str:
    """One protocol, in words."""
    names = p["metrics"]
    when = schedule(p["eval_every"], p["steps"])
    if names == "none":
        return "no evaluation (metrics none): losses only"
    if p.get("dataset") == "stacked-mnist" and names == "modes":  # lossbench.metrics.classified
        return (f"metrics modes on {p['mode_samples']} generated images, each channel read as one digit by the "
                f"project's MNIST classifier: modes = distinct digit triples seen {p['mode_threshold']} or more "
                f"times (of 1,000), reverse_kl = KL(p || uniform) of the triple histogram (no reference "
                f"sample); {when}")  # fmt: skip
    if p["feature_extractor"] == "none" or names == "modes":
        return (f"metrics {names} on {p['mode_samples']} generated points against the mixture's known modes "
                f"(a mode counts when {p['mode_threshold']} or more high-quality points fall in it; no feature "
                f"extractor, no reference sample); {when}")  # fmt: skip
    n = p["fid_samples"]
    return (f"metrics {names if names != MISSING else '(names ' + MISSING + ')'}; features {p['feature_extractor']}; "
            f"{n} generated samples per evaluation against {n} real ones from the {p['reference_split']} split "
            f"(the same fixed subset for every run); {when}")  # fmt: skip


def lines(runs: pd.DataFrame) -> list[str]:
    """Per data set, each distinct protocol with the number of seed runs that logged it."""
    out = []
    frame = runs.reindex(columns=["dataset", *PARAMS]).fillna(MISSING).astype(str)
    for key, group in frame.groupby(["dataset", *PARAMS], sort=True):
        p = dict(zip(["dataset", *PARAMS], key))
        out.append(f"{p['dataset']} ({len(group)} seed run{'s' * (len(group) != 1)}): {describe(p)}")
    return out


def best_lines(runs: pd.DataFrame) -> list[str]:
    """One line per best_<key> the runs logged (metrics.registry.best_keys), in the direction the metric
    registry gives its key."""
    logged = [c for c in runs.columns if runs[c].notna().any()]
    out = []
    for best in best_keys(logged):
        key = best.removeprefix(BEST_PREFIX)
        better = "higher" if higher_is_better(best) else "lower"
        out.append(f"{best}: each run's best evaluation by {key} ({better} is better; the earliest of equal "
                   "values), over every evaluation of the run; its G is the run's best generator.")  # fmt: skip
    return out


def statistics_lines(score: str, lower_is_better: bool) -> list[str]:
    """How the summary's and the tests' numbers are made (report/stats.py)."""
    n = report_stats.MIN_SEEDS_FOR_INTERVAL
    return [
        "Across seeds: finished seeds only (diverged and failed ones are counted, never averaged in); "
        "mean ± sample std; median [min, max].",
        f"95% CI: of the mean, bootstrap (scipy, percentile method, {report_stats.RESAMPLES} resamples) at "
        f"Hesterberg's expanded level, which corrects the percentile interval's narrowness with few seeds "
        f"(measured coverage on normal data: 95% at 10 seeds, 93% at 5, 88% at 4, 75% at 3, the most any "
        f"resampling interval reaches with 3); n/a below {n} seeds.",
        f"Tests on final {score} ({'lower' if lower_is_better else 'higher'} is better): two-sided Mann-Whitney U, "
        f"Holm-corrected per data set, needs >= {report_stats.MIN_SEEDS_FOR_TEST} seeds each; P(A beats B on a "
        f"random seed pair) = P(A better) + 0.5 P(tie) over all seed pairs (= U / (n_A n_B)).",
    ]

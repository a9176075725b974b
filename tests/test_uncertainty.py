"""The report's uncertainty (lossbench/report/stats.py): the bootstrap interval of a mean against a
known answer and its coverage on repeated draws, P(A beats B) on hand-computed cases, the budget
curve's band, and `lossbench run`'s summary computing its numbers with the same function."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from test_cli import lossbench

from lossbench.report import stats as report_stats


def test_interval_of_a_normal_mean_has_the_textbook_width() -> None:
    mu, sigma, n = 3.0, 2.0, 4000
    x = np.random.default_rng(7).normal(mu, sigma, n)
    d = report_stats.describe(x)
    assert d.ci_low < mu < d.ci_high
    assert d.ci_low < d.mean < d.ci_high
    width, textbook = d.ci_high - d.ci_low, 2 * 1.96 * sigma / np.sqrt(n)
    assert width == pytest.approx(textbook, rel=0.05), (width, textbook)


def test_interval_covers_the_mean_at_the_nominal_rate_with_ten_seeds() -> None:
    """1000 samples of n = 10 normal draws: the count of intervals holding the true mean lies in the
    99% binomial range around 95% (the plain percentile interval covers ~91% here and fails)."""
    reps, n, mu = 1000, 10, 1.5
    x = np.random.default_rng(11).normal(mu, 1.0, (reps, n))
    lo, hi = report_stats.mean_interval(x)  # vectorised: one interval per row
    covered = int(np.sum((lo < mu) & (mu < hi)))
    low, high = stats.binom.ppf(0.005, reps, 0.95), stats.binom.ppf(0.995, reps, 0.95)
    assert low <= covered <= high, (covered, low, high)


def test_expanded_level_and_no_interval_below_three_seeds() -> None:
    # a'/2 = Phi(-sqrt(10/9) t_{0.975, 9}) = Phi(-2.3848) = 0.008544
    assert report_stats.expanded_level(10) == pytest.approx(1 - 2 * 0.008544, abs=2e-5)
    assert report_stats.expanded_level(10_000) == pytest.approx(0.95, abs=1e-3)
    two = report_stats.describe([1.0, 2.0])
    assert np.isnan(two.ci_low) and np.isnan(two.ci_high) and two.interval() == "n/a (2 seeds; needs >= 3)"
    one = report_stats.describe([4.0])
    assert (one.mean, one.std, one.interval()) == (4.0, 0.0, "n/a (1 seed; needs >= 3)")
    tied = report_stats.describe([2.0, 2.0, 2.0])
    assert (tied.ci_low, tied.ci_high) == (2.0, 2.0)
    three = report_stats.describe([1.0, 2.0, 6.0])  # 3 seeds: the interval is at most [min, max]
    assert 1.0 <= three.ci_low < three.mean < three.ci_high <= 6.0


def test_across_seeds_describes_each_key_over_the_seeds_that_have_it() -> None:
    # fid over 3 seeds: mean 4, sample std sqrt(((1-4)^2 + (4-4)^2 + (7-4)^2) / 2) = 3; kid over the
    # one seed that has it: std 0 (one value); "is_mean" no seed has: left out; keys keep their order
    seeds = [{"fid": 1.0, "kid": 0.5}, {"fid": 4.0}, {"fid": 7.0, "other": 9.0}]
    across = report_stats.across_seeds(seeds, ["kid", "is_mean", "fid"])
    assert list(across) == ["kid", "fid"]
    assert (across["fid"].n, across["fid"].mean, across["fid"].std) == (3, 4.0, 3.0)
    assert (across["kid"].n, across["kid"].mean, across["kid"].std) == (1, 0.5, 0.0)
    assert report_stats.across_seeds(iter(seeds), ["kid", "fid"])["fid"].median == 4.0  # an iterator, read once
    assert report_stats.across_seeds([], ["fid"]) == {}


def test_p_beats_on_hand_computed_cases() -> None:
    # pairs (1,2) win, (1,3) win, (2,2) tie, (2,3) win: (3 + 0.5) / 4
    assert report_stats.p_beats([1, 2], [2, 3], lower_is_better=True) == 0.875
    assert report_stats.p_beats([1, 2], [2, 3], lower_is_better=False) == 0.125  # only the tie, half
    assert report_stats.p_beats([5, 5], [5], lower_is_better=True) == 0.5  # all ties
    assert report_stats.p_beats([1, 1, 1], [2, 2], lower_is_better=True) == 1.0
    assert report_stats.p_beats([1, 4], [2, 3], lower_is_better=True) == 0.5  # 1 beats both, 4 neither
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 5, 7).astype(float), rng.integers(0, 5, 6).astype(float)  # ties on purpose
    u = stats.mannwhitneyu(a, b, alternative="two-sided").statistic  # #(a > b) + 0.5 #(a = b)
    assert report_stats.p_beats(a, b, lower_is_better=False) == pytest.approx(u / (7 * 6), abs=1e-12)
    assert report_stats.p_beats(a, b) + report_stats.p_beats(b, a) == pytest.approx(1.0, abs=1e-12)


def _runs(scores: dict[str, list[float]]) -> pd.DataFrame:
    rows = [{"run_id": f"{label}{i}", "config_hash": label, "label": label, "loss": label, "penalty": "none",
             "dataset": "mnist", "arch": "mlp", "outcome": "finished", "wall_time_s": 1.0, "fid": v}
            for label, values in scores.items() for i, v in enumerate(values)]  # fmt: skip
    return pd.DataFrame(rows)


def test_comparisons_and_summary_carry_the_probability_and_interval() -> None:
    runs = _runs({"a": [1.0, 2.0, 3.0], "b": [2.0, 4.0, 5.0], "c": [9.0]})
    tests = {(t.a, t.b): t for t in report_stats.compare_losses(runs, "fid", lower_is_better=True)}
    # a vs b, lower better: a's 1 beats 2, 4, 5 (3); its 2 ties 2, beats 4, 5 (2.5); its 3 beats 4, 5 (2)
    assert tests["a", "b"].p_a_beats_b == pytest.approx(7.5 / 9)
    assert "P(a beats b on a random seed pair) = 0.83" in tests["a", "b"].statement
    assert tests["a", "c"].p is None and "P(a beats c on a random seed pair) = 1.00" in tests["a", "c"].statement
    higher = {(t.a, t.b): t for t in report_stats.compare_losses(runs, "fid", lower_is_better=False)}
    assert (
        "b > a" in higher["a", "b"].statement
        and "P(b beats a on a random seed pair) = 0.83" in higher["a", "b"].statement
    )
    summary = report_stats.summarise(runs).set_index("label")
    d = report_stats.describe([1.0, 2.0, 3.0])
    assert (summary.loc["a", "fid_ci_low"], summary.loc["a", "fid_ci_high"]) == (d.ci_low, d.ci_high)
    assert summary.loc["a", "fid_n"] == 3 and np.isnan(summary.loc["c", "fid_ci_low"])
    assert report_stats.no_pairs(runs, "fid") == []
    assert report_stats.no_pairs(_runs({"a": [1.0, 2.0]}), "fid") == [
        "mnist: no pairwise tests: one configuration (a); a test needs two"
    ]


def test_budget_band() -> None:
    values = np.array([5.0, 1.0, 4.0, 2.0, 8.0, 3.0])
    lo, hi = report_stats.expected_best_band(values)
    curve = report_stats.expected_best(values)
    assert lo.shape == hi.shape == curve.shape == (6,)
    assert np.all(lo <= curve) and np.all(curve <= hi) and np.all(lo < hi)
    assert np.all(np.diff(curve) <= 0)  # the expected best only improves with budget
    assert report_stats.expected_best_band(values[:2]) is None
    flat_lo, flat_hi = report_stats.expected_best_band(np.full(4, 2.5))
    assert np.all(flat_lo == 2.5) and np.all(flat_hi == 2.5)


@pytest.mark.slow  # a real run end to end (20-50 s on 2 cores): keeps the default suite short
def test_run_summary_prints_the_reports_interval(store: str) -> None:
    """A real 3-seed run on a 2-D mixture (no Inception): the printed mean, std and interval are
    report.stats.describe's of the printed seeds."""
    proc = lossbench("run", "--dataset", "grid25", "--seeds", "3", "--steps", "300", "--mode-samples", "500",
                     "--tracking-uri", store, "--no-progress")  # fmt: skip
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("seed"))
    keys = lines[header].split()[3:-1]
    col = keys.index("high_quality")
    seeds = [float(lines[header + 1 + i].split()[3 + col]) for i in range(3)]
    assert len(set(seeds)) > 1, seeds  # the seeds differ: the statistics below are not trivially equal
    rows = {line.split()[0]: line for line in lines[header + 4 :] if line.strip()}
    d = report_stats.describe(seeds)
    for name, value in (("mean", d.mean), ("std", d.std), ("lo95", d.ci_low), ("hi95", d.ci_high)):
        numbers = re.findall(r"-?\d+\.\d{4}", rows[name])
        assert float(numbers[col]) == pytest.approx(value, abs=6e-5), (name, rows[name])


def test_the_averaged_generators_scores_are_summarised_beside_gs() -> None:
    """--ema runs log ema_fid beside fid: the summary carries both, the display table shows both, and
    an ema_ score keeps its metric's direction."""
    from lossbench.metrics.registry import higher_is_better
    from lossbench.report import build

    runs = _runs({"a": [1.0, 2.0, 3.0]})
    runs["ema_fid"] = [0.5, 1.5, 2.5]
    summary = report_stats.summarise(runs)
    assert summary.loc[0, "fid_mean"] == 2.0 and summary.loc[0, "ema_fid_mean"] == 1.5
    shown = build._display(summary, "fid")
    assert list(shown.loc[0, ["fid mean ± std", "ema_fid mean ± std"]]) == ["2 ± 1", "1.5 ± 1"]
    assert higher_is_better("ema_modes") and not higher_is_better("ema_fid") and not higher_is_better("ema_reverse_kl")

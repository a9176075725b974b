"""A published value's spread beside ours: the paper's ± converted to a standard deviation across
runs, the gap in units of it, and Welch's test from the two summaries. Pure functions of numbers.

A table prints its ± as one of three kinds (registry/papers: `spread`):
    std   a standard deviation across the runs:  std = pm
    se    a standard error of the mean:           std = pm * sqrt(runs)   (se = std / sqrt(runs))
    none  no ± printed:                           no std, so no gap in std units and no test

A compared line's verdict (`verdict`) is an equivalence criterion, not "the test did not reject":
    reproduced    the protocol matches and the 95% Welch interval of (ours − paper) lies within
                  ± one paper std (the equivalence margin; an interval inside it at 95% is TOST at
                  2.5% on each side), whether or not it also excludes 0
    differs       otherwise, Welch's test rejects equal means (p < 0.05)
    inconclusive  otherwise (p >= 0.05 but the interval is wider than the margin: too few seeds or
                  too much spread to say either)
    untested      no interval (the paper prints no ±, or ours has < 2 seeds)
    protocol differs  the run's configuration differs from the paper's in a compared field
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from lossbench.cards import PaperResult


def paper_std(pm: float | None, spread: str, runs: int | None) -> float:
    """The paper's standard deviation across runs: pm (std), pm * sqrt(runs) (se); nan (none)."""
    if spread == "std" and pm is not None:
        return pm
    if spread == "se" and pm is not None and runs:
        return pm * math.sqrt(runs)
    return math.nan


def conversion(spread: str, runs: int | None) -> str:
    """How paper_std was obtained, in words."""
    if spread == "std":
        return "std as printed"
    if spread == "se":
        return f"se × √{runs}"
    return "no ± printed"


@dataclass(frozen=True)
class Welch:
    """Welch's unequal-variance t-test from summaries (two-sided)."""

    t: float
    df: float
    p: float
    low: float = math.nan  # the 95% interval of mean1 − mean2: diff ∓ t_{0.975, df} · sqrt(s1²/n1 + s2²/n2)
    high: float = math.nan


def welch_df(std1: float, n1: int, std2: float, n2: int) -> float:
    """Welch-Satterthwaite degrees of freedom:
    df = (s1²/n1 + s2²/n2)² / ((s1²/n1)² / (n1 − 1) + (s2²/n2)² / (n2 − 1))."""
    a, b = std1**2 / n1, std2**2 / n2
    return (a + b) ** 2 / (a**2 / (n1 - 1) + b**2 / (n2 - 1))


def welch(mean1: float, std1: float, n1: int, mean2: float, std2: float, n2: int) -> Welch | None:
    """t = (m1 − m2) / sqrt(s1²/n1 + s2²/n2), df = welch_df, p two-sided (scipy's
    ttest_ind_from_stats, equal_var=False); None without a spread or two runs on each side, or
    where both spreads are 0."""
    finite = all(math.isfinite(x) for x in (mean1, std1, mean2, std2))
    if not finite or min(n1, n2) < 2 or std1**2 / n1 + std2**2 / n2 == 0:
        return None
    res = stats.ttest_ind_from_stats(mean1, std1, n1, mean2, std2, n2, equal_var=False)
    df = welch_df(std1, n1, std2, n2)
    half = float(stats.t.ppf(1 - ALPHA / 2, df)) * math.sqrt(std1**2 / n1 + std2**2 / n2)
    diff = mean1 - mean2
    return Welch(float(res.statistic), df, float(res.pvalue), diff - half, diff + half)


ALPHA = 0.05
REPRODUCED, DIFFERS, UNTESTED, PROTOCOL = "reproduced", "differs", "untested", "protocol differs"
INCONCLUSIVE = "inconclusive (too few seeds / too much spread)"


def verdict(protocol_matches: bool, p: float, low: float, high: float, margin: float) -> str:
    """The module docstring's verdict: reproduced iff the protocol matches and
    −margin <= low and high <= margin (margin = one paper std); else differs iff p < ALPHA; else
    inconclusive; untested without a test."""
    if not protocol_matches:
        return PROTOCOL
    if math.isnan(p):
        return UNTESTED
    if math.isfinite(margin) and -margin <= low and high <= margin:
        return REPRODUCED
    return DIFFERS if p < ALPHA else INCONCLUSIVE


@dataclass(frozen=True)
class Versus:
    """One published value beside our per-seed values (in the paper's unit)."""

    published: PaperResult
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample std (n − 1) over our seeds; nan with one seed."""
        return statistics.stdev(self.values) if self.n > 1 else math.nan

    @property
    def paper_std(self) -> float:
        p = self.published
        return paper_std(p.pm, p.spread, p.runs)

    @property
    def conversion(self) -> str:
        return conversion(self.published.spread, self.published.runs)

    @property
    def diff(self) -> float:
        """ours − paper, in the paper's unit."""
        return self.mean - self.published.mean

    @property
    def z(self) -> float:
        """(ours − paper) / the paper's std; nan where the paper gives none (or 0)."""
        s = self.paper_std
        return self.diff / s if s > 0 else math.nan

    @property
    def welch(self) -> Welch | None:
        """Ours against the paper's (mean, std, runs); None where either side lacks a spread or n."""
        runs = self.published.runs
        if runs is None or not math.isfinite(self.paper_std):
            return None
        return welch(self.mean, self.std, self.n, self.published.mean, self.paper_std, runs)


def printed(res: PaperResult) -> str:
    """The paper's value as printed, with its kind: '6.3 ± 0.5 (se, 10 runs)', '8 (no ±, 5 runs)'."""
    runs = f"{res.runs} runs" if res.runs else "runs not stated"
    if res.pm is None:
        return f"{res.mean:g} (no ±, {runs})"
    return f"{res.mean:g} ± {res.pm:g} ({res.spread}, {runs})"

"""A published value's spread beside ours: the paper's ± converted to a standard deviation across
runs, the gap in units of it, and Welch's test from the two summaries. Pure functions of numbers.

A table prints its ± as one of three kinds (registry/papers: `spread`):
    std   a standard deviation across the runs:  std = pm
    se    a standard error of the mean:           std = pm * sqrt(runs)   (se = std / sqrt(runs))
    none  no ± printed:                           no std, so no gap in std units and no test
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
    return Welch(float(res.statistic), welch_df(std1, n1, std2, n2), float(res.pvalue))


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

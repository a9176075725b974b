"""`lossbench report --against NAME`: a published table (registry/papers/NAME.toml, read by
lossbench.cards.paper) beside our runs.

One row per published value whose (data set, loss, pack) the store also holds with a finished seed
that logged the value's metric: the paper's value as printed with what its ± is (a std, a standard
error, or none: the file's `spread`), the paper's std across runs (a standard error converted as
se·√runs; report/spread.py), ours (mean ± std over the finished seeds of one configuration, and
their count), the difference (ours − paper) in units of the paper's std (none where the paper prints
no ±), Welch's t-test from the two summaries where both sides have a spread and a count with the
95% interval of ours − paper, the protocol field by field (every [protocol] key of the paper file
that is a lossbench parameter is compared with the configuration's logged parameters, a mismatch
shown with both values; a field the run did not log, being older than it, is compared at its
default from config.ADDED_FIELDS; an epoch_samples of 0 as the training set's size), and the verdict
(report/spread.py: reproduced only where the protocol matches and the interval lies within ± one
paper std). Keys with no lossbench parameter are listed as not compared, never dropped in silence.

Ours, per (data set, loss, pack): the configuration with the most finished seeds carrying the metric
(after a two-stage sweep, the re-seeded best setting), ties to the best median, then the lowest
hash. Values the paper gives in percent (`unit = "percent"`) are compared with ours ×100 (lossbench
logs fractions).
"""

from __future__ import annotations

import html
import math
import statistics
from dataclasses import dataclass
from typing import Any

import pandas as pd

from lossbench.cards import Paper, PaperResult
from lossbench.config import ADDED_FIELDS, KEYS
from lossbench.errors import ConfigError
from lossbench.gan import data
from lossbench.metrics.registry import higher_is_better
from lossbench.report.spread import Versus, printed, verdict
from lossbench.tracking import _param_str
from lossbench.tracking_records import RunRecord

FINISHED = "FINISHED"
PROSE = ("metric",)  # protocol keys that describe rather than set (with every *_note)


@dataclass(frozen=True)
class Field:
    """One protocol field: the paper's value and ours (None: the runs do not record it)."""

    key: str
    paper: Any
    ours: str | None

    @property
    def matches(self) -> bool:
        return self.ours is not None and _same(self.paper, self.ours)

    def describe(self) -> str:
        return f"{self.key} (paper {_show(self.paper)}, ours {'not recorded' if self.ours is None else self.ours})"


@dataclass(frozen=True)
class Row:
    published: PaperResult
    config_hash: str  # our configuration
    configs: int  # configurations of this (data set, loss, pack) with a finished scored seed
    values: tuple[float, ...]  # ours, one per finished seed, in the paper's unit
    fields: tuple[Field, ...]

    @property
    def versus(self) -> Versus:
        return Versus(self.published, self.values)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return self.versus.mean

    @property
    def std(self) -> float:
        return self.versus.std

    @property
    def z(self) -> float:
        """(ours − paper) / the paper's std (se·√runs for a standard error); nan where the paper prints no ±."""
        return self.versus.z

    @property
    def protocol_matches(self) -> bool:
        return all(f.matches for f in self.fields)

    @property
    def verdict(self) -> str:
        """spread.verdict: reproduced | differs | inconclusive (...) | untested | protocol differs."""
        w = self.versus.welch
        if w is None:
            return verdict(self.protocol_matches, math.nan, math.nan, math.nan, math.nan)
        return verdict(self.protocol_matches, w.p, w.low, w.high, self.versus.paper_std)

    def protocol(self) -> str:
        differ = [f.describe() for f in self.fields if not f.matches]
        same = [f.key for f in self.fields if f.matches]
        if not self.fields:
            return "no field compared"
        return "; ".join(([f"differs: {', '.join(differ)}"] if differ else [])
                         + ([f"matches: {', '.join(same)}"] if same else []))  # fmt: skip


@dataclass(frozen=True)
class Comparison:
    paper: Paper
    rows: tuple[Row, ...]
    not_run: tuple[PaperResult, ...]  # published values with no finished run here
    not_compared: tuple[str, ...]  # protocol keys that are no lossbench parameter
    context: tuple[PaperResult, ...] = ()  # rows printed for context only (no lossbench model)

    def frame(self) -> pd.DataFrame:
        """The numbers, one line per row (against-NAME.csv)."""
        return pd.DataFrame([_numbers(r) for r in self.rows])

    def display(self) -> pd.DataFrame:
        """The human table."""
        return pd.DataFrame([_shown(r) for r in self.rows])

    def notes(self) -> list[str]:
        p = self.paper
        out = [f"Source: {p.citation}, {p.table} ({p.url}); file registry/papers/{p.name}.toml."]
        if p.note:
            out.append(f"File note: {p.note}")
        if any(r.published.verified is False for r in self.rows):
            out.append("unverified: the paper file flags this value as not checked against the paper itself.")
        out.append("Ours: per (data set, loss, pack), the configuration with the most finished seeds that logged the "
                   "metric (ties: the best median); mean and sample std over those seeds.")  # fmt: skip
        for spread, runs in sorted({(r.published.spread, r.published.runs or 0) for r in self.rows}):
            out.append(_spread_note(spread, runs or None))
        if any(r.versus.welch for r in self.rows):
            out.append("Welch t, p: ours against the paper's mean, std and runs, unequal variances, two-sided "
                       "(scipy ttest_ind_from_stats, equal_var=False); df by Welch-Satterthwaite; the 95% CI of "
                       "ours − paper is diff ± t(0.975, df) · sqrt(ours std²/n + paper std²/runs).")
            out.append("Verdict: reproduced only where the protocol matches and the 95% CI of ours − paper lies "
                       "within ± one paper std (equivalence margin; TOST at 2.5% a side); otherwise differs where "
                       "p < 0.05, else inconclusive (too few seeds / too much spread).")  # fmt: skip
        for metric in sorted({r.published.metric for r in self.rows if r.published.unit == "percent"}):
            out.append(f"{metric}: the paper gives percent; lossbench logs a fraction, shown here ×100.")
        for metric in sorted({r.published.metric for r in self.rows}):
            better = "higher" if higher_is_better(metric) else "lower"
            out.append(f"{metric}: {better} is better; a positive difference means ours is higher.")
        if self.not_compared:
            out.append(f"Protocol fields not compared (no lossbench parameter): {', '.join(self.not_compared)}; "
                       f"see the paper file.")  # fmt: skip
        if note := p.protocol.get("protocol_note"):
            out.append(f"Protocol note: {note}")
        for r in self.rows:
            if r.published.note:
                out.append(f"{r.published.label} on {r.published.dataset}: {r.published.note}")
        if self.context:
            shown = ", ".join(f"{r.label} on {r.dataset} ({r.metric})" for r in self.context)
            out.append(f"Printed in the table for context, no lossbench model ({len(self.context)}): {shown}.")
        if self.not_run:
            shown = ", ".join(f"{r.label} on {r.dataset} ({r.metric})" for r in self.not_run)
            out.append(f"Published values with no finished run here ({len(self.not_run)}): {shown}.")
        if p.missing:
            out.append(f"The paper file lists {len(p.missing)} values or protocol facts it could not source.")
        out.append(f"Where each cell has been compared in the committed reports: lossbench papers {p.name}.")
        return out

    def markdown(self) -> str:
        head = f"## Beside {self.paper.citation}, {self.paper.table}"
        none = f"No (data set, loss) of {self.paper.name} among these runs."
        table = _md_table(self.display()) if self.rows else none
        return "\n".join([head, "", table, "", *[f"- {n}" for n in self.notes()]]) + "\n"

    def html(self) -> str:
        parts = [f"<h2>Beside {html.escape(self.paper.citation)}, {html.escape(self.paper.table)}</h2>"]
        if self.rows:
            parts.append(self.display().to_html(index=False, escape=True, table_id="against", na_rep=""))
        else:
            parts.append(f"<p>No (data set, loss) of {html.escape(self.paper.name)} among these runs.</p>")
        parts += ["<ul>", *[f"<li>{html.escape(n)}</li>" for n in self.notes()], "</ul>"]
        return "\n".join(parts)


def compare(paper: Paper, records: list[RunRecord]) -> Comparison:
    """The paper's published values beside the finished seed runs in `records`."""
    # (dataset, loss, pack) -> config hash -> finished runs
    groups: dict[tuple[str, str, int], dict[str, list[RunRecord]]] = {}
    for r in records:
        if r.status != FINISHED:
            continue
        key = (r.params.get("dataset", ""), r.params.get("loss", ""), _int(r.params.get("pack", "1")))
        groups.setdefault(key, {}).setdefault(r.config_hash, []).append(r)
    for runs in (runs for group in groups.values() for runs in group.values()):
        runs.sort(key=lambda r: _int(r.params.get("seed", "0")))
    rows, not_run = [], []
    for res in (r for r in paper.results if not r.context):
        scale = 100.0 if res.unit == "percent" else 1.0
        scored = {h: [scale * r.metrics[res.metric] for r in runs if math.isfinite(r.metrics.get(res.metric, math.nan))]
                  for h, runs in groups.get((res.dataset, res.model, res.pack), {}).items()}  # fmt: skip
        scored = {h: v for h, v in scored.items() if v}
        if not scored:
            not_run.append(res)
            continue
        sign = -1.0 if higher_is_better(res.metric) else 1.0
        best = min(scored, key=lambda h: (-len(scored[h]), sign * statistics.median(scored[h]), h))
        params = next(r.params for r in groups[(res.dataset, res.model, res.pack)][best])
        rows.append(Row(res, best, len(scored), tuple(scored[best]), _fields(paper.protocol, res.dataset, params)))
    rows.sort(key=lambda r: (r.published.dataset, r.published.model, r.published.pack, r.published.metric))
    not_compared = tuple(k for k in paper.protocol if not _compared(k) and not _prose(k))
    context = tuple(r for r in paper.results if r.context)
    return Comparison(paper, tuple(rows), tuple(not_run), not_compared, context)


def _spread_note(spread: str, runs: int | None) -> str:
    over = f"{runs} runs" if runs else "a number of runs the file does not state"
    if spread == "se":
        return (f"The paper's ± is a standard error over {runs} runs: its std is se × √{runs} = "
                f"{math.sqrt(runs):.3g} × se, and every gap is in that std.")  # fmt: skip
    if spread == "std":
        return f"The paper's ± is a standard deviation across {over}: the gap is in that std as printed."
    return f"The paper prints no ± (values over {over}): no gap in std units and no test, only ours − paper."


def _compared(key: str) -> bool:
    return key in KEYS


def _prose(key: str) -> bool:
    return key.endswith("_note") or key in PROSE


def _fields(protocol: dict[str, Any], dataset: str, params: dict[str, str]) -> tuple[Field, ...]:
    out = []
    for key, value in protocol.items():
        if not _compared(key) or _prose(key):
            continue
        if isinstance(value, dict):  # per data set
            if dataset not in value:
                continue
            value = value[dataset]
        ours = params.get(key)
        if ours is None and key in ADDED_FIELDS:  # a run from before the field: it ran at the default
            ours = _param(ADDED_FIELDS[key])
        if key == "epoch_samples" and ours == "0":  # 0 = an epoch is the training set
            ours = _training_set(dataset) or ours
        if key == "epochs" and ours in (None, "0") and params.get("steps"):  # a budget given in steps
            ours = f"{int(params['steps']):,} steps, not epochs"
        out.append(Field(key, value, ours))
    return tuple(out)


def _param(value: Any) -> str:
    return _param_str(value)


def _training_set(dataset: str) -> str | None:
    """The training split's size as a string ('100000'); None where the data set is not known here."""
    try:
        return str(data.size(dataset, "train"))
    except (ConfigError, KeyError, OSError, ValueError):
        return None


def _same(paper: Any, ours: str) -> bool:
    if isinstance(paper, list):  # any of these
        return any(_same(v, ours) for v in paper)
    if isinstance(paper, bool):
        return ours.strip().lower() == str(paper).lower()
    if isinstance(paper, (int, float)):
        try:
            return math.isclose(float(ours), float(paper), rel_tol=1e-9)
        except ValueError:
            return False
    return str(paper) == ours


def _show(value: Any) -> str:
    if isinstance(value, list):
        return "any of " + "/".join(map(str, value))
    return f"{value:g}" if isinstance(value, float) else str(value)


def _int(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        return 1


def _flags(res: PaperResult) -> list[str]:
    return (["unverified"] if res.verified is False else []) + (["see note"] if res.note else [])


def _fmt(value: float, spec: str) -> str:
    return "n/a" if math.isnan(value) else format(value, spec)


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(str(row[c]).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


def _numbers(r: Row) -> dict[str, object]:
    """One row of against-NAME.csv."""
    p, v, w = r.published, r.versus, r.versus.welch
    return {
        "dataset": p.dataset, "loss": p.model, "label": p.label, "pack": p.pack, "metric": p.metric,
        "unit": p.unit or "lossbench", "paper_mean": p.mean, "paper_pm": p.pm, "paper_spread": p.spread,
        "paper_runs": p.runs, "paper_std": v.paper_std, "paper_std_from": v.conversion,
        "ours_mean": v.mean, "ours_std": v.std, "ours_seeds": v.n, "diff": v.diff, "diff_in_paper_std": v.z,
        "welch_t": w.t if w else math.nan, "welch_df": w.df if w else math.nan,
        "welch_p": w.p if w else math.nan, "diff_ci95_low": w.low if w else math.nan,
        "diff_ci95_high": w.high if w else math.nan, "verdict": r.verdict, "config_hash": r.config_hash,
        "protocol_matches": r.protocol_matches,
        "protocol_differs": "; ".join(f.describe() for f in r.fields if not f.matches),
        "verified": p.verified is not False,
    }  # fmt: skip


def _shown(r: Row) -> dict[str, object]:
    """One row of the human table."""
    p, v, w = r.published, r.versus, r.versus.welch
    return {
        "data set": p.dataset,
        "loss (paper's name)": f"{p.model} ({p.label})" + (f", pack {p.pack}" if p.pack != 1 else ""),
        "metric": p.metric + (" (%)" if p.unit == "percent" else ""),
        "paper (as printed)": printed(p),
        "paper std": f"{_fmt(v.paper_std, '.3g')} ({v.conversion})",
        "ours mean ± std (n seeds)": f"{v.mean:.4g} ± {_fmt(v.std, '.2g')} ({v.n})",
        "ours − paper": format(v.diff, "+.3g"),
        "(ours − paper) / paper std": _fmt(v.z, "+.2f"),
        "Welch t (df), p": f"{w.t:+.2f} ({w.df:.1f}), p = {w.p:.2g}" if w else "n/a",
        "95% CI of ours − paper": f"[{w.low:+.3g}, {w.high:+.3g}]" if w else "n/a",
        "verdict": r.verdict,
        "our configuration": r.config_hash + (f" (1 of {r.configs})" if r.configs > 1 else ""),
        "protocol": r.protocol(),
        "flags": ", ".join(_flags(p)),
    }  # fmt: skip

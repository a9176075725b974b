"""Which published cells have been compared, and with what result: read from the committed reports,
never declared in the paper files.

A committed report that compared against paper NAME holds reports/<study>/against-NAME.csv (written by
`lossbench report --against NAME`, report/against.py). `lossbench papers NAME` lists every cell of
registry/papers/NAME.toml with each report line that compared against it, and the verdict of that
comparison (`outcome`, report/spread.py's `verdict`): reproduced (the protocol matches and the 95%
Welch interval of ours − paper lies within ± one paper std), differs (p < 0.05), inconclusive (too
few seeds / too much spread), untested, or protocol differs. A line from before the interval was
written (no diff_ci95_* columns) can be no more than inconclusive.

A cell counts as reproduced where some report says "reproduced". A reports folder that is missing
or cannot be read is one error line.

Also here: a committed runs.csv read back into run records (`runs_csv_records`), so that an against
table can be recomputed by report/against.py's own code path where the MLflow store is not committed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from lossbench.cards import Paper, PaperResult, registry_dir
from lossbench.errors import ConfigError
from lossbench.report.spread import REPRODUCED, printed, verdict
from lossbench.report.stats import SCORES
from lossbench.tracking_records import RunRecord

KEY = ("dataset", "loss", "pack", "metric")


def reports_dir() -> Path:
    """The checkout's reports/ folder (beside registry/), else ./reports."""
    beside = registry_dir().parent / "reports"
    return beside if beside.is_dir() else Path("reports")


def outcome(line: dict[str, Any]) -> str:
    """One against-table line's verdict (report/spread.py's `verdict`, from its columns)."""
    return verdict(_bool(line.get("protocol_matches")), _float(line.get("welch_p")),
                   _float(line.get("diff_ci95_low")), _float(line.get("diff_ci95_high")),
                   _float(line.get("paper_std")))  # fmt: skip


@dataclass(frozen=True)
class Seen:
    """One comparison of a cell in a committed report."""

    report: str  # e.g. reports/pacgan2018/against-pacgan2018.csv
    line: dict[str, Any]

    @property
    def outcome(self) -> str:
        return outcome(self.line)

    def describe(self) -> str:
        g = self.line
        std = _float(g.get("ours_std"))
        z, p = _float(g.get("diff_in_paper_std")), _float(g.get("welch_p"))
        low, high = _float(g.get("diff_ci95_low")), _float(g.get("diff_ci95_high"))
        parts = [f"ours {_float(g.get('ours_mean')):.4g} ± {'n/a' if math.isnan(std) else format(std, '.2g')} "
                 f"({int(_float(g.get('ours_seeds')))} seeds)",
                 "gap n/a (no paper std)" if math.isnan(z) else f"gap {z:+.2f} paper std",
                 "no Welch test" if math.isnan(p) else f"Welch p = {p:.2g}"]  # fmt: skip
        if not math.isnan(low):
            parts.append(f"95% CI of ours − paper [{low:+.3g}, {high:+.3g}] "
                         f"(margin ± {_float(g.get('paper_std')):.3g}, one paper std)")  # fmt: skip
        differs = g.get("protocol_differs")
        why = f" ({differs})" if self.outcome == "protocol differs" and isinstance(differs, str) and differs else ""
        return f"{self.report}: {self.outcome}{why}; " + ", ".join(parts)


@dataclass(frozen=True)
class Cell:
    """A published cell and every committed comparison with it; reproduced if any one reproduced it."""

    published: PaperResult
    seen: tuple[Seen, ...]

    @property
    def reproduced(self) -> bool:
        return any(s.outcome == REPRODUCED for s in self.seen)


def cells(paper: Paper, root: Path) -> list[Cell]:
    """Every cell of `paper` with the lines of root/*/against-<paper>.csv that compared against it."""
    seen: dict[tuple, list[Seen]] = {}
    try:
        if not root.is_dir():
            raise ConfigError(f"{root}: no reports folder there (--reports names the folder of committed reports)")
        next(root.iterdir(), None)  # an unreadable folder fails here, not as "never compared"
    except OSError as exc:
        raise ConfigError(f"{root}: cannot read the reports folder ({exc.strerror or exc})") from None
    for path in sorted(root.glob(f"*/against-{paper.name}.csv")):
        try:
            frame = pd.read_csv(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read ({exc})") from None
        if missing := [k for k in KEY if k not in frame]:
            raise ConfigError(f"{path}: not an against table (no column {missing[0]!r})")
        shown = str(path.relative_to(root.parent)) if path.is_relative_to(root.parent) else str(path)
        for line in frame.to_dict("records"):
            key = (line["dataset"], line["loss"], int(line["pack"]), line["metric"])
            seen.setdefault(key, []).append(Seen(shown, line))
    return [Cell(r, tuple(seen.get((r.dataset, r.model, r.pack, r.metric), ()))) for r in paper.results]


def listing(paper: Paper, root: Path) -> list[str]:
    """The lines `lossbench papers NAME` prints."""
    found = cells(paper, root)
    compared = [c for c in found if not c.published.context]
    out = [f"{paper.name}: {paper.citation}, {paper.table} ({len(compared)} cells; "
           f"{sum(bool(c.seen) for c in compared)} compared, {sum(c.reproduced for c in compared)} reproduced, "
           f"in {root})"]  # fmt: skip
    for c in found:
        r = c.published
        name = f"{r.label}{f' (pack {r.pack})' if r.pack != 1 else ''} on {r.dataset}, {r.metric}"
        value = printed(r)
        if r.context:
            out.append(f"  {name} = {value}: context only (no lossbench model)")
            continue
        out.append(f"  {name} = {value}: " + ("reproduced" if c.reproduced else
                                               "compared, not reproduced" if c.seen else "never compared"))  # fmt: skip
        out += [f"    {s.describe()}" for s in c.seen]
    return out


def runs_csv_records(path: Path, params_by_hash: dict[str, dict[str, Any]]) -> list[RunRecord]:
    """A committed runs.csv (report/build.py's, one line per seed run) as run records, with each
    configuration's parameters from `params_by_hash` (config hash -> cfg.flat(), e.g. from the suite
    that produced the runs); finished runs only carry metrics, as in the store. A run whose hash is not
    in `params_by_hash` is one error line."""
    from lossbench.tracking import _param_str

    frame = pd.read_csv(path)
    out = []
    for line in frame.to_dict("records"):
        h = line["config_hash"]
        if h not in params_by_hash:
            raise ConfigError(f"{path}: run {line['run_id']} has configuration {h}, which none given has")
        params = {k: _param_str(v) for k, v in params_by_hash[h].items()} | {"seed": str(line["seed"])}
        metrics = {k: float(line[k]) for k in SCORES if k in line and not math.isnan(_float(line[k]))}
        out.append(RunRecord(line["run_id"], str(line["parent_run_id"]), h, line["status"], line["outcome"], params,
                             metrics, 0, None))  # fmt: skip
    return out


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _bool(value: Any) -> bool:
    return value is True or str(value).strip().lower() == "true"

"""`lossbench report`: tracking store -> pandas -> tables, figures and tests -> reports/<experiment>/.

The store, read through MLflow's client, is the source of truth. Outputs: runs.csv (one row per
seed run), summary.csv (one row per configuration), report.md (the tables and test statements) and
a self-contained index.html (inline CSS, figures embedded), with each configuration linked to its
MLflow run ids. With `against` (a paper in registry/papers/), a table of the published values beside
ours (report/against.py) in both, and against-<paper>.csv. All or nothing: built in a staging folder
and moved into place once complete, so an error or Ctrl-C leaves the previous report as it was; and
only into a folder it made or an empty one, replacing there only the files it wrote (see `build`).
"""

from __future__ import annotations

import base64
import html
import logging
import math
from pathlib import Path

import pandas as pd

from lossbench import cards, folders, manifest
from lossbench.errors import LossbenchError
from lossbench.metrics.registry import BEST_KEYS, BEST_PREFIX, EMA_PREFIX, higher_is_better, ranking_key
from lossbench.progress import phase
from lossbench.report import against as report_against
from lossbench.report import figures as report_figures
from lossbench.report import protocol as report_protocol
from lossbench.report import stats as report_stats
from lossbench.tracking import Tracker

log = logging.getLogger(__name__)

WRITER = "lossbench report"  # the manifest's `written_by`: the folders this report may write into
OUTCOMES = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "interrupted", "RUNNING": "running"}


def _label(params: dict[str, str]) -> str:
    """The loss; then its penalty and weight and its n_critic, unless they are the card's; then instance
    noise, packing, an update rule other than alternating and consensus, when on; the optimiser, unless
    the card's; the batching, unless iid."""
    loss, penalty = params.get("loss", ""), params.get("penalty", "none")
    weight = float(params.get("penalty_weight", 0) or 0)
    card = cards.loss_card(loss).get("defaults", {}) if ":" not in loss else {}
    label = loss
    if (penalty, weight) != (card.get("penalty", "none"), float(card.get("penalty_weight", 0.0))):
        label += f"+{penalty}" + (f"({weight:g})" if penalty != "none" else "")
    n_critic = int(params.get("n_critic", 1) or 1)
    if n_critic != int(card.get("n_critic", 1)):
        label += f" n_critic {n_critic}"
    noise = float(params.get("instance_noise", 0) or 0)
    pack = int(params.get("pack", 1) or 1)  # PacGAN's packing: "pack 2" is the paper's PacGAN2
    label += (f" noise {noise:g}" if noise else "") + (f" pack {pack}" if pack > 1 else "")
    updates, consensus = params.get("updates") or "alternating", float(params.get("consensus", 0) or 0)
    label += f" {updates}" if updates != "alternating" else ""
    label += f" consensus {consensus:g}" if consensus else ""
    optimizer = params.get("optimizer") or card.get("optimizer", "adam")
    label += f" {optimizer}" if optimizer != card.get("optimizer", optimizer) else ""
    batching = params.get("batching") or "iid"  # runs before the field read as its default
    return label + (f" {batching} batches" if batching != "iid" else "")


def _equilibrium_distance(metrics: dict[str, float]) -> dict[str, float]:
    """The Dirac-GAN's final distance ||(theta, psi)|| to its equilibrium (0, 0), where logged."""
    if "theta" in metrics and "psi" in metrics:
        return {"equilibrium_distance": math.hypot(metrics["theta"], metrics["psi"])}
    return {}


def collect(tracker: Tracker, datasets: tuple[str, ...] = (), losses: tuple[str, ...] = ()) -> pd.DataFrame:
    rows = []
    for r in tracker.runs("seed"):
        p, m = r.params, r.metrics
        if (datasets and p.get("dataset") not in datasets) or (losses and p.get("loss") not in losses):
            continue
        outcome = r.outcome or OUTCOMES.get(r.status, "failed")
        end = r.end_time or r.start_time
        rows.append(
            {
                "run_id": r.run_id,
                "parent_run_id": r.parent_id,
                "config_hash": r.config_hash,
                "loss": p.get("loss", ""),
                "penalty": p.get("penalty", "none"),
                "dataset": p.get("dataset", ""),
                "arch": p.get("arch", ""),
                "steps": int(p.get("steps", 0)),
                "seed": int(p.get("seed", -1)),
                "status": r.status,
                "outcome": outcome,
                "wall_time_s": (end - r.start_time) / 1000.0,
                "label": _label(p),
                **report_protocol.columns(p),
                **{k: m[k] for k in report_stats.SCORES if k in m},
                **_equilibrium_distance(m),
            }
        )
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame = frame.sort_values(["dataset", "label", "seed"]).reset_index(drop=True)
    return frame


def histories(tracker: Tracker, runs: pd.DataFrame, keys: tuple[str, ...]) -> pd.DataFrame:
    """Every finished run's history of `keys`: the slow part of a report (one query per run and key)."""
    finished = runs.loc[runs["outcome"] == "finished", "run_id"]
    rows = []
    with phase(f"report: metric histories of {len(finished)} runs", len(finished), unit="run") as advance:
        for run_id in finished:
            rows += [{"run_id": run_id, "key": key, "step": m.step, "value": m.value}
                     for key in keys for m in tracker.metric_history(run_id, key)]  # fmt: skip
            advance(1)
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value"])


def median_seed_grid(tracker: Tracker, runs: pd.DataFrame, score: str, out: Path) -> dict[str, Path]:
    """Per label, the last sample grid of the finished seed with the median score."""
    grids: dict[str, Path] = {}
    done = report_stats.finished_with(runs, score)
    for (dataset, label), group in done.groupby(["dataset", "label"]):
        ordered = group.sort_values(score)
        run_id = ordered.iloc[(len(ordered) - 1) // 2]["run_id"]
        files = tracker.artifacts(run_id, "samples")
        if files:
            local = tracker.download(run_id, files[-1], out / run_id)  # one folder per run: same file names
            grids[f"{dataset} / {label} (seed {int(ordered.iloc[(len(ordered) - 1) // 2]['seed'])})"] = local
    return grids


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        lines.append("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    return "\n".join(lines)


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return "" if pd.isna(v) else f"{v:.4g}"
    return str(v)


def _display(summary: pd.DataFrame, score: str) -> pd.DataFrame:
    """The human table: one line per configuration, mean ± std and the spread."""
    out = pd.DataFrame({"dataset": summary["dataset"], "configuration": summary["label"]})
    out["seeds"] = summary["seeds"]
    out["finished / diverged / failed"] = [
        f"{a} / {b} / {c}" for a, b, c in zip(summary["finished"], summary["diverged"], summary["failed"])
    ]
    extra = ("kid_mean", "is_mean", "precision", "recall", "density", "coverage", "high_quality", "reverse_kl",
             "equilibrium_distance")  # fmt: skip
    # the score, its best over each run's evaluations and its averaged G's, then every other best_<key> the
    # runs logged (metrics.registry.BEST_KEYS), then the rest: each where the summary has it
    for s in dict.fromkeys((score, f"{BEST_PREFIX}{score}", f"{EMA_PREFIX}{score}", *BEST_KEYS, *extra)):
        if f"{s}_mean" in summary:
            out[f"{s} mean ± std"] = [
                "" if pd.isna(m) else f"{m:.4g} ± {sd:.2g}" for m, sd in zip(summary[f"{s}_mean"], summary[f"{s}_std"])
            ]
            out[f"{s} mean: 95% CI"] = [
                "" if pd.isna(n) else report_stats.interval_text(int(n), lo, hi)
                for n, lo, hi in zip(summary[f"{s}_n"], summary[f"{s}_ci_low"], summary[f"{s}_ci_high"])
            ]
            out[f"{s} median [min, max]"] = [
                "" if pd.isna(md) else f"{md:.4g} [{lo:.4g}, {hi:.4g}]"
                for md, lo, hi in zip(summary[f"{s}_median"], summary[f"{s}_min"], summary[f"{s}_max"])
            ]
    if "g_signal_early" in summary and summary["g_signal_early"].notna().any():
        out["G's signal, first 10% (median)"] = [_fmt(v) for v in summary["g_signal_early"]]
    out["seed wall time (s), evaluations included"] = summary["wall_time_s_mean"].round(1)  # a seed run: start to end
    out["MLflow runs"] = summary["run_ids"]
    return out


def build(
    tracking_uri: str | None,
    experiment: str,
    out: Path | None = None,
    datasets: tuple[str, ...] = (),
    losses: tuple[str, ...] = (),
    against: str | None = None,
) -> Path:
    """Write the report of `experiment` to `out` (default reports/<experiment>) and return `out`.

    All or nothing. The report is written into a hidden staging folder beside `out`
    (`.<name>.lossbench-<random>.tmp`, same parent, so same file system) and moved into place only
    once every file is written. Any exception, Ctrl-C (SIGINT), SIGTERM or SIGHUP before that removes
    the staging folder and leaves `out` exactly as it was (SIGTERM and SIGHUP raise
    KeyboardInterrupt while the report is built, so the clean-up runs; a signal the process ignores
    stays ignored). The move itself is not cut short by those signals: one that arrives during it is
    honoured, as KeyboardInterrupt, just after. Only SIGKILL or a crash can leave a staging folder
    behind (hidden, in the parent; safe to delete).

    Whose folder. The report writes only into a folder that does not exist, an empty one, or one it
    made: one holding its manifest, `.lossbench-manifest.json`, which lists every file the report
    wrote there (lossbench.manifest). Any other folder is refused in one line before the store is
    read, and nothing in it is touched: a folder of yours, and a report folder written by a
    lossbench older than the manifest (delete it or move it aside, or choose another `--out`). The
    default folder, reports/<experiment>, becomes the report's on its first report.

    Replacing. A new report replaces the previous one completely: a figure, sample grid or
    against-<paper>.csv of the old report that the new one lacks is gone. Where `out` holds nothing
    but the previous report (the files its manifest lists), the folder is replaced as a whole: on
    Linux (renameat2 RENAME_EXCHANGE) in one step, so `out` holds the old report or the new one at
    every instant; elsewhere by renaming the old folder aside and the new one in, with a window of
    microseconds in which `out` does not exist (the old report is then in `<staging>.old`). The
    folder's permissions are kept.

    Your files in its folder. Files you put into a report's folder later (say notes.txt, or
    figures/my_plot.png) are never touched: the report's files are replaced one by one (each rename
    atomic, the old report's files that the new one lacks removed, index.html last, the manifest
    after it): still nothing changes until the whole report is written, but a SIGKILL or an I/O error
    during those renames can leave some files old and some new (the manifest, rewritten atomically
    first with the old files and the new, keeps the folder the report's). The same holds where `out`
    is the current directory or holds it, is a mount point, or sits in a folder this process cannot
    write (then the staging folder is made inside `out`). A file of yours where the new report would
    write one (an against-<paper>.csv the old report did not have), a folder there, or a link on
    the way fails, in one line, before anything moves.
    """
    paper = cards.paper(against) if against else None  # an unknown paper fails before anything is read or written
    out = out or Path("reports") / experiment
    manifest.claim(out, WRITER, "report")  # a folder not the report's fails before the store is read
    tracker = Tracker(tracking_uri, experiment, create=False)
    runs = collect(tracker, datasets, losses)
    if runs.empty:
        raise LossbenchError(f"no matching runs in experiment '{experiment}' of {tracker.uri}; nothing to report")
    with folders.replacing(out, WRITER, "report") as staging:
        _write(staging, tracker, experiment, runs, paper, datasets, losses)
    return out


def main_score(runs: pd.DataFrame) -> str:
    """The score the report tests and plots: the first ranking key (metrics.registry.RANKING: fid, modes,
    fcd, kid_mean, is_mean) the runs logged, else the Dirac-GAN's equilibrium_distance, else fid (then
    nothing has it, and the report says so)."""
    logged = [c for c in runs.columns if runs[c].notna().any()]
    return ranking_key(logged) or ("equilibrium_distance" if "equilibrium_distance" in logged else "fid")


def _write(
    out: Path, tracker: Tracker, experiment: str, runs: pd.DataFrame, paper: cards.Paper | None,
    datasets: tuple[str, ...], losses: tuple[str, ...],
) -> None:  # fmt: skip
    """Every file of the report into `out` (a fresh staging folder)."""
    figs = out / "figures"
    figs.mkdir(parents=True, exist_ok=True)

    score = main_score(runs)
    lower = not higher_is_better(score)
    summary = report_stats.summarise(runs)
    summary = summary.sort_values(["dataset", "label"]).reset_index(drop=True)
    tests = report_stats.compare_losses(runs, score, lower_is_better=lower)
    hist = histories(tracker, runs, tuple(dict.fromkeys((score, "d_loss", "g_loss", "g_signal", "theta", "psi"))))
    summary = summary.merge(report_stats.early_signal(hist, runs), on="config_hash", how="left")

    figures: dict[str, Path | None] = {
        f"Final {score} across seeds": report_figures.score_distribution(runs, score, figs / "distribution.png"),
        f"{score} over training": report_figures.curves(hist, runs, score, figs / f"{score}_curve.png"),
        "Discriminator loss": report_figures.curves(hist, runs, "d_loss", figs / "d_loss.png"),
        "Generator loss": report_figures.curves(hist, runs, "g_loss", figs / "g_loss.png"),
        "G's learning signal over training": report_figures.curves(
            hist, runs, "g_signal", figs / "g_signal.png", log=True
        ),
        "Dirac-GAN trajectories in the (θ, ψ) plane": report_figures.trajectories(
            hist, runs, figs / "trajectories.png"
        ),
        f"Expected best {score} vs budget": report_figures.budget(runs, score, figs / "budget.png", lower),
    }
    hist_score = hist[hist["key"] == score]
    if hist_score.groupby("run_id")["step"].nunique().max(skipna=True) <= 1 if not hist_score.empty else True:
        figures[f"{score} over training"] = None  # only final evaluations: no curve to draw
    missing = _not_drawn([k for k, v in figures.items() if v is None], score)
    figures = {k: v for k, v in figures.items() if v is not None}
    grids = median_seed_grid(tracker, runs, score, figs / "samples")
    if not grids:
        missing.append(f"Samples: no finished run with {score} logged a sample grid")
    about = report_protocol.lines(runs) + report_protocol.best_lines(runs) + report_protocol.statistics_lines(
        score, lower)  # fmt: skip
    untested = report_stats.no_pairs(runs, score)

    runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    display = _display(summary, score)
    md = [f"# lossbench report: {experiment}", "", f"Store: `{tracker.uri}`; {len(runs)} seed runs.", ""]
    md += ["## What each number is", "", *[f"- {line}" for line in about], ""]
    md += ["## Summary", "", _md_table(display), "", f"## Tests on final {score}", ""]
    md += [f"- {line}" for line in untested + [t.statement for t in tests]]
    md += ["", "## Not shown", "", *[f"- {line}" for line in missing]] if missing else []
    beside = ""
    if paper is not None:
        records = [r for r in tracker.runs("seed") if (not datasets or r.params.get("dataset") in datasets)
                   and (not losses or r.params.get("loss") in losses)]  # fmt: skip
        comparison = report_against.compare(paper, records)
        comparison.frame().to_csv(out / f"against-{paper.name}.csv", index=False)
        md += ["", comparison.markdown()]
        beside = comparison.html()
    (out / "report.md").write_text("\n".join(md) + "\n")
    page = _html(experiment, tracker.uri, display, untested + [t.statement for t in tests], figures, grids, beside,
                 about, missing)  # fmt: skip
    (out / "index.html").write_text(page)


WHY_NOT_DRAWN = {  # figure title (its start; {score}: the report's score) -> why it has nothing to show
    "Final": "no finished seed run has {score}",
    "{score} over training": "{score} was evaluated only at the last step (eval_every 0), or not at all: no curve",
    "Discriminator loss": "no run logged d_loss",
    "Generator loss": "no run logged g_loss",
    "G's learning signal": "no run logged g_signal",
    "Dirac-GAN": "no Dirac-GAN runs (no θ, ψ logged)",
    "Expected best": "no finished seed run has {score}",
}


def _not_drawn(titles: list[str], score: str) -> list[str]:
    """'<figure>: not drawn: <why>' for each figure with nothing to show."""
    why = {k.format(score=score): w.format(score=score) for k, w in WHY_NOT_DRAWN.items()}
    return [f"{t}: not drawn: {next(w for k, w in why.items() if t.startswith(k))}" for t in titles]


CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px}
th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee}.runs{font-family:monospace;font-size:11px}
figure{display:inline-block;margin:0.5em;vertical-align:top}figcaption{font-size:12px;color:#555}"""

# Sets body[data-images-ok] once every image has decoded, so a headless browser can check it.
SCRIPT = """window.addEventListener('load',()=>{const imgs=[...document.images];
document.body.dataset.imagesOk=String(imgs.length>0&&imgs.every(i=>i.complete&&i.naturalWidth>0));
document.body.dataset.imageCount=String(imgs.length);});"""


def _img(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(path.stem)}">'


def _html(
    experiment: str, uri: str, display: pd.DataFrame, tests: list[str], figures: dict, grids: dict, beside: str = "",
    about: list[str] = (), missing: list[str] = (),
) -> str:  # fmt: skip
    table = display.to_html(index=False, escape=True, classes="summary", table_id="summary", na_rep="")
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>lossbench report: {html.escape(experiment)}</title>",
        f"<style>{CSS}</style><script>{SCRIPT}</script></head><body>",
        f"<h1>lossbench report: {html.escape(experiment)}</h1><p>Store: <code>{html.escape(uri)}</code></p>",
        "<h2>What each number is</h2><ul id='protocol'>",
        *[f"<li>{html.escape(line)}</li>" for line in about],
        "</ul>",
        "<h2>Summary across seeds</h2>",
        table,
        "<h2>Pairwise tests (two-sided Mann-Whitney U, Holm-corrected per data set)</h2><ul>",
        *[f"<li>{html.escape(t)}</li>" for t in tests],
        "</ul>",
        beside,
        "<h2>Figures</h2>",
        *[f"<figure>{_img(p)}<figcaption>{html.escape(k)}</figcaption></figure>" for k, p in figures.items()],
        "<h2>Samples (median seed)</h2>",
        *[f"<figure>{_img(p)}<figcaption>{html.escape(k)}</figcaption></figure>" for k, p in grids.items()],
        *(
            ["<h2>Not shown</h2><ul id='not-shown'>", *[f"<li>{html.escape(m)}</li>" for m in missing], "</ul>"]
            if missing
            else []
        ),  # fmt: skip
        "</body></html>",
    ]
    return "\n".join(parts)

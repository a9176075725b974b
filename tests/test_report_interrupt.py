"""`lossbench report` is all or nothing: an error, Ctrl-C or SIGTERM part way through a build leaves
the previous report byte for byte and no staging folder; a build that completes replaces the old
report completely; files of the user's put into a report's folder are never touched. On a store
built through MLflow's API (test_report.make_store), once per session (conftest paper_store)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossbench import folders, manifest
from lossbench.errors import LossbenchError
from lossbench.report import build as report_build
from lossbench.report import figures as report_figures

TWO = ("minimax", "non-saturating")  # a build of two of the store's three losses: no hinge in it


pytestmark = pytest.mark.xdist_group("paper-store")  # one worker builds the store (conftest) once


@pytest.fixture
def paper(paper_store: str) -> str:
    """The store of test_report (3 losses, 13 seed runs, a sample grid per finished run), read-only here."""
    return paper_store


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path under `folder`: a file's bytes, None for a folder."""
    out: dict[str, bytes | None] = {}
    for here, dirs, files in os.walk(folder):
        rel = Path(here).relative_to(folder)
        out |= {(rel / d).as_posix(): None for d in dirs}
        out |= {(rel / f).as_posix(): (Path(here) / f).read_bytes() for f in files}
    return out


def samples(out: Path) -> set[str]:
    return {p.name for p in (out / "figures" / "samples").iterdir()}


def break_curves(monkeypatch: pytest.MonkeyPatch, exc: BaseException) -> list[Path]:
    """The second figure drawn raises `exc`, after the first (the score's curve, fid_curve.png) was written."""
    real, written = report_figures.curves, []

    def curves(history: object, runs: object, key: str, path: Path, log: bool = False) -> Path:
        if written:
            raise exc
        written.append(real(history, runs, key, path, log))
        assert written[0].is_file()
        return written[0]

    monkeypatch.setattr(report_figures, "curves", curves)
    return written


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError(28, "No space left on device")], ids=["ctrl-c", "error"])
def test_interrupted_build_leaves_the_previous_report(
    paper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exc: BaseException
) -> None:
    out = tmp_path / "report"
    report_build.build(paper, "paper", out, losses=TWO)
    before, beside = snapshot(out), sorted(os.listdir(tmp_path))
    mode = out.stat().st_mode
    written = break_curves(monkeypatch, exc)
    with pytest.raises(type(exc)):
        report_build.build(paper, "paper", out)  # all three losses: every figure would differ
    assert snapshot(out) == before
    assert out.stat().st_mode == mode
    assert sorted(os.listdir(tmp_path)) == beside  # no staging folder left
    assert len(written) == 1 and written[0].parent.parent != out.resolve()  # part way, in a staging folder


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "rename-aside"])
def test_build_replaces_the_old_report_completely(
    paper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exchange: bool
) -> None:
    if not exchange:  # where renameat2(RENAME_EXCHANGE) is missing: old folder aside, new one in
        monkeypatch.setattr(folders, "_exchange", lambda a, b: False)
    out, fresh = tmp_path / "report", tmp_path / "fresh"
    report_build.build(paper, "paper", out, against="lucic2018")
    assert len(samples(out)) == 3 and (out / "against-lucic2018.csv").is_file()
    assert folders._foreign(out, manifest.claim(out, report_build.WRITER, "report")) == []  # all listed
    old = snapshot(out)
    report_build.build(paper, "paper", out, losses=TWO)
    report_build.build(paper, "paper", fresh, losses=TWO)
    new = snapshot(out)
    assert new.keys() == snapshot(fresh).keys()  # exactly the new report: the hinge grid, the csv gone
    assert len(samples(out)) == 2 and not (out / "against-lucic2018.csv").exists()
    assert new["figures/distribution.png"] != old["figures/distribution.png"]
    assert sorted(os.listdir(tmp_path)) == ["fresh", "report"]  # no staging folder, no old report aside


def test_your_files_in_its_folder_are_kept(paper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "paper"
    report_build.build(paper, "paper", out, losses=TWO)
    for rel, text in {"notes.txt": "mine", "figures/my_plot.png": "mine too", "data/x.csv": "a,b"}.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    yours = {k: v for k, v in snapshot(out).items() if k in ("notes.txt", "figures/my_plot.png", "data", "data/x.csv")}

    report_build.build(paper, "paper", out)
    assert len(samples(out)) == 3 and (out / "index.html").is_file()
    assert {k: v for k, v in snapshot(out).items() if k in yours} == yours
    report_build.build(paper, "paper", out, losses=TWO)  # replaces the report, and only the report
    assert len(samples(out)) == 2 and {k: v for k, v in snapshot(out).items() if k in yours} == yours
    own = manifest.claim(out, report_build.WRITER, "report")
    assert set(folders._foreign(out, own)) == {"notes.txt", "figures/my_plot.png", "data", "data/x.csv"}
    before = snapshot(out)
    break_curves(monkeypatch, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        report_build.build(paper, "paper", out)
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["paper"]


def test_a_file_in_the_way_fails_before_anything_moves(paper: str, tmp_path: Path) -> None:
    out = tmp_path / "paper"
    report_build.build(paper, "paper", out, losses=TWO)
    (out / "notes.txt").write_text("mine")
    shutil.rmtree(out / "figures")
    (out / "figures").write_text("a file where the report puts its figures folder")
    before = snapshot(out)
    with pytest.raises(LossbenchError, match=r"paper/figures is in the way of figures/"):
        report_build.build(paper, "paper", out)
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["paper"]


def test_out_is_the_current_directory(paper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "report"
    report_build.build(paper, "paper", out)
    monkeypatch.chdir(out)  # --out . in a folder holding only a report: replaced file by file, not moved away
    inode = os.stat(".").st_ino
    report_build.build(paper, "paper", Path("."), losses=TWO)
    assert os.stat(".").st_ino == os.stat(out).st_ino == inode
    assert len(samples(out)) == 2 and sorted(os.listdir(tmp_path)) == ["report"]


# A `lossbench report` whose budget figure (drawn after four others) first touches $MARK, then waits:
# the test signals it there, as a user would press Ctrl-C, part way through the build.
ENTRY = """import os, pathlib, time
import lossbench.report.figures as figures
real = figures.budget
def budget(*args, **kwargs):
    pathlib.Path(os.environ["MARK"]).touch()
    time.sleep(120)
    return real(*args, **kwargs)
figures.budget = budget
from lossbench.cli import main
main(prog_name="lossbench")"""


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["sigint", "sigterm"])
def test_signal_during_report_leaves_the_previous_report(paper: str, tmp_path: Path, signum: int) -> None:
    out, mark = tmp_path / "report", tmp_path / "mark"
    report_build.build(paper, "paper", out, losses=TWO)
    before, beside = snapshot(out), sorted(os.listdir(tmp_path))
    args = ["report", "--tracking-uri", paper, "--experiment", "paper", "--out", str(out)]
    proc = subprocess.Popen([sys.executable, "-c", ENTRY, *args], env=os.environ | {"MARK": str(mark)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 120
    while not mark.exists():
        assert proc.poll() is None, proc.communicate()[1]
        assert time.time() < deadline, "the report never got to its budget figure"
        time.sleep(0.02)
    staging = [p for p in tmp_path.iterdir() if p.name.startswith(".report.lossbench-")]
    part_way = [p.name for p in staging if (p / "figures" / "distribution.png").is_file()]
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in stderr and stdout == "", stderr
    lines = [line for line in stderr.splitlines() if not line.startswith("report: metric histories")]
    assert lines == ["Error: interrupted"], stderr
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == sorted([*beside, "mark"])
    assert len(part_way) == 1, staging  # it was signalled part way, with figures written in its staging folder

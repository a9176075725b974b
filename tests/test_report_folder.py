"""`lossbench report --out DIR` writes only into a folder it made (its manifest, .lossbench-manifest.json,
names `lossbench report` and lists every file it wrote) or an empty one, and within it replaces only
what the manifest lists. A folder of anyone else's is refused in one line, untouched byte for byte.
On the store of test_report (make_store), once per session (conftest paper_store)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_cli import lossbench, lossbench_here
from test_report_interrupt import TWO, samples, snapshot

from lossbench import folders
from lossbench.errors import LossbenchError
from lossbench.report import build as report_build

MANIFEST = ".lossbench-manifest.json"
pytestmark = pytest.mark.xdist_group("paper-store")  # one worker builds the store (conftest) once


@pytest.fixture
def paper(paper_store: str) -> str:
    """The store of test_report, read-only here."""
    return paper_store


def plant(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)


def listed(folder: Path) -> set[str]:
    return set(json.loads((folder / MANIFEST).read_text())["files"])


def files(folder: Path) -> set[str]:
    return {rel for rel, data in snapshot(folder).items() if data is not None}


# The probe: a folder of the user's whose file names are those of a report.
YOURS = {"index.html": "<p>my page</p>", "figures/samples/vacation.jpg": "jpeg bytes", "against-taxes.csv": "a,b"}


def test_a_folder_of_someone_else_is_refused_untouched(paper: str, tmp_path: Path) -> None:
    out = tmp_path / "mine"
    plant(out, YOURS)
    before = snapshot(out)
    proc = lossbench("report", "--tracking-uri", paper, "--experiment", "paper", "--out", str(out), check=False)
    assert proc.returncode == 1 and proc.stdout == "", proc.stderr
    (line,) = proc.stderr.splitlines()  # one line, no traceback
    assert line.startswith(f"Error: refusing to write the report into {out}: it is not empty") and MANIFEST in line
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["mine"]  # no staging folder either


def test_an_empty_folder_becomes_the_reports(paper: str, tmp_path: Path) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    report_build.build(paper, "paper", out, losses=TWO)
    assert listed(out) == files(out) - {MANIFEST} and {"index.html", "runs.csv", "summary.csv"} <= listed(out)
    assert json.loads((out / MANIFEST).read_text())["written_by"] == "lossbench report"


def test_its_own_folder_is_rewritten_and_only_its_files(paper: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report_build.build(paper, "paper", out, against="lucic2018")  # three losses, the paper's csv
    assert len(samples(out)) == 3
    guests = {k: v for k, v in YOURS.items() if k != "index.html"} | {"figures/my_plot.png": "mine too"}
    plant(out, guests)  # yours, dropped into the report's folder (the names a report could have)
    yours = {k: v for k, v in snapshot(out).items() if k in guests}
    report_build.build(paper, "paper", out, losses=TWO)
    assert {k: v for k, v in snapshot(out).items() if k in guests} == yours  # byte for byte
    assert len(samples(out) - {"vacation.jpg"}) == 2 and not (out / "against-lucic2018.csv").exists()  # hinge's grid
    assert files(out) == listed(out) | set(guests) | {MANIFEST}  # and the paper's csv gone; nothing else
    # The next report goes through too: a folder of its own, with guests.
    report_build.build(paper, "paper", out)
    assert len(samples(out) - {"vacation.jpg"}) == 3
    assert {k: v for k, v in snapshot(out).items() if k in guests} == yours


def test_a_file_of_yours_where_the_new_report_writes_is_refused(paper: str, tmp_path: Path) -> None:
    out = tmp_path / "report"
    report_build.build(paper, "paper", out, losses=TWO)
    plant(out, {"against-lucic2018.csv": "my own numbers"})  # not the report's: no earlier report wrote it
    before = snapshot(out)
    with pytest.raises(LossbenchError, match=r"against-lucic2018.csv is not the report's own"):
        report_build.build(paper, "paper", out, against="lucic2018")
    assert snapshot(out) == before
    assert sorted(os.listdir(tmp_path)) == ["report"]


def test_the_default_folder_is_rewritten_and_an_unmarked_one_refused(
        paper: str, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    default = tmp_path / "reports" / "paper"  # the tests run in tmp_path: reports/<experiment>
    for _ in range(2):  # as `lossbench report` calls it: no --out
        assert report_build.build(paper, "paper", None, losses=("minimax",)) == Path("reports/paper")
    assert listed(default) == files(default) - {MANIFEST} and len(samples(default)) == 1
    (default / MANIFEST).unlink()  # as an older lossbench left it: a report, no manifest
    before = snapshot(default)
    # refused before writing: in this process (someone else's folder above is refused by a real process)
    proc = lossbench_here("report", "--tracking-uri", paper, "--experiment", "paper", caplog=caplog)
    assert proc.returncode == 1 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert "an older lossbench's report has none either" in proc.stderr and "move" in proc.stderr
    assert snapshot(default) == before


@pytest.mark.parametrize(
    "manifest",
    [{"written_by": "lossbench report", "files": ["../outside.txt"]},
     {"written_by": "lossbench report", "files": ["/etc/hostname"]},
     {"written_by": "something else", "files": ["index.html"]},
     "not json"],
    ids=["dot-dot", "absolute", "another-writer", "garbage"],
)  # fmt: skip
def test_a_manifest_that_is_not_ours_is_refused(paper: str, tmp_path: Path, manifest: object) -> None:
    out, outside = tmp_path / "report", tmp_path / "outside.txt"
    plant(out, {"notes.txt": "mine"})  # a guest: the report would go file by file, removing what is listed
    outside.write_text("keep me")
    (out / MANIFEST).write_text(manifest if isinstance(manifest, str) else json.dumps(manifest))
    before = snapshot(tmp_path)
    with pytest.raises(LossbenchError, match=r"refusing to write the report into .*report: "):
        report_build.build(paper, "paper", out)
    assert snapshot(tmp_path) == before


def test_a_report_cut_short_between_renames_is_still_its_own(
    paper: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    report_build.build(paper, "paper", out, losses=TWO)
    plant(out, {"notes.txt": "mine"})  # so the next report goes file by file
    real, moved = os.replace, []

    def replace(src: object, dst: object) -> None:  # an I/O error at the last file (index.html): all else moved
        if Path(dst).resolve().is_relative_to(out.resolve()):
            if Path(dst).name == "index.html":
                raise OSError(5, "Input/output error")
            moved.append(Path(dst).resolve().relative_to(out.resolve()).as_posix())
        real(src, dst)

    monkeypatch.setattr(folders.os, "replace", replace)
    with pytest.raises(OSError):
        report_build.build(paper, "paper", out)  # all three losses: hinge's grid is new
    monkeypatch.setattr(folders.os, "replace", real)
    assert len(samples(out)) == 3 and any(rel.startswith("figures/samples/") for rel in moved)
    assert files(out) - {MANIFEST, "notes.txt"} <= listed(out)  # the new files are listed already
    report_build.build(paper, "paper", out)  # so the next report owns them and goes through
    assert len(samples(out)) == 3 and (out / "notes.txt").read_text() == "mine"
    assert files(out) == listed(out) | {MANIFEST, "notes.txt"}

"""`lossbench ui` prints the URL of the experiment's runs table ("Model training" view) and serves it:
headless Chromium loads that URL and finds the training runs table with both configurations'
parent runs, not MLflow 3's GenAI overview. Its server goes down with it even when it is SIGKILLed,
and a binding beyond loopback is one warning line."""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_cli import lossbench
from test_models import SUITE
from test_procs import STAND_IN, free_port, port_is_free, wait_for
from test_report import ARTIFACTS

from lossbench import procs, ui


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


RING = ["--dataset", "ring8", "--steps", "20", "--log-every", "10", "--fid-samples", "200", "--no-progress"]


def chromium(url: str, profile: Path, *action: str, height: int = 900) -> str:
    """Headless Chromium's `action` (--dump-dom, or --screenshot=<png>) on `url` after 30 s of the page's
    virtual time, in a window 1400 wide and `height` tall; returns its stdout (the DOM, for --dump-dom)."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed (Debian package chromium; .ci/run installs it)"
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
             f"--user-data-dir={profile}", "--virtual-time-budget=30000", f"--window-size=1400,{height}"]  # fmt: skip
    return subprocess.run([browser, *flags, *action, url], capture_output=True, text=True, timeout=180).stdout


def screenshot(url: str, profile: Path, name: str, height: int = 900) -> Path:
    """A screenshot of `url` saved as the test artifact `name`; a blank or error page would be under 10 kB."""
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / name
    shot.unlink(missing_ok=True)  # not a previous run's
    chromium(url, profile, f"--screenshot={shot}", height=height)
    assert shot.is_file() and shot.stat().st_size > 10_000, shot
    return shot


@contextlib.contextmanager
def serving(store: str) -> Iterator[tuple[str, str]]:
    """`lossbench ui` on `store` at a free port, answering: yields its base URL and the URL it printed."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "ui", "--tracking-uri", store, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = proc.stdout.readline().strip() if proc.stdout else ""
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health") or proc.poll() is not None, 180,
                 "the UI never answered")  # fmt: skip
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        yield f"http://127.0.0.1:{port}/", url
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.slow  # MLflow's UI (16 processes) and Chromium: about a minute on two cores
def test_ui_opens_on_the_runs_table_with_both_configurations(store: str, tmp_path: Path) -> None:
    for loss in ("minimax", "hinge"):
        lossbench("run", "--loss", loss, *RING, "--tracking-uri", store)
    with serving(store) as (base, url):
        assert url.startswith(f"{base}#/experiments/") and url.endswith("?workflowType=machine_learning"), url
        dom = chromium(url, tmp_path / "profile", "--dump-dom")
        assert "minimax/ring8" in dom and "hinge/ring8" in dom, dom[-2000:]  # both parent runs
        screenshot(url, tmp_path / "profile", "mlflow-ui.png")


def row_with(dom: str, marker: str) -> str:
    """The table row (MLflow's role="row" element, and whatever follows it in the last row) holding `marker`."""
    rows = [row for row in dom.split('role="row"')[1:] if marker in row]
    assert len(rows) == 1, f"{len(rows)} rows hold {marker}"
    return rows[0]


@pytest.mark.slow  # a two-stage suite (~75 s), MLflow's UI (~60 s), five Chromium loads: ~4 minutes on two cores
def test_ui_shows_a_seed_runs_logged_model_and_the_registered_best(store: str, tmp_path: Path) -> None:
    (path := tmp_path / "tiny.toml").write_text(SUITE)
    lossbench("sweep", str(path), "--tracking-uri", store, "--no-progress")
    lossbench("sweep", str(path), "--stage", "seeds", "--tracking-uri", store, "--no-progress")
    client = MlflowClient(store)
    name = "lossbench-tiny-non-saturating-ring8"
    version = client.get_model_version_by_alias(name, "best")
    experiment = client.get_run(version.run_id).info.experiment_id
    logged = client.search_logged_models([experiment], filter_string=f"source_run_id = '{version.run_id}'")
    assert logged and version.source in {f"models:/{m.model_id}" for m in logged}  # the version is one of them
    assert int(version.version) == 1
    profile = tmp_path / "profile"
    with serving(store) as (base, _):
        run_page = f"{base}#/experiments/{experiment}/runs/{version.run_id}"
        dom = chromium(run_page, profile, "--dump-dom")
        assert f"Logged models ({len(logged)})" in html.unescape(re.sub(r"<[^>]+>", "", dom)), dom[-2000:]
        for model in logged:  # its name, linked to its page, in the run's "Logged models" table
            link = f'href="#/experiments/{experiment}/models/{model.model_id}"'
            assert re.search(rf"{link}[^>]*>{re.escape(model.name)}</a>", dom), (model.name, dom[-2000:])
        # the version registered from it, in the run's "Registered models" box and in the "Registered
        # models" column of its "Logged models" table (from the logged model's mlflow.modelVersions tag)
        assert dom.count(f'href="#/models/{name}/versions/{version.version}"') >= 2, dom[-2000:]
        screenshot(run_page, profile, "mlflow-run-model.png", height=2600)  # tall enough for the models table

        models = chromium(f"{base}#/models", profile, "--dump-dom")
        row = row_with(models, f'href="#/models/{name}"')  # the registered model, its latest version and alias
        assert 'versions/1">Version 1</a>' in row and re.search(r"@&nbsp;best(?:(?!</a>).)*: Version 1</a>", row)
        page = f"{base}#/models/{name}"
        row = row_with(chromium(page, profile, "--dump-dom"), f'href="#/models/{name}/versions/1">Version 1</a>')
        assert "@&nbsp;best" in row  # on the registered model's own page: version 1 carries @best
        screenshot(page, profile, "mlflow-registered-model.png")


def tree(pid: int) -> set[int]:
    """`pid` and every live process below it (by parent pid, read from /proc)."""
    kids: dict[int, list[int]] = {}
    for child, fields in procs.processes():
        kids.setdefault(int(fields[1]), []).append(child)
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        out.add(p)
        todo += kids.get(p, [])
    return out


def alive(pids: set[int]) -> set[int]:
    return pids & {pid for pid, _ in procs.processes()}


# A runner that serves the stand-in of test_procs (a leader, a worker, and a worker that ignores every
# signal but SIGKILL) through procs.run_group, as `lossbench ui` serves MLflow.
RUNNER = (
    "import sys; from lossbench import procs; sys.exit(procs.run_group([sys.executable, *sys.argv[1:]], grace=1.0))"
)


def test_sigkill_of_the_runner_takes_its_group_down(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(tmp_path / "stand_in.py"), str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        below = tree(proc.pid) - {proc.pid}
        assert len(below) >= 3 and not port_is_free(port)  # the stand-in's leader and its two workers
        proc.kill()  # SIGKILL: no handler of lossbench's runs
        proc.wait(timeout=10)
        started = time.monotonic()
        wait_for(lambda: not alive(below), 10, f"left behind: {alive(below)}")
        assert time.monotonic() - started < 1.0 + 4.0  # the stubborn worker: SIGTERM, 1 s (grace), SIGKILL
    finally:
        for pid in alive(tree(proc.pid) | below if proc.poll() is None else below):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    assert port_is_free(port)


# A parent that starts `sleep` as run_group starts the server's leader, prints its pid and waits.
PARENT = """import os, subprocess, sys
from lossbench import procs
child = subprocess.Popen(["sleep", "120"], start_new_session=True, preexec_fn=procs._dying_with(os.getpid()))
print(child.pid, flush=True)
child.wait()"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_the_leader_dies_with_its_parent() -> None:
    """The leader's own guard, for the instant before the watchdog runs: the kernel SIGKILLs it."""
    proc = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    child = int(proc.stdout.readline()) if proc.stdout else 0
    try:
        assert alive({child}) == {child}
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not alive({child}), 5, "the child outlived its parent")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow  # MLflow's server (16 processes) starts in ~15 s on two cores
def test_sigkill_of_lossbench_ui_takes_the_mlflow_server_down(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    below: set[int] = set()
    try:
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health") or proc.poll() is not None, 180,
                 "the UI never answered")  # fmt: skip
        assert proc.poll() is None
        below = tree(proc.pid) - {proc.pid}
        assert len(below) > 8  # MLflow's CLI, uvicorn and its workers, the job runner and its consumers
        proc.kill()
        proc.wait(timeout=10)
        started = time.monotonic()
        wait_for(lambda: not alive(below), 15, f"left behind: {alive(below)}")
        elapsed = time.monotonic() - started
        print(f"server tree of {len(below)} processes gone {elapsed:.1f} s after SIGKILL")
        assert elapsed < procs.ORPHANED_GRACE + 5.0  # SIGTERM, the grace, SIGKILL for what ignored it
    finally:
        for pid in alive(below):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


def test_a_binding_beyond_loopback_is_one_warning_line(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--host", "0.0.0.0", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        line = proc.stderr.readline() if proc.stderr else ""  # before the store is opened, before MLflow starts
    finally:
        proc.send_signal(signal.SIGTERM)  # run_group passes it on, if MLflow had started
        proc.communicate(timeout=60)
    assert line.startswith(f"warning: the UI listens on 0.0.0.0:{port}, beyond this machine:"), line
    assert "anyone who can reach" in line and "--host 127.0.0.1" in line


@pytest.mark.parametrize(
    ("host", "beyond"),
    [("127.0.0.1", False), ("127.0.0.2", False), ("localhost", False), ("::1", False), ("[::1]", False),
     ("::ffff:127.0.0.1", False), ("::ffff:10.0.0.1", True),
     ("0.0.0.0", True), ("::", True), ("[::]", True), ("192.0.2.7", True), ("no-such-host.invalid", True)],
)  # fmt: skip
def test_which_hosts_are_beyond_loopback(host: str, beyond: bool) -> None:
    assert ui.beyond_loopback(host) is beyond

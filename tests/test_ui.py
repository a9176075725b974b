"""`lossbench ui` prints the URL of the experiment's runs table ("Model training" view) and serves it:
headless Chromium loads that URL and finds the training runs table with both configurations'
parent runs, not MLflow 3's GenAI overview."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from test_cli import lossbench
from test_procs import free_port, wait_for
from test_report import ARTIFACTS


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


RING = ["--dataset", "ring8", "--steps", "20", "--log-every", "10", "--fid-samples", "200", "--no-progress"]


@pytest.mark.slow  # MLflow's UI (16 processes) and Chromium: about a minute on two cores
def test_ui_opens_on_the_runs_table_with_both_configurations(store: str, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    assert browser, "headless Chromium is needed (Debian package chromium; .ci/run installs it)"
    for loss in ("minimax", "hinge"):
        lossbench("run", "--loss", loss, *RING, "--tracking-uri", store)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", "ui", "--tracking-uri", store, "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        url = proc.stdout.readline().strip() if proc.stdout else ""
        assert url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and url.endswith(
            "?workflowType=machine_learning"), url  # fmt: skip
        wait_for(lambda: answers(f"http://127.0.0.1:{port}/health") or proc.poll() is not None, 180,
                 "the UI never answered")  # fmt: skip
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        flags = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=30000",
                 "--window-size=1400,900"]  # fmt: skip
        dom = subprocess.run([browser, *flags, "--dump-dom", url], capture_output=True, text=True, timeout=180).stdout
        assert "minimax/ring8" in dom and "hinge/ring8" in dom, dom[-2000:]  # both parent runs
        ARTIFACTS.mkdir(exist_ok=True)
        shot = ARTIFACTS / "mlflow-ui.png"
        subprocess.run([browser, *flags, f"--screenshot={shot}", url], capture_output=True, timeout=180)
        assert shot.is_file() and shot.stat().st_size > 10_000
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

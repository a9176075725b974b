"""The device script (benchmarks/device.py) at toy sizes on the CPU: every step runs and succeeds,
the study's configurations train as one group, and the report is written, so the script a lent GPU
runs cannot rot between leases."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]  # the checkout: benchmarks/ is not in the installed wheel


def test_the_device_script_runs_every_step_at_toy_sizes(tmp_path: Path) -> None:
    out = tmp_path / "device"
    proc = subprocess.run([sys.executable, "-m", "benchmarks.device", "--out", str(out), "--toy", "--device", "cpu"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, env=os.environ.copy())  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in summary.splitlines()
            if line.startswith("| ") and not line.startswith("| step")}  # fmt: skip
    assert rows == {"gpu": "0", "bench": "0", "study": "0", "report": "0"}
    assert "torch " in summary and "Wall time" in summary
    assert "matmul" in (out / "bench.txt").read_text()
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lossbench").experiment_id])
    seeds = [r for r in runs if r.data.tags["lossbench.role"] == "seed"]
    assert len(seeds) == 2 and all(r.info.status == "FINISHED" and "fcd" in r.data.metrics for r in seeds)
    assert {r.data.tags["lossbench.group_size"] for r in seeds} == {"2"}  # the draws trained as one group
    assert {r.data.params["whole_step"] for r in seeds} == {"True"}  # each step of the group as one function
    assert (out / "report" / "report.md").is_file() and (out / "report" / "index.html").is_file()

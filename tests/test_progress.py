"""The first hour: long phases show themselves (a bar on a terminal, start and end lines in logs),
the preflight estimate is close to what a run takes, and a run ends with its summary and the next
commands."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

from mlflow import MlflowClient
from test_cli import lossbench, runs_by_role

RUN = ["run", "--dataset", "mnist", "--steps", "20", "--log-every", "10", "--fid-samples", "16", "--metrics", "fid"]


def run_in_terminal(args: list[str], env: dict[str, str], timeout: float = 300) -> str:
    """The real CLI with stdout and stderr on a pseudo-terminal; everything it wrote, in order."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))  # a real terminal has a size
    proc = subprocess.Popen([sys.executable, "-m", "lossbench", *args], stdout=follower, stderr=follower,
                            stdin=subprocess.DEVNULL, env=env, close_fds=True)  # fmt: skip
    os.close(follower)
    chunks, deadline = [], time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                data = os.read(leader, 65536)
            except OSError:  # the follower closed: the process is done
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    proc.wait(timeout=30)
    os.close(leader)
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")[-2000:]
    return b"".join(chunks).decode(errors="replace")


def test_real_features_show_a_bar_before_training_on_a_terminal(store: str, tmp_path: Path) -> None:
    env = os.environ | {"LOSSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    out = run_in_terminal([*RUN, "--tracking-uri", store, "--checkpoint-dir", str(tmp_path / "ck")], env)
    features = out.find("real features: mnist train, 16 images (cached for next time)")
    training = out.find("non-saturating seed 0")
    assert 0 <= features < training, out[-3000:]
    assert re.search(r"real features: mnist train, 16 images \(cached for next time\):.*16/16", out), out[-3000:]
    assert "next: lossbench report" in out


def test_phases_write_start_and_end_lines_when_not_a_terminal(store: str, tmp_path: Path) -> None:
    env_cache = {"LOSSBENCH_CACHE_DIR": str(tmp_path / "cache")}
    proc = lossbench(*RUN, "--tracking-uri", store, "--no-progress", env=env_cache)
    lines = proc.stderr.splitlines()
    start = lines.index("real features: mnist train, 16 images (cached for next time) ...")
    end = next(i for i, line in enumerate(lines) if line.startswith("real features: mnist train, 16 images (cached "
                                                                    "for next time): done in "))  # fmt: skip
    evaluation = next(i for i, line in enumerate(lines) if line.startswith("evaluation: seed 0 at step 20, 16 "
                                                                           "generated images: done in "))  # fmt: skip
    assert start < end < evaluation
    assert lines[0].startswith("plan: 1 configuration x 1 seed x 20 steps, 1 evaluation per seed x 16 generated")
    # stdout: the summary table and the next commands, nothing else
    assert re.search(r"^\s+0\s+finished\s+20\s+\d+\.\d{4}", proc.stdout, re.M), proc.stdout
    assert "next: lossbench report" in proc.stdout and "lossbench ui" in proc.stdout


def seconds(text: str) -> float:
    """'2 min 46 s' / '12.5 s' / '1 h 05 min' -> seconds."""
    units = {"h": 3600.0, "min": 60.0, "s": 1.0}
    return sum(float(value) * units[unit] for value, unit in re.findall(r"([\d.]+) (h|min|s)\b", text))


def test_preflight_estimate_is_within_2x_of_the_run(store: str) -> None:
    """The plan line's training estimate against the seed run's own wall time in the store."""
    proc = lossbench("run", "--dataset", "mnist", "--steps", "400", "--log-every", "50", "--metrics", "none",
                     "--no-progress", "--tracking-uri", store)  # fmt: skip
    match = re.search(r"^plan: .*; expected (.+?) on cpu", proc.stderr, re.M)
    assert match, proc.stderr
    expected = seconds(match.group(1))
    (run,) = runs_by_role(store)["seed"]
    took = (run.info.end_time - run.info.start_time) / 1000
    assert expected / 2 <= took <= expected * 2, (expected, took)
    assert MlflowClient(tracking_uri=store).get_metric_history(run.info.run_id, "g_loss")

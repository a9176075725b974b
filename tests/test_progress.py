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

import pytest
from mlflow import MlflowClient
from test_cli import lossbench, runs_by_role

# KID, not FID: the phases are the same, and FID's 2048 x 2048 eigenvalues cost about 3 s an evaluation here
RUN = ["run", "--dataset", "mnist", "--steps", "20", "--log-every", "10", "--fid-samples", "16", "--metrics", "kid"]


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
    proc = lossbench(*RUN, "--tracking-uri", store, env=env_cache)  # stderr is a pipe here
    assert "\r" not in proc.stderr  # no bar redrawn in place: a log reads line by line
    lines = proc.stderr.splitlines()
    start = lines.index("real features: mnist train, 16 images (cached for next time) ...")
    end = next(i for i, line in enumerate(lines) if line.startswith("real features: mnist train, 16 images (cached "
                                                                    "for next time): done in "))  # fmt: skip
    evaluation = next(i for i, line in enumerate(lines) if line.startswith("evaluation: seed 0 at step 20, 16 "
                                                                           "generated images: done in "))  # fmt: skip
    training = lines.index("non-saturating seed 0: training 20 steps ...")
    done = re.compile(r"non-saturating seed 0: 20 steps done in .+ \([\d,.]+ steps/s\)")
    trained = next(i for i, line in enumerate(lines) if done.fullmatch(line))
    assert start < end < training < trained < evaluation
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


def test_training_lines_count_a_resumed_runs_open_window(capsys) -> None:
    """A run resumed at step 50 whose checkpoint holds 20 steps not yet reported (logged every 30
    steps: the last report was step 30) reports 30, 30, 10: the end line comes at step 100, once."""
    from lossbench.progress import Steps

    steps = Steps("minimax seed 0", 100, initial=50, pending=20, bar=False)
    for n in (30, 30):  # steps 60 and 90
        steps.update(n)
    assert "done in" not in capsys.readouterr().err
    steps.update(10)
    steps.update(10)  # a report past the end is not a second end line
    steps.close()
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and re.fullmatch(r"minimax seed 0: 50 steps done in .+ \([\d,.]+ steps/s\)", err[0]), err


def test_training_lines_of_a_run_with_no_steps_left(capsys) -> None:
    from lossbench.progress import Steps

    Steps("minimax seed 0", 100, initial=0, bar=False)
    assert capsys.readouterr().err == "minimax seed 0: training 100 steps ...\n"
    steps = Steps("minimax seed 0", 100, initial=100, bar=False)  # killed during its final evaluation
    steps.update(0)
    assert capsys.readouterr().err == "minimax seed 0: at step 100 of 100, no steps left to train\n"


def test_the_probe_of_a_short_plan_trains_at_most_a_quarter_of_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """A plan of 2 seeds x 20 steps is timed on 10 steps (5 warm-up, 5 timed), not for a second: a
    short run is not probed for longer than it trains. A long plan is timed for at least a second."""
    import torch

    from lossbench.config import resolve
    from lossbench.exec import estimate as estimate_mod
    from lossbench.gan import data

    trained: list[int] = []
    real_train = estimate_mod.train
    monkeypatch.setattr(estimate_mod, "train", lambda cfg, state, x: trained.append(cfg.train.steps) or
                        real_train(cfg, state, x))  # fmt: skip
    cfg = resolve(("t", {"dataset": "ring8", "metrics": "none", "steps": 20}))
    ring = data.load("ring8")
    rate = estimate_mod.estimate(cfg, ring, torch.device("cpu"), seeds=2).steps_per_s
    assert trained[-1] == estimate_mod.probe_cap(40) == 10 and rate > 0
    assert [estimate_mod.probe_cap(n) for n in (0, 40, 43, 44, 2_000, 10**6)] == [10, 10, 10, 11, 500, 250_000]
    trained.clear()
    start = time.perf_counter()
    estimate_mod.steps_per_s(cfg, ring, torch.device("cpu"), plan_steps=10**6)
    assert time.perf_counter() - start >= estimate_mod.PROBE_SECONDS and trained[-1] > 10


def test_the_inception_rate_is_measured_once_a_day_per_device_and_thread_count(tmp_path: Path) -> None:
    """The preflight's Inception rate is kept in the cache folder: a second plan reads it (no batch
    extracted), a day-old, unreadable or other-thread-count record is measured again."""
    import json

    import torch

    from lossbench.exec import estimate as estimate_mod
    from lossbench.metrics.features import Extractor

    calls: list[int] = []

    def features(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        calls.append(len(images))
        return images.float().flatten(1)[:, :4], images.float().flatten(1)[:, :2]

    ext, shape, cpu = Extractor("toy", features, batch_size=4), (3, 8, 8), torch.device("cpu")
    rate = estimate_mod.cached_images_per_s(ext, shape, cpu, tmp_path, now=1000.0)
    assert calls == [4, 4] and rate > 0  # a warm-up batch, a timed one
    path = estimate_mod.rate_path(ext, shape, cpu, tmp_path)
    assert json.loads(path.read_text()) == {"images_per_s": rate, "measured": 1000.0}
    assert estimate_mod.cached_images_per_s(ext, shape, cpu, tmp_path, now=1000.0 + 3600) == rate
    assert calls == [4, 4]
    estimate_mod.cached_images_per_s(ext, shape, cpu, tmp_path, now=1000.0 + estimate_mod.RATE_TTL_S)
    assert len(calls) == 4  # a day later: measured again
    path.write_text("{not json")
    estimate_mod.cached_images_per_s(ext, shape, cpu, tmp_path, now=2000.0)
    assert len(calls) == 6 and json.loads(path.read_text())["measured"] == 2000.0
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        assert estimate_mod.rate_path(ext, shape, cpu, tmp_path) != path
        estimate_mod.cached_images_per_s(ext, shape, cpu, tmp_path, now=2000.0)
        assert len(calls) == 8  # another thread count: measured again, though today's record is fresh
    finally:
        torch.set_num_threads(threads)

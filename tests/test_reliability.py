"""Runs that survive: SIGKILL then --resume equals an uninterrupted run, SIGTERM checkpoints and
ends KILLED, divergence is recorded while sibling seeds finish, concurrent writers lose nothing, a
checkpoint cannot run code, and one process at a time trains a run (its lease)."""

from __future__ import annotations

import json
import os
import pathlib
import random
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from mlflow import MlflowClient
from test_cli import lossbench, lossbench_here, runs_by_role

from lossbench.exec import lease

TESTS = Path(__file__).resolve().parent
RING = ["--dataset", "ring8", "--steps", "400", "--log-every", "25", "--checkpoint-every", "50",
        "--sample-every", "300", "--fid-samples", "500", "--no-progress"]  # fmt: skip
# non-saturating + gp: the penalty's own random stream is checkpointed too, at n_critic 1 speed
GP = ["--loss", "non-saturating", "--penalty", "gp", "--penalty-weight", "10"]
PARALLEL = [*RING, *GP, "--steps", "200", "--seeds", "3", "--parallel-seeds"]  # conftest's parallel_reference


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lossbench", "run", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=env,
    )  # fmt: skip


def wait_for_checkpoint(proc: subprocess.Popen, root: Path, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not list(root.glob("*/latest.pt")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.time() < deadline, "no checkpoint appeared"
        time.sleep(0.02)


def litter(tmpdir: Path) -> list[str]:
    """The temporary folders lossbench made in TMPDIR (a group's sample grids and weights)."""
    return sorted(p.name for p in tmpdir.glob("lossbench-*"))


def final_metrics(client: MlflowClient, run_id: str, keys: list[str]) -> dict[str, dict[int, float]]:
    """Per key, step -> value; a resumed run may log a step twice (before the kill and after): equal values."""
    out: dict[str, dict[int, float]] = {}
    for key in keys:
        seen: dict[int, set[float]] = {}
        for m in client.get_metric_history(run_id, key):
            seen.setdefault(m.step, set()).add(m.value)
        assert all(len(v) == 1 for v in seen.values()), (key, seen)
        out[key] = {s: v.pop() for s, v in seen.items()}
    return out


def generator_weights(client: MlflowClient, run_id: str, dst: Path) -> dict[str, torch.Tensor]:
    return torch.load(client.download_artifacts(run_id, "weights/generator.pt", str(dst)), weights_only=True)


def test_sigkill_then_resume_equals_uninterrupted(store: str, tmp_path: Path, new_store: Callable[..., str]) -> None:
    ckpts = tmp_path / "ckpt"
    proc = start(*RING, *GP, "--tracking-uri", store, "--checkpoint-dir", str(ckpts))
    wait_for_checkpoint(proc, ckpts)
    time.sleep(random.uniform(0.0, 0.5))
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (killed,) = runs_by_role(store)["seed"]
    assert killed.info.status == "RUNNING"  # a SIGKILLed process cannot say goodbye
    owner = json.loads((ckpts / killed.info.run_id / lease.OWNER).read_text())
    assert owner["pid"] == proc.pid and lease.holder(ckpts, killed.info.run_id) is None  # its lease: stale

    resume = lossbench("-v", "run", *RING, *GP, "--tracking-uri", store, "--checkpoint-dir", str(ckpts), "--resume")
    assert f"taking over its lease from {owner['host']}:{proc.pid}" in resume.stderr
    (step,) = map(int, re.findall(rf"continuing run {killed.info.run_id} at step (\d+)", resume.stderr))
    assert step > 0 and step % 50 == 0  # it resumed from a checkpoint, it did not start over
    assert not (ckpts / killed.info.run_id / lease.OWNER).exists()  # given up when its group ended
    (resumed,) = runs_by_role(store)["seed"]
    assert resumed.info.run_id == killed.info.run_id and resumed.info.status == "FINISHED"

    reference = new_store(tmp_path / "ref" / "mlflow.db")
    lossbench("run", *RING, *GP, "--tracking-uri", reference, "--checkpoint-dir", str(tmp_path / "c2"))
    (ref,) = runs_by_role(reference)["seed"]

    a, b = MlflowClient(tracking_uri=store), MlflowClient(tracking_uri=reference)
    keys = ["d_loss", "g_loss", "penalty", "d_real", "d_fake", "modes", "high_quality"]
    assert final_metrics(a, resumed.info.run_id, keys) == final_metrics(b, ref.info.run_id, keys)
    wa = generator_weights(a, resumed.info.run_id, tmp_path / "wa")
    wb = generator_weights(b, ref.info.run_id, tmp_path / "wb")
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sigterm_checkpoints_and_marks_killed(store: str, tmp_path: Path) -> None:
    ckpts, tmpdir = tmp_path / "ckpt", tmp_path / "tmp"
    tmpdir.mkdir()
    proc = start(*RING, "--tracking-uri", store, "--checkpoint-dir", str(ckpts), "--seeds", "2",
                 env=os.environ | {"TMPDIR": str(tmpdir)})  # fmt: skip
    wait_for_checkpoint(proc, ckpts)
    assert len(litter(tmpdir)) == 1  # the group in training has its folder...
    sent = time.time()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and time.time() - sent < 10
    assert "Traceback" not in err and "continue with --resume" in err
    assert litter(tmpdir) == []  # ...and removes it when stopped
    runs = runs_by_role(store)
    (seed,) = runs["seed"]  # the second seed never started
    assert seed.info.status == "KILLED" and seed.data.tags["lossbench.outcome"] == "interrupted"
    assert runs["parent"][0].info.status == "KILLED"
    state = torch.load(ckpts / seed.info.run_id / "latest.pt", weights_only=True)
    assert state["step"] == int(seed.data.tags["lossbench.interrupted_step"])


def test_sigterm_to_parallel_seeds_checkpoints_every_seed_at_one_step(store: str, tmp_path: Path) -> None:
    """The stopped group's checkpoints are one commit: every seed at the step where the loop stopped,
    nothing staged or marked left behind; --resume then goes on with all of them together."""
    ckpts = tmp_path / "ckpt"
    proc = start(*PARALLEL, "--tracking-uri", store, "--checkpoint-dir", str(ckpts))  # 200 steps: the rest resumed
    wait_for_checkpoint(proc, ckpts)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err
    seeds = runs_by_role(store)["seed"]
    assert len(seeds) == 3 and {r.info.status for r in seeds} == {"KILLED"}
    steps = {torch.load(ckpts / r.info.run_id / "latest.pt", weights_only=True)["step"] for r in seeds}
    stopped = {int(r.data.tags["lossbench.interrupted_step"]) for r in seeds}
    assert steps == stopped and len(steps) == 1, (steps, stopped)
    assert not list(ckpts.glob("*/pending-*")) and not list(ckpts.glob("*/.pending-*"))
    assert not list(ckpts.glob("commits/*.json"))
    again = start(*PARALLEL, "--tracking-uri", store, "--checkpoint-dir", str(ckpts), "--resume")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err
    assert {r.info.status for r in runs_by_role(store)["seed"]} == {"FINISHED"}


def test_divergence_is_recorded_and_siblings_finish(store: str, tmp_path: Path) -> None:
    env = os.environ | {"PYTHONPATH": str(TESTS), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "lossbench", "run", "--loss", "divergent_loss:FirstSeedDiverges", "--dataset", "ring8",
         "--seeds", "2", "--steps", "100", "--log-every", "10", "--tracking-uri", store, "--no-progress"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert litter(tmp_path / "tmp") == []  # neither the diverged group nor the finished one left its folder
    seeds = {r.data.params["seed"]: r for r in runs_by_role(store)["seed"]}
    assert seeds["0"].info.status == "FAILED"
    assert seeds["0"].data.tags["lossbench.outcome"] == "diverged"
    assert seeds["0"].data.tags["lossbench.diverged_step"] == "20"
    client = MlflowClient(tracking_uri=store)
    assert [a.path for a in client.list_artifacts(seeds["0"].info.run_id)] == ["config.json"]  # no weights
    assert [m.step for m in client.get_metric_history(seeds["0"].info.run_id, "d_loss")] == [10]  # last good
    assert seeds["1"].info.status == "FINISHED" and seeds["1"].data.tags["lossbench.outcome"] == "finished"
    parent = runs_by_role(store)["parent"][0]
    assert parent.data.metrics["seeds_diverged"] == 1 and parent.data.metrics["seeds_finished"] == 1


def test_three_processes_share_one_sqlite_store(store: str) -> None:
    args = ["--dataset", "ring8", "--seeds", "2", "--steps", "40", "--log-every", "10", "--fid-samples", "200",
            "--tracking-uri", store, "--no-progress"]  # fmt: skip
    # the store exists already (the fixture's copy): the three write into it at once, none makes it
    procs = [start(*args, "--loss", loss) for loss in ("minimax", "hinge", "least-squares")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    seeds = [r for r in runs_by_role(store)["seed"] if r.data.params["steps"] == "40"]
    assert len(seeds) == 6 and all(r.info.status == "FINISHED" for r in seeds)
    client = MlflowClient(tracking_uri=store)
    for r in seeds:
        assert {"d_loss", "g_loss", "modes", "high_quality"} <= set(r.data.metrics)
        assert [m.step for m in client.get_metric_history(r.info.run_id, "d_loss")] == [10, 20, 30, 40]


def test_corrupt_checkpoint_is_one_line_and_alters_nothing(store: str, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    ckpts = tmp_path / "ckpt"
    proc = start(*RING, "--loss", "hinge", "--tracking-uri", store, "--checkpoint-dir", str(ckpts))
    wait_for_checkpoint(proc, ckpts)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (latest,) = ckpts.glob("*/latest.pt")
    latest.write_bytes(b"not a checkpoint")
    (before,) = runs_by_role(store)["seed"]
    args = ["run", *RING, "--loss", "hinge", "--tracking-uri", store, "--checkpoint-dir", str(ckpts), "--resume"]
    result = lossbench_here(*args, caplog=caplog)  # refused before any compute: in this process
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "unreadable or corrupt" in error
    (after,) = runs_by_role(store)["seed"]
    assert after.info.run_id == before.info.run_id and after.data.metrics == before.data.metrics


def test_full_disk_on_checkpoint_write_is_one_line(store: str, tmp_path: Path) -> None:
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(tiny)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a 64 KiB tmpfs to fill (needs root): {mounted.stderr.decode().strip()}")
    try:
        lossbench("run", "--dataset", "ring8", "--steps", "20", "--log-every", "10", "--tracking-uri", store)
        result = lossbench(
            "run", "--dataset", "ring8", "--loss", "hinge", "--steps", "100", "--log-every", "10",
            "--checkpoint-every", "50", "--tracking-uri", store, "--checkpoint-dir", str(tiny), check=False,
        )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "cannot write checkpoint" in error and "No space left on device" in error
    runs = {r.data.params["loss"]: r for r in runs_by_role(store)["seed"]}
    assert runs["non-saturating"].info.status == "FINISHED"  # what was recorded before is intact
    failed = runs["hinge"]
    assert failed.info.status == "FAILED" and failed.data.tags["lossbench.outcome"] == "failed"
    client = MlflowClient(tracking_uri=store)
    assert [m.step for m in client.get_metric_history(failed.info.run_id, "d_loss")] == [10, 20, 30, 40, 50]


def test_read_only_store_is_one_line_and_intact(tmp_path: Path, new_store: Callable[..., str],
                                                caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    folder = tmp_path / "ro"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to make read-only (needs root): {mounted.stderr.decode().strip()}")
    store = new_store(folder / "mlflow.db")  # the template's copy: a new store's migrations cost seconds
    try:
        lossbench("run", "--dataset", "ring8", "--steps", "10", "--log-every", "5", "--tracking-uri", store)
        subprocess.run(["mount", "-o", "remount,ro", str(folder)], check=True)
        result = lossbench_here("run", "--dataset", "ring8", "--steps", "10", "--tracking-uri", store, caplog=caplog)
        assert result.returncode != 0 and "Traceback" not in result.stderr
        (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
        assert "read-only" in error
        (run,) = runs_by_role(store)["seed"]
        assert run.info.status == "FINISHED" and set(run.data.metrics) >= {"d_loss", "modes"}
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


# slow: the default suite's test_group_checkpoints kills the same group (PARALLEL) twice, at exact points of
# its commits, and resumes it to the same reference, weights included; this one kills it at a random moment
@pytest.mark.slow
@pytest.mark.xdist_group("parallel-reference")  # one worker trains the reference once
def test_parallel_seeds_sigkill_then_resume_equals_uninterrupted(store: str, tmp_path: Path,
                                                                  parallel_reference: str) -> None:  # fmt: skip
    args = PARALLEL
    ckpts = tmp_path / "ckpt"
    proc = start(*args, "--tracking-uri", store, "--checkpoint-dir", str(ckpts))
    wait_for_checkpoint(proc, ckpts)
    time.sleep(random.uniform(0.0, 0.5))
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = {r.data.params["seed"]: r.info.run_id for r in runs_by_role(store)["seed"]}
    assert len(killed) == 3  # the three seeds started together

    resume = lossbench("-v", "run", *args, "--tracking-uri", store, "--checkpoint-dir", str(ckpts), "--resume")
    continued = dict(re.findall(r"continuing run ([0-9a-f]+) at step (\d+)", resume.stderr))
    assert continued.keys() == set(killed.values())  # every seed resumed from its checkpoint, none started over
    assert len(set(continued.values())) == 1 and int(next(iter(continued.values()))) > 0  # all at one step
    resumed = {r.data.params["seed"]: r for r in runs_by_role(store)["seed"]}
    assert {s: r.info.run_id for s, r in resumed.items()} == killed
    assert all(r.info.status == "FINISHED" and r.data.params["parallel_seeds"] == "True" for r in resumed.values())

    ref = {r.data.params["seed"]: r for r in runs_by_role(parallel_reference)["seed"]}
    a, b = MlflowClient(tracking_uri=store), MlflowClient(tracking_uri=parallel_reference)
    keys = ["d_loss", "g_loss", "penalty", "modes", "high_quality"]
    for seed in ("0", "1", "2"):
        assert final_metrics(a, resumed[seed].info.run_id, keys) == final_metrics(b, ref[seed].info.run_id, keys)


def store_snapshot(uri: str) -> list[tuple]:
    """Every run of the store with its status, tags, params and full metric history."""
    client = MlflowClient(tracking_uri=uri)
    runs = runs_by_role(uri)
    out = []
    for r in runs["parent"] + runs["seed"]:
        history = {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics}
        out.append((r.info.run_id, r.info.status, r.info.end_time, r.data.tags, r.data.params, history))
    return sorted(out, key=lambda t: t[0])


class Planted:
    """Unpickling this object creates a file: what a hostile checkpoint would do."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (pathlib.Path(self.target),))


def test_checkpoint_that_would_run_code_is_refused(store: str, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    ckpts, target = tmp_path / "ckpt", tmp_path / "pwned"
    proc = start(*RING, "--loss", "hinge", "--tracking-uri", store, "--checkpoint-dir", str(ckpts))
    wait_for_checkpoint(proc, ckpts)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (latest,) = ckpts.glob("*/latest.pt")
    state = torch.load(latest, weights_only=True)  # what lossbench writes loads through the safe path
    torch.save(state | {"extra": Planted(target)}, latest)
    before = store_snapshot(store)
    args = ["run", *RING, "--loss", "hinge", "--tracking-uri", store, "--checkpoint-dir", str(ckpts), "--resume"]
    result = lossbench_here(*args, caplog=caplog)  # refused before any compute: in this process, where code
    assert result.returncode != 0 and "Traceback" not in result.stderr  # the load ran would make the file too
    (error,) = [line for line in result.stderr.splitlines() if line.startswith("Error")]
    assert "could run code; refused" in error and "without --resume" in error, error
    assert not target.exists()
    assert store_snapshot(store) == before


def test_two_resumes_train_each_seed_exactly_once(store: str, tmp_path: Path) -> None:
    ckpts, gate = tmp_path / "ckpt", tmp_path / "gate"
    env = os.environ | {"PYTHONPATH": str(TESTS), "LOSSBENCH_CHECKPOINT_DIR": str(ckpts)}
    args = ["--loss", "gated_loss:Gated", "--dataset", "ring8", "--seeds", "2", "--steps", "200", "--log-every", "20",
            "--checkpoint-every", "20", "--sample-every", "200", "--fid-samples", "200", "--no-progress",
            "--tracking-uri", store]  # fmt: skip
    first = start(*args, env=env)
    wait_for_checkpoint(first, ckpts)
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=60)
    (r0,) = runs_by_role(store)["seed"]
    assert first.returncode != 0 and r0.info.status == "KILLED"

    gate.touch()  # A resumes seed 0, then waits at its first step, holding the run's lease
    a = start(*args, "--resume", env=env | {"LOSSBENCH_TEST_GATE": str(gate)})
    try:
        deadline = time.time() + 120
        while lease.holder(ckpts, r0.info.run_id) != f"{socket.gethostname()}:{a.pid}":
            assert a.poll() is None, a.stderr.read() if a.stderr else ""
            assert time.time() < deadline, "A never held the lease of the run it resumed"
            time.sleep(0.05)
        b = subprocess.run([sys.executable, "-m", "lossbench", "run", *args, "--resume"], env=env,
                           capture_output=True, text=True, timeout=300)  # fmt: skip
        assert b.returncode == 0, b.stderr
        assert f"seed 0: run {r0.info.run_id} is being trained by {socket.gethostname()}:{a.pid}; skipped" in b.stderr
    finally:
        gate.unlink()  # A goes on, and is waited for however the test ends
        try:
            _, a_err = a.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            a.kill()
            raise
    assert a.returncode == 0, a_err
    seeds = {r.data.params["seed"]: r for r in runs_by_role(store)["seed"]}
    assert f"seed 1: run {seeds['1'].info.run_id} was started after this one planned" in a_err  # B trained it
    assert len(runs_by_role(store)["seed"]) == 2 and all(r.info.status == "FINISHED" for r in seeds.values())
    client = MlflowClient(tracking_uri=store)
    for r in seeds.values():
        for key in ("d_loss", "g_loss"):
            assert [m.step for m in client.get_metric_history(r.info.run_id, key)] == list(range(20, 201, 20)), key

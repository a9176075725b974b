"""Child processes never outlive lossbench: a process group run by `procs.run_group` (as `lossbench
ui` runs MLflow) goes down whole on SIGINT, SIGTERM and SIGHUP, a member that ignores the signal
included, and the port it served is free again."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lossbench import procs

SIGNALS = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]

# The stand-in for `mlflow ui`: a leader that listens on a port and two workers sharing that socket,
# one of which ignores every signal it can (only SIGKILL ends it), like a wedged uvicorn worker.
STAND_IN = """
import signal, socket, subprocess, sys, time
sock = socket.socket()
sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
sock.bind(("127.0.0.1", int(sys.argv[1])))
sock.listen()
worker = "import time; time.sleep(120)"
stubborn = "import signal, time\\nfor s in (2, 15, 1): signal.signal(s, signal.SIG_IGN)\\ntime.sleep(120)"
kids = [subprocess.Popen([sys.executable, "-c", code], pass_fds=[sock.fileno()]) for code in (worker, stubborn)]
time.sleep(1.0)  # the stubborn one has set its handlers
print("ready", flush=True)
time.sleep(120)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def children(pid: int) -> list[int]:
    """`pid`'s child processes, but for run_group's watchdog (procs.watch)."""
    return [child for child, fields in procs.processes() if int(fields[1]) == pid and not watchdog(child)]


def watchdog(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[3:4] == [b"--watch"]
    except OSError:
        return False


def wait_for(predicate, timeout: float, what: str) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while not predicate():
        assert time.time() < deadline, what
        time.sleep(0.05)


@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_run_group_takes_the_whole_group_down(sig: int, tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "stand_in.py").write_text(STAND_IN)
    runner = ("import sys; from lossbench import procs; "
              "sys.exit(procs.run_group([sys.executable, sys.argv[1], sys.argv[2]], grace=1.0))")  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-c", runner, str(tmp_path / "stand_in.py"), str(port)],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        (leader,) = children(proc.pid)
        assert os.getpgid(leader) == leader != os.getpgid(proc.pid)  # a group of its own
        assert len(procs.members(leader)) == 3 and not port_is_free(port)
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig
    finally:
        if proc.poll() is None:
            proc.kill()
    assert procs.members(leader) == []  # the stubborn worker too: SIGKILLed after the grace period
    assert port_is_free(port)


def test_run_group_cleans_up_after_a_command_that_exits_by_itself(tmp_path: Path) -> None:
    token = f"sleeper-{os.getpid()}-{time.time_ns()}"  # names this test's grandchild, and only it
    code = f"import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(99)', '{token}'])"
    leftover: list[int] = []
    runner = subprocess.run(
        [sys.executable, "-c", "import sys; from lossbench import procs; "
         "sys.exit(procs.run_group([sys.executable, '-c', sys.argv[1]], grace=1.0))", code],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert runner.returncode == 0
    for entry in Path("/proc").iterdir():  # no sleeper from this test is left anywhere
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except (OSError, NotADirectoryError):
            continue
        if token.encode() in cmdline and b"subprocess" not in cmdline:
            leftover.append(int(entry.name))
    assert leftover == []


@pytest.mark.slow  # MLflow's UI starts 16 processes: ~15 s per signal on two cores
@pytest.mark.parametrize("sig", SIGNALS, ids=lambda s: signal.Signals(s).name)
def test_lossbench_ui_leaves_no_process_behind(sig: int, tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "ui", "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
         "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    group = None
    try:
        wait_for(lambda: not port_is_free(port) or proc.poll() is not None, 180, "the UI never opened its port")
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        (mlflow,) = children(proc.pid)
        group = os.getpgid(mlflow)
        assert group != os.getpgid(proc.pid) and len(procs.members(group)) > 1  # its server and workers
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 128 + sig
        assert procs.members(group) == []
    finally:
        for pgid in {os.getpgid(proc.pid) if proc.poll() is None else None, group} - {None}:
            procs.stop_group(pgid, signal.SIGKILL, grace=5)  # a failed test leaves nothing running either
    assert port_is_free(port)


def session(sid: int) -> list[int]:
    """Live processes of a session (Ray's daemons stay in their driver's session, whatever their group)."""
    return [pid for pid, fields in procs.processes() if int(fields[3]) == sid]


@pytest.mark.slow  # a local Ray cluster starts in ~10 s on two cores
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=lambda s: signal.Signals(s).name)
def test_local_ray_cluster_goes_down_with_the_driver(sig: int, store: str, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    ckpts = tmp_path / "ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "run", "--executor", "ray", "--dataset", "ring8", "--steps", "20000",
         "--checkpoint-every", "50", "--no-progress", "--tracking-uri", store, "--checkpoint-dir", str(ckpts)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        wait_for(lambda: any(ckpts.glob("*/latest.pt")) or proc.poll() is not None, 180, "no task ever trained")
        assert proc.poll() is None and len(session(proc.pid)) > 3  # the driver, Ray's daemons, the worker
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0 and [line for line in err.splitlines() if line.startswith("Error")] == [
        "Error: interrupted"
    ]
    wait_for(lambda: session(proc.pid) == [], 30, f"left behind: {session(proc.pid)}")

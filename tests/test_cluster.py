"""Scale-out, with real components on loopback: PostgreSQL (Debian's packages) behind a real
`mlflow server`, a real Ray cluster started with `ray start --head`, `lossbench sweep --executor ray`
writing through the server, `lossbench report` reading it back, and a Ray worker SIGKILLed mid-task.
Every process started here is stopped at the end."""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from test_cli import lossbench

pytestmark = pytest.mark.cluster


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or (
        [shutil.which(name)] if shutil.which(name) else []
    )
    if not found:
        pytest.fail(f"PostgreSQL's {name} not found: install Debian's postgresql package (.ci/run does)")
    return found[-1]


def as_postgres(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    """PostgreSQL refuses to run as root: drop to the postgres user when we are root."""
    if os.geteuid() == 0:
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def wait_until(check, what: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{what} did not come up within {timeout:.0f} s")


@pytest.fixture(scope="module")
def postgres() -> Iterator[dict[str, str]]:
    root = Path(tempfile.mkdtemp(prefix="lossbench-pg-"))  # not under pytest's root-only folders
    password = secrets.token_hex(12)
    (root / "pw").write_text(password)
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(root / "pw", "postgres")
    port = free_port()
    data = root / "data"
    as_postgres([pg_bin("initdb"), "-D", str(data), "-U", "mlflow", f"--pwfile={root / 'pw'}", "-A", "scram-sha-256"])
    as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-w", "start",
                 "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root}"])  # fmt: skip
    env = os.environ | {"PGPASSWORD": password}
    try:
        subprocess.run([pg_bin("createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "mlflow", "mlflow"],
                       check=True, env=env, capture_output=True)  # fmt: skip
        yield {"host": "127.0.0.1", "port": str(port), "user": "mlflow", "password": password, "db": "mlflow"}
    finally:
        as_postgres([pg_bin("pg_ctl"), "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def mlflow_server(postgres: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    artifacts = tmp_path_factory.mktemp("artifacts")
    port = free_port()
    backend = (
        f"postgresql+psycopg2://{postgres['user']}:{postgres['password']}@{postgres['host']}:{postgres['port']}/mlflow"
    )
    log = open(artifacts.parent / "mlflow-server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend, "--artifacts-destination",
         str(artifacts), "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            assert proc.poll() is None, (artifacts.parent / "mlflow-server.log").read_text()[-3000:]
            return urllib.request.urlopen(f"{uri}/health", timeout=2).status == 200

        wait_until(up, "mlflow server")
        yield uri
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def ray_cluster(feature_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A one-node Ray cluster on loopback with 2 CPUs; its workers inherit this environment (data root,
    TORCH_HOME, feature cache), as workers on a real cluster read their own."""
    ray = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    # token authentication on, the token only in the environment (drivers and workers read it there)
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = secrets.token_hex(16)
    temp = tmp_path_factory.mktemp("ray")
    subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port), "--num-cpus", "2",
                    "--include-dashboard", "false", "--temp-dir", str(temp), "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)  # fmt: skip
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], capture_output=True, timeout=120)
        for key in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            os.environ.pop(key, None)


def query(pg: dict[str, str], sql: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(host=pg["host"], port=pg["port"], user=pg["user"], password=pg["password"],
                          dbname=pg["db"]) as conn, conn.cursor() as cur:  # fmt: skip
        cur.execute(sql)
        return cur.fetchall()


SEED_RUNS = """
    select r.run_uuid, r.status, t_loss.value, t_seed.value, t_parent.value
    from runs r
    join experiments e on e.experiment_id = r.experiment_id and e.name = '{experiment}'
    join tags t_role on t_role.run_uuid = r.run_uuid and t_role.key = 'lossbench.role' and t_role.value = 'seed'
    join tags t_loss on t_loss.run_uuid = r.run_uuid and t_loss.key = 'lossbench.loss'
    join tags t_seed on t_seed.run_uuid = r.run_uuid and t_seed.key = 'lossbench.seed'
    join tags t_parent on t_parent.run_uuid = r.run_uuid and t_parent.key = 'mlflow.parentRunId'
"""


def test_ray_sweep_into_postgres_then_report(
    postgres: dict[str, str], mlflow_server: str, ray_cluster: str, tmp_path: Path
) -> None:
    store = ["--tracking-uri", mlflow_server, "--experiment", "cluster"]
    proc = lossbench("sweep", "smoke", "--executor", "ray", "--ray-address", ray_cluster, *store,
                     "--checkpoint-dir", str(tmp_path / "ckpt"), "--no-progress")  # fmt: skip
    assert "suite smoke: 27 finished" in proc.stdout

    runs = query(postgres, SEED_RUNS.format(experiment="cluster"))
    assert len(runs) == 27 and {status for _, status, *_ in runs} == {"FINISHED"}
    assert len({(loss, seed) for _, _, loss, seed, _ in runs}) == 27  # every (loss, seed) exactly once
    with_metrics = query(
        postgres, "select run_uuid, key from latest_metrics where key in ('d_loss', 'g_loss', 'modes')"
    )
    keys: dict[str, set[str]] = {}
    for run_id, key in with_metrics:
        keys.setdefault(run_id, set()).add(key)
    assert all(keys.get(run_id) == {"d_loss", "g_loss", "modes"} for run_id, *_ in runs)
    parents = query(
        postgres,
        "select count(*) from runs r join tags t on t.run_uuid = r.run_uuid "
        "where t.key = 'lossbench.role' and t.value = 'parent' and r.status = 'FINISHED'",
    )
    assert parents == [(9,)]
    assert postgres["password"] not in proc.stdout + proc.stderr

    lossbench("report", *store, "--out", str(tmp_path / "report"))
    summary = pd.read_csv(tmp_path / "report" / "summary.csv")
    assert len(summary) == 9 and set(summary["finished"]) == {3} and set(summary["seeds"]) == {3}
    all_runs = pd.read_csv(tmp_path / "report" / "runs.csv")
    assert set(all_runs["run_id"]) >= {run_id for run_id, *_ in runs}


def test_a_killed_ray_worker_still_gives_every_run_once(
    postgres: dict[str, str], mlflow_server: str, ray_cluster: str, tmp_path: Path
) -> None:
    suite = tmp_path / "long.toml"
    suite.write_text('seeds = 2\n[base]\ndataset = "ring8"\nsteps = 800\nlog_every = 50\ncheckpoint_every = 50\n'
                     'sample_every = 800\nfid_samples = 500\n[grid]\nloss = ["hinge", "least-squares"]\n')  # fmt: skip
    ckpts = tmp_path / "ckpt"
    store = ["--tracking-uri", mlflow_server, "--experiment", "worker-loss"]
    sweep = subprocess.Popen(
        [sys.executable, "-m", "lossbench", "sweep", str(suite), "--executor", "ray", "--ray-address", ray_cluster,
         *store, "--checkpoint-dir", str(ckpts), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    wait_until(lambda: bool(list(ckpts.glob("*/latest.pt"))), "a first checkpoint", timeout=180)
    workers = subprocess.run(["pgrep", "-f", "ray::train_task"], capture_output=True, text=True).stdout.split()
    assert workers, "no Ray worker is running a task"
    os.kill(int(workers[0]), signal.SIGKILL)
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-2000:]
    assert "suite long: 4 finished" in out

    runs = query(postgres, SEED_RUNS.format(experiment="worker-loss"))
    assert sorted((loss, seed) for _, _, loss, seed, _ in runs) == [
        ("hinge", "0"), ("hinge", "1"), ("least-squares", "0"), ("least-squares", "1")
    ]  # fmt: skip
    assert {status for _, status, *_ in runs} == {"FINISHED"}
    # the killed task's seed was continued in its own run: its loss curve has every logged step
    steps = query(postgres, "select run_uuid, count(distinct step) from metrics where key = 'd_loss' group by run_uuid")
    assert {run_id: n for run_id, n in steps if run_id in {r[0] for r in runs}} == {r[0]: 16 for r in runs}

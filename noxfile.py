"""nox sessions: tests (the default suite), cluster (PostgreSQL + mlflow server + Ray), gpu (fast paths on
CUDA), slow (everything), lint, bench."""

import os

import nox

nox.options.sessions = ["lint", "tests"]
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]


def _install(session: nox.Session) -> None:
    session.install(*TORCH)
    session.install("-e", ".[test]")


@nox.session
def tests(session: nox.Session) -> None:
    _install(session)
    args = ["-m", "not slow and not cluster and not gpu", "-n", "auto", "--dist", "loadgroup", *session.posargs]
    session.run("pytest", *args, env=dict(os.environ))


@nox.session
def cluster(session: nox.Session) -> None:
    """The scale-out integration tests: PostgreSQL, mlflow server and Ray on loopback."""
    _install(session)
    session.run("pytest", "-m", "cluster", *session.posargs)


@nox.session
def gpu(session: nox.Session) -> None:
    """The fast paths on a CUDA device (CUDA graphs, compile, fused Adam, bf16, parallel seeds)."""
    _install(session)
    session.run("pytest", "-m", "gpu", *session.posargs)


@nox.session
def slow(session: nox.Session) -> None:
    _install(session)
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "lossbench", "tests", "benchmarks")


@nox.session
def bench(session: nox.Session) -> None:
    _install(session)
    session.run("python", "-m", "benchmarks", *session.posargs)

"""nox sessions: tests (the default suite), slow (everything), lint, bench."""

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
    session.run("pytest", "-m", "not slow", *session.posargs, env={k: v for k, v in os.environ.items()})


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

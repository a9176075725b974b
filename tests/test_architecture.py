"""The package map holds: imports flow one way (cli -> exec -> train -> gan), metrics and report
never reach into training, nothing imports the CLI, mlflow stays inside tracking.py, and the public
names the README documents import from their documented paths."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import lossbench

ROOT = Path(lossbench.__file__).parent

# A module may import modules of its own rank or lower, never higher.
RANK = {
    "errors": 0, "registry": 0, "rng": 0, "paths": 0, "cards": 0, "tracking": 0, "progress": 0, "procs": 0, "files": 0,
    "tracking_models": 0, "tracking_conventions": 0, "outcomes": 0, "folders": 0, "manifest": 0, "ui": 0, "caps": 0,
    "plugins": 0, "tracking_records": 0,
    "lossbench": 1,  # the package root: lossbench.mode_metrics defers to gan and metrics
    "gan": 1, "metrics": 1, "losses": 1, "penalties": 1,  # losses/penalties: public re-exports of gan's
    "config": 2,
    "train": 3, "report": 3,
    "exec": 4,
    "cli": 5, "__main__": 6,
}  # fmt: skip
# the store; generators as MLflow models; MLflow's conventions (inputs, descriptions, images, system metrics)
MLFLOW_MODULES = {"lossbench.tracking", "lossbench.tracking_models", "lossbench.tracking_conventions"}
NEVER = {"metrics": {"train", "exec", "cli"}, "report": {"train", "exec", "cli"}, "gan": {"config", "train", "exec"}}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    """lossbench.exec.plan -> exec; lossbench.config -> config; lossbench -> lossbench."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> set[str]:
    """The lossbench modules (and mlflow) a file imports, at any depth (deferred imports included)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if node.module == "lossbench":  # from lossbench import config, paths
                out |= {f"lossbench.{a.name}" for a in node.names}
    return {m for m in out if m.startswith("lossbench") or m.split(".")[0] == "mlflow"}


GRAPH = {module_name(p): imports(p) for p in ROOT.rglob("*.py")}


def violations(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for mod, deps in graph.items():
        src = area(mod)
        for dep in deps:
            if dep.split(".")[0] == "mlflow":
                if mod not in MLFLOW_MODULES:
                    bad.append(f"{mod} imports mlflow (only {', '.join(sorted(MLFLOW_MODULES))} may)")
                continue
            dst = area(dep)
            if dst == "lossbench" or src == dst:
                continue
            if (dst == "cli" and src != "__main__") or dst in NEVER.get(src, set()) or RANK[dst] > RANK[src]:
                bad.append(f"{mod} imports {dep} against the direction ({src} -> {dst})")
    return bad


def test_every_module_has_a_rank() -> None:
    assert {area(m) for m in GRAPH} - {"lossbench"} <= set(RANK)


def test_imports_flow_one_way() -> None:
    assert violations(GRAPH) == []


def test_the_rule_catches_an_import_against_the_direction() -> None:
    assert violations({"lossbench.gan.losses": {"lossbench.train.loop"}})
    assert violations({"lossbench.report.build": {"lossbench.exec.plan"}})
    assert violations({"lossbench.exec.plan": {"lossbench.cli"}})
    assert violations({"lossbench.exec.plan": {"mlflow.entities"}})
    assert not violations({"lossbench.exec.plan": {"lossbench.train.loop", "lossbench.gan.data"}})


def test_no_import_cycle() -> None:
    modules = {m: {d for d in deps if d in GRAPH and d != m} for m, deps in GRAPH.items()}
    # a package's __init__ re-exporting its own modules is not a cycle through them
    for m in modules:
        modules[m] = {d for d in modules[m] if not m.startswith(d + ".")}
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in modules[m]:
            if state.get(d) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(d) :], d]))
            if d not in state:
                visit(d, [*stack, d])
        state[m] = 2

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])


PUBLIC = {
    "lossbench.losses": ["LOSSES", "Loss", "get", "names", "describe", "needs_real", "gradient_penalty", "Minimax",
                         "NonSaturating", "LeastSquares", "Wasserstein", "Hinge", "Relativistic",
                         "RelativisticAverage"],
    "lossbench.penalties": ["PENALTIES", "Penalty", "Critic", "get", "names", "penalty", "gradient_penalty"],
    "lossbench.train": ["Hooks", "Outcome", "TrainState", "setup", "train"],
}  # fmt: skip


@pytest.mark.parametrize("module", sorted(PUBLIC))
def test_public_names_import_from_their_documented_path(module: str) -> None:
    mod = importlib.import_module(module)
    missing = [name for name in PUBLIC[module] if not hasattr(mod, name)]
    assert missing == []


def test_public_registries_are_the_ones_the_trainer_uses() -> None:
    from lossbench import losses, penalties
    from lossbench.gan import losses as gan_losses
    from lossbench.gan import penalties as gan_penalties

    assert losses.LOSSES is gan_losses.LOSSES and penalties.PENALTIES is gan_penalties.PENALTIES
    assert isinstance(losses.get("minimax"), losses.Minimax)

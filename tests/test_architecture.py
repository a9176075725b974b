"""The package map holds: imports flow one way (cli -> exec -> train -> gan), metrics and report
never reach into training, nothing imports the CLI, mlflow stays inside tracking.py, the store's
modules are imported only by the layers that record and read runs, and the public names the README
documents import from their documented paths. Relative imports are resolved to the modules they
name, and the package root is checked as every other module is."""

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
    "plugins": 0, "signal_handlers": 0, "tracking_records": 0,
    "lossbench": 2,  # the package root: lossbench.mode_metrics defers to gan and metrics
    "gan": 1, "metrics": 1, "losses": 1, "penalties": 1,  # losses/penalties: public re-exports of gan's
    "config": 2, "options": 2,  # options: execution options (seeds, device, folders, fast paths), outside the hash
    "train": 3, "report": 3,
    "exec": 4,
    "cli": 5, "__main__": 6,
}  # fmt: skip
# the store; generators as MLflow models; MLflow's conventions (inputs, descriptions, images, system metrics)
MLFLOW_MODULES = {"lossbench.tracking", "lossbench.tracking_models", "lossbench.tracking_conventions"}
NEVER = {"metrics": {"train", "exec", "cli"}, "report": {"train", "exec", "cli"}, "gan": {"config", "train", "exec"}}
# the store (runs, logged generators, MLflow's conventions) and who may import it: those that record
# and read runs, and options' dry-run display of the tracking URI (its credentials redacted)
STORE = {"tracking", "tracking_models", "tracking_conventions"}
STORE_USERS = {"exec", "report", "cli", "options", *STORE}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def area(module: str) -> str:
    """lossbench.exec.plan -> exec; lossbench.config -> config; lossbench -> lossbench."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def imports(path: Path) -> set[str]:
    """The lossbench modules (and mlflow) a file imports, at any depth (deferred imports included)."""
    return imports_in(path.read_text(), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool = False) -> set[str]:
    """The lossbench modules (and mlflow) `source`, the text of `module`, imports. A relative import
    is resolved against the module's package (`from ..exec import group` in lossbench.gan.losses is
    lossbench.exec.group); `from PACKAGE import NAME` is the submodule PACKAGE.NAME where one exists,
    else PACKAGE itself (`from lossbench import __version__` is the package root)."""
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            frm = ".".join([*base, *([node.module] if node.module else [])])
            out |= {f"{frm}.{a.name}" if is_module(f"{frm}.{a.name}") else frm for a in node.names}
    return {m for m in out if m.split(".")[0] in ("lossbench", "mlflow")}


def is_module(name: str) -> bool:
    """Whether `name` is a module or package of lossbench (a file or a folder under the package)."""
    path = ROOT.parent.joinpath(*name.split("."))
    return name.split(".")[0] == "lossbench" and (path.with_suffix(".py").is_file() or path.is_dir())


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
            if src == dst:
                continue
            if (dst == "cli" and src != "__main__") or dst in NEVER.get(src, set()) or RANK[dst] > RANK[src]:
                bad.append(f"{mod} imports {dep} against the direction ({src} -> {dst})")
            elif dst in STORE and src not in STORE_USERS:
                bad.append(f"{mod} imports {dep}: only {', '.join(sorted(STORE_USERS - STORE))} may use the store")
    return bad


def test_every_module_has_a_rank() -> None:
    assert {area(m) for m in GRAPH} <= set(RANK)


def test_imports_flow_one_way() -> None:
    assert violations(GRAPH) == []


def test_the_rule_catches_an_import_against_the_direction() -> None:
    assert violations({"lossbench.gan.losses": {"lossbench.train.loop"}})
    assert violations({"lossbench.report.build": {"lossbench.exec.plan"}})
    assert violations({"lossbench.exec.plan": {"lossbench.cli"}})
    assert violations({"lossbench.exec.plan": {"mlflow.entities"}})
    assert not violations({"lossbench.exec.plan": {"lossbench.train.loop", "lossbench.gan.data"}})
    assert violations({"lossbench.gan.losses": {"lossbench"}})  # the root imports gan: gan cannot import it
    assert violations({"lossbench": {"lossbench.exec.plan"}})  # the root is checked as any module
    assert violations({"lossbench.gan.data": {"lossbench.tracking"}})  # rank 0, but the store
    assert violations({"lossbench.train.loop": {"lossbench.tracking_conventions"}})
    assert not violations({"lossbench.report.build": {"lossbench.tracking"}, "lossbench.exec.runs": {"lossbench"}})


def test_relative_imports_are_resolved() -> None:
    assert imports_in("from ..exec import group", "lossbench.gan.losses") == {"lossbench.exec.group"}
    assert imports_in("from . import data", "lossbench.gan.losses") == {"lossbench.gan.data"}
    assert imports_in("from .. import tracking", "lossbench.gan", is_package=True) == {"lossbench.tracking"}
    assert imports_in("from .exec.plan import groups", "lossbench", is_package=True) == {"lossbench.exec.plan"}
    assert imports_in("from lossbench import __version__, rng", "lossbench.exec.runs") == {"lossbench", "lossbench.rng"}
    planted = {"lossbench.gan.losses": imports_in("def f():\n    from ..exec import group\n", "lossbench.gan.losses")}
    assert violations(planted) == [
        "lossbench.gan.losses imports lossbench.exec.group against the direction (gan -> exec)"
    ]


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

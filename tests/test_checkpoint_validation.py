"""A tampered checkpoint never crashes the process: `--resume` checks every value of the file against
what the configuration's state takes (lossbench.train.validate) before any run is reopened, and
refuses a mismatch in one line, with the store and the file unchanged."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from click.testing import CliRunner
from mlflow import MlflowClient
from test_cli import runs_by_role
from test_reliability import store_snapshot

from lossbench.cli import main
from lossbench.config import resolve
from lossbench.train import checkpoint

pytestmark = pytest.mark.xdist_group("checkpoint-validation")  # one worker builds the killed runs once

TINY = ["--dataset", "ring8", "--steps", "4", "--log-every", "2", "--checkpoint-every", "2", "--metrics", "none",
        "--no-progress"]  # fmt: skip

# `lossbench run` that SIGKILLs itself right after its first checkpoint commit (step 2 of 4): its seed
# runs and parent are left RUNNING with a checkpoint, as a process that died leaves them
KILLED_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from lossbench.train import checkpoint
commit = checkpoint.GroupCommit.commit
def commit_then_die(self, step):
    commit(self, step)
    os.kill(os.getpid(), signal.SIGKILL)
checkpoint.GroupCommit.commit = commit_then_die
from lossbench.cli import main
main(prog_name="lossbench", args=sys.argv[1:])
"""


def killed_run(folder: Path, new_store: Callable[..., str], *extra: str) -> Path:
    folder.mkdir()
    args = ["run", *TINY, *extra, "--tracking-uri", new_store(folder / "mlflow.db"),
            "--checkpoint-dir", str(folder / "ckpt")]  # fmt: skip
    proc = subprocess.run([sys.executable, "-c", KILLED_AFTER_FIRST_CHECKPOINT, *args], capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert proc.returncode == -9, proc.stderr
    assert len(list((folder / "ckpt").glob("*/latest.pt"))) == (2 if "--parallel-seeds" in extra else 1)
    return folder


@pytest.fixture(scope="module")
def killed(tmp_path_factory: pytest.TempPathFactory, new_store: Callable[..., str]) -> dict[str, Path]:
    """A one-seed run and two seeds trained together, each killed after its step-2 checkpoint."""
    root = tmp_path_factory.mktemp("killed")
    return {"one": killed_run(root / "one", new_store),
            "group": killed_run(root / "group", new_store, "--seeds", "2", "--parallel-seeds")}  # fmt: skip


class Copy:
    """A copy of a killed run's store and checkpoint folder, to tamper with and resume."""

    def __init__(self, source: Path, dst: Path) -> None:
        shutil.copytree(source, dst)
        self.root, self.store, self.ckpts = dst, f"sqlite:///{dst / 'mlflow.db'}", dst / "ckpt"

    def args(self, *extra: str) -> list[str]:
        return ["run", *TINY, *extra, "--tracking-uri", self.store, "--checkpoint-dir", str(self.ckpts), "--resume"]

    def checkpoints(self) -> list[Path]:
        return sorted(self.ckpts.glob("*/latest.pt"))

    def tamper(self, change: Callable[[dict[str, Any]], Any], which: int = 0) -> Path:
        path = self.checkpoints()[which]
        state = torch.load(path, weights_only=True)
        change(state)
        torch.save(state, path)
        return path


def one_line_error(stderr: str) -> str:
    assert "Traceback" not in stderr, stderr
    (error,) = [line for line in stderr.splitlines() if line.startswith("Error")]
    return error


def refused(copy: Copy, *extra: str) -> str:
    """Resume in this process; it must fail in one line and leave the store and the files as they were."""
    before = store_snapshot(copy.store)
    files = {p: p.read_bytes() for p in copy.ckpts.rglob("*.pt")}
    result = CliRunner().invoke(main, copy.args(*extra))
    assert result.exit_code == 1, (result.exit_code, result.output, result.exception)
    error = one_line_error(result.stderr)
    assert store_snapshot(copy.store) == before  # nothing reopened, killed or logged
    assert {p: p.read_bytes() for p in copy.ckpts.rglob("*.pt")} == files
    return error


class Planted:
    """Pickles as a call of posix.getcwd: a module torch's safe unpickler blocks outright."""

    def __reduce__(self) -> tuple:
        return (os.getcwd, ())


def _set(path: tuple[Any, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(state: dict[str, Any]) -> None:
        holder = state
        for key in path[:-1]:
            holder = holder[key]
        holder[path[-1]] = value

    return change


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda state: state.pop(key)


# (case, tampering, what the one line says): the list, each seen failing before validation
CASES = [
    ("param shape", _set(("G", "0.weight"), torch.zeros(2, 2)), "G['0.weight'] has shape (2, 2), expected (128, 100)"),
    ("missing key", _drop("acc_g"), "acc_g is missing"),
    ("extra key", _set(("extra",), torch.zeros(1)), "extra is not expected (unknown key)"),
    ("rng state", _set(("streams", "noise"), torch.zeros(16, dtype=torch.uint8)),
     "streams.noise has 16 bytes, expected 5056"),
    ("non-integer step", _set(("step",), 2.5), "step is float 2.5, expected an integer in [0, 4]"),
    ("huge step", _set(("step",), 10**30), "step is 1e+30, expected an integer in [0, 4]"),
    ("blocked module", _set(("extra",), Planted()), "needs posix.getcwd to load, which could run code; refused"),
    ("param group count", lambda s: s["opt_d"]["param_groups"].append(dict(s["opt_d"]["param_groups"][0])),
     "opt_d.param_groups has 2 groups, expected 1"),
    ("optimizer index", _set(("opt_g", "state", 99), {}), "opt_g.state[99] names no parameter"),
    ("algorithm switch", _set(("opt_g", "param_groups", 0, "amsgrad"), True),
     "opt_g.param_groups[0].amsgrad is True, expected False"),
]  # fmt: skip


@pytest.mark.parametrize("change,message", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_tampered_checkpoint_is_one_line_and_touches_nothing(killed: dict[str, Path], tmp_path: Path,
                                                             change: Callable, message: str) -> None:  # fmt: skip
    copy = Copy(killed["one"], tmp_path / "copy")
    path = copy.tamper(change)
    error = refused(copy)
    assert error.startswith(f"Error: checkpoint {path}") and message in error, error
    assert "Start the seed again without --resume, or delete that file" in error


@pytest.mark.parametrize("kind", ["fused", "foreach"])
def test_wrong_shape_optimizer_moment_is_refused_not_a_crash(killed: dict[str, Path], tmp_path: Path,
                                                             kind: str) -> None:  # fmt: skip
    """An exp_avg of the wrong shape read memory out of bounds in Adam's kernels (exit -11 or -6 before
    validation); it is one line now, in a real process, and the run can still resume once it is restored."""
    copy = Copy(killed["one"], tmp_path / "copy")
    (path,) = copy.checkpoints()
    if kind == "foreach":  # as --foreach-optim writes it (a resume takes its kernels from the file)
        copy.tamper(lambda s: [g.update(fused=None) for opt in ("opt_g", "opt_d") for g in s[opt]["param_groups"]])
    good = path.read_bytes()
    copy.tamper(_set(("opt_g", "state", 0, "exp_avg"), torch.zeros(3, 3)))
    before = store_snapshot(copy.store)
    flag = "--fused-optim" if kind == "fused" else "--foreach-optim"
    proc = subprocess.run([sys.executable, "-m", "lossbench", *copy.args(flag)], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    error = one_line_error(proc.stderr)
    assert f"checkpoint {path}: opt_g.state[0].exp_avg has shape (3, 3), expected (128, 100)" in error, error
    assert store_snapshot(copy.store) == before
    path.write_bytes(good)  # the untampered file resumes the same run
    (was,) = runs_by_role(copy.store)["seed"]
    result = CliRunner().invoke(main, copy.args(flag))
    assert result.exit_code == 0, result.output
    assert "training 2 steps from step 2" in result.stderr
    (seed,) = runs_by_role(copy.store)["seed"]
    assert seed.info.run_id == was.info.run_id and seed.info.status == "FINISHED"


def test_tampered_seed_of_a_group_refuses_the_whole_group(killed: dict[str, Path], tmp_path: Path) -> None:
    """Seeds checkpointed together: the second seed's file is bad, so neither seed's run is reopened."""
    copy = Copy(killed["group"], tmp_path / "copy")
    path = copy.tamper(_set(("opt_d", "state", 1, "exp_avg_sq"), torch.zeros(7)), which=1)
    error = refused(copy, "--seeds", "2", "--parallel-seeds")
    assert f"checkpoint {path}: opt_d.state[1].exp_avg_sq has shape (7,), expected" in error, error


def test_group_checkpoints_validate_and_resume(killed: dict[str, Path], tmp_path: Path) -> None:
    """Every seed's untampered checkpoint of a group passes, and the group resumes from it."""
    from lossbench.train import validate

    copy = Copy(killed["group"], tmp_path / "copy")
    cfg = resolve(("t", {"dataset": "ring8", "steps": 4}))
    for path in copy.checkpoints():
        assert validate.mismatch(checkpoint.load(path), validate.expected(cfg, "cpu")) is None
    before = {r.info.run_id for r in runs_by_role(copy.store)["seed"]}
    result = CliRunner().invoke(main, copy.args("--seeds", "2", "--parallel-seeds"))
    assert result.exit_code == 0, result.output
    assert "seeds 0,1: training 2 steps from step 2" in result.stderr
    after = runs_by_role(copy.store)["seed"]
    assert {r.info.run_id for r in after} == before and len(before) == 2
    assert all(r.info.status == "FINISHED" for r in after)


def test_seed_failed_by_a_full_disk_resumes_from_its_last_checkpoint(killed: dict[str, Path], tmp_path: Path,
                                                                    store: str) -> None:  # fmt: skip
    """The disk holds one checkpoint, not a second beside it: the step-4 write fails (the run ends
    FAILED), the step-2 file stays; once there is room, --resume continues that run from step 2
    (it used to start the seed again from step 0 in a new run)."""
    (sample,) = Copy(killed["one"], tmp_path / "sample").checkpoints()
    tiny = tmp_path / "tiny"
    tiny.mkdir()
    size = sample.stat().st_size * 3 // 2 // 4096 * 4096
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(tiny)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root): {mounted.stderr.decode().strip()}")
    # store: the template's copy (a new store's migrations cost seconds)
    args = ["run", *TINY, "--steps", "6", "--tracking-uri", store, "--checkpoint-dir", str(tiny)]
    try:
        full = CliRunner().invoke(main, args)
        assert full.exit_code == 1 and "No space left on device" in one_line_error(full.stderr)
        (failed,) = runs_by_role(store)["seed"]
        assert failed.info.status == "FAILED" and failed.data.tags["lossbench.outcome"] == "failed"
        subprocess.run(["mount", "-o", "remount,size=64m", str(tiny)], check=True)  # room again
        resumed = CliRunner().invoke(main, [*args, "--resume"])
    finally:
        subprocess.run(["umount", "-l", str(tiny)], capture_output=True)
    assert resumed.exit_code == 0, resumed.output
    assert "training 4 steps from step 2" in resumed.stderr
    (run,) = runs_by_role(store)["seed"]
    assert run.info.run_id == failed.info.run_id and run.info.status == "FINISHED"
    history = MlflowClient(tracking_uri=store).get_metric_history(run.info.run_id, "d_loss")
    steps: dict[int, set[float]] = {}
    for m in history:  # step 4 was logged before its checkpoint failed, and again after the resume
        steps.setdefault(m.step, set()).add(m.value)
    assert sorted(steps) == [2, 4, 6] and all(len(v) == 1 for v in steps.values())  # the same numbers again


# configurations whose checkpoints differ in structure: buffers (batch norm's counters), spectral
# norm's parametrizations, packed D inputs, two scalars (dirac), optimisers with other state
SHAPES = [
    {"dataset": "ring8"},
    {"dataset": "mnist", "arch": "dcgan"},  # batch norm in G: buffers, an int64 counter
    {"dataset": "mnist", "arch": "dcgan", "d_norm": "spectral"},
    {"dataset": "mnist", "arch": "infogan", "d_batchnorm": True},
    {"dataset": "ring8", "arch": "pacgan-mlp", "pack": 2},
    {"dataset": "dirac", "optimizer": "sgd"},
    {"dataset": "ring8", "optimizer": "rmsprop"},
]


@pytest.mark.parametrize("flags", SHAPES, ids=lambda f: "-".join(map(str, f.values())))
@pytest.mark.parametrize("seeds", [1, 2], ids=["single", "stacked"])
def test_what_lossbench_writes_passes_and_one_change_does_not(flags: dict, seeds: int) -> None:
    """A state after a step, as a checkpoint file holds it (seed by seed for stacked seeds), matches
    the configuration's template; with one tensor reshaped or the step out of range it does not."""
    import io

    from lossbench.gan import data
    from lossbench.options import SpeedConfig
    from lossbench.train import validate
    from lossbench.train.state import setup

    cfg = resolve(("t", {**flags, "steps": 10}))
    if seeds > 1 and flags.get("d_norm") == "spectral":
        pytest.skip("--parallel-seeds refuses spectral norm")
    shape = data.DATASETS.get(cfg.data.dataset).sample_shape
    state = setup(cfg, list(range(seeds)) if seeds > 1 else 0, shape, torch.device("cpu"),
                  SpeedConfig(parallel_seeds=seeds > 1))  # fmt: skip
    players = state.players
    for opt, params in ((players.opt_g, players.g_parameters()), (players.opt_d, players.d_parameters())):
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    state.step = 3
    expected = validate.expected(cfg, "cpu")
    for k in range(seeds):
        blob = io.BytesIO()
        torch.save(state.state_dict(k), blob)
        blob.seek(0)
        saved = torch.load(blob, map_location="cpu", weights_only=True)
        assert validate.mismatch(saved, expected) is None
        name, tensor = next(iter(saved["D"].items()))
        saved["D"][name] = tensor.reshape(-1, 1) if tensor.dim() != 2 else tensor.reshape(-1)
        problem = validate.mismatch(saved, expected)
        assert problem.startswith("D") and f"{name}" in problem and " has shape " in problem, problem
        saved["D"][name], saved["step"] = tensor, 11
        assert validate.mismatch(saved, expected) == "step is 11, expected an integer in [0, 10]"


HOSTILE = [  # (where, value): values a hand-edited file may hold, each named in the one line
    (("opt_g", "param_groups", 0, "params"), [torch.arange(3), *range(1, 8)]),
    (("opt_g", "param_groups", 0, "lr"), float("nan")),
    (("opt_g", "param_groups", 0, "betas"), (0.5,)), (("opt_g", "param_groups", 0, "fused"), "yes"),
    (("opt_d", "param_groups"), {}), (("opt_d", "state"), []), (("opt_d", "state", torch.zeros(2)), {}),
    (("opt_d", "state", 0, "step"), torch.zeros(2)), (("step",), torch.tensor(2)), (("step",), True),
    (("step",), -1), (("window",), 3), (("streams", "data"), torch.zeros(5056)), (("streams", "data"), 7),
    (("streams", "other"), torch.zeros(5056, dtype=torch.uint8)), (("acc_d",), torch.zeros(99)),
    (("acc_g",), torch.zeros(3, dtype=torch.float64)), (("G",), [1, 2]), (("G", "0.weight"), "w"),
    (("G", "0.bias"), torch.zeros(128).to_sparse()), (("opt_g",), None),
]  # fmt: skip


def _stepped(flags: dict[str, Any]) -> tuple[Any, Any]:
    """A one-seed ring8 configuration and its training state after one (zero-gradient) optimiser step
    of each player, so the optimisers hold their per-parameter state as a checkpoint does."""
    from lossbench.gan import data
    from lossbench.train.state import setup

    cfg = resolve(("t", {"dataset": "ring8", "steps": 4, **flags}))
    state = setup(cfg, 0, data.DATASETS.get("ring8").sample_shape, torch.device("cpu"))
    for opt, params in ((state.players.opt_g, state.players.g_parameters()),
                        (state.players.opt_d, state.players.d_parameters())):  # fmt: skip
        for p in params:
            p.grad = torch.zeros_like(p)
        opt.step()
    return cfg, state


def _tamperer(cfg: Any, state: Any) -> Callable[[Callable[[dict[str, Any]], None]], str | None]:
    """change -> validate.mismatch of the state's checkpoint dictionary after `change` edited a fresh
    copy of it (as torch.load gives it back)."""
    import io

    from lossbench.train import validate

    blob, expected = io.BytesIO(), validate.expected(cfg, "cpu")
    torch.save(state.state_dict(), blob)

    def tampered(change: Callable[[dict[str, Any]], None]) -> str | None:
        blob.seek(0)
        saved = torch.load(blob, weights_only=True)
        change(saved)
        return validate.mismatch(saved, expected)

    return tampered


def test_hostile_values_are_named_never_raised() -> None:
    """mismatch is total: whatever a file holds, it returns one line naming the entry, never raises."""
    from lossbench.train import validate

    cfg, state = _stepped({})
    state.step, state.window = 2, 1
    tampered = _tamperer(cfg, state)
    assert tampered(lambda saved: None) is None
    for where, value in HOSTILE:
        problem = tampered(_set(where, value))
        assert isinstance(problem, str) and "\n" not in problem and problem.startswith(where[0]), (where, problem)
    assert validate.mismatch([1], validate.expected(cfg, "cpu")) == "holds a list, not a checkpoint's dictionary"


def test_an_epoch_samplers_state_is_checked_before_it_indexes() -> None:
    """An epoch batching's checkpointed permutation indexes the training set: it passes as written,
    and an index out of range, a repeated index or a position past the epoch is one line, never an
    index into data."""
    cfg, state = _stepped({"batching": "epoch"})
    state.samplers[0].draw(100_000, torch.Generator().manual_seed(0))  # mid-epoch: a permutation and a position
    edit = _tamperer(cfg, state)

    def tampered(change: Callable[[dict[str, Any]], None]) -> str | None:
        return edit(lambda saved: change(saved["batches"]))

    assert tampered(lambda b: None) is None
    assert tampered(lambda b: b.update(order=b["order"] + 1)) == "batches.order is not a permutation of 0..99999"
    assert tampered(lambda b: b["order"].__setitem__(1, b["order"][0].item())) == \
        "batches.order is not a permutation of 0..99999"  # fmt: skip
    assert tampered(lambda b: b.update(pos=100_001)) == "batches.pos is 100001, expected an integer in [0, 100000]"
    assert tampered(lambda b: b.update(order=b["order"].float())).startswith("batches.order has dtype torch.float32")
    assert tampered(lambda b: b.update(extra=1)) == "batches.extra is not expected (unknown key)"


def test_values_no_run_writes_are_refused() -> None:
    """Values lossbench never writes, though of the right shape and type: a negative or NaN Adam
    step count, a non-positive eps, betas outside [0, 1), a NaN weight; and an epoch batching's
    checkpoint without its sampler state (no file written since the field exists lacks it)."""
    cfg, state = _stepped({"batching": "epoch"})
    state.samplers[0].draw(100_000, torch.Generator().manual_seed(0))
    tampered = _tamperer(cfg, state)
    weight = next(iter(state.state_dict()["G"]))
    assert tampered(lambda s: None) is None
    assert tampered(lambda s: s["opt_g"]["state"][0]["step"].fill_(-1e30)) == "opt_g.state[0].step is negative, " \
        "expected a count of steps taken"  # fmt: skip
    assert tampered(lambda s: s["opt_g"]["state"][0]["step"].fill_(float("nan"))) == \
        "opt_g.state[0].step holds NaN or infinite values"  # fmt: skip
    assert tampered(lambda s: s["opt_d"]["param_groups"][0].update(eps=-1.0)) == \
        "opt_d.param_groups[0].eps is -1.0, expected a positive number"  # fmt: skip
    assert tampered(lambda s: s["opt_d"]["param_groups"][0].update(betas=(0.5, 1.5))) == \
        "opt_d.param_groups[0].betas is (0.5, 1.5), expected numbers in [0, 1)"  # fmt: skip
    assert tampered(lambda s: s["G"][weight].view(-1)[0].fill_(float("nan"))) == \
        f"G[{weight!r}] holds NaN or infinite values"  # fmt: skip
    assert tampered(lambda s: s.pop("batches")) == "batches is missing"
    assert tampered(lambda s: s["batches"].update(order=torch.arange(10))) == \
        "batches.order has 10 indices, expected a permutation of the training set's 100000"  # fmt: skip

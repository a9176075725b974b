"""The device script: everything a lent GPU should run, as one command, inside one device call.

    python -m benchmarks.device --out OUT                 # on the GPU (about 9 minutes in all)
    python -m benchmarks.device --out OUT --toy --device cpu   # the same steps at toy sizes (tests)

Steps, in order, each a subprocess with its share of the time left (a step that fails or runs out of
time is recorded and the next one runs):

  gpu       pytest -m gpu: every fast path against the plain one on the device (CUDA graphs, the
            batch-norm state and the whole step included)
  bench     python -m benchmarks train seeds ops whole: steps/s, parallel seeds, operators per
            member-step, the whole step (one graph per step) against the stacked path
  study     lossbench sweep lucic2018-mnist --stage search --parallel-configs --whole-step (with
            --cuda-graphs on CUDA: one CUDA-graph replay per generator step of each group): the first
            stage of Lucic et al.'s MNIST study, its draws trained as groups; --study-flags replaces
            "--whole-step" (e.g. --study-flags="" for the stacked path)
  report    lossbench report --against lucic2018 over the study's store

Everything lands under OUT: one log per step (<step>.txt), the MLflow store (mlflow.db; not for
committing), the report (report/: Markdown, figures, HTML), and summary.md with the device, torch
and CUDA versions, and each step's command, exit status and wall time.

Data: MNIST under LOSSBENCH_DATA_DIR (or --data-dir); FID needs the Inception weights under
TORCH_HOME (torch-fidelity's file, about 92 MiB: a device call carries at most 64 MiB, so carry
it in two parts over two calls, or point TORCH_HOME at a copy already on the machine). --toy runs
a two-configuration, four-step stand-in of the study (the same suite's shape: infogan nets on
MNIST, drawn learning rates and beta1; scored by fcd, the MNIST classifier's Frechet distance,
instead of Inception's FID, and benchmarking only the matrix-product rate) so that the script is
exercised on every CPU test run.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

BUDGET_S = 9 * 60  # one device call is at most 10 minutes; leave one for the transfers
# each step's share of the time left when it starts (the last takes what remains)
SHARES = {"gpu": 0.15, "bench": 0.25, "study": 0.85, "report": 1.0}

TOY_SUITE = """description = "device script, toy sizes: the lucic2018-mnist suite's shape in four steps"
seeds = 1
[base]
arch = "infogan"
z_dim = 16
z_dist = "uniform"
optimizer = "adam"
batch_size = 8
steps = 4
log_every = 2
sample_every = 4
checkpoint_every = 4
fid_samples = 64
reference_split = "test"
metrics = ["fcd"]
[grid]
loss = ["non-saturating"]
dataset = ["mnist"]
[search]
draws = 2
[search.keys]
lr = {log-uniform = [1e-4, 1e-3]}
beta1 = {uniform = [0.0, 0.9]}
"""


@dataclass
class Step:
    name: str
    command: list[str]
    rc: int | None = None  # None: not run (no time left)
    wall_s: float = 0.0


GPU_TESTS = ("tests/test_fast_paths.py", "tests/test_batch_norm_state.py", "tests/test_whole_step.py")


def steps(out: Path, device: str, toy: bool, study_flags: list[str] | None = None) -> list[Step]:
    """The script's steps, as commands run from the checkout; `study_flags`: the study's fast paths
    besides --parallel-configs (default --whole-step), --cuda-graphs added on CUDA."""
    py = sys.executable
    store = f"sqlite:///{out / 'mlflow.db'}"
    if toy:
        suite = out / "toy-suite.toml"
        suite.write_text(TOY_SUITE)
    study = str(suite) if toy else "lucic2018-mnist"
    fast = [*(["--whole-step"] if study_flags is None else study_flags),
            *(["--cuda-graphs"] if device.startswith("cuda") else [])]
    bench = ["--device", device, "--steps", "5" if toy else "200", "--repeat", "1" if toy else "3"]
    return [
        Step("gpu", [py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", *GPU_TESTS]),
        Step("bench", [py, "-m", "benchmarks", *bench, *(["matmul"] if toy else ["train", "seeds", "ops", "whole"])]),
        Step("study", [py, "-m", "lossbench", "sweep", study, "--stage", "search", "--parallel-configs", *fast,
                       "--device", device, "--tracking-uri", store, "--no-progress"]),
        Step("report", [py, "-m", "lossbench", "report", "--tracking-uri", store, "--out", str(out / "report"),
                        "--against", "lucic2018"]),
    ]  # fmt: skip


def run(step: Step, out: Path, timeout: float) -> None:
    start = time.perf_counter()
    with open(out / f"{step.name}.txt", "w") as log:
        try:
            step.rc = subprocess.run(step.command, stdout=log, stderr=subprocess.STDOUT, timeout=timeout,
                                     cwd=Path(__file__).resolve().parent.parent).returncode  # fmt: skip
        except subprocess.TimeoutExpired:
            step.rc = 124
            log.write(f"\n[device script] stopped after {timeout:.0f} s (its share of the budget)\n")
    step.wall_s = time.perf_counter() - start


def machine(device: str) -> str:
    cuda = torch.version.cuda or "none"
    card = torch.cuda.get_device_name(0) if device.startswith("cuda") and torch.cuda.is_available() else ""
    return (f"{card or platform.processor() or platform.machine()} ({device}); torch {torch.__version__}, CUDA "
            f"{cuda}, Python {platform.python_version()}")  # fmt: skip


def summary(out: Path, done: list[Step], device: str, wall_s: float, toy: bool) -> str:
    lines = [f"# Device script{' (toy sizes)' if toy else ''}", "", f"Machine: {machine(device)}.",
             f"Wall time: {wall_s:.0f} s of a {BUDGET_S} s budget.", "",
             "| step | exit | wall s | command |", "|---|---|---|---|"]  # fmt: skip
    for s in done:
        rc = "not run" if s.rc is None else str(s.rc)
        command = " ".join([Path(s.command[0]).name, *s.command[1:]])
        lines.append(f"| {s.name} | {rc} | {s.wall_s:.1f} | `{command}` |")
    text = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.device", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="Folder for every log, figure and the report.")
    parser.add_argument("--device", default="cuda", help="cuda (default) or cpu (with --toy).")
    parser.add_argument("--toy", action="store_true", help="Toy sizes: the steps exercised in seconds.")
    parser.add_argument("--budget", type=float, default=BUDGET_S, help="Seconds for all steps.")
    parser.add_argument("--study-flags", default=None,
                        help='The study\'s fast paths besides --parallel-configs (default "--whole-step").')
    args = parser.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("benchmarks.device: no CUDA device here; use --toy --device cpu to exercise the script", file=sys.stderr)
        return 2
    os.environ.setdefault("PYTHONPATH", str(Path(__file__).resolve().parent.parent))
    start = time.perf_counter()
    done = steps(out, args.device, args.toy, None if args.study_flags is None else args.study_flags.split())
    for step in done:
        left = args.budget - (time.perf_counter() - start)
        if left < 5:
            break
        run(step, out, left * SHARES[step.name])
    print(summary(out, done, args.device, time.perf_counter() - start, args.toy), end="")
    return 0 if all(s.rc in (0, 5) for s in done) else 1  # 5: pytest collected nothing to run (no GPU tests here)


if __name__ == "__main__":
    sys.exit(main())

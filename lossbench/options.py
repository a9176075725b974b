"""Execution options: how and where a configuration runs (which seeds, on which device, how fast,
into which store and folders). None of them changes a result, so none enters the configuration
hash; what does is lossbench.config's `RunConfig`.

Locations left None mean "flag, else environment, else default" (lossbench.paths); `resolve_exec`
makes them concrete on the machine that trains.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lossbench import paths
from lossbench.errors import ConfigError

MAX_SEEDS = 1000  # seeds of one configuration: more is a typo, not a study


@dataclass(frozen=True)
class SpeedConfig:
    """Fast paths. None is part of the configuration hash; each is checked against the plain path in
    tests (same losses for the same seed within float tolerance) and measured in benchmarks/."""

    parallel_seeds: bool = False  # train the seeds of a configuration together (vmap over stacked models)
    precision: str = "fp32"  # fp32 | bf16 (autocast of model forwards; losses and penalties stay fp32)
    compile: bool = False  # torch.compile G (and D when no penalty needs double backward)
    fused_optim: bool = True  # torch's fused Adam: one kernel per update; measured faster (BENCHMARKS.md)
    cuda_graphs: bool = False  # CUDA graphs of the fixed-shape forwards and backwards (compile, reduce-overhead)
    # train (configuration, seed) members that share a shape together (lossbench.train.members); implies
    # parallel_seeds
    parallel_configs: bool = False
    group_size: int | None = None  # the most members in one group (memory); None: no bound
    # each generator step as one traced function: draws first, gradients by torch.func, Adam on flat
    # state (lossbench.train.whole_step); with --compile / --cuda-graphs one graph per step
    whole_step: bool = False

    def __post_init__(self) -> None:
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"'precision' must be fp32 or bf16, got {self.precision!r}")
        if self.group_size is not None and self.group_size < 1:
            raise ConfigError(f"--group-size must be >= 1 (members trained together), got {self.group_size}")
        if self.group_size is not None and not (self.parallel_seeds or self.parallel_configs):
            raise ConfigError("--group-size bounds the groups of --parallel-seeds or --parallel-configs: give one")
        if self.parallel_configs and not self.parallel_seeds:  # a group of configurations groups their seeds too
            object.__setattr__(self, "parallel_seeds", True)

    @property
    def compile_mode(self) -> str | None:
        """torch.compile's mode for the players, None for eager: CUDA graphs are compile's
        "reduce-overhead" mode (graph trees record each fixed-shape call once, then replay it)."""
        if self.cuda_graphs:
            return "reduce-overhead"
        return "default" if self.compile else None

    def check_device(self, device: torch.device) -> None:
        """Refuse, before any work, the fast paths this device cannot run."""
        if self.cuda_graphs and device.type != "cuda":
            raise ConfigError(f"--cuda-graphs needs a CUDA device; this run is on {device.type}")


@dataclass(frozen=True)
class ExecConfig:
    """How and where to run: changes no result, so it is not part of the configuration hash."""

    seeds: tuple[int, ...] = (0,)  # the seeds to run, in order (from a count: ExecConfig.counted)
    device: str = "auto"  # auto: cuda, then mps, then cpu
    data_dir: str | None = None
    tracking_uri: str | None = None
    experiment: str = "lossbench"
    checkpoint_dir: str | None = None
    cache_dir: str | None = None  # real-feature caches
    resume: bool = False  # continue interrupted seeds from their checkpoints
    skip_finished: bool = False  # skip seeds already finished in the store (sweeps)
    progress: bool = True
    speed: SpeedConfig = SpeedConfig()
    suite: str = ""  # the suite a sweep runs (its runs' tags and descriptions), "" for `lossbench run`
    stage: str = "run"  # search | seeds (a suite's stages) | run
    suite_description: str = ""
    system_metrics: bool = False  # MLflow's system metrics (CPU, memory, GPU) on each seed run

    @classmethod
    def counted(cls, count: int, start: int = 0, **options: Any) -> ExecConfig:
        """`count` seeds from `start` (start, start + 1, ..., start + count - 1): --seeds N --seed-start S."""
        if count < 1:
            raise ConfigError(f"'seeds' must be >= 1, got {count}")
        if count > MAX_SEEDS:
            raise ConfigError(f"'seeds' must be <= {MAX_SEEDS}, got {count}")
        if start < 0:
            raise ConfigError(f"'seed_start' must be >= 0, got {start}")
        return cls(seeds=tuple(range(start, start + count)), **options)

    @property
    def checkpoints(self) -> Path:
        return paths.checkpoint_root(self.checkpoint_dir)

    def __post_init__(self) -> None:
        if not isinstance(self.seeds, tuple) or not all(isinstance(s, int) for s in self.seeds):
            raise TypeError(f"ExecConfig.seeds is a tuple of seeds (a count: ExecConfig.counted), got {self.seeds!r}")
        if not 1 <= len(self.seeds) <= MAX_SEEDS:
            raise ConfigError(f"'seeds' must name 1 to {MAX_SEEDS} seeds, got {len(self.seeds)}")
        if min(self.seeds) < 0:
            raise ConfigError(f"seeds must be >= 0, got {min(self.seeds)}")


def resolve_device(name: str) -> torch.device:
    """auto: cuda, then mps, then cpu; an explicit device must exist."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}'; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' asked for, but torch sees no CUDA device")
    return device


def resolve_exec(ex: ExecConfig) -> ExecConfig:
    """The one place where flags, environment and defaults become concrete: absolute data root,
    checkpoint and cache folders, tracking URI, device. Run where the training happens (a Ray worker
    resolves its own environment). A checkpoint folder that cannot be written fails here, in one line."""
    resolved = dataclasses.replace(
        ex,
        device=str(resolve_device(ex.device)),
        data_dir=str(paths.data_root(ex.data_dir).resolve()),
        checkpoint_dir=str(paths.checkpoint_root(ex.checkpoint_dir).resolve()),
        cache_dir=str(paths.cache_root(ex.cache_dir).resolve()),
        tracking_uri=paths.tracking_uri(ex.tracking_uri),
    )
    _check_writable(Path(resolved.checkpoint_dir), "checkpoint folder")
    return resolved


def _check_writable(folder: Path, what: str) -> None:
    """The folder exists and is writable, or the nearest existing folder above it is (so it can be made)."""
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"{what} {folder} cannot be made: {probe} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ConfigError(f"{what} {folder} is not writable ({probe}: permission denied or read-only)")


def describe_exec(ex: ExecConfig) -> dict[str, Any]:
    """The resolved execution config as --dry-run prints it (credentials redacted)."""
    from lossbench.tracking import redact

    r = resolve_exec(ex)
    return {
        "device": r.device, "data_dir": r.data_dir, "checkpoint_dir": r.checkpoint_dir, "cache_dir": r.cache_dir,
        "tracking_uri": redact(r.tracking_uri or ""), "experiment": r.experiment, "seeds": list(r.seeds),
        "resume": r.resume, **dataclasses.asdict(r.speed),
    }  # fmt: skip

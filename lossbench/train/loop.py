"""The one training loop, for every loss and every penalty, for one seed or several at once.

Each generator step is one step of the configured update rule (lossbench.train.updates): by default
n_critic discriminator steps (L_D + weight * penalty, then optional weight clipping), then one
generator step on L_G (alternating); or both players' steps from gradients at the same point
(simultaneous). The loop never branches on which loss, penalty or update rule runs,
nor on whether the players are one seed's plain modules or several seeds' stacked, vmapped ones
(lossbench.train.players): every tensor carries a leading seed dimension S. It receives the loss and
penalty as objects inside the players and looks nothing up by name.

It takes the data as one tensor on the device and batches by index; each seed draws its batch
indices, noise and penalty noise from its own streams, so a seed trained in a group draws exactly
what it draws alone. Per-step loss values are summed on the device and read (one host sync) every
`log_every` steps. It knows nothing of MLflow or the CLI: it reports through the `Hooks` it is given.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from torch import Tensor, nn

from lossbench.config import RunConfig, TrainConfig
from lossbench.train.draws import Draws
from lossbench.train.state import D_KEYS, G_KEYS, LOSS_KEYS, TrainState
from lossbench.train.updates import UPDATES, StepFn
from lossbench.train.whole_step import WholeStep


def _noop(*args: object) -> None:
    return None


@dataclass
class Hooks:
    """Where the loop reports; k is the seed's index in the group. Each is called between steps."""

    log: Callable[[int, int, dict[str, float]], None] = _noop  # (k, step, means over the window)
    samples: Callable[[int, int, nn.Module], None] = _noop  # (k, step, G) every sample_every steps
    evaluate: Callable[[int, int, nn.Module], None] = _noop  # (k, step, G) every eval_every steps
    # (step, the live members' k) every eval_every steps: the group's members evaluated together;
    # when given, it is called instead of `evaluate`
    evaluate_group: Callable[[int, list[int]], None] | None = None
    checkpoint: Callable[[int, int, TrainState], None] = _noop  # (k, step, state) every checkpoint_every
    # (step) once after that step's checkpoint calls, one per live seed: where a group commits them as one
    checkpoint_commit: Callable[[int], None] = _noop
    progress: Callable[[int], None] = _noop  # (steps advanced since last call)
    should_stop: Callable[[], bool] = lambda: False  # a signal asked the loop to stop


@dataclass
class Outcome:
    """How the loop ended for one seed of the group: at which step, and why (every step done, a
    non-finite loss or weight, or a stop request). The seed's run is ended by it (exec.seed_run)."""

    status: str  # finished | diverged | interrupted
    step: int


def train(cfg: RunConfig, state: TrainState, data: Tensor, hooks: Hooks | None = None) -> list[Outcome]:
    """Run generator steps from state.step up to cfg.train.steps; `data` lives on the training device.
    One outcome per seed: a seed that diverges stops reporting, its siblings go on."""
    hooks, t, P = hooks or Hooks(), cfg.train, state.players
    draws = Draws.training(cfg, state, data)
    seeds = _Seeds(P.size)
    step = step_function(state, t)
    while state.step < t.steps and seeds.alive:
        if hooks.should_stop():
            return seeds.ended("interrupted", state.step)
        step(P, draws, state, t)
        if state.average is not None:
            state.average.update(P)
        _run_schedules(cfg, state, hooks, seeds)
    return seeds.ended("finished", state.step)


def step_function(state: TrainState, t: TrainConfig) -> StepFn:
    """The step the loop calls: the update rule's (lossbench.train.updates), or with --whole-step the
    same rule as one traced function, made once per state (its compiled graph is kept with it)."""
    if not state.speed.whole_step:
        return UPDATES.get(t.updates)
    if state.whole is None:
        state.whole = WholeStep(state.players, t.updates, state.speed.compile_mode)  # type: ignore[arg-type]
    return state.whole


@dataclass
class _Seeds:
    """Which seeds of the group still report, and how the others ended."""

    size: int
    outcomes: list[Outcome | None] = field(init=False)
    alive: list[int] = field(init=False)
    window_start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        self.outcomes, self.alive = [None] * self.size, list(range(self.size))

    def ended(self, status: str, step: int) -> list[Outcome]:
        return [o or Outcome(status, step) for o in self.outcomes]


def _due(step: int, every: int, last: int) -> bool:
    return step % every == 0 or step == last


def _run_schedules(cfg: RunConfig, state: TrainState, hooks: Hooks, seeds: _Seeds) -> None:
    """After a generator step: read the log window, then sample grids, evaluations, checkpoints."""
    t, step, P = cfg.train, state.step, state.players
    if _due(step, t.log_every, t.steps):
        _log_window(t, state, hooks, seeds)
    if _due(step, t.sample_every, t.steps):
        for k in seeds.alive:
            hooks.samples(k, step, P.generator(k))
    if cfg.metrics.eval_every and step % cfg.metrics.eval_every == 0 and step != t.steps:
        if hooks.evaluate_group is not None:
            hooks.evaluate_group(step, list(seeds.alive))
        else:
            for k in seeds.alive:
                hooks.evaluate(k, step, P.generator(k))
    if _due(step, t.checkpoint_every, t.steps):
        for k in seeds.alive:
            hooks.checkpoint(k, step, state)
        hooks.checkpoint_commit(step)


def _log_window(t: TrainConfig, state: TrainState, hooks: Hooks, seeds: _Seeds) -> None:
    """Per-seed means over the window, with throughput; a seed whose losses or weights are no longer
    finite ends as diverged and stops reporting."""
    advanced, step = state.window, state.step
    values = _read_window(state, t.n_critic)
    elapsed = max(time.perf_counter() - seeds.window_start, 1e-9)
    finite_params = state.players.finite()
    for k in seeds.alive:
        values[k] |= {"images_per_s": advanced * t.batch_size * t.n_critic / elapsed, "steps_per_s": advanced / elapsed}
        finite = all(math.isfinite(values[k][key]) for key in LOSS_KEYS)
        if finite and finite_params[k]:
            hooks.log(k, step, values[k])
        else:
            seeds.outcomes[k] = Outcome("diverged", step)
    seeds.alive = [k for k in seeds.alive if seeds.outcomes[k] is None]
    if seeds.alive:
        hooks.progress(advanced)
    seeds.window_start = time.perf_counter()


def _read_window(state: TrainState, n_critic: int) -> list[dict[str, float]]:
    """Per-seed means over the window (the one host sync), then reset the device accumulators."""
    d = (state.acc_d / (state.window * n_critic)).tolist()
    g = (state.acc_g / state.window).tolist()
    state.acc_d.zero_()
    state.acc_g.zero_()
    state.window = 0
    return [dict(zip(D_KEYS, dk)) | dict(zip(G_KEYS, gk)) for dk, gk in zip(d, g)]

"""The one training loop, for every loss and every penalty, for one seed or several at once.

Each generator step: n_critic discriminator steps (L_D + weight * penalty, then optional weight
clipping), then one generator step on L_G. The loop never branches on which loss or penalty runs,
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

import torch
from torch import Tensor, nn

from lossbench.config import RunConfig, TrainConfig
from lossbench.gan import latent
from lossbench.gan.penalties import Noises
from lossbench.train.players import Players, learning_signal, pack
from lossbench.train.state import D_KEYS, G_KEYS, LOSS_KEYS, TrainState


def _noop(*args: object) -> None:
    return None


@dataclass
class Hooks:
    """Where the loop reports; k is the seed's index in the group. Each is called between steps."""

    log: Callable[[int, int, dict[str, float]], None] = _noop  # (k, step, means over the window)
    samples: Callable[[int, int, nn.Module], None] = _noop  # (k, step, G) every sample_every steps
    evaluate: Callable[[int, int, nn.Module], None] = _noop  # (k, step, G) every eval_every steps
    checkpoint: Callable[[int, int, TrainState], None] = _noop  # (k, step, state) every checkpoint_every
    # (step) once after that step's checkpoint calls, one per live seed: where a group commits them as one
    checkpoint_commit: Callable[[int], None] = _noop
    progress: Callable[[int], None] = _noop  # (steps advanced since last call)
    should_stop: Callable[[], bool] = lambda: False  # a signal asked the loop to stop


@dataclass
class Outcome:
    status: str  # finished | diverged | interrupted
    step: int


def train(cfg: RunConfig, state: TrainState, data: Tensor, hooks: Hooks | None = None) -> list[Outcome]:
    """Run generator steps from state.step up to cfg.train.steps; `data` lives on the training device.
    One outcome per seed: a seed that diverges stops reporting, its siblings go on."""
    hooks, t, P = hooks or Hooks(), cfg.train, state.players
    draws = Draws(data, state.streams, t.batch_size * t.pack, cfg.model.z_dim, cfg.loss.instance_noise,
                  cfg.model.z_dist, t.g_noise == "d-step")  # fmt: skip
    seeds = _Seeds(P.size)
    while state.step < t.steps and seeds.alive:
        if hooks.should_stop():
            return seeds.ended("interrupted", state.step)
        for _ in range(t.n_critic):
            d_step(P, draws, state, t.weight_clip)
        g_step(P, draws, state)
        _run_schedules(cfg, state, hooks, seeds)
    return seeds.ended("finished", state.step)


def d_step(P: Players, draws: Draws, state: TrainState, weight_clip: float) -> None:
    """One discriminator step on L_D + weight * penalty, for every seed at once (D's inputs packed)."""
    real = pack(draws.with_instance_noise(draws.real()), P.pack, batch_dim=1)
    fake = pack(draws.with_instance_noise(P.fake(draws.noise())), P.pack, batch_dim=1)
    total, stats = P.d_objective(real, fake, draws.penalty_noise(P, real))
    P.opt_d.zero_grad(set_to_none=True)
    total.sum().backward()  # the sum over seeds: each seed's parameters get their own gradient
    grad_norm = P.grad_norms(P.d_parameters())  # before any clipping: what the loss asked of D
    P.opt_d.step()
    if weight_clip > 0:  # WGAN: D's weights into [-c, c]
        with torch.no_grad():
            for p in P.d_parameters():
                p.clamp_(-weight_clip, weight_clip)
    state.acc_d += torch.cat([stats, grad_norm[:, None]], dim=1)


def g_step(P: Players, draws: Draws, state: TrainState) -> None:
    """One generator step on L_G(D(G(z))) (with D(x) on a real batch for relativistic losses), and
    its learning signal: what the loss passes to each fake's logit, and ||grad_G L_G||."""
    z = draws.g_noise()
    real = pack(draws.with_instance_noise(draws.real()), P.pack, batch_dim=1) if P.needs_real else None
    g_loss, d_fake = P.g_objective(z, real, draws.instance_noise(z))
    d_fake.retain_grad()  # dL_G/dd_f comes out of this backward pass, at no extra cost
    P.opt_g.zero_grad(set_to_none=True)
    g_loss.sum().backward()
    signal = learning_signal(d_fake.grad).reshape(P.size)
    grad_norm = P.grad_norms(P.g_parameters())
    P.opt_g.step()
    state.acc_g += torch.stack([g_loss.detach(), signal, grad_norm], dim=1)
    state.step += 1
    state.window += 1


@dataclass
class Draws:
    """Each seed's random inputs, from its own streams: batch indices, latent noise, penalty noise.
    batch_size counts samples (with packing, D's batch times the pack)."""

    data: Tensor
    streams: list[dict[str, torch.Generator]]
    batch_size: int
    z_dim: int
    sigma: float = 0.0  # instance noise on D's inputs; 0 draws nothing
    z_dist: str = "normal"  # lossbench.gan.latent
    reuse_d_noise: bool = False  # G's step takes the z of the D step before it (g_noise "d-step")
    last: Tensor | None = None  # the latest z drawn

    def real(self) -> Tensor:  # (S, B, ...): index_select is one contiguous gather, 3x faster than data[idx] on CPU
        n, bs = self.data.shape[0], self.batch_size
        idx = torch.cat([torch.randint(n, (bs,), generator=s["data"], device=self.data.device) for s in self.streams])
        return self.data.index_select(0, idx).view(len(self.streams), bs, *self.data.shape[1:])

    def noise(self) -> Tensor:  # (S, B, z_dim)
        self.last = torch.stack([latent.sample(self.z_dist, (self.batch_size, self.z_dim), s["noise"], self.data.device)
                                 for s in self.streams])  # fmt: skip
        return self.last

    def g_noise(self) -> Tensor:
        """G's z: a fresh draw, or with reuse_d_noise the z of the D step just before (compare_gan's
        run_single_train_step feeds G the batch_z of that D step), drawing nothing."""
        return self.last if self.reuse_d_noise and self.last is not None else self.noise()

    def instance_noise(self, like: Tensor) -> Tensor | None:
        """sigma * N(0, 1) noise shaped like a batch of samples (S, B, *sample), or None when off."""
        if self.sigma == 0:
            return None
        shape = (self.batch_size, *self.data.shape[1:])
        return self.sigma * torch.stack([torch.randn(shape, generator=s["instance"], device=self.data.device)
                                         for s in self.streams])  # fmt: skip

    def with_instance_noise(self, x: Tensor) -> Tensor:
        e = self.instance_noise(x)
        return x if e is None else x + e

    def penalty_noise(self, P: Players, real: Tensor) -> Noises:
        """Each seed's penalty noise for its (packed) real batch, stacked over seeds per tensor."""
        u = [P.penalty.draw(real[k], s["penalty"]) for k, s in enumerate(self.streams)]
        return None if u[0] is None else tuple(torch.stack(parts) for parts in zip(*u))


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

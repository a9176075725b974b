"""The one training loop, for every loss and every penalty, for one seed or several at once.

Each generator step: n_critic discriminator steps (L_D + weight * penalty, then optional weight
clipping), then one generator step on L_G. The loop never branches on which loss or penalty runs,
nor on whether the players are one seed's plain modules or several seeds' stacked, vmapped ones
(lossbench.players): every tensor carries a leading seed dimension S.
It takes the data as one tensor on the device and batches by index; each seed draws its batch
indices, noise and penalty noise from its own streams, so a seed trained in a group draws exactly
what it draws alone. Per-step loss values are summed on the device and read (one host sync) every
`log_every` steps. It knows nothing of MLflow or the CLI: it reports through the `Hooks` it is given.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lossbench import losses, models, optim, penalties, rng
from lossbench.config import RunConfig, SpeedConfig
from lossbench.errors import CheckpointError
from lossbench.players import D_STATS, Players, Precision, Single, Stacked

D_KEYS = D_STATS
G_KEYS = ("g_loss",)


@dataclass
class TrainState:
    """Everything checkpoints must hold to continue bit-identically, for S seeds trained together."""

    players: Players
    seeds: list[int]
    streams: list[dict[str, torch.Generator]]  # per seed
    acc_d: Tensor  # (S, len(D_KEYS)) running sums over the current log window, on the device
    acc_g: Tensor  # (S, len(G_KEYS))
    step: int = 0  # completed generator steps
    window: int = 0  # steps summed in the accumulators since they were last read

    # one-seed conveniences (tests, benchmarks, the plain path)
    @property
    def G(self) -> nn.Module:
        return self.players.generator(0)

    @property
    def D(self) -> nn.Module:
        return self.players.discriminator(0)

    def state_dict(self, k: int = 0) -> dict[str, Any]:
        """Seed k's checkpoint; the same format whether it trained alone or in a group."""
        return self.players.state_dict(k) | {
            "step": self.step,
            "window": self.window,
            "streams": {name: g.get_state() for name, g in self.streams[k].items()},
            "acc_d": self.acc_d[k].cpu(),
            "acc_g": self.acc_g[k].cpu(),
            "global_rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any], k: int = 0) -> None:
        step, window = int(state["step"]), int(state["window"])
        if k > 0 and (step, window) != (self.step, self.window):
            raise CheckpointError(f"seeds trained together must resume from the same step ({step} != {self.step})")
        self.step, self.window = step, window
        self.players.load_state_dict(k, state)
        for name, g in self.streams[k].items():
            g.set_state(state["streams"][name])
        self.acc_d[k].copy_(state["acc_d"])
        self.acc_g[k].copy_(state["acc_g"].reshape(self.acc_g[k].shape))
        glob = state["global_rng"]
        torch.set_rng_state(glob["torch"])
        if glob["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(glob["cuda"])
        np.random.set_state(glob["numpy"])
        random.setstate(glob["python"])


def setup(
    cfg: RunConfig, seeds: int | list[int], sample_shape: tuple[int, ...], device: torch.device,
    speed: SpeedConfig | None = None,
) -> TrainState:  # fmt: skip
    """G, D (initialised from each seed's "init" stream), optimisers and streams for the seeds:
    plain modules for one seed, stacked and vmapped ones when speed.parallel_seeds groups several."""
    speed = speed or SpeedConfig()
    speed.check_device(device)
    seed_list = [seeds] if isinstance(seeds, int) else list(seeds)
    pairs = []
    for seed in seed_list:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive(seed, "init"))
            G, D = models.build(cfg.model.arch, sample_shape, cfg.model.z_dim, cfg.model.d_norm)
        pairs.append((G.to(device), D.to(device)))
    t = cfg.train
    factory = optim.OPTIMIZERS.get(t.optimizer)
    fused = speed.fused_optim

    def make_opt_g(params: list[Tensor]) -> torch.optim.Optimizer:
        return factory(params, t.lr_g, (t.beta1, t.beta2), fused)

    def make_opt_d(params: list[Tensor]) -> torch.optim.Optimizer:
        return factory(params, t.lr_d, (t.beta1, t.beta2), fused)

    common = dict(
        make_opt_g=make_opt_g, make_opt_d=make_opt_d, loss=losses.get(cfg.loss.loss),
        penalty=penalties.get(cfg.loss.penalty), weight=cfg.loss.penalty_weight,
        precision=Precision(speed.precision, device), compile_mode=speed.compile_mode,
    )  # fmt: skip
    players: Players
    if len(pairs) == 1:
        players = Single(pairs[0][0], pairs[0][1], **common)
    elif speed.parallel_seeds:
        players = Stacked([g for g, _ in pairs], [d for _, d in pairs], **common)
    else:
        raise ValueError("several seeds in one state need speed.parallel_seeds")
    S = len(seed_list)
    return TrainState(
        players=players,
        seeds=seed_list,
        streams=[{name: rng.generator(seed, name, device) for name in rng.STREAMS} for seed in seed_list],
        acc_d=torch.zeros(S, len(D_KEYS), device=device),
        acc_g=torch.zeros(S, len(G_KEYS), device=device),
    )


def _noop(*args: Any) -> None:
    return None


@dataclass
class Hooks:
    """Where the loop reports; k is the seed's index in the group. Each is called between steps."""

    log: Callable[[int, int, dict[str, float]], None] = _noop  # (k, step, means over the window)
    samples: Callable[[int, int, nn.Module], None] = _noop  # (k, step, G) every sample_every steps
    evaluate: Callable[[int, int, nn.Module], None] = _noop  # (k, step, G) every eval_every steps
    checkpoint: Callable[[int, int, TrainState], None] = _noop  # (k, step, state) every checkpoint_every
    progress: Callable[[int], None] = _noop  # (steps advanced since last call)
    should_stop: Callable[[], bool] = lambda: False  # a signal asked the loop to stop


@dataclass
class Outcome:
    status: str  # finished | diverged | interrupted
    step: int
    last_values: dict[str, float] = field(default_factory=dict)


def train(cfg: RunConfig, state: TrainState, data: Tensor, hooks: Hooks | None = None) -> list[Outcome]:
    """Run generator steps from state.step up to cfg.train.steps; `data` lives on the training device.
    One outcome per seed: a seed that diverges stops reporting, its siblings go on."""
    hooks = hooks or Hooks()
    t = cfg.train
    needs_real = losses.needs_real(losses.get(cfg.loss.loss))
    penalty = penalties.get(cfg.loss.penalty)
    P = state.players
    device = data.device
    n, bs, z_dim = data.shape[0], t.batch_size, cfg.model.z_dim
    streams = state.streams

    def batch() -> Tensor:  # (S, B, ...): index_select is one contiguous gather, 3x faster than data[idx] on CPU
        idx = torch.cat([torch.randint(n, (bs,), generator=s["data"], device=device) for s in streams])
        return data.index_select(0, idx).view(len(streams), bs, *data.shape[1:])

    def noise() -> Tensor:
        return torch.stack([torch.randn(bs, z_dim, generator=s["noise"], device=device) for s in streams])

    def penalty_noise(real: Tensor) -> Tensor | None:
        draws = [penalty.draw(real[k], s["penalty"]) for k, s in enumerate(streams)]
        return None if draws[0] is None else torch.stack(draws)

    outcomes: list[Outcome | None] = [None] * P.size
    alive = list(range(P.size))  # seeds still reporting; shrinks only at a log read
    values: list[dict[str, float]] = [{} for _ in range(P.size)]
    window_start = time.perf_counter()
    while state.step < t.steps:
        if hooks.should_stop():
            return [o or Outcome("interrupted", state.step, values[k]) for k, o in enumerate(outcomes)]
        # --- discriminator: n_critic steps -------------------------------------------------
        for _ in range(t.n_critic):
            real = batch()
            fake = P.fake(noise())
            total, stats = P.d_objective(real, fake, penalty_noise(real))
            P.opt_d.zero_grad(set_to_none=True)
            total.sum().backward()
            P.opt_d.step()
            if t.weight_clip > 0:
                with torch.no_grad():
                    for p in P.d_parameters():
                        p.clamp_(-t.weight_clip, t.weight_clip)
            state.acc_d += stats
        # --- generator: one step --------------------------------------------------------------
        g_loss = P.g_objective(noise(), batch() if needs_real else None)
        P.opt_g.zero_grad(set_to_none=True)
        g_loss.sum().backward()
        P.opt_g.step()
        state.acc_g += g_loss.detach()[:, None]
        state.step += 1
        state.window += 1
        step = state.step

        if step % t.log_every == 0 or step == t.steps:
            advanced = state.window
            values = _read_window(state, t.n_critic)
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            finite_params = P.finite()
            for k in alive:
                values[k]["images_per_s"] = advanced * bs * t.n_critic / elapsed
                values[k]["steps_per_s"] = advanced / elapsed
                finite = all(np.isfinite(v) for key, v in values[k].items() if key in D_KEYS + G_KEYS)
                if not finite or not finite_params[k]:
                    outcomes[k] = Outcome("diverged", step, values[k])
                else:
                    hooks.log(k, step, values[k])
            alive = [k for k in alive if outcomes[k] is None]
            if not alive:
                return [o for o in outcomes if o is not None]
            hooks.progress(advanced)
            window_start = time.perf_counter()
        if step % t.sample_every == 0 or step == t.steps:
            for k in alive:
                hooks.samples(k, step, P.generator(k))
        if cfg.metrics.eval_every and step % cfg.metrics.eval_every == 0 and step != t.steps:
            for k in alive:
                hooks.evaluate(k, step, P.generator(k))
        if step % t.checkpoint_every == 0 or step == t.steps:
            for k in alive:
                hooks.checkpoint(k, step, state)
    return [o or Outcome("finished", state.step, values[k]) for k, o in enumerate(outcomes)]


def _read_window(state: TrainState, n_critic: int) -> list[dict[str, float]]:
    """Per-seed means over the window (the one host sync), then reset the device accumulators."""
    d = (state.acc_d / (state.window * n_critic)).tolist()
    g = (state.acc_g / state.window).tolist()
    state.acc_d.zero_()
    state.acc_g.zero_()
    state.window = 0
    return [dict(zip(D_KEYS, dk)) | dict(zip(G_KEYS, gk)) for dk, gk in zip(d, g)]


@torch.no_grad()
def generate(G: nn.Module, n: int, z_dim: int, generator: torch.Generator, batch_size: int = 500) -> Tensor:
    """n samples from G in eval mode (batch-norm running statistics), without touching its state."""
    was_training = G.training
    G.eval()
    device = next(G.parameters()).device
    out = [
        G(torch.randn(min(batch_size, n - i), z_dim, generator=generator, device=device))
        for i in range(0, n, batch_size)
    ]
    G.train(was_training)
    return torch.cat(out)

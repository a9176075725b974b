"""The one training loop, for every loss and every penalty.

Each generator step: n_critic discriminator steps (L_D + weight * penalty, then optional weight
clipping), then one generator step on L_G. The loop never branches on which loss or penalty runs.
It takes the data as one tensor on the device and batches by index; noise is drawn on the device;
the per-step loss values are summed on the device and read (one host sync) every `log_every` steps.
It knows nothing of MLflow or the CLI: it reports through the `Hooks` it is given.
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
from lossbench.config import RunConfig

D_KEYS = ("d_loss", "d_real", "d_fake", "penalty")
G_KEYS = ("g_loss",)


@dataclass
class TrainState:
    """Everything a checkpoint must hold to continue bit-identically."""

    G: nn.Module
    D: nn.Module
    opt_g: torch.optim.Optimizer
    opt_d: torch.optim.Optimizer
    streams: dict[str, torch.Generator]
    acc_d: Tensor  # running sums over the current log window, on the device
    acc_g: Tensor
    step: int = 0  # completed generator steps
    window: int = 0  # steps summed in the accumulators since they were last read

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "window": self.window,
            "G": self.G.state_dict(),
            "D": self.D.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "streams": {name: g.get_state() for name, g in self.streams.items()},
            "acc_d": self.acc_d.cpu(),
            "acc_g": self.acc_g.cpu(),
            "global_rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step = int(state["step"])
        self.window = int(state["window"])
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for name, g in self.streams.items():
            g.set_state(state["streams"][name])
        self.acc_d.copy_(state["acc_d"])
        self.acc_g.copy_(state["acc_g"])
        glob = state["global_rng"]
        torch.set_rng_state(glob["torch"])
        if glob["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(glob["cuda"])
        np.random.set_state(glob["numpy"])
        random.setstate(glob["python"])


def setup(cfg: RunConfig, seed: int, sample_shape: tuple[int, ...], device: torch.device) -> TrainState:
    """Build G, D (initialised from the seed's "init" stream), their optimisers and the streams."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(rng.derive(seed, "init"))
        G, D = models.build(cfg.model.arch, sample_shape, cfg.model.z_dim, cfg.model.d_norm)
    G, D = G.to(device), D.to(device)
    t = cfg.train
    make_opt = optim.OPTIMIZERS.get(t.optimizer)
    return TrainState(
        G=G,
        D=D,
        opt_g=make_opt(G.parameters(), t.lr_g, (t.beta1, t.beta2)),
        opt_d=make_opt(D.parameters(), t.lr_d, (t.beta1, t.beta2)),
        streams={name: rng.generator(seed, name, device) for name in rng.STREAMS},
        acc_d=torch.zeros(len(D_KEYS), device=device),
        acc_g=torch.zeros(len(G_KEYS), device=device),
    )


def _noop(*args: Any) -> None:
    return None


@dataclass
class Hooks:
    """Where the loop reports. Each is called between steps, never inside one."""

    log: Callable[[int, dict[str, float]], None] = _noop  # (step, means over the window)
    samples: Callable[[int, nn.Module], None] = _noop  # (step, G) every sample_every steps
    evaluate: Callable[[int, nn.Module], None] = _noop  # (step, G) every eval_every steps
    checkpoint: Callable[[int, TrainState], None] = _noop  # every checkpoint_every steps
    progress: Callable[[int], None] = _noop  # (steps advanced since last call)
    should_stop: Callable[[], bool] = lambda: False  # a signal asked the loop to stop


@dataclass
class Outcome:
    status: str  # finished | diverged | interrupted
    step: int
    last_values: dict[str, float] = field(default_factory=dict)


def _finite_params(*modules: nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for m in modules for p in m.parameters()]).all())


def train(cfg: RunConfig, state: TrainState, data: Tensor, hooks: Hooks | None = None) -> Outcome:
    """Run generator steps from state.step up to cfg.train.steps; `data` lives on the training device."""
    hooks = hooks or Hooks()
    t = cfg.train
    loss = losses.get(cfg.loss.loss)
    penalty = penalties.get(cfg.loss.penalty)
    needs_real = bool(getattr(loss, "needs_real_in_generator", False))
    G, D, opt_g, opt_d = state.G, state.D, state.opt_g, state.opt_d
    device = data.device
    g_data, g_noise, g_pen = state.streams["data"], state.streams["noise"], state.streams["penalty"]
    n, bs, z_dim = data.shape[0], t.batch_size, cfg.model.z_dim

    def batch() -> Tensor:
        return data[torch.randint(n, (bs,), generator=g_data, device=device)]

    def noise() -> Tensor:
        return torch.randn(bs, z_dim, generator=g_noise, device=device)

    window_start, values = time.perf_counter(), {}
    while state.step < t.steps:
        if hooks.should_stop():
            return Outcome("interrupted", state.step, values)
        # --- discriminator: n_critic steps -------------------------------------------------
        D.requires_grad_(True)
        for _ in range(t.n_critic):
            real = batch()
            with torch.no_grad():
                fake = G(noise())
            d_real, d_fake = D(real), D(fake)
            d_loss = loss.discriminator_loss(d_real, d_fake)
            pen = penalty(D, real, fake, g_pen)
            opt_d.zero_grad(set_to_none=True)
            (d_loss + cfg.loss.penalty_weight * pen).backward()
            opt_d.step()
            if t.weight_clip > 0:
                with torch.no_grad():
                    for p in D.parameters():
                        p.clamp_(-t.weight_clip, t.weight_clip)
            state.acc_d += torch.stack([d_loss.detach(), d_real.detach().mean(), d_fake.detach().mean(), pen.detach()])
        # --- generator: one step --------------------------------------------------------------
        D.requires_grad_(False)
        d_real_g = None
        if needs_real:
            with torch.no_grad():
                d_real_g = D(batch())
        g_loss = loss.generator_loss(D(G(noise())), d_real_g)
        opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        opt_g.step()
        state.acc_g += g_loss.detach()
        state.step += 1
        state.window += 1
        step = state.step

        if step % t.log_every == 0 or step == t.steps:
            advanced = state.window
            values = _read_window(state, t.n_critic)
            elapsed = max(time.perf_counter() - window_start, 1e-9)
            values["images_per_s"] = advanced * bs * t.n_critic / elapsed
            values["steps_per_s"] = advanced / elapsed
            finite = all(np.isfinite(v) for k, v in values.items() if k in D_KEYS + G_KEYS)
            if not finite or not _finite_params(G, D):
                return Outcome("diverged", step, values)
            hooks.log(step, values)
            hooks.progress(advanced)
            window_start = time.perf_counter()
        if step % t.sample_every == 0 or step == t.steps:
            hooks.samples(step, G)
        if cfg.metrics.eval_every and step % cfg.metrics.eval_every == 0 and step != t.steps:
            hooks.evaluate(step, G)
        if step % t.checkpoint_every == 0 or step == t.steps:
            hooks.checkpoint(step, state)
    return Outcome("finished", state.step, values)


def _read_window(state: TrainState, n_critic: int) -> dict[str, float]:
    """Means over the window (the one host sync), then reset the device accumulators."""
    d = (state.acc_d / (state.window * n_critic)).tolist()
    g = (state.acc_g / state.window).tolist()
    state.acc_d.zero_()
    state.acc_g.zero_()
    state.window = 0
    return dict(zip(D_KEYS, d)) | dict(zip(G_KEYS, g))


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

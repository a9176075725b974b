"""What the loop trains and what a checkpoint holds: TrainState (players, per-seed random streams,
on-device loss accumulators, the step), and `setup`, which builds it from a configuration.

setup is the one place that turns the configuration's names into objects (architecture, optimiser,
loss, penalty); the loop receives them inside the players and never looks a name up.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from lossbench import rng
from lossbench.config import RunConfig, build_models
from lossbench.errors import CheckpointError
from lossbench.gan import batches, losses, models, optim, penalties
from lossbench.gan.member_adam import MemberAdam
from lossbench.options import SpeedConfig
from lossbench.train import counterfactual, members
from lossbench.train.ema import GeneratorAverage
from lossbench.train.players import D_STATS, OptFactory, Players, Single, Stacked
from lossbench.train.speed import Precision

D_KEYS = (*D_STATS, "d_grad_norm")  # the D-step accumulator's columns: means over a log window
# the G-step accumulator's columns; new ones go last, so an older checkpoint's fill a prefix
G_KEYS = ("g_loss", "g_signal", "g_grad_norm", *counterfactual.KEYS)
LOSS_KEYS = (*D_STATS, "g_loss")  # a non-finite one of these means the seed diverged


@dataclass
class TrainState:
    """Everything checkpoints must hold to continue bit-identically, for S seeds trained together.
    Nothing in training draws from the global random generators, so they are not part of it."""

    players: Players
    seeds: list[int]
    streams: list[dict[str, torch.Generator]]  # per seed
    samplers: list[batches.Sampler]  # per seed: how its real batches are drawn (its epoch, if any)
    acc_d: Tensor  # (S, len(D_KEYS)) running sums over the current log window, on the device
    acc_g: Tensor  # (S, len(G_KEYS))
    step: int = 0  # completed generator steps
    window: int = 0  # steps summed in the accumulators since they were last read
    average: GeneratorAverage | None = None  # --ema: the average of G's weights, per seed
    speed: SpeedConfig = SpeedConfig()  # the fast paths it was built for
    whole: Any = None  # --whole-step: its lossbench.train.whole_step.WholeStep, made by the loop (loop.step_function)

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
            "batches": self.samplers[k].state_dict(),
            "acc_d": self.acc_d[k].cpu(),
            "acc_g": self.acc_g[k].cpu(),
        } | ({"G_ema": self.average.state_dict(k)} if self.average is not None else {})

    def load_state_dict(self, state: dict[str, Any], k: int = 0) -> None:
        step, window = int(state["step"]), int(state["window"])
        if k > 0 and (step, window) != (self.step, self.window):
            raise CheckpointError(f"seeds trained together must resume from the same step ({step} != {self.step})")
        self.step, self.window = step, window
        self.players.load_state_dict(k, state)
        if self.average is not None:
            self.average.load_state_dict(state["G_ema"], k)
        for name, g in self.streams[k].items():
            if name in state["streams"]:  # a stream added since the checkpoint was written keeps its start
                g.set_state(state["streams"][name])
        self.samplers[k].load_state_dict(state.get("batches", {}))  # checkpoints before batching hold none
        for acc, saved in ((self.acc_d[k], state["acc_d"]), (self.acc_g[k], state["acc_g"])):
            saved = saved.reshape(-1)  # older checkpoints hold fewer columns: the rest start the window at 0
            acc.zero_()
            acc[: saved.numel()].copy_(saved)


def training_data(cfg: RunConfig, x: Tensor, device: torch.device) -> Tensor:
    """The training set as the trainer reads it: on the device, in the range of the architecture's
    G output (data sets are stored in [-1, 1]; infogan's sigmoid G and its D work in [0, 1])."""
    return models.rescale(x.to(device), models.STANDARD_RANGE, models.data_range(cfg.model.arch))


def setup(
    cfg: RunConfig, seeds: int | list[int], sample_shape: tuple[int, ...], device: torch.device,
    speed: SpeedConfig | None = None, configs: Sequence[RunConfig] | None = None,
) -> TrainState:  # fmt: skip
    """G, D (initialised from each seed's "init" stream), optimisers and streams for the seeds:
    plain modules for one seed, stacked and vmapped ones when speed.parallel_seeds groups several.
    `configs` (one per seed; default cfg for each) makes a group of configurations: members that
    share cfg's shape (lossbench.train.members) and differ in their learning rates, betas, penalty
    weight, weight clip or instance-noise sigma, each trained as its own configuration."""
    speed = speed or SpeedConfig()
    speed.check_device(device)
    if speed.whole_step:
        members.check_whole_step(cfg)
    seed_list = [seeds] if isinstance(seeds, int) else list(seeds)
    if len(seed_list) > 1 and not speed.parallel_seeds:
        raise ValueError("several seeds in one state need speed.parallel_seeds")
    cfgs = list(configs) if configs is not None else [cfg] * len(seed_list)
    if len(cfgs) != len(seed_list) or members.shape_key(cfgs[0]) != members.shape_key(cfg):
        raise ValueError("one configuration per seed, each of cfg's shape")
    pairs = []
    for seed, member_cfg in zip(seed_list, cfgs):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(rng.derive(seed, "init"))
            G, D = build_models(member_cfg, sample_shape)
        pairs.append((G.to(device), D.to(device)))
    t = cfg.train
    players: Players
    common = dict(
        loss=losses.get(cfg.loss.loss), penalty=penalties.get(cfg.loss.penalty),
        precision=Precision(speed.precision, device), pack=cfg.train.pack,
        compile_mode=None if speed.whole_step else speed.compile_mode,  # the whole step is compiled instead
    )  # fmt: skip
    if len(pairs) == 1 and not speed.whole_step:  # --whole-step: one seed is a group of one
        make_opt_g, make_opt_d = _optimizers(cfgs[0], speed)
        one = cfgs[0]
        players = Single(pairs[0][0], pairs[0][1], make_opt_g, make_opt_d, weight=one.loss.penalty_weight,
                         instance_noise=one.loss.instance_noise, clip=one.train.weight_clip, **common)  # fmt: skip
    else:
        hyper = members.Hyper.of(cfgs, device, torch.get_default_dtype())
        make_opt_g, make_opt_d = _optimizers(cfg, speed, hyper, member_adam=speed.whole_step)
        players = Stacked([g for g, _ in pairs], [d for _, d in pairs], make_opt_g, make_opt_d,
                          weight=hyper.penalty_weight, clip=hyper.weight_clip if t.weight_clip > 0 else 0.0,
                          instance_noise=hyper.instance_noise if cfg.loss.instance_noise > 0 else 0.0,
                          **common)  # fmt: skip
    S = len(seed_list)
    average = GeneratorAverage(players, t.ema) if t.ema > 0 else None
    return TrainState(
        players=players,
        seeds=seed_list,
        streams=[{name: rng.generator(seed, name, device) for name in rng.STREAMS} for seed in seed_list],
        samplers=[batches.sampler(t.batching, seed, t.batch_size, t.pack, device) for seed in seed_list],
        acc_d=torch.zeros(S, len(D_KEYS), device=device),
        acc_g=torch.zeros(S, len(G_KEYS), device=device),
        average=average,
        speed=speed,
    )


def _optimizers(
    cfg: RunConfig, speed: SpeedConfig, hyper: members.Hyper | None = None, member_adam: bool = False
) -> tuple[OptFactory, OptFactory]:
    """The players' optimiser factories: cfg's optimiser with its learning rates and betas, or, for a
    group whose members differ in them (or `member_adam`: the whole step's flat state), Adam with each
    member's own (lossbench.gan.member_adam)."""
    t = cfg.train
    per_member = t.optimizer in members.MEMBER_OPTIMIZERS
    varying = ("lr_g", "lr_d", "beta1", "beta2") if per_member else ("lr_g", "lr_d")  # SGD, RMSprop: no betas
    if hyper is not None and (member_adam or not all(hyper.uniform(name) for name in varying)):
        if not per_member:  # shape_key keeps such members apart
            raise ValueError(f"optimizer {t.optimizer} takes one learning rate for a group")
        betas = (hyper.beta1, hyper.beta2)
        g, d, fused = hyper.lr_g, hyper.lr_d, speed.fused_optim
        return (lambda params: MemberAdam(params, g, betas, fused=fused)), (
            lambda params: MemberAdam(params, d, betas, fused=fused))
    factory = optim.OPTIMIZERS.get(t.optimizer)

    def make_opt_g(params: list[Tensor]) -> torch.optim.Optimizer:
        return factory(params, t.lr_g, (t.beta1, t.beta2), speed.fused_optim)

    def make_opt_d(params: list[Tensor]) -> torch.optim.Optimizer:
        return factory(params, t.lr_d, (t.beta1, t.beta2), speed.fused_optim)

    return make_opt_g, make_opt_d

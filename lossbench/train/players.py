"""The two players (G, D and their optimisers) of one seed or of several seeds trained together.

The trainer drives both kinds through one interface, with a leading seed dimension S on every
tensor: real batches (S, B, ...), noise (S, B, z_dim), per-seed scalars (S,).

`Single` holds one seed's G and D as plain modules: the reference path.
`Stacked` holds S seeds' parameters stacked along a new first dimension
(torch.func.stack_module_state); every forward is one torch.func.vmap over functional_call of a
template module, so S small models become one set of batched kernels (--parallel-seeds). The seeds
never mix: vmap maps each slice on its own, the backward runs on the sum of the per-seed objectives
(whose gradient in one seed's parameters is that seed's own gradient), and Adam and RMSprop are
elementwise, so one optimiser over stacked tensors is S independent optimisers.

Both compute each seed's objectives with the same pure functions, `d_objective` and `g_objective`
(alternating updates) or `joint_objective` (simultaneous updates: lossbench.train.updates).

`Stacked` carries the modules' buffers (batch norm's running statistics) as explicit state: each
vmapped function takes them as inputs, lets the forwards update copies (`running`) and returns the
copies, which are written back after the call (`write_back`). No traced function mutates its inputs,
so a compiled one is captured whole by CUDA graphs (torch skips graphs with mutated inputs).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from lossbench.errors import ConfigError
from lossbench.gan.losses import Loss, needs_real
from lossbench.gan.member_adam import MemberAdam
from lossbench.gan.models import has_batch_statistics
from lossbench.gan.penalties import Critic, Noises, Penalty
from lossbench.train.speed import Compiler, Precision

# spectral norm's power iteration updates D's buffers in place inside the forward, which vmap cannot batch
UNSTACKABLE = ("--parallel-seeds, --parallel-configs and --whole-step do not support d_norm=spectral (its power "
               "iteration cannot be vmapped); run the seeds one after another")  # fmt: skip
D_STATS = ("d_loss", "d_real", "d_fake", "penalty")  # what d_objective reports, in this order
COMPILED = ("batched_fake", "batched_d_objective", "batched_g_logits", "batched_joint")  # what Stacked's Compiler wraps
OptFactory = Callable[[list[Tensor]], torch.optim.Optimizer]


def pack(x: Tensor, m: int, batch_dim: int = 0) -> Tensor:
    """PacGAN's packing (Lin et al. 2018): groups of m consecutive samples along `batch_dim` become
    one input of D, concatenated along the first sample axis: (..., m * B, C, ...) -> (..., B, m * C, ...)."""
    if m == 1:
        return x
    s = x.shape
    return x.reshape(*s[:batch_dim], s[batch_dim] // m, m * s[batch_dim + 1], *s[batch_dim + 2 :])


def d_scores(critic: Critic, real: Tensor, fake: Tensor, joint: bool = True) -> tuple[Tensor, Tensor]:
    """D's logits (d_r, d_f) on a real and a fake batch. With `joint`, real and fake go through D as
    one batch (one set of larger kernels instead of two): a critic without batch statistics scores
    each sample on its own, so the scores are those of two calls; with spectral norm, one power
    iteration serves both. A D with batch norm is called on real and fake separately (joint False),
    as compare_gan does."""
    if joint:
        d_real, d_fake = critic(torch.cat([real, fake])).split([real.shape[0], fake.shape[0]])
        return d_real, d_fake
    return critic(real), critic(fake)


def d_total(
    critic: Critic, loss: Loss, penalty: Penalty, weight: float | Tensor, real: Tensor, fake: Tensor, u: Noises,
    d_real: Tensor, d_fake: Tensor,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """L_D(d_r, d_f) + weight * penalty(D, real, fake, u), and its statistics (D_STATS)."""
    d_loss = loss.discriminator_loss(d_real, d_fake)
    pen = penalty.fn(critic, real, fake, u)
    stats = torch.stack([d_loss, d_real.mean(), d_fake.mean(), pen]).detach()
    return d_loss + weight * pen, stats


def d_objective(
    critic: Critic, loss: Loss, penalty: Penalty, weight: float | Tensor, real: Tensor, fake: Tensor, u: Noises,
    joint: bool = True,
) -> tuple[Tensor, Tensor]:  # fmt: skip
    """One seed's discriminator objective L_D + weight * penalty on `d_scores`, and its statistics."""
    d_real, d_fake = d_scores(critic, real, fake, joint)
    return d_total(critic, loss, penalty, weight, real, fake, u, d_real, d_fake)


def joint_objective(
    critic: Critic, generator: Critic, loss: Loss, penalty: Penalty, weight: float | Tensor, real: Tensor, z: Tensor,
    e: Tensor | None, u: Noises, m: int = 1, joint: bool = True,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # fmt: skip
    """Both players' objectives at the same parameters on the same fakes (simultaneous updates):
    one G forward x = G(z), fakes f = pack(x + e, m), one scoring (d_r, d_f) = D(real), D(f), then

        L_D + weight * penalty(D, real, f)   (the penalty sees f detached: it is D's term)
        L_G(d_f, d_r)                        (computed by the caller from the returned logits)

    Returns D's total, its statistics, d_r and d_f; d_f is in the graph of G's parameters, so each
    player's gradient is taken of its own objective with respect to its own parameters."""
    x = generator(z)
    fake = pack(x if e is None else x + e, m)
    d_real, d_fake = d_scores(critic, real, fake, joint)
    total, stats = d_total(critic, loss, penalty, weight, real, fake.detach(), u, d_real, d_fake)
    return total, stats, d_real, d_fake


def g_logits(
    critic: Critic, generator: Critic, z: Tensor, real: Tensor | None, e: Tensor | None, m: int = 1
) -> tuple[Tensor, Tensor | None]:
    """One seed's logits for G's step: d_f = D(pack(G(z) + e)) (e: instance noise, or None; pack by
    m, 1 = none), and D(x) on a (packed) real batch for relativistic losses (else None)."""
    d_real = None
    if real is not None:
        with torch.no_grad():
            d_real = critic(real)
    x = generator(z)
    return critic(pack(x if e is None else x + e, m)), d_real


def g_objective(
    critic: Critic, generator: Critic, loss: Loss, z: Tensor, real: Tensor | None, e: Tensor | None, m: int = 1
) -> tuple[Tensor, Tensor]:
    """One seed's generator objective L_G(d_f, d_r) on `g_logits`, and the fakes' logits d_f, whose
    gradient the backward pass leaves for `learning_signal`."""
    d_fake, d_real = g_logits(critic, generator, z, real, e, m)
    return loss.generator_loss(d_fake, d_real), d_fake


def learning_signal(d_fake_grad: Tensor) -> Tensor:
    """G's learning signal per seed from dL_G/d d_f of shape (..., B):

        g_signal = B * mean_i |dL_G / d d_f,i|

    how much gradient each fake's logit passes back to G (minimax: sigma(d_f), which vanishes when D
    rejects the fakes; non-saturating: 1 - sigma(d_f)). Read off the G step's own backward pass;
    what the other losses would pass through the same d_f is lossbench.train.counterfactual's."""
    return d_fake_grad.abs().mean(-1) * d_fake_grad.shape[-1]


def grad_norms(params: list[Tensor], stacked: bool) -> Tensor:
    """Per-seed ||grad||_2 over all `params` (S,): stacked parameters carry the seed on dim 0. One
    seed's is one fused foreach kernel over its gradients; stacked seeds' one norm over the
    gradients gathered per seed (S, N), a fixed number of kernels whatever the net's tensors."""
    grads = [p.grad for p in params if p.grad is not None]
    if not stacked:
        return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))[None]
    return torch.cat([g.reshape(g.shape[0], -1) for g in grads], dim=1).norm(dim=1)


def running(buffers: dict[str, Tensor]) -> dict[str, Tensor]:
    """Copies of a module's buffers for one call: the forwards write their running statistics
    (batch norm's mean, variance and count) into these, so the call leaves its inputs unchanged and
    returns the updated state explicitly."""
    return {name: t.clone() for name, t in buffers.items()}


def write_back(buffers: dict[str, Tensor], updated: dict[str, Tensor]) -> None:
    """The state a call returned, copied into the stacked buffers (same storage: views of single
    members, checkpoints and CUDA graphs' static inputs stay valid)."""
    if buffers:
        with torch.no_grad():
            torch._foreach_copy_(list(buffers.values()), [updated[name] for name in buffers])


class Players(Protocol):
    """What the loop drives: S seeds' G and D with their optimisers, and the objective they play
    (its loss and penalty objects; whether G's loss also sees D on a real batch)."""

    size: int
    loss: Loss
    penalty: Penalty
    needs_real: bool  # G's objective takes D(x) on a real batch (relativistic losses)
    pack: int  # samples per D input (PacGAN); real and fake batches reach d_objective packed
    clip: float | Tensor | None  # WGAN's weight clip c (per member (S,) in a group of configurations); None: off
    instance_noise: float | Tensor  # sigma of the noise on D's inputs (per member (S,)); 0.0: off
    compiler: Compiler
    opt_d: torch.optim.Optimizer
    opt_g: torch.optim.Optimizer

    def fake(self, z: Tensor) -> Tensor: ...
    def d_objective(self, real: Tensor, fake: Tensor, u: Noises) -> tuple[Tensor, Tensor]: ...
    def g_objective(self, z: Tensor, real: Tensor | None, e: Tensor | None) -> tuple[Tensor, Tensor]:
        """Per-seed L_G (S,) and the fakes' logits as the loss saw them ((S, B), or (B,) for one seed)."""
        ...

    def joint_objective(
        self, real: Tensor, z: Tensor, e: Tensor | None, u: Noises, double_backward: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Simultaneous updates: per-seed D total (S,), its D_STATS (S, 4), L_G (S,) and the fakes'
        logits, all from one G forward and one scoring by D (`joint_objective`). `double_backward`:
        the caller differentiates the gradients again (consensus), so no compiled graph is used."""
        ...

    def d_parameters(self) -> list[Tensor]: ...
    def g_parameters(self) -> list[Tensor]: ...
    def grad_norms(self, params: list[Tensor]) -> Tensor: ...
    def finite(self) -> list[bool]: ...
    def generator(self, k: int) -> nn.Module: ...
    def discriminator(self, k: int) -> nn.Module: ...
    def state_dict(self, k: int) -> dict[str, Any]: ...
    def load_state_dict(self, k: int, state: dict[str, Any]) -> None: ...


class _Norms:
    """Per-seed gradient norms for either kind of players."""

    stacked = False  # parameters carry a leading seed dimension

    def grad_norms(self, params: list[Tensor]) -> Tensor:
        return grad_norms(params, self.stacked)


class Single(_Norms):
    """One seed's plain G and D modules."""

    size = 1

    def __init__(
        self, G: nn.Module, D: nn.Module, make_opt_g: OptFactory, make_opt_d: OptFactory, loss: Loss,
        penalty: Penalty, weight: float, precision: Precision, compile_mode: str | None = None,
        instance_noise: float = 0.0, pack: int = 1, clip: float = 0.0,
    ) -> None:  # fmt: skip
        self.G, self.D = G, D
        self.clip, self.instance_noise = (clip if clip > 0 else None), instance_noise
        self.opt_g, self.opt_d = make_opt_g(list(G.parameters())), make_opt_d(list(D.parameters()))
        self.loss, self.penalty, self.weight, self.pack = loss, penalty, weight, pack
        self.needs_real = needs_real(loss)
        self.joint = not has_batch_statistics(D)
        self.compiler = Compiler(compile_mode)
        self._g = precision.wrap(self.compiler(G))
        self._d = precision.wrap(self.compiler(D, allowed=not penalty.input_gradient))
        self._g_eager, self._d_eager = precision.wrap(G), precision.wrap(D)  # for double backward

    def fake(self, z: Tensor) -> Tensor:
        self.compiler.begin_step()  # a D step begins with its fake batch
        with torch.no_grad():
            return self._g(z[0])[None]

    def d_objective(self, real: Tensor, fake: Tensor, u: Noises) -> tuple[Tensor, Tensor]:
        self.D.requires_grad_(True)
        total, stats = d_objective(self._d, self.loss, self.penalty, self.weight, real[0], fake[0],
                                   None if u is None else tuple(t[0] for t in u), self.joint)  # fmt: skip
        return total[None], stats[None]

    def g_objective(self, z: Tensor, real: Tensor | None, e: Tensor | None) -> tuple[Tensor, Tensor]:
        self.compiler.begin_step()
        self.D.requires_grad_(False)  # no gradient into D's weights on G's step
        g_loss, d_fake = g_objective(self._d, self._g, self.loss, z[0], None if real is None else real[0],
                                     None if e is None else e[0], self.pack)  # fmt: skip
        return g_loss[None], d_fake  # d_fake (B,): in the graph as the loss saw it, for its gradient

    def joint_objective(
        self, real: Tensor, z: Tensor, e: Tensor | None, u: Noises, double_backward: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        self.compiler.begin_step()
        self.D.requires_grad_(True)
        G, D = (self._g_eager, self._d_eager) if double_backward else (self._g, self._d)
        total, stats, d_real, d_fake = joint_objective(
            D, G, self.loss, self.penalty, self.weight, real[0], z[0], None if e is None else e[0],
            None if u is None else tuple(t[0] for t in u), self.pack, self.joint)  # fmt: skip
        g_loss = self.loss.generator_loss(d_fake, d_real if self.needs_real else None)
        return total[None], stats[None], g_loss[None], d_fake

    def d_parameters(self) -> list[Tensor]:
        return list(self.D.parameters())

    def g_parameters(self) -> list[Tensor]:
        return list(self.G.parameters())


    def finite(self) -> list[bool]:
        return [
            bool(torch.stack([torch.isfinite(p).all() for p in (*self.G.parameters(), *self.D.parameters())]).all())
        ]

    def generator(self, k: int) -> nn.Module:
        return self.G

    def discriminator(self, k: int) -> nn.Module:
        return self.D

    def state_dict(self, k: int) -> dict[str, Any]:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict()}  # fmt: skip

    def load_state_dict(self, k: int, state: dict[str, Any]) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])


class Stacked(_Norms):
    """S seeds' G and D, parameters stacked on dim 0 and every forward vmapped over the seeds; with a
    compile mode, the vmapped functions are compiled whole (D's objective only without double backward)."""

    stacked = True

    def __init__(
        self, Gs: list[nn.Module], Ds: list[nn.Module], make_opt_g: OptFactory, make_opt_d: OptFactory, loss: Loss,
        penalty: Penalty, weight: float | Tensor, precision: Precision, compile_mode: str | None = None,
        instance_noise: float | Tensor = 0.0, pack: int = 1, clip: float | Tensor = 0.0,
    ) -> None:  # fmt: skip
        if any("parametrizations" in name for name, _ in Ds[0].named_parameters()):
            raise ConfigError(UNSTACKABLE)
        self.size = len(Gs)
        self.g_params, self.g_buffers = stack_module_state(Gs)
        self.d_params, self.d_buffers = stack_module_state(Ds)
        self._g_view, self._d_view = Gs[0], Ds[0]  # real modules, loaded with one seed's state for hooks
        g_base, d_base = copy.deepcopy(Gs[0]).to("meta"), copy.deepcopy(Ds[0]).to("meta")
        self.opt_g = make_opt_g(list(self.g_params.values()))
        self.opt_d = make_opt_d(list(self.d_params.values()))
        self.loss, self.penalty, self.pack = loss, penalty, pack
        # per-member values (lossbench.train.members): lambda enters each member's objective through vmap
        like = next(iter(self.d_params.values()))
        self.weight = torch.as_tensor(weight, dtype=like.dtype, device=like.device).expand(self.size).contiguous()
        on = torch.is_tensor(clip) or clip > 0
        self.clip = (torch.as_tensor(clip, dtype=like.dtype, device=like.device).expand(self.size) if on else None)
        self.instance_noise = instance_noise
        self.needs_real = needs_real(loss)
        self.joint = not has_batch_statistics(Ds[0])
        self._g_one = precision.wrap(lambda p, b, z: functional_call(g_base, (p, b), (z,)))
        self._d_one = precision.wrap(lambda p, b, x: functional_call(d_base, (p, b), (x,)))
        # penalty noise and G's real batch are either always given or always None: fixed in_dims
        u_dim = 0 if penalty.noise else None
        real_dim = 0 if self.needs_real else None
        self.compiler = Compiler(compile_mode)
        # the batched_* callables: every member at once (vmap), pure (buffers in, updated copies out);
        # the methods below call them and write the buffers back, the whole step
        # (lossbench.train.whole_step) composes them into one traced function
        self.batched_fake = self.compiler(vmap(self._fake_seed))
        self.batched_d_objective = self.compiler(vmap(self._d_seed, in_dims=(0, 0, 0, 0, 0, u_dim)),
                                          allowed=not penalty.input_gradient)  # fmt: skip
        e_dim = 0 if torch.is_tensor(instance_noise) or instance_noise > 0 else None
        # G's logits are compiled, its loss is not: the loss's backward then passes through the
        # logits' tensor, which leaves dL_G/dd_f for the learning signal (inside one compiled graph
        # it would not)
        self.batched_g_logits = self.compiler(vmap(self._g_seed, in_dims=(0, 0, 0, 0, 0, real_dim, e_dim)))
        self.batched_g_loss = vmap(loss.generator_loss, in_dims=(0, real_dim))
        joint = vmap(self._joint_seed, in_dims=(0, 0, 0, 0, 0, 0, 0, e_dim, u_dim))
        self.batched_joint, self._joint_eager = self.compiler(joint, allowed=not penalty.input_gradient), joint

    # Each per-seed function takes the buffers it reads, updates `running` copies of them and returns
    # the copies last (explicit state: see the module's docstring).
    def _fake_seed(self, p: dict, b: dict, z: Tensor) -> tuple[Tensor, dict]:
        b = running(b)
        return self._g_one(p, b, z), b

    def _d_seed(
        self, p: dict, b: dict, w: Tensor, real: Tensor, fake: Tensor, u: Noises
    ) -> tuple[Tensor, Tensor, dict]:
        b = running(b)
        critic = lambda x: self._d_one(p, b, x)  # noqa: E731
        return (*d_objective(critic, self.loss, self.penalty, w, real, fake, u, self.joint), b)

    def _g_seed(
        self, gp: dict, gb: dict, dp: dict, db: dict, z: Tensor, real: Tensor | None, e: Tensor | None
    ) -> tuple[Tensor | tuple[Tensor, Tensor], dict, dict]:
        gb, db = running(gb), running(db)
        critic = lambda x: self._d_one(dp, db, x)  # noqa: E731
        d_fake, d_real = g_logits(critic, lambda v: self._g_one(gp, gb, v), z, real, e, self.pack)
        return (d_fake if d_real is None else (d_fake, d_real)), gb, db  # vmap returns tensors only

    def _joint_seed(
        self, gp: dict, gb: dict, dp: dict, db: dict, w: Tensor, real: Tensor, z: Tensor, e: Tensor | None,
        u: Noises,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, dict, dict]:  # fmt: skip
        gb, db = running(gb), running(db)
        critic = lambda x: self._d_one(dp, db, x)  # noqa: E731
        generator = lambda v: self._g_one(gp, gb, v)  # noqa: E731
        return (*joint_objective(critic, generator, self.loss, self.penalty, w, real, z, e, u, self.pack,
                                 self.joint), gb, db)  # fmt: skip

    def fake(self, z: Tensor) -> Tensor:
        self.compiler.begin_step()
        with torch.no_grad():
            x, gb = self.batched_fake(self.g_params, self.g_buffers, z)
        write_back(self.g_buffers, gb)
        return x

    def joint_objective(
        self, real: Tensor, z: Tensor, e: Tensor | None, u: Noises, double_backward: bool = False
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        self.compiler.begin_step()
        fn = self._joint_eager if double_backward else self.batched_joint
        total, stats, d_real, d_fake, gb, db = fn(self.g_params, self.g_buffers, self.d_params, self.d_buffers,
                                                  self.weight, real, z, e, u)  # fmt: skip
        write_back(self.g_buffers, gb)
        write_back(self.d_buffers, db)
        return total, stats, self.batched_g_loss(d_fake, d_real if self.needs_real else None), d_fake

    def d_objective(self, real: Tensor, fake: Tensor, u: Noises) -> tuple[Tensor, Tensor]:
        total, stats, db = self.batched_d_objective(self.d_params, self.d_buffers, self.weight, real, fake, u)
        write_back(self.d_buffers, db)
        return total, stats

    def g_objective(self, z: Tensor, real: Tensor | None, e: Tensor | None) -> tuple[Tensor, Tensor]:
        self.compiler.begin_step()
        d_params = {k: v.detach() for k, v in self.d_params.items()}  # no gradient into D's weights
        logits, gb, db = self.batched_g_logits(self.g_params, self.g_buffers, d_params, self.d_buffers, z, real, e)
        write_back(self.g_buffers, gb)
        write_back(self.d_buffers, db)
        d_fake, d_real = logits if self.needs_real else (logits, None)
        return self.batched_g_loss(d_fake, d_real), d_fake

    def d_parameters(self) -> list[Tensor]:
        return list(self.d_params.values())

    def g_parameters(self) -> list[Tensor]:
        return list(self.g_params.values())


    def finite(self) -> list[bool]:
        tensors = [*self.g_params.values(), *self.d_params.values()]
        ok = torch.stack([torch.isfinite(t).flatten(1).all(1) for t in tensors]).all(0)
        return ok.tolist()

    def _module_state(self, params: dict[str, Tensor], buffers: dict[str, Tensor], k: int) -> dict[str, Tensor]:
        return {name: t[k].detach().clone() for name, t in (params | buffers).items()}

    def generator(self, k: int) -> nn.Module:
        self._g_view.load_state_dict(self._module_state(self.g_params, self.g_buffers, k))
        return self._g_view

    def discriminator(self, k: int) -> nn.Module:
        self._d_view.load_state_dict(self._module_state(self.d_params, self.d_buffers, k))
        return self._d_view

    def state_dict(self, k: int) -> dict[str, Any]:
        """Seed k's state in exactly the format `Single.state_dict` writes: checkpoints are interchangeable."""
        return {
            "G": self._module_state(self.g_params, self.g_buffers, k),
            "D": self._module_state(self.d_params, self.d_buffers, k),
            "opt_g": _slice_optimizer(self.opt_g, k),
            "opt_d": _slice_optimizer(self.opt_d, k),
        }

    def load_state_dict(self, k: int, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for stacked, buffers, key in ((self.g_params, self.g_buffers, "G"), (self.d_params, self.d_buffers, "D")):
                for name, t in (stacked | buffers).items():
                    t[k].copy_(state[key][name])
        for opt, key in ((self.opt_g, "opt_g"), (self.opt_d, "opt_d")):
            _load_optimizer_slice(opt, state[key], k, self.size)


def _slice_optimizer(opt: torch.optim.Optimizer, k: int) -> dict[str, Any]:
    """Seed k's optimiser state from a stacked one: per-parameter tensors lose their seed dim; scalars
    (Adam's step count, shared by all seeds) are kept; an optimiser with per-member values
    (lossbench.gan.member_adam) makes member k's param_groups in torch's own format."""
    sd = opt.state_dict()
    state = {
        i: {n: (v[k].clone() if torch.is_tensor(v) and v.dim() > 0 else copy.deepcopy(v)) for n, v in st.items()}
        for i, st in sd["state"].items()
    }
    groups = opt.member_param_groups(k) if isinstance(opt, MemberAdam) else copy.deepcopy(sd["param_groups"])
    return {"state": state, "param_groups": groups}


def _load_optimizer_slice(opt: torch.optim.Optimizer, single: dict[str, Any], k: int, size: int) -> None:
    sd = opt.state_dict()
    params = [p for group in opt.param_groups for p in group["params"]]
    for i, st in single["state"].items():
        target = sd["state"].setdefault(i, {})
        for n, v in st.items():
            if torch.is_tensor(v) and v.dim() > 0:
                if n not in target:
                    target[n] = torch.zeros((size, *v.shape), dtype=v.dtype, device=params[i].device)
                target[n][k] = v.to(target[n].device)
            else:
                target[n] = copy.deepcopy(v)
    if not isinstance(opt, MemberAdam):  # per-member values stay the group's own (its members' configurations)
        groups = zip(single["param_groups"], sd["param_groups"])
        sd["param_groups"] = [g | {"params": own["params"]} for g, own in groups]
    opt.load_state_dict(sd)
